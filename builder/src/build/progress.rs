//! Build progress in BuildKit's plain format, the default when stderr is not a terminal (CI):
//!
//! ```text
//! #3 [build 2/4] RUN make
//! #3 0.512 compiling…
//! #3 DONE 1.3s
//! #4 [build 3/4] COPY . /src
//! #4 CACHED
//! ```
//!
//! On a terminal the same lines are printed, RUN output included; `--quiet` prints nothing.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Plain,
    Quiet,
}

/// Stage names for the `[name]` prefix, and where lines go.
pub struct Progress {
    mode: ProgressMode,
    stage_names: Vec<String>,
    next_id: AtomicUsize,
    out: Mutex<Box<dyn Write + Send>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Done,
    Cached,
    Failed,
}

impl Progress {
    pub fn new(
        mode: ProgressMode,
        stage_names: Vec<String>,
        out: Box<dyn Write + Send>,
    ) -> Progress {
        Progress {
            mode,
            stage_names,
            next_id: AtomicUsize::new(1),
            out: Mutex::new(out),
        }
    }

    fn print(&self, line: &str) {
        if self.mode == ProgressMode::Quiet {
            return;
        }
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    /// Starts a step of stage `stage` described by `what` (an instruction as written).
    pub fn step(&self, stage: usize, what: &str) -> Step<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let name = self
            .stage_names
            .get(stage)
            .map(String::as_str)
            .unwrap_or("stage");
        let first_line = what.lines().next().unwrap_or("");
        self.print(&format!("#{id} [{name}] {first_line}"));
        Step {
            progress: self,
            id,
            start: Instant::now(),
        }
    }

    /// A line outside any step (warnings, the final image ID).
    pub fn message(&self, line: &str) {
        self.print(line);
    }
}

/// One step being reported.
pub struct Step<'p> {
    progress: &'p Progress,
    id: usize,
    start: Instant,
}

impl Step<'_> {
    /// A line of the step's output (RUN's stdout/stderr), with its time since the start.
    pub fn output(&self, line: &str) {
        let t = self.start.elapsed().as_secs_f64();
        self.progress.print(&format!("#{} {t:.3} {line}", self.id));
    }

    pub fn finish(&self, status: StepStatus) {
        let t = self.start.elapsed().as_secs_f64();
        let line = match status {
            StepStatus::Done => format!("#{} DONE {t:.1}s", self.id),
            StepStatus::Cached => format!("#{} CACHED", self.id),
            StepStatus::Failed => format!("#{} ERROR after {t:.1}s", self.id),
        };
        self.progress.print(&line);
    }
}
