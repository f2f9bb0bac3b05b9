//! `COPY/ADD --chmod` values: octal (`755`, `0644`) or chmod(1) symbolic
//! notation (`+x`, `u=rwX,go=rX`, `g=u`) (spec: reference.md "COPY --chmod").

/// A parsed `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// An absolute mode, at most `0o7777`.
    Octal(u32),
    /// Symbolic clauses, applied in order to each file's current mode.
    Symbolic(Vec<Clause>),
}

/// One comma-separated clause: who, then one or more actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// Permission bits the clause may touch (`u` → 0o4700, `g` → 0o2070,
    /// `o` → 0o1007; none or `a` → all).
    who: u32,
    actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Action {
    op: char,
    perm: Perm,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Perm {
    /// Letters from `rwxXst`.
    Letters(String),
    /// Copy the bits of another class: `g=u`.
    CopyOf(char),
}

impl Chmod {
    /// Parses an octal or symbolic mode.
    pub fn parse(s: &str) -> Result<Chmod, String> {
        if s.is_empty() {
            return Err("empty mode".into());
        }
        if s.chars().all(|c| c.is_ascii_digit()) {
            let mode =
                u32::from_str_radix(s, 8).map_err(|_| format!("invalid octal mode {s:?}"))?;
            if mode > 0o7777 {
                return Err(format!("octal mode {s:?} is larger than 7777"));
            }
            return Ok(Chmod::Octal(mode));
        }
        s.split(',')
            .map(parse_clause)
            .collect::<Result<Vec<_>, _>>()
            .map(Chmod::Symbolic)
    }

    /// The mode a file gets: `mode` is its current mode (permission bits),
    /// `is_dir` matters for `X`. Symbolic modes ignore the umask: a copy
    /// must not depend on the builder's environment.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let clauses = match self {
            Chmod::Octal(m) => return *m,
            Chmod::Symbolic(c) => c,
        };
        let mut mode = mode & 0o7777;
        for clause in clauses {
            for action in &clause.actions {
                let bits = match &action.perm {
                    Perm::Letters(letters) => letters.chars().fold(0, |acc, c| {
                        acc | match c {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            'X' if is_dir || mode & 0o111 != 0 => 0o111,
                            's' => 0o6000,
                            't' => 0o1000,
                            _ => 0,
                        }
                    }),
                    Perm::CopyOf(class) => {
                        let three = match class {
                            'u' => (mode >> 6) & 7,
                            'g' => (mode >> 3) & 7,
                            _ => mode & 7,
                        };
                        three * 0o111
                    }
                };
                let effective = bits & clause.who;
                mode = match action.op {
                    '+' => mode | effective,
                    '-' => mode & !effective,
                    _ => (mode & !(clause.who & 0o777)) | effective,
                };
            }
        }
        mode
    }
}

fn parse_clause(clause: &str) -> Result<Clause, String> {
    let bad = || format!("invalid symbolic mode {clause:?}");
    let who_len = clause.chars().take_while(|c| "ugoa".contains(*c)).count();
    let (who_text, mut rest) = clause.split_at(who_len);
    let who = if who_text.is_empty() {
        0o7777
    } else {
        who_text.chars().fold(0, |acc, c| {
            acc | match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                _ => 0o7777,
            }
        })
    };
    let mut actions = Vec::new();
    while let Some(op) = rest.chars().next().filter(|c| "+-=".contains(*c)) {
        rest = &rest[1..];
        let perm_len = rest.find(['+', '-', '=']).unwrap_or(rest.len());
        let (perm_text, tail) = rest.split_at(perm_len);
        rest = tail;
        let perm = if perm_text.len() == 1 && "ugo".contains(perm_text) {
            Perm::CopyOf(perm_text.chars().next().ok_or_else(bad)?)
        } else if perm_text.chars().all(|c| "rwxXst".contains(c)) {
            Perm::Letters(perm_text.to_string())
        } else {
            return Err(bad());
        };
        actions.push(Action { op, perm });
    }
    if actions.is_empty() || !rest.is_empty() {
        return Err(bad());
    }
    Ok(Clause { who, actions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal() {
        assert_eq!(Chmod::parse("755"), Ok(Chmod::Octal(0o755)));
        assert_eq!(Chmod::parse("0644"), Ok(Chmod::Octal(0o644)));
        assert!(Chmod::parse("789").is_err());
        assert!(Chmod::parse("17777").is_err());
        assert!(Chmod::parse("").is_err());
    }

    #[test]
    fn symbolic() {
        let plus_x = Chmod::parse("+x").unwrap();
        assert_eq!(plus_x.apply(0o644, false), 0o755);
        let tidy = Chmod::parse("u=rwX,go=rX").unwrap();
        assert_eq!(tidy.apply(0o600, false), 0o644);
        assert_eq!(tidy.apply(0o700, false), 0o755);
        assert_eq!(tidy.apply(0o700, true), 0o755);
        let copy = Chmod::parse("g=u").unwrap();
        assert_eq!(copy.apply(0o640, false), 0o660);
        assert_eq!(Chmod::parse("o-rwx").unwrap().apply(0o777, false), 0o770);
        assert_eq!(Chmod::parse("u+s").unwrap().apply(0o755, false), 0o4755);
        for bad in ["x", "u", "+q", "u=rw,", "g=uo", "u+r,,g+w", "u+é"] {
            assert!(Chmod::parse(bad).is_err(), "{bad} must be rejected");
        }
    }
}
