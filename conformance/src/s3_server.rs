//! An S3-compatible server for the S3 backend's tests and benchmark: moto in server mode
//! (PyPI `moto[server]`, installed by scripts/install-deps.sh) on a free loopback port, its
//! state in memory, gone when it stops. Its bucket API is plain HTTP, so buckets are made here
//! with one unsigned PUT (moto does not check signatures).

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::peers::{free_port, require, run_ok, wait_until, PeerProcess};

/// Any non-empty keys do for moto; they also keep object_store from probing instance metadata.
pub const ACCESS_KEY: &str = "rbuild-test";
pub const SECRET_KEY: &str = "rbuild-test-secret";
pub const REGION: &str = "us-east-1";

pub struct S3Server {
    process: PeerProcess,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl S3Server {
    pub fn start() -> Result<S3Server> {
        let python = require("python3");
        // A missing moto is a loud failure, as for any other peer.
        run_ok(Command::new(&python).args(["-c", "import moto.server, flask"])).context(
            "moto[server] is not installed; run scripts/install-deps.sh (pip install 'moto[server]')",
        )?;
        let dir = tempfile::Builder::new().prefix("rbuild-moto-").tempdir()?;
        let port = free_port();
        let mut cmd = Command::new(python);
        cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            // moto would otherwise look for AWS config files of the user running the tests.
            .env("AWS_CONFIG_FILE", dir.path().join("aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.path().join("aws-credentials"),
            );
        let log = dir.path().join("moto.log");
        let mut process = PeerProcess::spawn("moto", &mut cmd, &log)?;
        // Its own log line, not a connection: another process may hold the port.
        let running = format!("Running on http://127.0.0.1:{port}");
        wait_until("moto", Duration::from_secs(30), || {
            std::fs::read_to_string(&log).is_ok_and(|text| text.contains(&running))
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
        process.check_alive()?;
        Ok(S3Server {
            process,
            port,
            _dir: dir,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Creates `bucket` (in `REGION`).
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        let resp = reqwest::blocking::Client::new()
            .put(format!("{}/{bucket}", self.endpoint()))
            .send()
            .with_context(|| format!("create bucket {bucket}"))?;
        if !resp.status().is_success() {
            bail!("create bucket {bucket}: {}", resp.status());
        }
        Ok(())
    }

    /// The keys of every object in `bucket` under `prefix` (for checks on what is visible).
    pub fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let body = reqwest::blocking::Client::new()
            .get(format!("{}/{bucket}", self.endpoint()))
            .query(&[("prefix", prefix), ("max-keys", "100000")])
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .with_context(|| format!("list bucket {bucket}"))?;
        Ok(body
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(key, _)| key.to_string()))
            .collect())
    }

    /// A `storage.s3` section (indented for the `storage:` map) for `bucket` through
    /// `endpoint` (this server, or a proxy in front of it), plus `extra` lines indented by 4,
    /// with blob redirects to presigned URLs off (`storage.redirect.disable`): the suites using
    /// it check the registry's own blob answers. [`S3Server::redirecting_storage_yaml`] keeps
    /// distribution's default.
    pub fn storage_yaml(endpoint: &str, bucket: &str, extra: &str) -> String {
        format!(
            "  redirect:\n    disable: true\n{}",
            Self::redirecting_storage_yaml(endpoint, bucket, extra)
        )
    }

    /// [`S3Server::storage_yaml`] with blob GETs and HEADs redirected to presigned URLs.
    pub fn redirecting_storage_yaml(endpoint: &str, bucket: &str, extra: &str) -> String {
        format!(
            "  s3:\n    region: {REGION}\n    regionendpoint: {endpoint}\n    forcepathstyle: true\n    secure: false\n    bucket: {bucket}\n    accesskey: {ACCESS_KEY}\n    secretkey: {SECRET_KEY}\n{extra}"
        )
    }
}
