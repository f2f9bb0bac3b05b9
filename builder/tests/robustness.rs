//! The parser and the typed layer must answer every input with a tree or
//! an error, never a panic: mutate the BuildKit vectors (and a few
//! Dockerfiles rich in flags and heredocs) many times and parse each.

use std::fs;
use std::path::Path;

use builder::dockerfile::shell::{Lex, NoVars};
use builder::dockerfile::{parse, Dockerfile};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Characters that matter to the grammar, plus multi-byte ones.
const ALPHABET: &[&str] = &[
    "\\",
    "`",
    "\"",
    "'",
    "$",
    "{",
    "}",
    ":",
    "-",
    "+",
    "?",
    "#",
    "%",
    "/",
    "=",
    ",",
    "<<",
    "<<-",
    "\n",
    "\r\n",
    "\t",
    " ",
    "[",
    "]",
    "--",
    "--mount=",
    "--chmod=",
    "type=cache,target=",
    "EOF",
    "RUN ",
    "COPY ",
    "ONBUILD ",
    "é",
    "한",
    "\u{a0}",
    "\u{feff}",
    "# escape=`\n",
    "HEALTHCHECK ",
    "CMD ",
    "0",
];

fn seeds() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../conformance/buildkit-dockerfile/parser/testfiles");
    let mut seeds: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("test vectors missing at {}: {e}", dir.display()))
        .filter_map(|entry| fs::read_to_string(entry.ok()?.path().join("Dockerfile")).ok())
        .collect();
    seeds.push(
        "FROM a AS b\nRUN --mount=type=secret,id=x --network=none <<EOF bash\necho $X\nEOF\nCOPY --chmod=u+x <<-'A' /x\n\tA\nHEALTHCHECK --interval=1s CMD true\nONBUILD ADD --checksum=sha256:0 x y\n"
            .to_string(),
    );
    seeds
}

#[test]
fn mutated_dockerfiles_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds = seeds();
    for _ in 0..20_000 {
        let seed = &seeds[rng.below(seeds.len())];
        let mut chars: Vec<String> = seed.chars().map(String::from).collect();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(chars.len() + 1);
            match rng.below(3) {
                0 if at < chars.len() => {
                    chars.remove(at);
                }
                1 if at < chars.len() => {
                    chars[at] = ALPHABET[rng.below(ALPHABET.len())].to_string()
                }
                _ => chars.insert(at, ALPHABET[rng.below(ALPHABET.len())].to_string()),
            }
        }
        let text: String = chars.concat();
        // Results do not matter here, only that every call returns.
        let _ = parse(&text).map(|tree| tree.ast.dump());
        let _ = Dockerfile::parse(&text);
        let _ = Lex::default().process_words(&text, &NoVars);
    }
}
