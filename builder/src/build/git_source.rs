//! Git sources, through the host's `git`: ADD from a repository (reference.md, "Adding files
//! from a Git repository"), and a repository as the build context (`rbuild build URL`).
//!
//! As BuildKit does, the ref is resolved to a commit with `git ls-remote` when the step is
//! planned: the commit, not the branch name, is in the cache key, so a moved branch reruns
//! the step and an unchanged one hits the cache without fetching anything. On a miss the
//! commit is fetched shallowly (`--depth 1`, submodules too) into a private directory and
//! copied into the image like a directory of the context.
//!
//! Files get mode 644, or 755 when executable, and directories 755 (as BuildKit gives them).
//! Every mtime is the commit's time, so the same commit always makes the same layer;
//! BuildKit does this only under SOURCE_DATE_EPOCH, and otherwise leaves checkout times.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

/// A Git source as written in ADD: `REMOTE[#REF[:SUBDIR]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    pub remote: String,
    /// Branch, tag or commit; the remote's HEAD when absent.
    pub reference: Option<String>,
    /// The directory of the repository to add instead of its root.
    pub subdir: Option<String>,
}

impl GitSource {
    /// BuildKit's rule (gitutil.ParseGitRef): `git://`, `ssh://`, scp-like `user@host:path`,
    /// and `http(s)://` URLs whose path ends in `.git`. Anything else is not Git (a local
    /// path or a plain download).
    pub fn parse(source: &str) -> Option<GitSource> {
        let (url, fragment) = match source.split_once('#') {
            Some((url, fragment)) => (url, Some(fragment)),
            None => (source, None),
        };
        let is_git = if url.starts_with("git://") || url.starts_with("ssh://") {
            true
        } else if let Some(rest) = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
        {
            rest.split('?').next().unwrap_or(rest).ends_with(".git")
        } else {
            is_scp_like(url)
        };
        if !is_git {
            return None;
        }
        let (reference, subdir) = match fragment.map(|f| f.split_once(':').unwrap_or((f, ""))) {
            Some((reference, subdir)) => (
                Some(reference.to_string()).filter(|r| !r.is_empty()),
                Some(subdir.to_string()).filter(|s| !s.is_empty()),
            ),
            None => (None, None),
        };
        Some(GitSource {
            remote: url.to_string(),
            reference,
            subdir,
        })
    }

    /// [`GitSource::parse`] of a path argument (a build context), if it is text.
    pub fn parse_path(source: &std::path::Path) -> Option<GitSource> {
        source.to_str().and_then(GitSource::parse)
    }

    /// The commit the ref names now (`git ls-remote`); a full commit id is taken as it is.
    pub fn resolve(&self, ssh_agent: Option<&Path>) -> Result<String, String> {
        let reference = self.reference.as_deref().unwrap_or("HEAD");
        if is_commit_id(reference) {
            return Ok(reference.to_string());
        }
        // Every ref, matched here: with a pattern, a server speaking protocol v2 leaves out the
        // `^{}` line that gives an annotated tag's commit.
        let out = git(None, ssh_agent)
            .args(["ls-remote", "--", &self.remote])
            .output()
            .map_err(|e| format!("git: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{}: git ls-remote failed: {}",
                self.remote,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let listing = String::from_utf8_lossy(&out.stdout);
        // git's own rule for a short name: the whole name, or its tail after a `/`.
        let names = |name: &str| name == reference || name.ends_with(&format!("/{reference}"));
        let mut found = None;
        for (commit, name) in listing.lines().filter_map(|l| l.split_once('\t')) {
            match name.strip_suffix("^{}") {
                // An annotated tag: this line has its commit, the one before the tag object.
                Some(tag) if names(tag) => return Ok(commit.to_string()),
                None if names(name) && found.is_none() => found = Some(commit.to_string()),
                _ => {}
            }
        }
        found.ok_or_else(|| format!("{}: no ref {reference:?} in the repository", self.remote))
    }

    /// Fetches `commit` into `dir` (empty) and returns the directory to add: the checkout, or
    /// its `subdir`. Without `keep_git_dir`, `.git` is removed.
    pub fn checkout(
        &self,
        commit: &str,
        dir: &Path,
        keep_git_dir: bool,
        ssh_agent: Option<&Path>,
    ) -> Result<PathBuf, String> {
        let run = |args: &[&str]| -> Result<String, String> {
            let out = git(Some(dir), ssh_agent)
                .args(args)
                .output()
                .map_err(|e| format!("git: {e}"))?;
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
            } else {
                Err(format!(
                    "{}: git {} failed: {}",
                    self.remote,
                    args.first().unwrap_or(&""),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        run(&["init", "-q"])?;
        run(&["remote", "add", "origin", &self.remote])?;
        // A server may refuse a commit id it does not advertise; a ref name it always serves.
        let by_name = self.reference.as_deref().filter(|r| !is_commit_id(r));
        let fetched =
            run(&["fetch", "-q", "--depth=1", "--no-tags", "origin", commit]).or_else(|e| {
                match by_name {
                    Some(name) => run(&["fetch", "-q", "--depth=1", "--no-tags", "origin", name]),
                    None => Err(e),
                }
            });
        if fetched.is_err() {
            // Full history, for a commit that is neither advertised nor a ref's tip.
            run(&[
                "fetch",
                "-q",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
            ])?;
        }
        run(&["checkout", "-q", commit])?;
        let head = run(&["rev-parse", "HEAD"])?;
        if head != commit {
            return Err(format!(
                "{}: {} is now {head}, not {commit} (it moved during the build; build again)",
                self.remote,
                self.reference.as_deref().unwrap_or("HEAD")
            ));
        }
        if dir.join(".gitmodules").exists() {
            run(&[
                "submodule",
                "update",
                "-q",
                "--init",
                "--recursive",
                "--depth=1",
            ])?;
        }
        let time: i64 = run(&["log", "-1", "--format=%ct"])?
            .parse()
            .map_err(|e| format!("{}: commit time: {e}", self.remote))?;
        if !keep_git_dir {
            remove_git_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        normalize(dir, time).map_err(|e| format!("{}: {e}", dir.display()))?;
        match &self.subdir {
            None => Ok(dir.to_path_buf()),
            Some(sub) => {
                let rel = Path::new(sub.trim_start_matches('/'));
                let inside = rel.components().all(|c| matches!(c, Component::Normal(_)));
                let path = dir.join(rel);
                if !inside || !path.is_dir() {
                    return Err(format!("{}: no directory {sub:?} at {commit}", self.remote));
                }
                Ok(path)
            }
        }
    }
}

/// `git` with no prompt for credentials (a build has no one to answer) and, for ssh remotes,
/// the build's `default` ssh agent and nothing else: the caller's own `SSH_AUTH_SOCK` reaches
/// a build only through `--ssh`, as with docker build.
fn git(dir: Option<&Path>, ssh_agent: Option<&Path>) -> Command {
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.arg("-C").arg(dir);
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0").stdin(Stdio::null());
    match ssh_agent {
        Some(agent) => cmd.env("SSH_AUTH_SOCK", agent),
        None => cmd.env_remove("SSH_AUTH_SOCK"),
    };
    if std::env::var_os("GIT_SSH_COMMAND").is_none() {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        cmd.env("GIT_SSH_COMMAND", ssh_command(home.as_deref()));
    }
    cmd
}

/// The ssh that git runs unless the caller sets `GIT_SSH_COMMAND`. As BuildKit's git source
/// does (`ssh -F /dev/null -o StrictHostKeyChecking=no`): no ssh_config, so a build does not
/// depend on the machine's, and a host met for the first time is accepted, since a CI runner
/// has no known_hosts. Unlike BuildKit, a host the caller's known_hosts (or the system's)
/// records must still show the recorded key, and nothing is written there. Never a prompt.
fn ssh_command(home: Option<&Path>) -> String {
    let mut known = Vec::new();
    if let Some(home) = home {
        known.push(home.join(".ssh/known_hosts").display().to_string());
    }
    known.push("/etc/ssh/ssh_known_hosts".to_string());
    // git runs this through the shell: the list of files is one single-quoted word.
    let known = format!("GlobalKnownHostsFile={}", known.join(" ")).replace('\'', "'\\''");
    format!(
        "ssh -F /dev/null -o BatchMode=yes -o LogLevel=ERROR -o StrictHostKeyChecking=accept-new \
         -o UserKnownHostsFile=/dev/null -o '{known}'"
    )
}

fn is_commit_id(reference: &str) -> bool {
    reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `user@host:path`, as scp and git write ssh remotes.
fn is_scp_like(url: &str) -> bool {
    let Some((user, rest)) = url.split_once('@') else {
        return false;
    };
    let Some((host, path)) = rest.split_once(':') else {
        return false;
    };
    !user.is_empty()
        && !user.contains('/')
        && !host.is_empty()
        && !host.contains('/')
        && !path.is_empty()
}

/// Removes `.git` everywhere in a checkout: the repository's directory and each submodule's
/// `.git` file (which names a directory that is gone with the first).
fn remove_git_metadata(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if entry.file_name() == ".git" {
            if kind.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
        } else if kind.is_dir() {
            remove_git_metadata(&path)?;
        }
    }
    Ok(())
}

/// Modes as BuildKit gives a Git checkout, and every mtime set to `time`.
fn normalize(dir: &Path, time: i64) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            normalize(&path, time)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        } else if meta.is_file() {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        }
        oci::layer::set_mtime(&path, time)?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    oci::layer::set_mtime(dir, time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildkits_rules_for_what_is_git() {
        let git = |s: &str| GitSource::parse(s);
        assert_eq!(
            git("https://github.com/moby/buildkit.git#v0.14.1:docs"),
            Some(GitSource {
                remote: "https://github.com/moby/buildkit.git".into(),
                reference: Some("v0.14.1".into()),
                subdir: Some("docs".into()),
            })
        );
        assert_eq!(
            git("git@github.com:moby/buildkit.git").map(|g| g.remote),
            Some("git@github.com:moby/buildkit.git".into())
        );
        let subdir_only = git("git://example.com/r.git#:sub").unwrap();
        assert_eq!(
            (subdir_only.reference, subdir_only.subdir),
            (None, Some("sub".into()))
        );
        assert!(git("ssh://git@example.com/r").is_some());
        // Not Git: plain downloads, local paths, and github.com/ without a scheme.
        assert_eq!(git("https://example.com/archive.tar.gz"), None);
        assert_eq!(git("local.git"), None);
        assert_eq!(git("./user@host:path"), None);
        assert_eq!(git("dir/user@host:path"), None);
        assert_eq!(git("github.com/moby/buildkit"), None);
    }
}
