//! BuildKit's parser test vectors (conformance/buildkit-dockerfile/parser):
//! every `testfiles/*` case must dump exactly to its `result`, every
//! `testfiles-negative/*` case must be rejected, and `testfile-line` must
//! record the start/end lines BuildKit's `TestLineInformation` expects.

use std::fs;
use std::path::{Path, PathBuf};

use builder::dockerfile::parse;

fn vectors() -> PathBuf {
    // Vendored from ../shared/conformance-data (conformance/buildkit-dockerfile/README.md).
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/buildkit-dockerfile/parser")
}

fn case_dirs(sub: &str) -> Vec<PathBuf> {
    let dir = vectors().join(sub);
    let mut dirs: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("test vectors missing at {}: {e}", dir.display()))
        .map(|entry| entry.expect("readable vector directory").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no cases under {}", dir.display());
    dirs
}

#[test]
fn testfiles_dump_like_buildkit() {
    let mut failures = Vec::new();
    let cases = case_dirs("testfiles");
    for dir in &cases {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let source = fs::read_to_string(dir.join("Dockerfile")).expect("Dockerfile readable");
        // BuildKit's test normalises CRLF in the expected result only.
        let expected = fs::read_to_string(dir.join("result"))
            .expect("result readable")
            .replace("\r\n", "\n");
        match parse(&source) {
            Ok(result) => {
                let got = result.ast.dump() + "\n";
                if got != expected {
                    failures.push(format!("{name}:\n--- expected\n{expected}--- got\n{got}"));
                }
            }
            Err(e) => failures.push(format!("{name}: unexpected error {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn negative_testfiles_are_rejected() {
    for dir in case_dirs("testfiles-negative") {
        let source = fs::read_to_string(dir.join("Dockerfile")).expect("Dockerfile readable");
        let outcome = parse(&source);
        assert!(
            outcome.is_err(),
            "{} parsed but must fail: {:?}",
            dir.display(),
            outcome.map(|r| r.ast.dump())
        );
    }
}

#[test]
fn line_information_matches_buildkit() {
    let source = fs::read_to_string(vectors().join("testfile-line/Dockerfile"))
        .expect("Dockerfile readable");
    let result = parse(&source).expect("testfile-line parses");
    // Expected values from BuildKit's parser_test.go TestLineInformation.
    assert_eq!((result.ast.start_line, result.ast.end_line), (5, 31));
    let lines: Vec<(usize, usize)> = result
        .ast
        .children
        .iter()
        .map(|c| (c.start_line, c.end_line))
        .collect();
    assert_eq!(lines, vec![(5, 5), (11, 12), (17, 31)]);
}
