//! Heredoc cases from BuildKit's parser_heredoc_test.go, run against our
//! parse tree (the conformance data has no heredoc vectors of its own).

use builder::dockerfile::{parse, parse_heredoc, Heredoc};

fn doc(name: &str, content: &str, expand: bool, chomp: bool, fd: u32) -> Heredoc {
    Heredoc {
        name: name.into(),
        file_descriptor: fd,
        expand,
        chomp,
        content: content.into(),
    }
}

#[test]
fn extracts_heredocs() {
    let dockerfile = "
FROM alpine:3.6

ENV NAME=me

RUN ls

USER <<INVALID
INVALID

RUN <<EMPTY
EMPTY

RUN 3<<EMPTY2
EMPTY2

RUN \"<<NOHEREDOC\"

RUN <<INDENT
\tfoo
\tbar
INDENT

RUN <<-UNINDENT
\tbaz
\tquux
UNINDENT

RUN <<-UNINDENT2
\tbaz
\tquux
\tUNINDENT2

RUN <<-EXPAND
\texpand $NAME
EXPAND

RUN <<-'NOEXPAND'
\tdon't expand $NAME
NOEXPAND

RUN <<COPY
echo hello world
echo foo bar
COPY

RUN <<COMMENT
# internal comment
echo hello world
echo foo bar # trailing comment
COMMENT

RUN --mount=type=cache,target=/foo <<MOUNT
echo hello
MOUNT

COPY <<FILE1 <<FILE2 /dest
content 1
FILE1
content 2
FILE2

COPY <<X <<Y /dest
Y
X
X
Y
\t";
    let expected: Vec<Vec<Heredoc>> = vec![
        vec![], // ENV
        vec![], // RUN ls
        vec![], // USER <<INVALID: USER takes no heredocs
        vec![], // INVALID (an instruction line of its own)
        vec![doc("EMPTY", "", true, false, 0)],
        vec![doc("EMPTY2", "", true, false, 3)],
        vec![], // RUN "<<NOHEREDOC"
        vec![doc("INDENT", "\tfoo\n\tbar\n", true, false, 0)],
        vec![doc("UNINDENT", "\tbaz\n\tquux\n", true, true, 0)],
        vec![doc("UNINDENT2", "\tbaz\n\tquux\n", true, true, 0)],
        vec![doc("EXPAND", "\texpand $NAME\n", true, true, 0)],
        vec![doc("NOEXPAND", "\tdon't expand $NAME\n", false, true, 0)],
        vec![doc(
            "COPY",
            "echo hello world\necho foo bar\n",
            true,
            false,
            0,
        )],
        vec![doc(
            "COMMENT",
            "# internal comment\necho hello world\necho foo bar # trailing comment\n",
            true,
            false,
            0,
        )],
        vec![doc("MOUNT", "echo hello\n", true, false, 0)],
        vec![
            doc("FILE1", "content 1\n", true, false, 0),
            doc("FILE2", "content 2\n", true, false, 0),
        ],
        vec![
            doc("X", "Y\n", true, false, 0),
            doc("Y", "X\n", true, false, 0),
        ],
    ];
    let result = parse(dockerfile).expect("parses");
    assert_eq!(result.ast.children.len(), expected.len() + 1);
    for (i, want) in expected.iter().enumerate() {
        let child = &result.ast.children[i + 1];
        assert_eq!(
            &child.heredocs,
            want,
            "instruction {} ({})",
            i + 1,
            child.original
        );
    }
}

#[test]
fn json_forms_take_no_heredocs() {
    let result =
        parse("\nFROM alpine:3.6\n\nRUN [\"whoami\"]\nRUN [\"<<EOF\"]\nRUN [\"<<'EOF'\"]\n\t")
            .expect("parses");
    for child in &result.ast.children[1..] {
        assert!(child.heredocs.is_empty(), "{}", child.original);
    }
}

#[test]
fn heredoc_words() {
    for src in [
        "<<EOF",
        "<<'EOF'",
        "<<\"EOF\"",
        "<<-EOF",
        "<<-'EOF'",
        "<<-\"EOF\"",
    ] {
        assert_eq!(parse_heredoc(src).expect(src).expect(src).name, "EOF");
    }
    for src in ["<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""] {
        assert!(parse_heredoc(src).is_err(), "{src} must be an error");
    }
    for src in ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF"] {
        assert_eq!(parse_heredoc(src), Ok(None), "{src} is no heredoc");
    }
}

#[test]
fn heredocs_per_line() {
    for (line, names) in [
        ("RUN <<EOF", vec!["EOF"]),
        ("RUN <<-EOF", vec!["EOF"]),
        ("RUN <<'EOF'", vec!["EOF"]),
        ("RUN 4<<EOF", vec!["EOF"]),
        ("RUN <<EOF <<EOF2", vec!["EOF", "EOF2"]),
        ("RUN '<<EOF'", vec![]),
        ("RUN \"<<EOF\"", vec![]),
    ] {
        let mut src = format!("FROM a\n{line}\n");
        for name in &names {
            src.push_str(&format!("body\n{name}\n"));
        }
        let result = parse(&src).unwrap_or_else(|e| panic!("{line}: {e}"));
        let got: Vec<&str> = result.ast.children[1]
            .heredocs
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        assert_eq!(got, names, "{line}");
    }
}
