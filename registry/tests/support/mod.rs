//! Runs the real `rregistry` binary for process-level tests (restarts, SIGTERM).

// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

pub mod client;

pub use conformance::peers::free_port;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    /// Starts `rregistry serve` on a free port with storage under `dir`.
    pub fn start(dir: &Path, http_extra: &str) -> Server {
        Self::start_on(dir, free_port(), http_extra, "")
    }

    /// `http_extra` and `storage_extra` are YAML lines for those sections, indented by 2.
    pub fn start_on(dir: &Path, port: u16, http_extra: &str, storage_extra: &str) -> Server {
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nhttp:\n  addr: 127.0.0.1:{port}\n{http_extra}storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{storage_extra}",
                dir.join("data").display()
            ),
        )
        .expect("write config");
        let mut serve = Command::new(env!("CARGO_BIN_EXE_rregistry"));
        serve.arg("serve").arg("--config").arg(&config);
        Self::spawn(dir, port, &mut serve)
    }

    /// Runs `serve` (an `rregistry serve` command) with its log in `dir`, once it listens on
    /// `port`.
    pub fn spawn(dir: &Path, port: u16, serve: &mut Command) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("rregistry.log"))
            .expect("log file");
        let child = serve
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn rregistry");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "rregistry did not start: {}",
                std::fs::read_to_string(dir.join("rregistry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Sends SIGTERM to the server we started and waits for it to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal_term();
        self.child.wait().expect("wait rregistry")
    }

    pub fn signal_term(&self) {
        // SAFETY: signalling the child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }

    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait rregistry")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal_term();
            let _ = self.child.wait();
        }
    }
}
