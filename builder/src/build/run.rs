//! RUN: the command runs through the executor (runtime-exec) on an overlay snapshot of the
//! stage; its changes become the step's layer.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use image_store::{HeldCacheMount, MountSharing};
use runtime_exec::{ContainerStdio, OverlayRootfs, RunOptions};
use serde_json::{json, Value};

use super::snapshot::{
    commit_upper, enter_private_mount_namespace, exists_in_lowers, lower_dirs, mount_read_only,
    with_merged, Workspace,
};
use super::ssh_agent::AgentRelay;
use super::stage::{step_error, Layer, Solver, StageState, PROXY_ARGS};
use super::{key_of, BuildError, RunSandbox};
use crate::dockerfile::instructions::{
    CommandLine, Located, NetworkMode, Run, RunScript, SecurityMode,
};
use crate::dockerfile::{CacheSharing, Instruction, Mount, MountType};
use crate::image_config::{shell_of, Scope};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How many lines of a failing step's output the error repeats.
const ERROR_TAIL_LINES: usize = 12;

/// What a RUN executes, decided before it runs: the cache key is made of exactly this.
pub(crate) struct Plan {
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
    user: String,
    network: NetworkMode,
    /// `--security=insecure`: all capabilities, no seccomp filter, no masked paths.
    insecure: bool,
    mounts: Vec<Mount>,
    /// A heredoc script run as a file: (name, content).
    script_file: Option<(String, String)>,
    /// `--device`: the CDI devices it gets, by qualified name (`vendor.com/class=name`).
    devices: Vec<String>,
}

impl Plan {
    /// The ids of the cache mounts this RUN names.
    pub(crate) fn cache_mount_ids(&self) -> impl Iterator<Item = String> + '_ {
        self.mounts
            .iter()
            .filter(|m| m.kind == MountType::Cache)
            .map(cache_mount_id)
    }
}

/// A cache mount's id: its `id=`, else its target (reference.md, "RUN --mount=type=cache").
fn cache_mount_id(m: &Mount) -> String {
    m.id.clone()
        .unwrap_or_else(|| m.target.clone().unwrap_or_default())
}

/// Docker's default seccomp profile for docker's default capabilities, as a Spec's
/// `linux.seccomp`; resolved once per process.
fn default_seccomp() -> Result<&'static Value, BuildError> {
    static PROFILE: std::sync::OnceLock<Result<Value, String>> = std::sync::OnceLock::new();
    PROFILE
        .get_or_init(|| {
            use runtime_exec::seccomp::profile;
            let caps =
                runtime_exec::capabilities::docker_set(&[], &[]).map_err(|e| e.to_string())?;
            let seccomp =
                profile::resolve(profile::DEFAULT_PROFILE, &caps).map_err(|e| e.to_string())?;
            serde_json::to_value(seccomp).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| BuildError::other(format!("the default seccomp profile: {e}")))
}

/// What a RUN's mounts need kept until its container has exited: the relays of its ssh
/// mounts, the holds on its cache mounts (by id).
struct HeldByRun {
    agent_relays: Vec<AgentRelay>,
    cache_mounts: BTreeMap<String, HeldCacheMount>,
}

impl HeldByRun {
    /// Holds every cache mount of `plan`, each id once (its first mount's `sharing`), in id
    /// order: two steps waiting for the same locked mounts take them in the same order, so
    /// neither can hold one the other waits for while it waits itself.
    fn for_plan(solver: &Solver, plan: &Plan) -> Result<HeldByRun, BuildError> {
        let mut wanted: BTreeMap<String, MountSharing> = BTreeMap::new();
        for m in plan.mounts.iter().filter(|m| m.kind == MountType::Cache) {
            let sharing = match m.sharing.unwrap_or(CacheSharing::Shared) {
                CacheSharing::Shared => MountSharing::Shared,
                CacheSharing::Private => MountSharing::Private,
                CacheSharing::Locked => MountSharing::Locked,
            };
            wanted.entry(cache_mount_id(m)).or_insert(sharing);
        }
        let mut cache_mounts = BTreeMap::new();
        for (id, sharing) in wanted {
            let held = solver.store.hold_cache_mount(&id, sharing)?;
            cache_mounts.insert(id, held);
        }
        Ok(HeldByRun {
            agent_relays: Vec::new(),
            cache_mounts,
        })
    }
}

/// Decides what the RUN executes; the cache key is made of exactly this.
pub(crate) fn plan(
    solver: &Solver,
    state: &StageState,
    run: &Run,
    at: &Located<Instruction>,
) -> Result<Plan, BuildError> {
    let config = &state.config;
    let mut script_file = None;
    let args = match run.script() {
        RunScript::Command(CommandLine::Exec(args)) => args,
        RunScript::Command(CommandLine::Shell(text)) | RunScript::Shell(text) => {
            let mut a = shell_of(config);
            a.push(text);
            a
        }
        RunScript::Executable { name, content } => {
            let path = format!("/dev/pipes/{name}");
            script_file = Some((name, content));
            vec![path]
        }
    };
    // Build args are environment variables of RUN, below the image's own Env.
    let mut env: BTreeMap<String, String> = state.args.clone();
    for proxy in PROXY_ARGS {
        if let Some(v) = solver.options.build_args.get(proxy) {
            env.entry(proxy.to_string()).or_insert_with(|| v.clone());
        }
    }
    let rc = config.config.clone().unwrap_or_default();
    for kv in &rc.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        env.insert(k.to_string(), v.to_string());
    }
    env.entry("PATH".to_string())
        .or_insert_with(|| DEFAULT_PATH.to_string());
    let scope = Scope::new(config, &state.args);
    let mut mounts = Vec::new();
    for m in &run.mounts {
        let mut expand = |w: &str| {
            solver
                .lex
                .process_word(w, &scope)
                .map_err(|e| e.to_string())
        };
        mounts.push(m.resolve(&mut expand).map_err(|e| step_error(at, e))?);
    }
    // As BuildKit's llb: ssh mounts without a target get /run/buildkit/ssh_agent.N, and the
    // first one is SSH_AUTH_SOCK unless the stage sets it.
    let ssh_mounts = mounts.iter_mut().filter(|m| m.kind == MountType::Ssh);
    for (n, m) in ssh_mounts.enumerate() {
        m.target
            .get_or_insert_with(|| format!("/run/buildkit/ssh_agent.{n}"));
    }
    if let Some(first) = mounts.iter().find(|m| m.kind == MountType::Ssh) {
        let target = first.target.clone().unwrap_or_default();
        env.entry("SSH_AUTH_SOCK".to_string()).or_insert(target);
    }
    let devices = cdi_devices(solver, run, at)?;
    let insecure = run.security == Some(SecurityMode::Insecure);
    if insecure && !solver.options.allow_insecure {
        return Err(step_error(
            at,
            "RUN --security=insecure needs the security.insecure entitlement: pass --allow security.insecure",
        ));
    }
    Ok(Plan {
        args,
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd: if rc.working_dir.is_empty() {
            "/".into()
        } else {
            rc.working_dir.clone()
        },
        user: rc.user.clone(),
        network: run.network.unwrap_or(if solver.options.sandbox.no_network {
            NetworkMode::None
        } else {
            NetworkMode::Default
        }),
        insecure,
        mounts,
        script_file,
        devices,
    })
}

/// `RUN --device`: the CDI devices the step gets, by qualified name. As in BuildKit, a device
/// needs the `device` entitlement (`--allow device`) unless its spec auto-allows it, and a
/// request that finds nothing fails the step only when it is `required`.
fn cdi_devices(
    solver: &Solver,
    run: &Run,
    at: &Located<Instruction>,
) -> Result<Vec<String>, BuildError> {
    let mut devices: Vec<String> = Vec::new();
    if run.devices.is_empty() {
        return Ok(devices); // a build without --device never reads the CDI specs
    }
    let registry = solver.cdi();
    for request in &run.devices {
        let found = registry
            .find(&request.name)
            .map_err(|e| step_error(at, e))?;
        if found.is_empty() {
            let missing = registry.not_found_message(&request.name);
            if request.required {
                return Err(step_error(at, missing));
            }
            solver
                .progress
                .message(&format!("WARNING: {missing}; the step runs without it"));
        }
        for name in found {
            if !solver.options.allow_devices && !registry.auto_allowed(&name) {
                return Err(step_error(
                    at,
                    format!("device {name} needs the device entitlement: pass --allow device"),
                ));
            }
            if !devices.contains(&name) {
                devices.push(name);
            }
        }
    }
    Ok(devices)
}

pub(crate) fn cache_key(
    solver: &Solver,
    state: &StageState,
    plan: &Plan,
    at: &Located<Instruction>,
) -> Result<oci::Digest, BuildError> {
    // Proxy settings and secret values never enter a key (reference.md, "Predefined ARGs").
    let env: Vec<&str> = plan
        .env
        .iter()
        .filter(|kv| !PROXY_ARGS.iter().any(|p| kv.starts_with(&format!("{p}="))))
        .map(String::as_str)
        .collect();
    let mounts: Vec<String> = plan.mounts.iter().map(|m| format!("{m:?}")).collect();
    let network = format!("{:?}", plan.network);
    let script = plan
        .script_file
        .as_ref()
        .map(|(n, c)| format!("{n}\0{c}"))
        .unwrap_or_default();
    // A bind mount makes the step depend on what it binds: a context's content, or the
    // state of the stage or image it comes from.
    let mut bound = Vec::new();
    for m in plan.mounts.iter().filter(|m| m.kind == MountType::Bind) {
        let source = m.source.as_deref().unwrap_or(".");
        let sum = match &m.from {
            None => super::copy::context_checksum(solver, None, source)
                .map_err(|e| step_error(at, e))?,
            Some(from) if solver.is_named_directory(from) => {
                super::copy::context_checksum(solver, Some(from), source)
                    .map_err(|e| step_error(at, e))?
            }
            Some(from) => match solver.stage_index(from, usize::MAX) {
                Some(stage) => solver.solve(stage)?.fs_key.clone(),
                None => solver.image_layers(from).map_err(|e| step_error(at, e))?.1,
            },
        };
        bound.push(sum.to_string());
    }
    let context_sum = bound.join(",");
    let (args, env) = (plan.args.join("\0"), env.join("\0"));
    let mounts = mounts.join("\0");
    let mut parts: Vec<&[u8]> = vec![
        b"run",
        state.fs_key.as_str().as_bytes(),
        args.as_bytes(),
        env.as_bytes(),
        plan.cwd.as_bytes(),
        plan.user.as_bytes(),
        network.as_bytes(),
        mounts.as_bytes(),
        script.as_bytes(),
        context_sum.as_bytes(),
    ];
    if plan.insecure {
        parts.push(b"insecure");
    }
    let devices = plan.devices.join("\0");
    if !devices.is_empty() {
        parts.push(devices.as_bytes());
    }
    // Only a sandbox that differs from the default is keyed, so default keys stay as they were.
    let sandbox = &solver.options.sandbox;
    let sandbox_key = format!("{sandbox:?}");
    if *sandbox != RunSandbox::default() {
        parts.push(sandbox_key.as_bytes());
    }
    Ok(key_of(&parts))
}

/// Runs the planned command and returns its layer (`None` when it changed nothing).
pub(crate) fn execute(
    solver: &Solver,
    state: &StageState,
    plan: &Plan,
    at: &Located<Instruction>,
    step: &super::progress::Step,
    in_image: bool,
) -> Result<Option<Layer>, BuildError> {
    let store = solver.store;
    let ws = Workspace::new(store)?;
    let lower = lower_dirs(store, &state.layers, &ws)?;
    let (uid, gid, groups) = if plan.user.is_empty() {
        (0, 0, Vec::new())
    } else {
        let user = plan.user.clone();
        with_merged(&ws, &lower, move |root| {
            runtime_exec::user::resolve(root, &user).map_err(|e| BuildError::other(e.to_string()))
        })
        .map_err(|e| step_error(at, e))?
    };
    let rootfs = ws.path("merged");
    let mut spec =
        runtime_exec::defaults::docker_spec(&rootfs, &plan.args).map_err(|e| step_error(at, e))?;
    let mut value = serde_json::to_value(&spec).map_err(BuildError::other)?;
    value["hostname"] = json!("buildkitsandbox");
    value["process"]["env"] = json!(plan.env);
    value["process"]["cwd"] = json!(plan.cwd);
    value["process"]["user"] = json!({ "uid": uid, "gid": gid, "additionalGids": groups });
    if !plan.insecure {
        // BuildKit's sandbox mode: docker's default seccomp profile.
        value["linux"]["seccomp"] = default_seccomp()?.clone();
    }
    let mut extra_mounts = Vec::new();
    if plan.network != NetworkMode::None {
        // rbuild's default network is the host's, as `docker build --network host`: RUN apt-get
        // works with no bridge to set up (DESIGN.md).
        if let Some(ns) = value["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
        for file in ["/etc/resolv.conf", "/etc/hosts"] {
            if Path::new(file).exists() {
                extra_mounts.push(json!({ "destination": file, "type": "bind", "source": file, "options": ["rbind", "ro"] }));
            }
        }
    }
    apply_sandbox(
        &mut value,
        &mut extra_mounts,
        &solver.options.sandbox,
        plan,
        &ws,
    )?;
    if let Some((name, content)) = &plan.script_file {
        let path = ws.path("script");
        fs::write(&path, content).map_err(BuildError::other)?;
        set_mode(&path, 0o755)?;
        extra_mounts.push(json!({ "destination": format!("/dev/pipes/{name}"), "type": "bind", "source": path, "options": ["rbind", "ro"] }));
    }
    let mut held = HeldByRun::for_plan(solver, plan)?;
    for (n, m) in plan.mounts.iter().enumerate() {
        if let Some(mount) = mount_json(solver, &ws, n, m, at, &mut held)? {
            extra_mounts.push(mount);
        }
        // `--mount=type=secret,env=NAME`: the secret as an environment variable of this run
        // only; it is not in the plan, so it never reaches the cache key.
        if let (MountType::Secret, Some(var)) = (m.kind, &m.env) {
            let id = m.id.clone().unwrap_or_default();
            if let Some(secret) = solver.options.secrets.get(&id) {
                let entry = format!("{var}={}", String::from_utf8_lossy(secret));
                if let Some(env) = value["process"]["env"].as_array_mut() {
                    env.push(json!(entry));
                }
            } else if m.required {
                return Err(step_error(
                    at,
                    format!("secret {id} not found (pass it with --secret id={id},env=VAR)"),
                ));
            }
        }
    }
    if let Some(mounts) = value["mounts"].as_array_mut() {
        mounts.extend(extra_mounts.iter().cloned());
    }
    spec = serde_json::from_value(value).map_err(BuildError::other)?;
    if !plan.devices.is_empty() {
        solver
            .cdi()
            .inject(&mut spec, &plan.devices)
            .map_err(|e| step_error(at, e))?;
    }
    if plan.insecure {
        // BuildKit's insecure mode is docker's --privileged.
        runtime_exec::defaults::make_privileged(&mut spec).map_err(|e| step_error(at, e))?;
    }

    let (read_end, write_end) = nix::unistd::pipe().map_err(BuildError::other)?;
    let stdio = ContainerStdio {
        stdin: None,
        stdout: Some(write_end.try_clone().map_err(BuildError::other)?),
        stderr: Some(write_end),
    };
    // One id (and cgroup) per RUN: stages solved in parallel run their steps at once.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut options = RunOptions::new(format!("rbuild-run-{}-{run}", std::process::id()));
    // Volatile: apt-get's dpkg, for one, fsyncs every file it unpacks, a sync per file that a
    // build step does not need (a step that fails or is cut off is thrown away whole).
    // The layer is made durable once, when the step commits it (commit_upper).
    options.overlay = Some(OverlayRootfs {
        lower: lower.clone(),
        upper: ws.upper(),
        work: ws.path("work"),
        volatile: true,
    });
    // What RUN --mount=type=bind mounts at ws/bind-N first, in a private mount namespace that
    // the executor's helper process inherits: stages and images (read-only, or writable), and
    // the context's directories that a writable bind covers (a read-only one binds them
    // directly). A writable bind is an overlay whose upper directory is in the workspace, so
    // its writes are thrown away with the step, as BuildKit's are, and never reach the source.
    let mut bind_sources = Vec::new();
    for (n, m) in plan.mounts.iter().enumerate() {
        if m.kind != MountType::Bind {
            continue;
        }
        let lower = match &m.from {
            Some(from) if !solver.is_named_directory(from) => {
                let layers = match solver.stage_index(from, usize::MAX) {
                    Some(stage) => solver.solve(stage)?.layers.clone(),
                    None => solver.image_layers(from).map_err(|e| step_error(at, e))?.0,
                };
                lower_dirs(store, &layers, &ws)?
            }
            _ if m.read_only => continue,
            context => {
                let source = bind_context_source(solver, m, context.as_deref())
                    .map_err(|e| step_error(at, e))?;
                vec![writable_bind_root(&source).0]
            }
        };
        bind_sources.push((lower, ws.path(&format!("bind-{n}")), !m.read_only));
    }
    let tail = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if !bind_sources.is_empty() {
                    enter_private_mount_namespace()?;
                    for (n, (lower, target, writable)) in bind_sources.iter().enumerate() {
                        if *writable {
                            mount_writable(lower, target, &ws.path(&format!("bind-rw-{n}")))?;
                        } else {
                            mount_read_only(lower, target, &ws.path("empty"))?;
                        }
                    }
                }
                let reader = scope.spawn(|| relay_output(read_end, step));
                let status = runtime_exec::run_with_stdio(&spec, &options, stdio);
                let tail = reader.join().unwrap_or_default();
                status.map(|s| (s, tail)).map_err(|e| step_error(at, e))
            })
            .join()
            .map_err(|_| BuildError::other("a build thread panicked"))?
    });
    let (status, tail) = tail?;
    drop(held);
    if !status.success() {
        let mut message = format!(
            "process {:?} did not complete successfully: exit code: {}",
            plan.args.join(" "),
            status.code()
        );
        if !tail.is_empty() {
            message.push_str("\n--- last lines of output ---\n");
            message.push_str(&tail.into_iter().collect::<Vec<_>>().join("\n"));
        }
        return Err(step_error(at, message));
    }
    let destinations: Vec<String> = spec
        .mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().to_string_lossy().into_owned())
        .collect();
    remove_mount_stubs(&ws.upper(), &lower, &destinations);
    commit_upper(store, &ws, solver.options, in_image, true)
}

/// `--add-host` (an /etc/hosts of the step's own), `--ulimit` and `--shm-size` in the spec.
fn apply_sandbox(
    spec: &mut Value,
    extra_mounts: &mut Vec<Value>,
    sandbox: &RunSandbox,
    plan: &Plan,
    ws: &Workspace,
) -> Result<(), BuildError> {
    if !sandbox.extra_hosts.is_empty() {
        let mut hosts = match plan.network {
            NetworkMode::None => {
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_string()
            }
            _ => fs::read_to_string("/etc/hosts").unwrap_or_default(),
        };
        for (name, address) in &sandbox.extra_hosts {
            hosts.push_str(&format!("{address}\t{name}\n"));
        }
        let path = ws.path("hosts");
        fs::write(&path, hosts).map_err(BuildError::other)?;
        extra_mounts.retain(|m| m["destination"] != "/etc/hosts");
        extra_mounts.push(json!({ "destination": "/etc/hosts", "type": "bind", "source": path, "options": ["rbind", "ro"] }));
    }
    if !sandbox.ulimits.is_empty() {
        let rlimits = spec["process"]["rlimits"]
            .as_array_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut rlimits: Vec<Value> = rlimits
            .into_iter()
            .filter(|r| {
                !sandbox
                    .ulimits
                    .iter()
                    .any(|(t, _, _)| r["type"] == t.as_str())
            })
            .collect();
        for (kind, soft, hard) in &sandbox.ulimits {
            rlimits.push(json!({ "type": kind, "soft": soft, "hard": hard }));
        }
        spec["process"]["rlimits"] = json!(rlimits);
    }
    if let (Some(size), Some(mounts)) = (sandbox.shm_size, spec["mounts"].as_array_mut()) {
        for shm in mounts.iter_mut().filter(|m| m["destination"] == "/dev/shm") {
            shm["options"] = json!([
                "nosuid",
                "noexec",
                "nodev",
                "mode=1777",
                format!("size={size}")
            ]);
        }
    }
    Ok(())
}

/// Prints the container's output as step lines; returns its last lines for an error report.
fn relay_output(read_end: OwnedFd, step: &super::progress::Step) -> VecDeque<String> {
    let mut tail = VecDeque::new();
    let reader = BufReader::new(fs::File::from(read_end));
    for line in reader.split(b'\n').map_while(Result::ok) {
        let line = String::from_utf8_lossy(&line).into_owned();
        step.output(&line);
        if tail.len() == ERROR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    tail
}

/// The path in the build context (or the named context `context`) that a bind mount binds.
fn bind_context_source(
    solver: &Solver,
    m: &Mount,
    context: Option<&str>,
) -> Result<PathBuf, String> {
    super::copy::context_path(solver, context, m.source.as_deref().unwrap_or("."))
}

/// The directory a writable bind of `source` lays its overlay over, and, when `source` is a
/// file (overlayfs layers are directories), the name to bind from the overlay.
fn writable_bind_root(source: &Path) -> (PathBuf, Option<std::ffi::OsString>) {
    match (source.is_dir(), source.parent(), source.file_name()) {
        (false, Some(parent), Some(name)) => (parent.to_path_buf(), Some(name.to_os_string())),
        _ => (source.to_path_buf(), None),
    }
}

/// Mounts `lower` (bottom first) writable at `target`: an overlay whose upper and work
/// directories are made under `scratch`, in the workspace, and go with it.
fn mount_writable(lower: &[PathBuf], target: &Path, scratch: &Path) -> Result<(), BuildError> {
    let (upper, work) = (scratch.join("upper"), scratch.join("work"));
    for dir in [target, &upper, &work] {
        fs::create_dir_all(dir)
            .map_err(|e| BuildError::other(format!("{}: {e}", dir.display())))?;
    }
    runtime_exec::overlay::mount_overlay(lower, &upper, &work, target)
        .map_err(|e| BuildError::other(format!("mount a writable bind: {e}")))
}

/// The runtime-spec mount of `--mount` number `n`, or `None` when it mounts nothing; an ssh
/// mount's relay and a cache mount's hold join `held`.
fn mount_json(
    solver: &Solver,
    ws: &super::snapshot::Workspace,
    n: usize,
    m: &Mount,
    at: &Located<Instruction>,
    held: &mut HeldByRun,
) -> Result<Option<Value>, BuildError> {
    let target = m.target.clone().unwrap_or_default();
    let ro = if m.read_only { "ro" } else { "rw" };
    Ok(Some(match m.kind {
        MountType::Cache => {
            // Cache mounts persist in the store between builds and never enter an image; a
            // new one starts from an imported cache's copy when there is one.
            let id = cache_mount_id(m);
            let mount = held
                .cache_mounts
                .get(&id)
                .ok_or_else(|| BuildError::other(format!("cache mount {id:?} is not held")))?;
            let dir = mount.dir.clone();
            if !dir.exists() {
                let restored = mount.first
                    && solver.remote_cache.restore_cache_mount(
                        solver.store,
                        &id,
                        &dir,
                        solver.progress,
                    )?;
                if !restored {
                    fs::create_dir_all(&dir).map_err(BuildError::other)?;
                }
                set_mode(&dir, m.mode.unwrap_or(0o755))?;
                let (uid, gid) = (m.uid.unwrap_or(0), m.gid.unwrap_or(0));
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(BuildError::other)?;
            }
            json!({ "destination": target, "type": "bind", "source": dir, "options": ["rbind", ro] })
        }
        MountType::Tmpfs => {
            let mut options = vec!["nosuid".to_string(), "nodev".to_string()];
            if let Some(size) = m.size {
                options.push(format!("size={size}"));
            }
            json!({ "destination": target, "type": "tmpfs", "source": "tmpfs", "options": options })
        }
        MountType::Secret => {
            let id = m.id.clone().unwrap_or_else(|| {
                Path::new(&target)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            let Some(secret) = solver.options.secrets.get(&id) else {
                if m.required {
                    return Err(step_error(
                        at,
                        format!("secret {id} not found (pass it with --secret id={id},src=FILE)"),
                    ));
                }
                return Ok(Some(
                    json!({ "destination": target, "type": "tmpfs", "source": "tmpfs", "options": ["ro", "size=4k"] }),
                ));
            };
            if m.env.is_some() && m.target.is_none() {
                // Only an environment variable: added by `execute`, nothing to mount.
                return Ok(None);
            }
            let path = ws.path(&format!("secret-{n}"));
            fs::write(&path, secret).map_err(BuildError::other)?;
            set_mode(&path, m.mode.unwrap_or(0o400))?;
            std::os::unix::fs::chown(&path, Some(m.uid.unwrap_or(0)), Some(m.gid.unwrap_or(0)))
                .map_err(BuildError::other)?;
            let target = if target.is_empty() {
                format!("/run/secrets/{id}")
            } else {
                target
            };
            json!({ "destination": target, "type": "bind", "source": path, "options": ["rbind", "ro"] })
        }
        MountType::Bind => {
            // What `run_container` mounted at ws/bind-N before the container starts.
            let mounted = ws.path(&format!("bind-{n}"));
            let source = match &m.from {
                Some(from) if !solver.is_named_directory(from) => {
                    mounted.join(m.source.as_deref().unwrap_or("/").trim_start_matches('/'))
                }
                context => {
                    let source = bind_context_source(solver, m, context.as_deref())
                        .map_err(|e| step_error(at, e))?;
                    if m.read_only {
                        source
                    } else {
                        match writable_bind_root(&source).1 {
                            Some(file) => mounted.join(file),
                            None => mounted,
                        }
                    }
                }
            };
            json!({ "destination": target, "type": "bind", "source": source, "options": ["rbind", ro] })
        }
        MountType::Ssh => match ssh_mount(solver, m, at)? {
            Some((mount, relay)) => {
                held.agent_relays.push(relay);
                mount
            }
            None => return Ok(None),
        },
    }))
}

/// The bind mount of an ssh mount's relay socket, with the relay; `None` when the build was
/// given no agent of that id and the mount is not `required` (BuildKit skips it then).
fn ssh_mount(
    solver: &Solver,
    m: &Mount,
    at: &Located<Instruction>,
) -> Result<Option<(Value, AgentRelay)>, BuildError> {
    let id = m.id.as_deref().unwrap_or("default");
    let Some(agent) = solver.options.ssh_agents.get(id) else {
        if m.required {
            return Err(step_error(
                at,
                format!("ssh agent {id:?} not found (pass it with --ssh {id}=SOCKET)"),
            ));
        }
        return Ok(None);
    };
    let relay = AgentRelay::start(
        agent,
        m.mode.unwrap_or(0o600),
        m.uid.unwrap_or(0),
        m.gid.unwrap_or(0),
    )
    .map_err(|e| step_error(at, e))?;
    // The plan gave every ssh mount a target.
    let target = m.target.clone().unwrap_or_default();
    let mount = json!({ "destination": target, "type": "bind", "source": relay.socket(), "options": ["rbind"] });
    Ok(Some((mount, relay)))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| BuildError::other(format!("{}: {e}", path.display())))
}

/// Removes the empty files and directories the executor created in the upper directory only
/// to mount something over them (BuildKit's "mount stubs"): they are not the step's changes.
fn remove_mount_stubs(upper: &Path, lower: &[PathBuf], destinations: &[String]) {
    for dest in destinations {
        let mut rel = PathBuf::from(dest.trim_start_matches('/'));
        loop {
            if rel.as_os_str().is_empty() || exists_in_lowers(lower, &rel) {
                break;
            }
            let path = upper.join(&rel);
            let removed = match path.symlink_metadata() {
                Ok(m) if m.is_dir() => fs::remove_dir(&path).is_ok(),
                Ok(m) if m.is_file() && m.len() == 0 => fs::remove_file(&path).is_ok(),
                _ => false,
            };
            if !removed {
                break;
            }
            match rel.parent() {
                Some(p) => rel = p.to_path_buf(),
                None => break,
            }
        }
    }
}
