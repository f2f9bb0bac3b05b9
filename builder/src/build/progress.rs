//! Build progress, as BuildKit shows it.
//!
//! Plain (the default when stderr is not a terminal, as in CI) prints one line per event:
//!
//! ```text
//! #3 [build] RUN make
//! #3 0.512 compiling…
//! #3 DONE 1.3s
//! #4 [build] COPY . /src
//! #4 CACHED
//! ```
//!
//! Tty redraws a live view ten times a second: a header with the elapsed time and steps done,
//! one line per step with its duration or CACHED, and the last lines of output of the steps
//! still running. Quiet prints nothing.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Plain,
    Tty,
    Quiet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Done,
    Cached,
    Failed,
}

/// Lines of running output the tty view keeps per step.
const TTY_TAIL_LINES: usize = 6;

struct StepState {
    title: String,
    start: Instant,
    end: Option<(Duration, StepStatus)>,
    tail: VecDeque<String>,
}

struct Shared {
    steps: Vec<StepState>,
    out: Box<dyn Write + Send>,
    /// Lines the last tty frame took, to move the cursor back over them.
    drawn: usize,
}

pub struct Progress {
    mode: ProgressMode,
    stage_names: Vec<String>,
    started: Instant,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    painter: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Progress {
    pub fn new(
        mode: ProgressMode,
        stage_names: Vec<String>,
        out: Box<dyn Write + Send>,
    ) -> Progress {
        let shared = Arc::new(Mutex::new(Shared {
            steps: Vec::new(),
            out,
            drawn: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let painter = (mode == ProgressMode::Tty).then(|| {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if let Ok(mut s) = shared.lock() {
                        paint(&mut s, started, false);
                    }
                }
            })
        });
        Progress {
            mode,
            stage_names,
            started,
            shared,
            stop,
            painter: Mutex::new(painter),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> Option<T> {
        self.shared.lock().ok().map(|mut s| f(&mut s))
    }

    fn print(&self, line: &str) {
        if self.mode == ProgressMode::Plain {
            self.with(|s| {
                let _ = writeln!(s.out, "{line}");
                let _ = s.out.flush();
            });
        }
    }

    /// Starts a step of stage `stage` described by `what` (an instruction as written).
    pub fn step(&self, stage: usize, what: &str) -> Step<'_> {
        let name = self
            .stage_names
            .get(stage)
            .map(String::as_str)
            .unwrap_or("stage");
        let first_line = what.lines().next().unwrap_or("");
        self.start(format!("[{name}] {first_line}"))
    }

    /// Starts a step of the build itself rather than of a stage (BuildKit's `[internal]`).
    pub fn internal_step(&self, what: &str) -> Step<'_> {
        self.start(format!("[internal] {what}"))
    }

    fn start(&self, title: String) -> Step<'_> {
        let id = self
            .with(|s| {
                s.steps.push(StepState {
                    title: title.clone(),
                    start: Instant::now(),
                    end: None,
                    tail: VecDeque::new(),
                });
                s.steps.len()
            })
            .unwrap_or(0);
        self.print(&format!("#{id} {title}"));
        Step {
            progress: self,
            id,
            start: Instant::now(),
        }
    }

    /// A line outside any step (the final "naming to …").
    pub fn message(&self, line: &str) {
        self.print(line);
    }

    /// Draws the last tty frame and stops redrawing; call once the build is over.
    pub fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(painter) = self.painter.lock().ok().and_then(|mut p| p.take()) {
            let _ = painter.join();
            let started = self.started;
            self.with(|s| paint(s, started, true));
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
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
        if self.progress.mode == ProgressMode::Tty {
            self.progress.with(|s| {
                if let Some(step) = s.steps.get_mut(self.id - 1) {
                    if step.tail.len() == TTY_TAIL_LINES {
                        step.tail.pop_front();
                    }
                    step.tail.push_back(line.to_string());
                }
            });
        }
    }

    pub fn finish(&self, status: StepStatus) {
        let elapsed = self.start.elapsed();
        let t = elapsed.as_secs_f64();
        let line = match status {
            StepStatus::Done => format!("#{} DONE {t:.1}s", self.id),
            StepStatus::Cached => format!("#{} CACHED", self.id),
            StepStatus::Failed => format!("#{} ERROR after {t:.1}s", self.id),
        };
        self.progress.print(&line);
        self.progress.with(|s| {
            if let Some(step) = s.steps.get_mut(self.id - 1) {
                step.end = Some((elapsed, status));
            }
        });
    }
}

/// Renders the tty view: everything after the last frame's first line is redrawn.
fn paint(s: &mut Shared, started: Instant, last: bool) {
    let frame = render(&s.steps, started.elapsed(), last);
    let mut text = String::new();
    if s.drawn > 0 {
        text.push_str(&format!("\x1b[{}A", s.drawn));
    }
    for line in &frame {
        text.push_str("\x1b[2K");
        text.push_str(line);
        text.push('\n');
    }
    // A shorter frame than the last (a step's output tail went away): clear what is left.
    let stale = s.drawn.saturating_sub(frame.len());
    if stale > 0 {
        text.push_str(&"\x1b[2K\n".repeat(stale));
        text.push_str(&format!("\x1b[{stale}A"));
    }
    s.drawn = frame.len();
    let _ = s.out.write_all(text.as_bytes());
    let _ = s.out.flush();
}

fn render(steps: &[StepState], elapsed: Duration, last: bool) -> Vec<String> {
    let done = steps.iter().filter(|s| s.end.is_some()).count();
    let verb = if last { "Finished" } else { "Building" };
    let mut lines = vec![format!(
        "[+] {verb} {:.1}s ({done}/{})",
        elapsed.as_secs_f64(),
        steps.len()
    )];
    for step in steps {
        match step.end {
            Some((_, StepStatus::Cached)) => lines.push(format!(" => CACHED {}", step.title)),
            Some((d, StepStatus::Done)) => {
                lines.push(format!(" => {:<60} {:>6.1}s", step.title, d.as_secs_f64()))
            }
            Some((d, StepStatus::Failed)) => {
                lines.push(format!(" => ERROR {} {:.1}s", step.title, d.as_secs_f64()))
            }
            None => {
                lines.push(format!(
                    " => {:<60} {:>6.1}s",
                    step.title,
                    step.start.elapsed().as_secs_f64()
                ));
                for line in &step.tail {
                    lines.push(format!(" => => {line}"));
                }
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tty_frame_shows_steps_cached_and_running_output() {
        let now = Instant::now();
        let steps = vec![
            StepState {
                title: "[base] FROM bb:1".into(),
                start: now,
                end: Some((Duration::from_millis(10), StepStatus::Done)),
                tail: VecDeque::new(),
            },
            StepState {
                title: "[base] COPY . /src".into(),
                start: now,
                end: Some((Duration::ZERO, StepStatus::Cached)),
                tail: VecDeque::new(),
            },
            StepState {
                title: "[base] RUN make".into(),
                start: now,
                end: None,
                tail: VecDeque::from(vec!["cc -c a.c".to_string()]),
            },
        ];
        let frame = render(&steps, Duration::from_millis(1500), false);
        assert_eq!(frame[0], "[+] Building 1.5s (2/3)");
        assert!(frame[1].starts_with(" => [base] FROM bb:1") && frame[1].ends_with("0.0s"));
        assert_eq!(frame[2], " => CACHED [base] COPY . /src");
        assert!(frame[3].starts_with(" => [base] RUN make"));
        assert_eq!(frame[4], " => => cc -c a.c");
    }
}
