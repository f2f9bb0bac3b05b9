//! What a transfer reports about each blob, and [`Console`], which shows it: a bar per blob on
//! a terminal, one line per event otherwise (logs and CI output stay readable).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use oci::Digest;

/// How a blob's transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Downloaded,
    /// Already in the local store (pull) or the registry (push).
    AlreadyExists,
    Pushed,
    /// Mounted from another repository of the same registry.
    Mounted {
        from: String,
    },
}

/// Receives transfer events from several threads at once.
pub trait Progress: Send + Sync {
    fn started(&self, digest: &Digest, size: u64);
    /// `done` bytes of the blob have moved so far (absolute, not a delta).
    fn advanced(&self, digest: &Digest, done: u64);
    /// The connection broke after `done` bytes and the transfer continues from `resume_at`.
    fn resumed(&self, digest: &Digest, resume_at: u64, reason: &str);
    fn finished(&self, digest: &Digest, outcome: &Outcome);
}

/// Reports nothing (library users and tests).
pub struct Silent;

impl Progress for Silent {
    fn started(&self, _: &Digest, _: u64) {}
    fn advanced(&self, _: &Digest, _: u64) {}
    fn resumed(&self, _: &Digest, _: u64, _: &str) {}
    fn finished(&self, _: &Digest, _: &Outcome) {}
}

/// Progress on stderr, in docker's words.
pub struct Console {
    bars: Option<(MultiProgress, Mutex<HashMap<Digest, ProgressBar>>)>,
}

impl Console {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Console {
        let bars = std::io::stderr().is_terminal().then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                Mutex::new(HashMap::new()),
            )
        });
        Console { bars }
    }

    fn line(&self, text: String) {
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    fn bar(&self, digest: &Digest) -> Option<ProgressBar> {
        let (_, bars) = self.bars.as_ref()?;
        bars.lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .cloned()
    }
}

impl Default for Console {
    fn default() -> Self {
        Console::new()
    }
}

impl Progress for Console {
    fn started(&self, digest: &Digest, size: u64) {
        match &self.bars {
            Some((multi, bars)) => {
                let bar = multi.add(ProgressBar::new(size));
                let style = ProgressStyle::with_template(
                    "{prefix}: [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(digest.short().to_string());
                bars.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(digest.clone(), bar);
            }
            None => self.line(format!("{}: transferring {size} bytes", digest.short())),
        }
    }

    fn advanced(&self, digest: &Digest, done: u64) {
        if let Some(bar) = self.bar(digest) {
            bar.set_position(done);
        }
    }

    fn resumed(&self, digest: &Digest, resume_at: u64, reason: &str) {
        self.line(format!(
            "{}: {reason}; resuming at byte {resume_at}",
            digest.short()
        ));
        if let Some(bar) = self.bar(digest) {
            bar.set_position(resume_at);
        }
    }

    fn finished(&self, digest: &Digest, outcome: &Outcome) {
        let text = match outcome {
            Outcome::Downloaded => "Download complete".to_string(),
            Outcome::AlreadyExists => "Already exists".to_string(),
            Outcome::Pushed => "Pushed".to_string(),
            Outcome::Mounted { from } => format!("Mounted from {from}"),
        };
        if let Some(bar) = self.bar(digest) {
            bar.finish_and_clear();
        }
        self.line(format!("{}: {text}", digest.short()));
    }
}
