//! The live feed: kiln's events as JSON lines, numbered, the last
//! [`KEPT`] kept for a page that joins late, new ones handed to every
//! waiting reader (the `/events` streams).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// How many events a late joiner gets.
pub const KEPT: usize = 2000;

#[derive(Default)]
struct Lines {
    /// The number of the first kept line (lines count from 1).
    first: u64,
    lines: VecDeque<String>,
}

/// Events in order, shared by the tap (writer) and the streams (readers).
#[derive(Default)]
pub struct Feed {
    lines: Mutex<Lines>,
    added: Condvar,
}

impl Feed {
    /// Adds one event (a JSON object's text).
    pub fn push(&self, line: &str) {
        let mut kept = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if kept.first == 0 {
            kept.first = 1;
        }
        kept.lines.push_back(line.to_string());
        if kept.lines.len() > KEPT {
            kept.lines.pop_front();
            kept.first += 1;
        }
        drop(kept);
        self.added.notify_all();
    }

    /// The events numbered above `seen` (the oldest kept first, when
    /// `seen` was dropped already), each with its number; waits up to
    /// `wait` for one when there are none.
    pub fn after(&self, seen: u64, wait: Duration) -> Vec<(u64, String)> {
        let kept = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let last = |k: &Lines| k.first + k.lines.len() as u64;
        let (kept, _) = self
            .added
            .wait_timeout_while(kept, wait, |k| k.lines.is_empty() || last(k) <= seen + 1)
            .unwrap_or_else(|p| p.into_inner());
        let from = (seen + 1).max(kept.first);
        kept.lines
            .iter()
            .enumerate()
            .map(|(i, line)| (kept.first + i as u64, line))
            .filter(|(n, _)| *n >= from)
            .map(|(n, line)| (n, line.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_reader_gets_the_kept_lines_then_the_new_ones() {
        let feed = Feed::default();
        assert!(feed.after(0, Duration::ZERO).is_empty());
        for i in 0..KEPT + 5 {
            feed.push(&format!("{{\"n\":{i}}}"));
        }
        let all = feed.after(0, Duration::ZERO);
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0], (6, "{\"n\":5}".to_string()));
        let last = all.last().unwrap().0;
        assert!(feed.after(last, Duration::from_millis(1)).is_empty());
        feed.push("{\"n\":\"new\"}");
        assert_eq!(
            feed.after(last, Duration::ZERO),
            vec![(last + 1, "{\"n\":\"new\"}".to_string())]
        );
    }
}
