//! `WWW-Authenticate` challenges (RFC 7235 §4.1, token.md "How to authenticate"): a scheme
//! followed by `name=value` parameters whose values may be quoted strings holding commas; one
//! header may carry several challenges.

/// One challenge: the scheme in lower case and its parameters (names in lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses every challenge in a header value; malformed tails are dropped, not guessed at.
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut lexer = Lexer {
        s: header.as_bytes(),
        i: 0,
    };
    let mut out: Vec<Challenge> = Vec::new();
    loop {
        lexer.skip(|b| b == b' ' || b == b'\t' || b == b',');
        let Some(scheme) = lexer.token() else { break };
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: Vec::new(),
        };
        // Parameters: `name = value` separated by commas, until a token that is not followed
        // by `=` (the next challenge's scheme).
        loop {
            lexer.skip(|b| b == b' ' || b == b'\t' || b == b',');
            let save = lexer.i;
            let Some(name) = lexer.token() else { break };
            lexer.skip(|b| b == b' ' || b == b'\t');
            if !lexer.eat(b'=') {
                lexer.i = save;
                break;
            }
            lexer.skip(|b| b == b' ' || b == b'\t');
            let value = if lexer.peek() == Some(b'"') {
                lexer.quoted()
            } else {
                lexer.token()
            };
            match value {
                Some(value) => challenge.params.push((name.to_ascii_lowercase(), value)),
                None => break,
            }
        }
        out.push(challenge);
    }
    out
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// An RFC 7230 token (plus `/` and `:` which appear unquoted in the wild, e.g. in realms).
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        self.skip(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&b));
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// A quoted string with backslash escapes; `None` when unterminated.
    fn quoted(&mut self) -> Option<String> {
        self.i += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => return Some(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    if let Some(next) = self.peek() {
                        out.push(next);
                        self.i += 1;
                    }
                }
                other => out.push(other),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_commas_in_scope() {
        let c = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:samalba/my-app:pull,push")
        );
    }

    #[test]
    fn several_challenges_and_escapes() {
        let c = parse(r#"Basic realm="a \"b\", c", Bearer realm=https://x/token, service=reg"#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some(r#"a "b", c"#));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("https://x/token"));
        assert_eq!(c[1].param("service"), Some("reg"));
    }

    #[test]
    fn malformed_is_not_guessed() {
        assert!(parse("").is_empty());
        let c = parse(r#"Bearer realm="unterminated"#);
        assert_eq!(c[0].param("realm"), None);
    }
}
