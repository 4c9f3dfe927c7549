//! `kill -SEGV` and `kill -BUS` end the worker, as those signals' default
//! action does in any program.
//!
//! Rust's runtime handles both signals to report a stack overflow. Its
//! handler, for a signal that is not a fault on a guard page, puts the
//! default action back and returns, so that a real fault happens again and
//! ends the process. A signal sent with kill(2) does not happen again: the
//! worker went on serving, and only a second `kill -SEGV` ended it (a user
//! trying kiln's crash recovery by hand saw nothing happen). The handler
//! here, put in front of Rust's, ends the worker at the first signal a
//! process sent, and hands every real fault to Rust's handler unchanged (a
//! stack overflow still prints its last words and aborts: the
//! `dev_crash.rs` stack-overflow test).

use std::ffi::c_void;
use std::sync::OnceLock;

/// The signals, and the action each had before ours (Rust's).
const SIGNALS: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];
static PREVIOUS: [OnceLock<Action>; 2] = [OnceLock::new(), OnceLock::new()];

/// A `sigaction` kept for the handler to read.
struct Action(libc::sigaction);

// SAFETY: a plain C struct of integers, a signal set and an optional
// function pointer: written once before the handler is installed, then
// only read.
unsafe impl Sync for Action {}
// SAFETY: as above; it owns nothing.
unsafe impl Send for Action {}

/// Installs the handler for SIGSEGV and SIGBUS, in front of the actions
/// they have now. Call once, early in the worker.
pub fn end_at_a_sent_fault_signal() {
    for (slot, &signal) in PREVIOUS.iter().zip(&SIGNALS) {
        // SAFETY: a zeroed sigaction is a valid value (no handler, empty
        // flags).
        let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: sigaction(2) with a null new action only reads the
        // current one into `previous`, a valid sigaction we own.
        if unsafe { libc::sigaction(signal, std::ptr::null(), &mut previous) } != 0 {
            continue;
        }
        if slot.set(Action(previous)).is_err() {
            // Installed already.
            continue;
        }
        // SAFETY: as above, a zeroed sigaction is valid; the handler has
        // the three-argument signature SA_SIGINFO asks for; SA_ONSTACK as
        // Rust's own handler has, so a stack overflow is still handled on
        // the thread's alternate stack.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// A signal a process sent (`si_code` ≤ 0: SI_USER from kill(2), SI_TKILL,
/// SI_QUEUE) ends the worker with that signal; a fault (the kernel's,
/// `si_code` > 0) goes to the previous handler.
extern "C" fn on_signal(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: for an SA_SIGINFO handler the kernel passes a valid siginfo.
    let code = unsafe { (*info).si_code };
    if code <= 0 {
        // SAFETY: signal(2) and raise(3) are async-signal-safe. The raised
        // signal is blocked while this handler runs and is delivered, with
        // the default action, when it returns.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
        return;
    }
    let previous = SIGNALS
        .iter()
        .position(|&s| s == signal)
        .and_then(|i| PREVIOUS[i].get());
    match previous {
        Some(Action(p)) if p.sa_sigaction > libc::SIG_IGN => {
            if p.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous action's handler, installed with
                // SA_SIGINFO: it has the three-argument signature, and is
                // called as the kernel would have called it.
                let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
                    unsafe { std::mem::transmute(p.sa_sigaction) };
                handler(signal, info, context);
            } else {
                // SAFETY: a one-argument handler (no SA_SIGINFO).
                let handler: extern "C" fn(libc::c_int) =
                    unsafe { std::mem::transmute(p.sa_sigaction) };
                handler(signal);
            }
        }
        // No handler before ours: the default action, at the fault's
        // return (it happens again).
        _ => {
            // SAFETY: signal(2) is async-signal-safe.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
    }
}
