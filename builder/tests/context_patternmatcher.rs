//! moby/patternmatcher's own test cases (patternmatcher_test.go, ignorefile_test.go), ported
//! so that `.dockerignore` and `--exclude` answer exactly as Docker does.

use builder::context::dockerignore::parse_ignore_file;
use builder::context::patternmatcher::{MatchInfo, PatternError, PatternMatcher};
use builder::context::wildcard::{clean, go_match, BadPattern};

/// Upstream's package-level `MatchesOrParentMatches(file, patterns)`.
fn matches(file: &str, patterns: &[&str]) -> Result<bool, String> {
    let pm = PatternMatcher::new(patterns).map_err(|e| e.to_string())?;
    let file = clean(file);
    if file == "." {
        // Upstream: "Don't let them exclude everything, kind of silly."
        return Ok(false);
    }
    pm.matches_or_parent_matches(file.as_bytes())
        .map_err(|e| e.to_string())
}

#[test]
fn wildcard_and_simple_patterns() {
    assert_eq!(matches("fileutils.go", &["*"]), Ok(true));
    assert_eq!(matches("fileutils.go", &["*.go"]), Ok(true));
}

#[test]
fn exclusion_order_matters() {
    // An exclusion followed by an inclusion matches; the reverse does not.
    assert_eq!(
        matches("fileutils.go", &["!fileutils.go", "*.go"]),
        Ok(true)
    );
    assert_eq!(
        matches("fileutils.go", &["*.go", "!fileutils.go"]),
        Ok(false)
    );
}

#[test]
fn folder_pattern_followed_by_exception() {
    for folder in ["docs", "docs/", "docs/*"] {
        assert_eq!(
            matches("docs/README.md", &[folder, "!docs/README.md"]),
            Ok(false),
            "{folder}"
        );
    }
}

#[test]
fn whole_directory_and_empty_lists() {
    assert_eq!(matches(".", &["*.go"]), Ok(false));
    assert_eq!(matches("/any/path/there", &[]), Ok(false));
}

#[test]
fn lone_exclamation_and_malformed_patterns_are_errors() {
    assert_eq!(
        PatternMatcher::new(&["!"]).err(),
        Some(PatternError::LoneExclamation)
    );
    assert!(matches("fileutils.go", &["!"]).is_err());
    assert!(matches("/any/path/there", &["["]).is_err());
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Pass {
    Fail,
    Exact,
    Inexact,
}
use Pass::*;

const MATCH_CASES: &[(&str, &str, Pass)] = &[
    ("**", "file", Exact),
    ("**", "file/", Exact),
    ("**/", "file", Exact), // weird one
    ("**/", "file/", Exact),
    ("**", "/", Exact),
    ("**/", "/", Exact),
    ("**", "dir/file", Exact),
    ("**/", "dir/file", Exact),
    ("**", "dir/file/", Exact),
    ("**/", "dir/file/", Exact),
    ("**/**", "dir/file", Exact),
    ("**/**", "dir/file/", Exact),
    ("dir/**", "dir/file", Exact),
    ("dir/**", "dir/file/", Exact),
    ("dir/**", "dir/dir2/file", Exact),
    ("dir/**", "dir/dir2/file/", Exact),
    ("**/dir", "dir", Exact),
    ("**/dir", "dir/file", Inexact),
    ("**/dir2/*", "dir/dir2/file", Exact),
    ("**/dir2/*", "dir/dir2/file/", Inexact),
    ("**/dir2/**", "dir/dir2/dir3/file", Exact),
    ("**/dir2/**", "dir/dir2/dir3/file/", Exact),
    ("**file", "file", Exact),
    ("**file", "dir/file", Exact),
    ("**/file", "dir/file", Exact),
    ("**file", "dir/dir/file", Exact),
    ("**/file", "dir/dir/file", Exact),
    ("**/file*", "dir/dir/file", Exact),
    ("**/file*", "dir/dir/file.txt", Exact),
    ("**/file*txt", "dir/dir/file.txt", Exact),
    ("**/file*.txt", "dir/dir/file.txt", Exact),
    ("**/file*.txt*", "dir/dir/file.txt", Exact),
    ("**/**/*.txt", "dir/dir/file.txt", Exact),
    ("**/**/*.txt2", "dir/dir/file.txt", Fail),
    ("**/*.txt", "file.txt", Exact),
    ("**/**/*.txt", "file.txt", Exact),
    ("a**/*.txt", "a/file.txt", Exact),
    ("a**/*.txt", "a/dir/file.txt", Exact),
    ("a**/*.txt", "a/dir/dir/file.txt", Exact),
    ("a/*.txt", "a/dir/file.txt", Fail),
    ("a/*.txt", "a/file.txt", Exact),
    ("a/*.txt**", "a/file.txt", Exact),
    ("a[b-d]e", "ae", Fail),
    ("a[b-d]e", "ace", Exact),
    ("a[b-d]e", "aae", Fail),
    ("a[^b-d]e", "aze", Exact),
    (".*", ".foo", Exact),
    (".*", "foo", Fail),
    ("abc.def", "abcdef", Fail),
    ("abc.def", "abc.def", Exact),
    ("abc.def", "abcZdef", Fail),
    ("abc?def", "abcZdef", Exact),
    ("abc?def", "abcdef", Fail),
    ("**/foo/bar", "foo/bar", Exact),
    ("**/foo/bar", "dir/foo/bar", Exact),
    ("**/foo/bar", "dir/dir2/foo/bar", Exact),
    ("abc/**", "abc", Fail),
    ("abc/**", "abc/def", Exact),
    ("abc/**", "abc/def/ghi", Exact),
    ("**/.foo", ".foo", Exact),
    ("**/.foo", "bar.foo", Fail),
    ("a(b)c/def", "a(b)c/def", Exact),
    ("a(b)c/def", "a(b)c/xyz", Fail),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", Exact),
    (
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        Exact,
    ),
    (
        "dist/*.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        Exact,
    ),
    // Unix-only cases upstream.
    ("a\\\\", "a\\", Exact),
    ("a\\*b", "a*b", Exact),
];

const MULTI_PATTERN_CASES: &[(&[&str], &str, Pass)] = &[
    (&["**", "!util/docker/web"], "util/docker/web/foo", Fail),
    (
        &["**", "!util/docker/web", "util/docker/web/foo"],
        "util/docker/web/foo",
        Exact,
    ),
    (
        &[
            "**",
            "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        ],
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        Fail,
    ),
    (
        &["**", "!dist/*.whl"],
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        Fail,
    ),
];

/// Upstream's walk-style check: feed each parent directory first, carrying `MatchInfo`.
fn using_parent_results(pm: &PatternMatcher, text: &str) -> bool {
    let mut info = MatchInfo::default();
    let parent = match text.rfind('/') {
        Some(i) => &text[..i],
        None => ".",
    };
    if parent != "." && !parent.is_empty() {
        let dirs: Vec<&str> = parent.split('/').collect();
        for i in 0..dirs.len() {
            let prefix = dirs[..=i].join("/");
            info = pm
                .matches_using_parent_results(prefix.as_bytes(), &info)
                .expect("valid pattern")
                .1;
        }
    }
    pm.matches_using_parent_results(text.as_bytes(), &info)
        .expect("valid pattern")
        .0
}

#[test]
fn matches_exact() {
    for &(pattern, text, pass) in MATCH_CASES {
        let pm = PatternMatcher::new(&[pattern]).expect("valid pattern");
        let got = pm.matches_exact(text.as_bytes()).expect("matchable");
        assert_eq!(got, pass == Exact, "pattern={pattern:?} text={text:?}");
    }
}

#[test]
fn matches_or_parent_matches() {
    for &(pattern, text, pass) in MATCH_CASES {
        let pm = PatternMatcher::new(&[pattern]).expect("valid pattern");
        let got = pm
            .matches_or_parent_matches(text.as_bytes())
            .expect("matchable");
        assert_eq!(got, pass != Fail, "pattern={pattern:?} text={text:?}");
    }
    for &(patterns, text, pass) in MULTI_PATTERN_CASES {
        let pm = PatternMatcher::new(patterns).expect("valid patterns");
        let got = pm
            .matches_or_parent_matches(text.as_bytes())
            .expect("matchable");
        assert_eq!(got, pass != Fail, "patterns={patterns:?} text={text:?}");
    }
}

#[test]
fn matches_using_parent_results() {
    for &(pattern, text, pass) in MATCH_CASES {
        let pm = PatternMatcher::new(&[pattern]).expect("valid pattern");
        assert_eq!(
            using_parent_results(&pm, text),
            pass != Fail,
            "pattern={pattern:?} text={text:?}"
        );
    }
    for &(patterns, text, pass) in MULTI_PATTERN_CASES {
        let pm = PatternMatcher::new(patterns).expect("valid patterns");
        assert_eq!(
            using_parent_results(&pm, text),
            pass != Fail,
            "patterns={patterns:?} text={text:?}"
        );
    }
}

#[test]
fn matches_using_parent_results_without_context() {
    for &(pattern, text, pass) in MATCH_CASES {
        let pm = PatternMatcher::new(&[pattern]).expect("valid pattern");
        let got = pm
            .matches_using_parent_results(text.as_bytes(), &MatchInfo::default())
            .expect("matchable")
            .0;
        assert_eq!(got, pass != Fail, "pattern={pattern:?} text={text:?}");
    }
    for &(patterns, text, pass) in MULTI_PATTERN_CASES {
        let pm = PatternMatcher::new(patterns).expect("valid patterns");
        let got = pm
            .matches_using_parent_results(text.as_bytes(), &MatchInfo::default())
            .expect("matchable")
            .0;
        assert_eq!(got, pass != Fail, "patterns={patterns:?} text={text:?}");
    }
}

#[test]
fn clean_patterns() {
    let pm = PatternMatcher::new(&["docs", "config", ""]).expect("valid");
    assert_eq!(pm.patterns().len(), 2, "empty patterns are dropped");
    for patterns in [
        ["docs", "!docs/README.md"],
        ["docs", "  !docs/README.md"],
        ["docs", "!docs/README.md  "],
    ] {
        let pm = PatternMatcher::new(&patterns).expect("valid");
        assert!(pm.has_exclusions(), "{patterns:?}");
        assert_eq!(pm.patterns()[1].as_str(), "docs/README.md");
    }
}

/// Go's own `filepath.Match` tests, as upstream runs them through `Matches`.
const GO_MATCH_CASES: &[(&str, &str, bool, bool)] = &[
    // (pattern, name, matched, bad pattern)
    ("abc", "abc", true, false),
    ("*", "abc", true, false),
    ("*c", "abc", true, false),
    ("a*", "a", true, false),
    ("a*", "abc", true, false),
    ("a*", "ab/c", true, false),
    ("a*/b", "abc/b", true, false),
    ("a*/b", "a/c/b", false, false),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", true, false),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true, false),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false, false),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false, false),
    ("a*b?c*x", "abxbbxdbxebxczzx", true, false),
    ("a*b?c*x", "abxbbxdbxebxczzy", false, false),
    ("ab[c]", "abc", true, false),
    ("ab[b-d]", "abc", true, false),
    ("ab[e-g]", "abc", false, false),
    ("ab[^c]", "abc", false, false),
    ("ab[^b-d]", "abc", false, false),
    ("ab[^e-g]", "abc", true, false),
    ("a\\*b", "a*b", true, false),
    ("a\\*b", "ab", false, false),
    ("a?b", "a☺b", true, false),
    ("a[^a]b", "a☺b", true, false),
    ("a???b", "a☺b", false, false),
    ("a[^a][^a][^a]b", "a☺b", false, false),
    ("[a-ζ]*", "α", true, false),
    ("*[a-ζ]", "A", false, false),
    ("a?b", "a/b", false, false),
    ("a*b", "a/b", false, false),
    ("[\\]a]", "]", true, false),
    ("[\\-]", "-", true, false),
    ("[x\\-]", "x", true, false),
    ("[x\\-]", "-", true, false),
    ("[x\\-]", "z", false, false),
    ("[\\-x]", "x", true, false),
    ("[\\-x]", "-", true, false),
    ("[\\-x]", "a", false, false),
    ("[]a]", "]", false, true),
    ("[-]", "-", false, true),
    ("[x-]", "x", false, true),
    ("[x-]", "-", false, true),
    ("[x-]", "z", false, true),
    ("[-x]", "x", false, true),
    ("[-x]", "-", false, true),
    ("[-x]", "a", false, true),
    ("\\", "a", false, true),
    ("[a-b-c]", "a", false, true),
    ("[", "a", false, true),
    ("[^", "a", false, true),
    ("[^bc", "a", false, true),
    ("a[", "a", false, true),
    ("a[", "ab", false, true),
    ("*x", "xxx", true, false),
];

#[test]
fn go_filepath_match_cases_through_the_matcher() {
    for &(pattern, name, want, bad) in GO_MATCH_CASES {
        let got = matches(name, &[pattern]);
        if bad {
            assert!(got.is_err(), "pattern={pattern:?} should be refused");
        } else {
            assert_eq!(got, Ok(want), "pattern={pattern:?} name={name:?}");
        }
    }
}

#[test]
fn go_filepath_match_cases_directly() {
    for &(pattern, name, want, bad) in GO_MATCH_CASES {
        // The one case where Go's table differs: `*` alone never crosses `/`; only the
        // matcher's parent-directory rule makes `ab/c` match `a*` above.
        let want = want && (pattern, name) != ("a*", "ab/c");
        let got = go_match(pattern.as_bytes(), name.as_bytes());
        if bad {
            assert_eq!(got, Err(BadPattern), "pattern={pattern:?}");
        } else {
            assert_eq!(got, Ok(want), "pattern={pattern:?} name={name:?}");
        }
    }
}

/// Regression test upstream (moby/moby#52203): a pattern Go's matcher accepts but the regexp
/// engine refuses (`l-O` is a reversed range) fails at every match, without panicking.
#[test]
fn reversed_range_fails_at_match_time_every_time() {
    let pm = PatternMatcher::new(&["[Local-Only]/"]).expect("passes the syntax check");
    assert_eq!(pm.matches_or_parent_matches(b"x"), Err(BadPattern));
    assert_eq!(pm.matches_or_parent_matches(b"x"), Err(BadPattern));
}

#[test]
fn ignore_file_lines() {
    let content =
        "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
    assert_eq!(
        parse_ignore_file(content),
        [
            "test1",
            "test2",
            "a/file/here",
            "lastfile",
            "!inverted/abs/path",
            "!",
            "!"
        ]
    );
    // A BOM, CRLF line ends, `./` and `..` are all normalised.
    assert_eq!(
        parse_ignore_file("\u{feff}./a//b/../c\r\n  # not a comment\r\n"),
        ["a/c", "# not a comment"]
    );
}
