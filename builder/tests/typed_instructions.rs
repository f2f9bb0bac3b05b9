//! The typed-instruction layer: forms, flags, heredocs, stage structure
//! and errors that carry their line.

use std::time::Duration;

use builder::dockerfile::instructions::{
    Add, CommandLine, Copy, Expandable, Healthcheck, Instruction, NetworkMode, Run, SecurityMode,
};
use builder::dockerfile::{CacheSharing, Chmod, Dockerfile, DockerfileError, ErrorKind, MountType};

fn parse(src: &str) -> Dockerfile {
    Dockerfile::parse(src).unwrap_or_else(|e| panic!("{e}\n{src}"))
}

fn error(src: &str) -> DockerfileError {
    match Dockerfile::parse(src) {
        Ok(d) => panic!("must fail: {src}\nparsed: {d:?}"),
        Err(e) => e,
    }
}

/// The instructions of the only stage.
fn body(src: &str) -> Vec<Instruction> {
    let d = parse(src);
    assert_eq!(d.stages.len(), 1);
    d.stages[0]
        .instructions
        .iter()
        .map(|l| l.value.clone())
        .collect()
}

fn only(src: &str) -> Instruction {
    let mut all = body(src);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn run(src: &str) -> Run {
    match only(src) {
        Instruction::Run(r) => r,
        other => panic!("not RUN: {other:?}"),
    }
}

fn copy(src: &str) -> Copy {
    match only(src) {
        Instruction::Copy(c) => c,
        other => panic!("not COPY: {other:?}"),
    }
}

fn add(src: &str) -> Add {
    match only(src) {
        Instruction::Add(a) => a,
        other => panic!("not ADD: {other:?}"),
    }
}

#[test]
fn stages_and_global_args() {
    let d = parse(
        "ARG BASE=debian:12 VARIANT\nFROM --platform=$BUILDPLATFORM ${BASE} AS Build\nRUN make\nFROM scratch\nCOPY --from=build /out /\n",
    );
    assert_eq!(d.global_args.len(), 1);
    let names: Vec<_> = d.global_args[0]
        .value
        .iter()
        .map(|a| (a.name.as_str(), a.default.as_deref()))
        .collect();
    assert_eq!(names, vec![("BASE", Some("debian:12")), ("VARIANT", None)]);
    assert_eq!(d.stages.len(), 2);
    let build = &d.stages[0];
    assert_eq!(build.name.as_deref(), Some("build"));
    assert_eq!(build.from.value.image, "${BASE}");
    assert_eq!(build.from.value.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!((build.from.line, build.instructions[0].line), (2, 3));
    assert_eq!(d.stage("BUILD").map(|(i, _)| i), Some(0));
    assert_eq!(d.stage("1").map(|(i, _)| i), Some(1));
    assert!(d.stage("nope").is_none());
}

#[test]
fn stage_errors() {
    let e = error("RUN true\nFROM a\n");
    assert_eq!(
        e.to_string(),
        "Dockerfile:1: no build stage in current context"
    );
    let e = error("FROM a AS x\nFROM b AS X\n");
    assert_eq!(
        (e.line, e.kind.clone()),
        (
            2,
            ErrorKind::NotAllowed("duplicate stage name \"x\"".into())
        )
    );
    assert!(matches!(
        error("FROM a AS 1x\n").kind,
        ErrorKind::BadArguments(_)
    ));
    assert!(matches!(
        error("FROM a b\n").kind,
        ErrorKind::BadArguments(_)
    ));
    assert!(matches!(
        error("FROM a AS\n").kind,
        ErrorKind::BadArguments(_)
    ));
    assert_eq!(
        error("ARG A\n").kind,
        ErrorKind::NotAllowed("dockerfile contains no stages to build".into())
    );
}

#[test]
fn run_forms() {
    assert_eq!(
        run("FROM a\nRUN echo  hi\n").command,
        CommandLine::Shell("echo  hi".into())
    );
    assert_eq!(
        run("FROM a\nRUN [\"echo\", \"hi there\"]\n").command,
        CommandLine::Exec(vec!["echo".into(), "hi there".into()])
    );
    let e = error("FROM a\nRUN\n");
    assert_eq!(
        e.to_string(),
        "Dockerfile:2: RUN requires at least one argument"
    );
}

#[test]
fn run_mounts() {
    let r = run(concat!(
        "FROM a\n",
        "RUN --mount=type=cache,target=/var/cache/apt,sharing=locked,id=apt \\\n",
        "    --mount=type=bind,source=go.sum,target=/src/go.sum,from=deps \\\n",
        "    --mount=type=tmpfs,target=/tmp,size=1g \\\n",
        "    --mount=type=secret,id=aws,target=/root/.aws/credentials,required=true,mode=0440,uid=1,gid=2 \\\n",
        "    --mount=type=ssh \\\n",
        "    --mount=type=cache,target=$CACHE_DIR \\\n",
        "    --network=none --security=insecure --device=vendor.com/gpu=all,required \\\n",
        "    make\n"
    ));
    let literal: Vec<_> = r
        .mounts
        .iter()
        .filter_map(|m| match m {
            Expandable::Literal(m) => Some(m.clone()),
            Expandable::Template(_) => None,
        })
        .collect();
    assert_eq!(literal.len(), 5);
    assert_eq!(literal[0].kind, MountType::Cache);
    assert_eq!(literal[0].sharing, Some(CacheSharing::Locked));
    assert_eq!(literal[0].id.as_deref(), Some("apt"));
    assert_eq!(
        (
            literal[1].kind,
            literal[1].read_only,
            literal[1].from.as_deref()
        ),
        (MountType::Bind, true, Some("deps"))
    );
    assert_eq!(
        (literal[2].kind, literal[2].size),
        (MountType::Tmpfs, Some(1 << 30))
    );
    let secret = &literal[3];
    assert_eq!(
        (secret.required, secret.mode, secret.uid, secret.gid),
        (true, Some(0o440), Some(1), Some(2))
    );
    assert_eq!(
        (literal[4].kind, literal[4].id.as_deref()),
        (MountType::Ssh, Some("default"))
    );
    let Expandable::Template(raw) = &r.mounts[5] else {
        panic!("variable mount must wait for expansion")
    };
    assert_eq!(raw, "type=cache,target=$CACHE_DIR");
    let resolved = r.mounts[5]
        .resolve(&mut |v: &str| Ok(v.replace("$CACHE_DIR", "/c")))
        .unwrap();
    assert_eq!(resolved.target.as_deref(), Some("/c"));
    assert_eq!(r.network, Some(NetworkMode::None));
    assert_eq!(r.security, Some(SecurityMode::Insecure));
    assert_eq!(
        (r.devices[0].name.as_str(), r.devices[0].required),
        ("vendor.com/gpu=all", true)
    );
    assert_eq!(r.command, CommandLine::Shell("make".into()));
}

#[test]
fn run_flag_errors_name_the_flag_and_line() {
    let e = error("FROM a\n\nRUN --mount=type=cache,target=/x \\\n  --netwrok=none true\n");
    assert_eq!((e.line, e.end_line), (3, 4));
    assert_eq!(
        e.kind,
        ErrorKind::UnknownFlag {
            instruction: "RUN".into(),
            flag: "netwrok".into()
        }
    );
    assert_eq!(e.to_string(), "Dockerfile:3: unknown flag: netwrok");
    let e = error("FROM a\nRUN --network=bridge true\n");
    assert!(matches!(&e.kind, ErrorKind::BadFlagValue { flag, .. } if flag == "network"));
    let e = error("FROM a\nRUN --mount=type=cache true\n");
    assert!(e.to_string().contains("requires a target"), "{e}");
    // Values with variables are checked once the solver has expanded them.
    let r = run("FROM a\nRUN --mount=type=cache,target=/x,sharing=$S true\n");
    assert!(matches!(&r.mounts[0], Expandable::Template(_)));
    assert!(r.mounts[0]
        .resolve(&mut |v: &str| Ok(v.replace("$S", "sometimes")))
        .is_err());
    assert!(matches!(
        error("FROM a\nRUN --security=root true\n").kind,
        ErrorKind::BadFlagValue { .. }
    ));
    assert!(matches!(
        error("FROM a\nRUN --mount=type=cache,from=$X,target=/x true\n").kind,
        ErrorKind::BadFlagValue { .. }
    ));
}

#[test]
fn run_heredocs() {
    let r = run("FROM a\nRUN <<EOF\napt-get update\napt-get install -y curl\nEOF\n");
    assert_eq!(r.command, CommandLine::Shell("<<EOF".into()));
    assert_eq!(r.heredocs.len(), 1);
    assert_eq!(
        r.heredocs[0].content,
        "apt-get update\napt-get install -y curl\n"
    );
    assert!(r.heredocs[0].expand);

    let r = run("FROM a\nRUN <<-'EOT' python3 -\n\tprint('$HOME')\n\tEOT\n");
    assert!(r.heredocs[0].chomp);
    assert!(!r.heredocs[0].expand, "quoted delimiter disables expansion");
    assert_eq!(r.heredocs[0].body(), "print('$HOME')\n");

    let r = run("FROM a\nRUN <<A <<B cat /dev/fd/3\nfirst\nA\nsecond\nB\n");
    let bodies: Vec<_> = r
        .heredocs
        .iter()
        .map(|h| (h.name.as_str(), h.content.as_str()))
        .collect();
    assert_eq!(bodies, vec![("A", "first\n"), ("B", "second\n")]);

    // Exec form takes no heredocs: the following lines are instructions.
    let e = error("FROM a\nRUN [\"cat\", \"<<EOF\"]\nhello\nEOF\n");
    assert_eq!(e.to_string(), "Dockerfile:3: unknown instruction: hello");
}

#[test]
fn copy_flags_and_forms() {
    let c = copy("FROM a\nCOPY --from=build --chown=app:app --chmod=755 --link --parents --exclude=*.md --exclude=.git src/ lib/ /app/\n");
    assert_eq!(c.files.sources, vec!["src/", "lib/"]);
    assert_eq!(c.files.dest, "/app/");
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.chown.as_deref(), Some("app:app"));
    assert_eq!(c.chmod, Some(Expandable::Literal(Chmod::Octal(0o755))));
    assert!(c.link && c.parents);
    assert_eq!(c.exclude, vec!["*.md", ".git"]);

    let c = copy("FROM a\nCOPY --link=false [\"a file\", \"/dest dir/\"]\n");
    assert_eq!(
        (c.files.sources.clone(), c.files.json, c.link),
        (vec!["a file".to_string()], true, false)
    );

    let c = copy("FROM a\nCOPY --chmod=u=rwX,go=rX . /app/\n");
    let Some(Expandable::Literal(mode)) = c.chmod else {
        panic!("symbolic chmod")
    };
    assert_eq!(mode.apply(0o700, true), 0o755);

    let c = copy("FROM a\nCOPY --chmod=$M a /b\n");
    assert_eq!(
        c.chmod
            .as_ref()
            .map(|m| m.resolve(&mut |_| Ok("644".into()))),
        Some(Ok(Chmod::Octal(0o644)))
    );

    for (src, flag) in [
        ("FROM a\nCOPY --chmod=999 a /b\n", "chmod"),
        ("FROM a\nCOPY --chmod=u+q a /b\n", "chmod"),
        ("FROM a\nCOPY --link=maybe a /b\n", "link"),
        ("FROM a\nCOPY --from a /b\n", "from"),
    ] {
        let e = error(src);
        assert!(
            matches!(&e.kind, ErrorKind::BadFlagValue { flag: f, .. } if f == flag),
            "{src}: {e}"
        );
        assert_eq!(e.line, 2);
    }
    let e = error("FROM a\nCOPY --checksum=sha256:00 a /b\n");
    assert_eq!(e.to_string(), "Dockerfile:2: unknown flag: checksum");
    let e = error("FROM a\nCOPY onlyone\n");
    assert_eq!(
        e.to_string(),
        "Dockerfile:2: COPY requires at least two arguments, but only one was provided. Destination could not be determined."
    );
}

#[test]
fn copy_heredocs() {
    let c = copy("FROM a\nCOPY <<EOF /etc/motd\nhello $USER\nEOF\n");
    assert!(c.files.sources.is_empty());
    assert_eq!(c.files.inline.len(), 1);
    assert_eq!(c.files.inline[0].name, "EOF");
    assert_eq!(c.files.inline[0].content, "hello $USER\n");
    assert!(c.files.inline[0].expand);
    assert_eq!(c.files.dest, "/etc/motd");

    let c = copy("FROM a\nCOPY <<-\"one\" plain.txt <<two /dir/\n\t\tfirst\n\tone\nsecond\ntwo\n");
    let inline: Vec<_> = c
        .files
        .inline
        .iter()
        .map(|f| (f.name.as_str(), f.content.as_str(), f.expand))
        .collect();
    assert_eq!(
        inline,
        vec![("one", "first\n", false), ("two", "second\n", true)]
    );
    assert_eq!(c.files.sources, vec!["plain.txt"]);

    let e = error("FROM a\nCOPY a <<EOF\nx\nEOF\n");
    assert_eq!(
        e.to_string(),
        "Dockerfile:2: COPY cannot accept a heredoc as a destination"
    );
    assert_eq!(e.end_line, 4);
}

#[test]
fn add_flags() {
    let sum = "sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d";
    let a = add(&format!("FROM a\nADD --checksum={sum} --unpack=true --keep-git-dir --chown=1:2 --link https://x/y.tgz /d/\n"));
    assert_eq!(a.checksum.as_deref(), Some(sum));
    assert_eq!((a.unpack, a.keep_git_dir, a.link), (Some(true), true, true));
    assert_eq!(a.files.sources, vec!["https://x/y.tgz"]);
    assert_eq!(
        add("FROM a\nADD --checksum=be1f38e https://g/r.git /\n")
            .checksum
            .as_deref(),
        Some("be1f38e")
    );
    assert!(matches!(
        error("FROM a\nADD --checksum=md5:abc u /d\n").kind,
        ErrorKind::BadFlagValue { .. }
    ));
    assert_eq!(
        error("FROM a\nADD --from=x a /b\n").to_string(),
        "Dockerfile:2: unknown flag: from"
    );
    assert_eq!(
        error("FROM a\nADD --parents a /b\n").to_string(),
        "Dockerfile:2: unknown flag: parents"
    );
}

#[test]
fn env_arg_label() {
    let all = body(concat!(
        "FROM a\n",
        "ENV A=1 B=\"two words\" C=three\\ words\n",
        "ENV LEGACY some value\n",
        "ARG X Y=2 Z=\"q\"\n",
        "LABEL org.opencontainers.image.title=\"t\" version=1\n",
    ));
    let Instruction::Env(env) = &all[0] else {
        panic!()
    };
    let pairs: Vec<_> = env
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_str()))
        .collect();
    assert_eq!(
        pairs,
        vec![("A", "1"), ("B", "\"two words\""), ("C", "three\\ words")]
    );
    let Instruction::Env(legacy) = &all[1] else {
        panic!()
    };
    assert_eq!(
        (legacy[0].key.as_str(), legacy[0].value.as_str()),
        ("LEGACY", "some value")
    );
    let Instruction::Arg(args) = &all[2] else {
        panic!()
    };
    let defs: Vec<_> = args
        .iter()
        .map(|a| (a.name.as_str(), a.default.as_deref()))
        .collect();
    assert_eq!(
        defs,
        vec![("X", None), ("Y", Some("2")), ("Z", Some("\"q\""))]
    );
    let Instruction::Label(labels) = &all[3] else {
        panic!()
    };
    assert_eq!(labels.len(), 2);

    assert_eq!(
        error("FROM a\nENV PATH\n").to_string(),
        "Dockerfile:2: ENV must have two arguments"
    );
    assert_eq!(
        error("FROM a\nENV =x\n").to_string(),
        "Dockerfile:2: ENV names can not be blank"
    );
    assert_eq!(
        error("FROM a\nENV\n").to_string(),
        "Dockerfile:2: ENV requires at least one argument"
    );
    assert_eq!(
        error("FROM a\nLABEL\n").to_string(),
        "Dockerfile:2: LABEL requires at least one argument"
    );
    assert_eq!(
        error("FROM a\nARG\n").to_string(),
        "Dockerfile:2: ARG requires at least one argument"
    );
    assert_eq!(
        error("FROM a\nARG =1\n").to_string(),
        "Dockerfile:2: ARG names can not be blank"
    );
    assert_eq!(error("FROM a\nENV a=1 b\n").line, 2);
}

#[test]
fn simple_instructions() {
    let all = body(concat!(
        "FROM a\n",
        "EXPOSE 80 443/tcp 53/udp\n",
        "VOLUME [\"/data\", \"/logs\"]\n",
        "VOLUME /cache /tmp/x\n",
        "WORKDIR /app\n",
        "USER app:app\n",
        "SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\n",
        "STOPSIGNAL SIGTERM\n",
        "MAINTAINER Jane <jane@example.com>\n",
        "CMD [\"serve\", \"--port\", \"80\"]\n",
        "ENTRYPOINT exec /bin/app\n",
    ));
    assert_eq!(
        all[0],
        Instruction::Expose(vec!["80".into(), "443/tcp".into(), "53/udp".into()])
    );
    assert_eq!(
        all[1],
        Instruction::Volume(vec!["/data".into(), "/logs".into()])
    );
    assert_eq!(
        all[2],
        Instruction::Volume(vec!["/cache".into(), "/tmp/x".into()])
    );
    assert_eq!(all[3], Instruction::Workdir("/app".into()));
    assert_eq!(all[4], Instruction::User("app:app".into()));
    assert_eq!(
        all[5],
        Instruction::Shell(vec![
            "/bin/bash".into(),
            "-o".into(),
            "pipefail".into(),
            "-c".into()
        ])
    );
    assert_eq!(all[6], Instruction::StopSignal("SIGTERM".into()));
    assert_eq!(
        all[7],
        Instruction::Maintainer("Jane <jane@example.com>".into())
    );
    assert_eq!(
        all[8],
        Instruction::Cmd(CommandLine::Exec(vec![
            "serve".into(),
            "--port".into(),
            "80".into()
        ]))
    );
    assert_eq!(
        all[9],
        Instruction::Entrypoint(CommandLine::Shell("exec /bin/app".into()))
    );

    assert_eq!(
        error("FROM a\nSHELL /bin/bash -c\n").to_string(),
        "Dockerfile:2: SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(
        error("FROM a\nWORKDIR\n").to_string(),
        "Dockerfile:2: WORKDIR requires exactly one argument"
    );
    assert_eq!(
        error("FROM a\nUSER\n").to_string(),
        "Dockerfile:2: USER requires exactly one argument"
    );
    assert_eq!(
        error("FROM a\nEXPOSE\n").to_string(),
        "Dockerfile:2: EXPOSE requires at least one argument"
    );
    assert_eq!(
        error("FROM a\nVOLUME [\"\"]\n").to_string(),
        "Dockerfile:2: VOLUME specified can not be an empty string"
    );
    assert_eq!(
        error("FROM a\nCMD --x=1 a\n").to_string(),
        "Dockerfile:2: unknown flag: x"
    );
    assert_eq!(
        error("FROM a\nCMD [\"a\", 1]\n").to_string(),
        "Dockerfile:2: when using JSON array syntax, arrays must be comprised of strings only"
    );
}

#[test]
fn healthcheck() {
    let Instruction::Healthcheck(Healthcheck::Cmd(h)) = only(
        "FROM a\nHEALTHCHECK --interval=30s --timeout=5s --start-period=1m --start-interval=2s --retries=4 CMD curl -f http://localhost/ || exit 1\n",
    ) else {
        panic!("HEALTHCHECK CMD")
    };
    assert_eq!(
        h.test,
        CommandLine::Shell("curl -f http://localhost/ || exit 1".into())
    );
    assert_eq!(h.interval, Some(Duration::from_secs(30)));
    assert_eq!(h.timeout, Some(Duration::from_secs(5)));
    assert_eq!(h.start_period, Some(Duration::from_secs(60)));
    assert_eq!(h.start_interval, Some(Duration::from_secs(2)));
    assert_eq!(h.retries, Some(4));
    let Instruction::Healthcheck(Healthcheck::Cmd(h)) =
        only("FROM a\nHEALTHCHECK CMD [\"/bin/check\", \"-q\"]\n")
    else {
        panic!("exec form")
    };
    assert_eq!(
        h.test,
        CommandLine::Exec(vec!["/bin/check".into(), "-q".into()])
    );
    assert_eq!(
        only("FROM a\nhealthcheck none\n"),
        Instruction::Healthcheck(Healthcheck::None)
    );

    for (src, message) in [
        (
            "FROM a\nHEALTHCHECK\n",
            "HEALTHCHECK requires at least one argument",
        ),
        (
            "FROM a\nHEALTHCHECK CMD\n",
            "Missing command after HEALTHCHECK CMD",
        ),
        (
            "FROM a\nHEALTHCHECK NONE x\n",
            "HEALTHCHECK NONE takes no arguments",
        ),
        (
            "FROM a\nHEALTHCHECK CONNECT TCP 7000\n",
            "Unknown type \"CONNECT\" in HEALTHCHECK (try CMD)",
        ),
    ] {
        assert_eq!(error(src).to_string(), format!("Dockerfile:2: {message}"));
    }
    for bad in [
        "--interval=5",
        "--timeout=-1s",
        "--retries=-1",
        "--start-period=1ns",
        "--retries=x",
    ] {
        let e = error(&format!("FROM a\nHEALTHCHECK {bad} CMD true\n"));
        assert!(
            matches!(e.kind, ErrorKind::BadFlagValue { .. }),
            "{bad}: {e}"
        );
    }
}

#[test]
fn onbuild() {
    let Instruction::Onbuild(o) = only("FROM a\nONBUILD RUN --mount=type=cache,target=/c make\n")
    else {
        panic!()
    };
    assert_eq!(o.expression, "RUN --mount=type=cache,target=/c make");
    assert!(matches!(*o.trigger, Instruction::Run(_)));
    let Instruction::Onbuild(o) = only("FROM a\nONBUILD COPY <<EOF /x\nhi\nEOF\n") else {
        panic!()
    };
    let Instruction::Copy(c) = *o.trigger else {
        panic!()
    };
    assert_eq!(c.files.inline[0].content, "hi\n");

    assert_eq!(
        error("FROM a\nONBUILD ONBUILD RUN x\n").to_string(),
        "Dockerfile:2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(
        error("FROM a\nONBUILD FROM b\n").to_string(),
        "Dockerfile:2: FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        error("FROM a\nONBUILD maintainer me\n").to_string(),
        "Dockerfile:2: MAINTAINER isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        error("FROM a\nONBUILD\n").to_string(),
        "Dockerfile:2: ONBUILD requires at least one argument"
    );
    assert_eq!(
        error("FROM a\nONBUILD COPY --bogus a b\n").to_string(),
        "Dockerfile:2: unknown flag: bogus"
    );
}

#[test]
fn unknown_instruction_and_render() {
    let src = "FROM a\n# a comment\nRUNN echo \\\n  hi\n";
    let e = error(src);
    assert_eq!(e.kind, ErrorKind::UnknownInstruction("RUNN".into()));
    assert_eq!((e.line, e.end_line), (3, 4));
    assert_eq!(
        e.render("Dockerfile", src),
        "Dockerfile:3: unknown instruction: RUNN\n--------------------\n   3 | >>> RUNN echo \\\n   4 | >>>   hi\n--------------------\n"
    );
}

#[test]
fn directives_and_escape() {
    let d = parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM a\nRUN echo `\n  hi\n");
    assert_eq!(d.escape, '`');
    assert!(d.warnings.is_empty());
    let names: Vec<_> = d
        .directives
        .iter()
        .map(|x| (x.name.as_str(), x.value.as_str(), x.line))
        .collect();
    assert_eq!(
        names,
        vec![("syntax", "docker/dockerfile:1", 1), ("escape", "`", 2)]
    );
    assert_eq!(
        d.stages[0].instructions[0].value,
        Instruction::Run(run("FROM a\nRUN echo   hi\n"))
    );
    let d = parse("# syntax=example.com/other:1\nFROM a\n");
    assert_eq!(d.warnings.len(), 1);
    assert_eq!(d.warnings[0].line, 1);
    let e = error("# escape=x\nFROM a\n");
    assert_eq!(
        e.to_string(),
        "Dockerfile:1: invalid escape token 'x' does not match ` or \\"
    );
    let e = error("# escape=`\n# escape=\\\nFROM a\n");
    assert_eq!(
        e.to_string(),
        "Dockerfile:2: only one escape parser directive can be used"
    );
}

/// The error cases of BuildKit's instructions/parse_test.go.
#[test]
fn buildkit_instruction_error_cases() {
    use builder::dockerfile::parse as parse_tree;
    let first_error = |src: &str| {
        let tree = parse_tree(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        match Instruction::from_node(&tree.ast.children[0]) {
            Ok(i) => panic!("{src} must fail, got {i:?}"),
            Err(e) => e.kind.to_string(),
        }
    };
    for cmd in ["MAINTAINER", "WORKDIR", "USER", "STOPSIGNAL"] {
        assert_eq!(
            first_error(cmd),
            format!("{cmd} requires exactly one argument")
        );
    }
    for cmd in ["ENV", "LABEL", "ONBUILD", "HEALTHCHECK", "EXPOSE", "VOLUME"] {
        assert_eq!(
            first_error(cmd),
            format!("{cmd} requires at least one argument")
        );
    }
    for cmd in ["ADD", "COPY"] {
        assert_eq!(
            first_error(&format!("{cmd} arg1")),
            format!("{cmd} requires at least two arguments, but only one was provided. Destination could not be determined.")
        );
    }
    for (src, expected) in [
        (
            "COPY\t\n\t\tquux \\\n      bar",
            "COPY requires at least two arguments",
        ),
        (
            "ONBUILD FROM scratch",
            "FROM isn't allowed as an ONBUILD trigger",
        ),
        ("MAINTAINER --boo joe@example.com", "unknown flag: boo"),
        (
            "ONBUILD ONBUILD RUN touch foobar",
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        ),
        ("FOO bar", "unknown instruction: FOO"),
        ("foo bar", "unknown instruction: foo"),
    ] {
        let message = first_error(src);
        assert!(
            message.contains(expected),
            "{src:?}: {message:?} lacks {expected:?}"
        );
    }
}

#[test]
fn crlf_line_endings() {
    let d = parse("FROM a\r\nRUN echo \\\r\n  hi\r\nCOPY <<EOF /x\r\nbody\r\nEOF\r\n");
    let Instruction::Run(r) = &d.stages[0].instructions[0].value else {
        panic!()
    };
    assert_eq!(r.command, CommandLine::Shell("echo   hi".into()));
    let Instruction::Copy(c) = &d.stages[0].instructions[1].value else {
        panic!()
    };
    assert_eq!(c.files.inline[0].content, "body\r\n");
    assert_eq!(
        (
            d.stages[0].instructions[1].line,
            d.stages[0].instructions[1].end_line
        ),
        (4, 6)
    );
}

#[test]
fn bytes_must_be_utf8() {
    let e = Dockerfile::parse_bytes(b"FROM a\nRUN echo \xff\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile:2: the Dockerfile is not valid UTF-8 text"
    );
    assert!(Dockerfile::parse_bytes("FROM a\nLABEL k=\"é\"\n".as_bytes()).is_ok());
    assert_eq!(
        Dockerfile::parse_bytes(b"").unwrap_err().to_string(),
        "Dockerfile:1: file with no instructions"
    );
    assert_eq!(
        Dockerfile::parse_bytes(b"# only\n\n")
            .unwrap_err()
            .to_string(),
        "Dockerfile:2: file with no instructions"
    );
}

#[test]
fn run_scripts_apply_heredocs_like_buildkit() {
    use builder::dockerfile::instructions::RunScript;
    assert_eq!(
        run("FROM a\nRUN echo hi\n").script(),
        RunScript::Command(CommandLine::Shell("echo hi".into()))
    );
    assert_eq!(
        run("FROM a\nRUN <<-EOF\n\techo one\n\techo two\n\tEOF\n").script(),
        RunScript::Shell("echo one\necho two\n".into())
    );
    assert_eq!(
        run("FROM a\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n").script(),
        RunScript::Executable {
            name: "EOF".into(),
            content: "#!/usr/bin/env python3\nprint(1)\n".into()
        }
    );
    assert_eq!(
        run("FROM a\nRUN python3 - <<A && cat <<B\nprint(1)\nA\nhello\nB\n").script(),
        RunScript::Shell("python3 - <<A && cat <<B\nprint(1)\nA\nhello\nB".into())
    );
}
