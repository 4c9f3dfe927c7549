//! `RUSTFLAGS=-Copt-level=3 cargo dev`: the variable replaces
//! `.cargo/config.toml`'s rustflags, and with them the loop alignment the
//! verdicts rely on; `kiln dev` says so at start, naming the variable,
//! before it builds anything. End to end through the real binary (the
//! check itself is unit-tested in `harness/src/loop_alignment.rs`).
//!
//! Run with `cargo test --release -p kiln-e2e --test dev_loop_alignment`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln::events::{EventKind, LogLine};
use kiln_e2e::dev_session::{WorkspaceCopy, kiln_binary};

#[test]
fn rustflags_without_the_loop_alignment_are_named_at_start() {
    let copy = WorkspaceCopy::new();
    let mut child = Command::new(kiln_binary())
        .args(["dev", "--log-format", "json", "--no-tune"])
        .current_dir(copy.root())
        .env("RUSTFLAGS", "-Copt-level=3")
        // Builds (if one starts before the test stops it) stay in the copy.
        .env_remove("KILN_MODULE_TARGET_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group: the cargo build it starts goes with it.
        .process_group(0)
        .spawn()
        .expect("start kiln dev");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let warning = loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "no loop_alignment event; kiln dev said:\n{}",
                seen.join("\n")
            );
        };
        let parsed = LogLine::parse(&line);
        if parsed.is(EventKind::LoopAlignment) {
            break parsed;
        }
        // It comes first: before any build.
        assert!(!parsed.is(EventKind::BuildStarted), "{}", seen.join("\n"));
        seen.push(line);
    };
    // The start-up build would run to its end before Ctrl-C is seen: the
    // whole group (kiln dev and the cargo it started) is killed instead.
    // SAFETY: kill(2) of the process group of a child we spawned with
    // `process_group(0)` and have not reaped (its pid is the group's id).
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
    }
    let _ = child.wait();
    assert_eq!(warning.level.as_deref(), Some("WARN"), "{warning}");
    let message = warning.message.as_str();
    assert!(
        message.starts_with("RUSTFLAGS (`-Copt-level=3`) replaces"),
        "{message}"
    );
    assert!(message.contains("-align-loops=64"), "{message}");
}
