//! The keys of `kiln dev` in a real terminal: `kiln dev` runs in a tmux
//! pane; the test presses `?`, `r`, `h` and `q` with `tmux send-keys`,
//! reads the screen with `capture-pane`, and checks that the terminal's
//! settings (`stty -g` in the pane) are the same after the session as
//! before it. Needs tmux (`.ci/run` installs it). Run with
//! `cargo test --release -p kiln-e2e --test dev_keys`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kiln::workspace;
use kiln_e2e::dev_session::{BUILD_DEADLINE, WorkspaceCopy, kiln_binary};
use kiln_e2e::workspace_root;

/// A tmux server of our own (its socket in the workspace copy), killed on
/// drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs (install it: apt-get install tmux)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pane's screen and its scrollback.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-J", "-S", "-10000", "-t", "kiln"])
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "kiln", "-l", keys]);
    }

    /// Polls the screen until `pred` holds (tmux has no event to wait on).
    fn wait_screen(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + BUILD_DEADLINE;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < end,
                "no {what} on the screen within {BUILD_DEADLINE:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[test]
fn keys_drive_a_session_and_the_terminal_is_restored() {
    let copy = WorkspaceCopy::new();
    let root = copy.root();
    let before = root.join("stty-before");
    let after = root.join("stty-after");
    let status = root.join("exit-status");
    let script = root.join("run-dev.sh");
    std::fs::write(
        &script,
        format!(
            "stty -g > {before}\n\
             KILN_MODULE_TARGET_DIR={modules} RUST_LOG=info {kiln} dev --no-tune\n\
             echo $? > {status}.partial\n\
             stty -g > {after}\n\
             mv {status}.partial {status}\n\
             exec sleep 600\n",
            before = quoted(&before),
            after = quoted(&after),
            status = quoted(&status),
            modules = quoted(&workspace::module_target_dir(&workspace_root())),
            kiln = quoted(&kiln_binary()),
        ),
    )
    .expect("write the pane's script");
    let tmux = Tmux {
        socket: root.join("tmux.sock"),
    };
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "kiln",
        "-x",
        "200",
        "-y",
        "50",
        "-c",
        &root.display().to_string(),
        &format!("sh {}", quoted(&script)),
    ]);

    let screen = tmux.wait_screen("session serving", |s| s.contains("watching "));
    assert!(
        screen.contains("keys: r replay now | s switch backend"),
        "{screen}"
    );

    // While the session runs, keys are on: the pane's terminal is not in
    // the mode it started in (so the check at the end means something).
    let tty = tmux.run(&["display-message", "-p", "-t", "kiln", "#{pane_tty}"]);
    let during = Command::new("stty")
        .args(["-F", tty.trim(), "-g"])
        .output()
        .expect("stty runs");
    let was = std::fs::read_to_string(&before).expect("stty -g before the session");
    assert_ne!(
        String::from_utf8_lossy(&during.stdout).trim(),
        was.trim(),
        "keys change the terminal's mode while the session runs"
    );

    tmux.keys("?");
    tmux.wait_screen("the key line again", |s| {
        s.matches("keys: r replay now").count() >= 2
    });
    tmux.keys("r");
    tmux.wait_screen("the replay of key r", |s| {
        s.contains("key r (replay): done: replayed kernel-cpu-v1: passed")
    });
    tmux.keys("h");
    let screen = tmux.wait_screen("the history table of key h", |s| {
        s.contains("key h (history): done: history of kernel-cpu")
            && s.contains("* best passing version so far")
    });
    assert!(screen.contains("version  result"), "{screen}");
    tmux.keys("q");
    let end = Instant::now() + Duration::from_secs(60);
    while !status.exists() {
        assert!(
            Instant::now() < end,
            "kiln dev did not exit after q:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let screen = tmux.screen();
    assert!(screen.contains("key q (quit): done"), "{screen}");
    assert!(screen.contains("kiln dev stopped"), "{screen}");
    assert_eq!(
        std::fs::read_to_string(&status).unwrap().trim(),
        "0",
        "{screen}"
    );
    let is = std::fs::read_to_string(&after).unwrap();
    assert!(!was.trim().is_empty());
    assert_eq!(is, was, "the terminal's settings are back as they were");
}
