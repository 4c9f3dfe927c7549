//! A one-line progress spinner on standard error for long builds, and
//! cargo's rendered diagnostics without their colour codes for JSON events.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// A one-line progress spinner on standard error, for builds longer than a
/// second, only on a terminal.
pub struct Spinner {
    active: Option<(String, Instant)>,
    step: String,
    shown: bool,
    frame: usize,
    enabled: bool,
}

impl Spinner {
    pub fn new() -> Spinner {
        Spinner {
            active: None,
            step: String::new(),
            shown: false,
            frame: 0,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    pub fn start(&mut self, module: &str) {
        self.active = Some((module.to_string(), Instant::now()));
        self.step.clear();
    }

    pub fn progress(&mut self, step: &str) {
        self.step = step.to_string();
        self.tick();
    }

    pub fn tick(&mut self) {
        let Some((module, start)) = &self.active else {
            return;
        };
        let elapsed = start.elapsed();
        if !self.enabled || elapsed < Duration::from_secs(1) {
            return;
        }
        const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        self.frame = (self.frame + 1) % FRAMES.len();
        let mut step = self.step.clone();
        step.truncate(60);
        eprint!(
            "\r\x1b[2K{} building {module} {:.1}s  {step}",
            FRAMES[self.frame],
            elapsed.as_secs_f64()
        );
        self.shown = true;
    }

    pub fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[2K");
        }
        self.shown = false;
        self.active = None;
    }
}
