//! What Ctrl-C, SIGTERM and SIGHUP do to `kiln dev`: the first ends the
//! session cleanly (`session_end.rs`: `--state FILE` put in place, the last
//! copy to disk waited for, the worker ended, staged files removed); a
//! second one while that end is under way ends the process at once.
//!
//! The clean end can take a while: at 4 GiB of state, a Ctrl-C before the
//! session's first copy to disk is done waits for it (15-30 s here,
//! `bench/results/ctrl-c-during-the-first-copy-2026-12-07.txt`). A user who
//! presses Ctrl-C again means "now". What survives is then what survives
//! `kill -KILL` (README, "What survives what"): the last good point as of
//! the last copy to disk that completed, restored by the next `kiln dev` on
//! the same workload file if the session had not yet marked its end; the
//! worker goes with the supervisor (its parent-death signal).

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crossbeam_channel::Sender;

/// The exit status of a session ended by a second signal (128 + SIGINT,
/// as a shell reports a program interrupted).
pub const FORCED_EXIT: i32 = 130;

/// How far the session's clean end got, for the line a forced end prints
/// (`session_end.rs` tells it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum EndPhase {
    /// Serving, or ending with nothing of the end done yet.
    Serving = 0,
    /// `--state FILE` is in place.
    StateFileInPlace = 1,
    /// Every lane's last copy is on disk and its end marked: the next
    /// start will not resume it.
    Marked = 2,
}

static PHASE: AtomicU8 = AtomicU8::new(EndPhase::Serving as u8);

/// The session's end reached `phase`.
pub fn reached(phase: EndPhase) {
    PHASE.fetch_max(phase as u8, Ordering::SeqCst);
}

fn phase() -> EndPhase {
    match PHASE.load(Ordering::SeqCst) {
        0 => EndPhase::Serving,
        1 => EndPhase::StateFileInPlace,
        _ => EndPhase::Marked,
    }
}

/// What a forced end leaves, by how far the clean end got.
pub fn forced_end_line(phase: EndPhase) -> String {
    let left = match phase {
        EndPhase::Marked => {
            "The state file, if asked for, is in place and each last good point is on disk;              staged files are left for the next start."
        }
        EndPhase::StateFileInPlace => {
            "The state file is in place; the last good point is also on disk as of the last              copy that completed, and the next `kiln dev` on this workload restores it (as              after `kill -KILL`)."
        }
        EndPhase::Serving => {
            "A --state file is not written; the last good point is on disk as of the last copy              that completed, and the next `kiln dev` on this workload restores it (as after              `kill -KILL`)."
        }
    };
    format!("kiln: interrupted again: ending now, without waiting for the session's end. {left}")
}

/// What a signal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asked {
    /// The first: end the session cleanly (told to the dev loop).
    EndSession,
    /// A later one: end the process now, without waiting.
    EndNow,
}

/// Counts the ending signals and tells the dev loop of the first.
pub struct EndSignals {
    seen: AtomicUsize,
    end: Sender<()>,
    /// Every signal goes to `end` (`kiln dev --on DEST`, whose loop
    /// handles a second one itself: it cuts the connection and restores
    /// the terminal before it leaves, `remote/dev.rs`).
    forward_all: bool,
}

impl EndSignals {
    /// `end` receives one message, at the first signal.
    pub fn new(end: Sender<()>) -> EndSignals {
        EndSignals {
            seen: AtomicUsize::new(0),
            end,
            forward_all: false,
        }
    }

    /// `end` receives every signal (a loop that ends itself at the second).
    pub fn forwarding(end: Sender<()>) -> EndSignals {
        EndSignals {
            forward_all: true,
            ..EndSignals::new(end)
        }
    }

    /// One more signal: the first is sent to the dev loop; the caller ends
    /// the process at a later one ([`EndSignals::handle`]), unless every
    /// signal is forwarded.
    pub fn received(&self) -> Asked {
        match self.seen.fetch_add(1, Ordering::SeqCst) {
            _ if self.forward_all => {
                let _ = self.end.try_send(());
                Asked::EndSession
            }
            0 => {
                let _ = self.end.try_send(());
                Asked::EndSession
            }
            _ => Asked::EndNow,
        }
    }

    /// [`EndSignals::received`], and at a later signal a line on stderr
    /// and the exit ([`FORCED_EXIT`]). Runs on the signal handler's own
    /// thread (`ctrlc`), not in a signal handler: it may print and exit.
    pub fn handle(&self) {
        if self.received() == Asked::EndNow {
            eprintln!("{}", forced_end_line(phase()));
            std::process::exit(FORCED_EXIT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_signal_ends_the_session_and_a_later_one_the_process() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let signals = EndSignals::new(tx);
        assert!(rx.try_recv().is_err());
        assert_eq!(signals.received(), Asked::EndSession);
        assert_eq!(rx.try_recv(), Ok(()), "the dev loop is told once");
        assert_eq!(signals.received(), Asked::EndNow);
        assert_eq!(signals.received(), Asked::EndNow);
        assert!(
            rx.try_recv().is_err(),
            "later signals are not sent to the loop"
        );
    }

    #[test]
    fn a_forwarding_handler_sends_every_signal_and_never_ends_the_process() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let signals = EndSignals::forwarding(tx);
        assert_eq!(signals.received(), Asked::EndSession);
        assert_eq!(rx.try_recv(), Ok(()));
        assert_eq!(signals.received(), Asked::EndSession);
        assert_eq!(rx.try_recv(), Ok(()), "the second reaches the loop too");
    }

    #[test]
    fn a_forced_end_says_what_it_leaves_by_how_far_the_end_got() {
        assert!(forced_end_line(EndPhase::Serving).contains("A --state file is not written"));
        assert!(forced_end_line(EndPhase::Serving).contains("restores it"));
        assert!(forced_end_line(EndPhase::StateFileInPlace).contains("The state file is in place"));
        assert!(forced_end_line(EndPhase::StateFileInPlace).contains("restores it"));
        assert!(!forced_end_line(EndPhase::Marked).contains("restores it"));
    }
}
