//! BuildKit's shell-lexer vectors (conformance/buildkit-dockerfile/shell),
//! run exactly as BuildKit's lex_test.go runs them.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use builder::dockerfile::shell::Lex;

fn vector(name: &str) -> String {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../conformance/buildkit-dockerfile/shell")
        .join(name);
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("test vector missing at {}: {e}", path.display()))
}

/// `PLATFORM|input|expected`: `A` and `U` rows run here; `W` rows are
/// Windows-only (case-insensitive variable names) and are counted, not run.
#[test]
fn env_var_test() {
    let vars: HashMap<String, String> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let lex = Lex::new('\\');
    let (mut ran, mut windows_only) = (0, 0);
    let mut failures = Vec::new();
    for (n, line) in vector("envVarTest").lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').collect();
        assert_eq!(fields.len(), 3, "line {}: malformed row {line:?}", n + 1);
        let (platform, input, expected) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        match platform {
            "A" | "U" => {}
            "W" => {
                windows_only += 1;
                continue;
            }
            other => panic!("line {}: unknown platform {other:?}", n + 1),
        }
        ran += 1;
        let got = lex.process_word(input, &vars);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(word), expected) => expected != "error" && word == expected,
            (Err(_), _) => false,
        };
        if !ok {
            failures.push(format!(
                "line {}: {input:?} expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} rows fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(ran > 200, "only {ran} rows ran");
    assert_eq!(
        windows_only, 2,
        "the Windows-only rows changed; review them"
    );
}

/// `input | w1,w2,...`: words after expansion; `ENV k=v` rows extend the
/// environment for later rows.
#[test]
fn words_test() {
    let lex = Lex::new('\\');
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut ran = 0;
    let mut failures = Vec::new();
    for (n, line) in vector("wordsTest").lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(assignment) = line.strip_prefix("ENV ") {
            let assignment = assignment.trim_start_matches(' ');
            let (k, v) = assignment.split_once('=').unwrap_or((assignment, ""));
            vars.insert(k.to_string(), v.to_string());
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 2, "line {}: malformed row {line:?}", n + 1);
        let input = fields[0].trim();
        // BuildKit trims only the left of the expected words: trailing
        // spaces are part of the last word.
        let expected: Vec<String> = fields[1]
            .trim_start_matches(' ')
            .split(',')
            .map(str::to_string)
            .collect();
        ran += 1;
        let got = lex
            .process_words(input, &vars)
            .unwrap_or_else(|_| vec!["error".to_string()]);
        if got != expected {
            failures.push(format!(
                "line {}: {input:?} expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} rows fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(ran > 20, "only {ran} rows ran");
}
