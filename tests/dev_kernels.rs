//! `kiln dev` and the user's own kernels, end to end through the real
//! binary in a copy of the workspace: the README's "Writing your own kernel"
//! commands run as written while kiln dev serves (scaffold, fill in cpu and
//! reference, record into the watched workload: a swap, never a restart, and
//! the new calls are replayed and checked); a wrong implementation is rolled
//! back; a broken declaration names file and line and the old version keeps
//! serving; a signature change is a swap with the stale calls reported;
//! editing the reference module swaps the worker's reference and re-checks.
//!
//! Run with `cargo test --release -p kiln-e2e --test dev_kernels`.

use std::time::Duration;

use kiln_e2e::dev_session::{
    BUILD_DEADLINE, DevSession, Event, EventKind, WorkspaceCopy, events, kiln_in, readme_blocks,
    replace_once, save_in_place, shell_words,
};

const SECTION: &str = "Writing your own kernel";

/// The `kiln` commands of the README section's `sh` blocks, block by block.
fn readme_commands() -> Vec<Vec<Vec<String>>> {
    readme_blocks(SECTION)
        .into_iter()
        .filter(|(lang, _)| lang == "sh")
        .map(|(_, text)| {
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let words = shell_words(l);
                    assert_eq!(words[0], "kiln", "README commands start with kiln: {l}");
                    words[1..].to_vec()
                })
                .collect()
        })
        .collect()
}

/// The README's kernel body, written into a scaffolded stub.
fn implement(copy: &WorkspaceCopy, rel: &str, body: &str) {
    let text = format!(
        "//! relu, as the README writes it.\n\nuse shared_state::{{EngineError, Tensor}};\n\nuse crate::registry::Args;\n\n{body}"
    );
    save_in_place(&copy.root().join(rel), &text);
}

fn no_restart(session: &DevSession, mark: usize) {
    assert!(
        session
            .named_since(mark, EventKind::RestartRequired)
            .is_empty(),
        "a kernel edit must never require a restart"
    );
}

/// Waits for the replay events of `kernel` after the mark, up to a replay
/// that has them.
fn wait_calls_of(session: &mut DevSession, kernel: &str, pass: bool) -> Event {
    session.wait_for(
        &format!(
            "a replay of {kernel} that {}",
            if pass { "passes" } else { "fails" }
        ),
        BUILD_DEADLINE,
        |e| {
            e.get::<events::Replay>()
                .is_some_and(|r| r.kernel == kernel && r.pass == pass && r.skipped.is_none())
        },
    )
}

#[test]
fn the_readme_kernel_swaps_in_is_checked_rolled_back_when_wrong_and_survives_a_broken_declaration()
{
    let copy = WorkspaceCopy::new();
    let blocks = readme_commands();
    assert_eq!(
        blocks.len(),
        3,
        "record+dev, new kernel, record: {blocks:?}"
    );
    let rust = readme_blocks(SECTION)
        .into_iter()
        .find(|(lang, _)| lang == "rust")
        .expect("the README shows the kernel body")
        .1;

    // 1. Record a workload, start kiln dev on it (as the README says).
    let (record, dev) = (&blocks[0][0], &blocks[0][1]);
    kiln_in(&copy, record);
    assert_eq!(dev[0], "dev");
    let dev_args: Vec<&str> = dev[1..].iter().map(String::as_str).collect();
    let mut session = DevSession::start(&copy, &dev_args);
    let start = session.mark();

    // 2. Scaffold: the stubs swap in, replay skips nothing it cannot run.
    let mark = session.mark();
    kiln_in(&copy, &blocks[1][0]);
    session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    session.wait_quiet(Duration::from_millis(3000), BUILD_DEADLINE);
    no_restart(&session, mark);

    // 3. Fill in the reference and cpu (one save each, together).
    let mark = session.mark();
    implement(&copy, "kernels/reference/src/declared/relu.rs", &rust);
    implement(&copy, "kernels/cpu/src/declared/relu.rs", &rust);
    session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    session.wait_quiet(Duration::from_millis(3000), BUILD_DEADLINE);
    no_restart(&session, mark);

    // 4. Record relu into the watched workload: replayed and checked at once.
    let mark = session.mark();
    kiln_in(&copy, &blocks[2][0]);
    session.wait_event(EventKind::WorkloadReloaded, BUILD_DEADLINE);
    let call = wait_calls_of(&mut session, "relu", true);
    assert_eq!(
        call.fields::<events::Replay>().reference,
        "vs stored outputs",
        "{}",
        call.line
    );
    let rechecked = session.wait_event(EventKind::Rechecked, BUILD_DEADLINE);
    assert!(rechecked.fields::<events::Rechecked>().pass);
    no_restart(&session, mark);

    // 5. A wrong relu is rolled back.
    let mark = session.mark();
    let wrong = replace_once(&rust, "v.max(0.0)", "v.max(0.0) + 1.0");
    implement(&copy, "kernels/cpu/src/declared/relu.rs", &wrong);
    wait_calls_of(&mut session, "relu", false);
    session.wait_event(EventKind::RolledBack, BUILD_DEADLINE);
    no_restart(&session, mark);

    // 6. A broken declaration: file and line, the old version serves on,
    //    and nothing is built or swapped.
    let decl_path = copy.root().join("kernels/declarations/relu.toml");
    let good_decl = copy.read("kernels/declarations/relu.toml");
    let mark = session.mark();
    save_in_place(
        &decl_path,
        &good_decl.replacen("inputs = [", "inputs = [[[ oops", 1),
    );
    let invalid = session.wait_event(EventKind::DeclarationInvalid, BUILD_DEADLINE);
    let fields = invalid.fields::<events::DeclarationInvalid>();
    assert!(
        fields.file.ends_with("relu.toml"),
        "names the file: {}",
        invalid.line
    );
    assert!(fields.line > 0, "{}", invalid.line);
    session.wait_quiet(Duration::from_millis(1500), BUILD_DEADLINE);
    assert!(session.named_since(mark, EventKind::Swapped).is_empty());
    assert!(
        session
            .named_since(mark, EventKind::BuildStarted)
            .is_empty()
    );
    no_restart(&session, mark);

    // 7. Signature change (declaration, reference and cpu together): a swap;
    //    the recorded relu calls are stale, reported and skipped, and the
    //    version is not rolled back.
    let mark = session.mark();
    // The GPU launch size is over the dims too: a user changes it with the
    // signature (kiln names the unbound dim otherwise).
    let new_decl = good_decl
        .replace("x: f32[n]", "x: f32[rows, cols]")
        .replace("y: f32[n]", "y: f32[rows, cols]")
        .replace("ceil_div(n, 256)", "ceil_div(rows * cols, 256)");
    assert_ne!(
        new_decl, good_decl,
        "the scaffolded declaration: {good_decl}"
    );
    let right_again = format!("{rust}\n// rows x cols now\n");
    implement(
        &copy,
        "kernels/reference/src/declared/relu.rs",
        &right_again,
    );
    implement(&copy, "kernels/cpu/src/declared/relu.rs", &right_again);
    save_in_place(&decl_path, &new_decl);
    session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    let stale = session.wait_event(EventKind::ReplaySkipped, BUILD_DEADLINE);
    let fields = stale.fields::<events::ReplaySkipped>();
    assert_eq!(fields.kernel, "relu", "{}", stale.line);
    let why = fields.why.as_str();
    assert!(why.contains("old signature"), "{why}");
    assert!(
        why.contains("kiln record --kernel relu"),
        "names the command: {why}"
    );
    session.wait_quiet(Duration::from_millis(1500), BUILD_DEADLINE);
    assert!(
        session.named_since(mark, EventKind::RolledBack).is_empty(),
        "stale calls must not roll the version back"
    );
    no_restart(&session, start);
    let _ = session.stop();
}

#[test]
fn editing_the_reference_module_swaps_the_reference_and_rechecks() {
    let copy = WorkspaceCopy::new();
    let mut session = DevSession::start(&copy, &[]);
    let mark = session.mark();
    // A reference saxpy that is off by one: the served (right) version
    // fails against it, which shows the new reference is the one used.
    let rel = "kernels/reference/src/declared/saxpy.rs";
    let pristine = copy.read(rel);
    save_in_place(
        &copy.root().join(rel),
        &replace_once(
            &pristine,
            "let out = kernel_reference::saxpy(a, args.input(0)?, args.input(1)?);",
            "let out: Vec<f32> = kernel_reference::saxpy(a, args.input(0)?, args.input(1)?).into_iter().map(|v| v + 1.0).collect();",
        ),
    );
    let swapped = session.wait_event(EventKind::ReferenceSwapped, BUILD_DEADLINE);
    assert!(swapped.message().contains("reference"), "{}", swapped.line);
    // The replaced reference's staged files are gone; the new one's stay
    // (a worker started later, after a crash, is handed them).
    let staged_references = || -> Vec<String> {
        let stage = copy.root().join("target/kiln-stage");
        let mut names = Vec::new();
        for dir in std::fs::read_dir(&stage).expect("the staging dirs") {
            for file in std::fs::read_dir(dir.expect("a staging dir").path()).expect("staged files")
            {
                let name = file.expect("a staged file").file_name();
                let name = name.to_string_lossy();
                if name.starts_with("kernel-reference-module-v") {
                    names.push(name.split('-').nth(3).unwrap_or_default().to_string());
                }
            }
        }
        names.sort();
        names
    };
    assert_eq!(
        staged_references(),
        ["v2", "v2"],
        "the new reference's library and files only"
    );
    session.wait_event(EventKind::Recheck, BUILD_DEADLINE);
    let saxpy = session.wait_for("the re-checked saxpy call", BUILD_DEADLINE, |e| {
        e.is_replay_of("saxpy")
    });
    assert!(!saxpy.fields::<events::Replay>().pass, "{}", saxpy.line);
    let rechecked = session.wait_event(EventKind::Rechecked, BUILD_DEADLINE);
    assert!(!rechecked.fields::<events::Rechecked>().pass);
    assert!(
        session.named_since(mark, EventKind::Swapped).is_empty(),
        "the served module is not rebuilt or swapped"
    );
    no_restart(&session, mark);
    let _ = session.stop();
}

/// A kernel recorded before its cpu implementation exists (the order the
/// README's "replay skips them until it is written" allows): when the
/// implementation is saved, the version it replaces cannot run the call, so
/// the call is timed on the new version alone and not compared; the new
/// version passes and serves (it was rolled back: "while timing: ... relu
/// is declared but not on cpu yet" counted the old version's lack against
/// it, and every save of the fix did the same).
#[test]
fn a_kernel_recorded_before_it_is_implemented_serves_when_it_is_written() {
    let copy = WorkspaceCopy::new();
    let blocks = readme_commands();
    let rust = readme_blocks(SECTION)
        .into_iter()
        .find(|(lang, _)| lang == "rust")
        .expect("the README shows the kernel body")
        .1;
    let (record, dev) = (&blocks[0][0], &blocks[0][1]);
    kiln_in(&copy, record);
    let dev_args: Vec<&str> = dev[1..].iter().map(String::as_str).collect();
    let mut session = DevSession::start(&copy, &dev_args);
    // Scaffold, the reference implemented, then relu recorded into the
    // watched workload while the cpu module has only the stub.
    kiln_in(&copy, &blocks[1][0]);
    session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    session.wait_quiet(Duration::from_millis(3000), BUILD_DEADLINE);
    implement(&copy, "kernels/reference/src/declared/relu.rs", &rust);
    session.wait_quiet(Duration::from_millis(3000), BUILD_DEADLINE);
    kiln_in(&copy, &blocks[2][0]);
    session.wait_event(EventKind::WorkloadReloaded, BUILD_DEADLINE);
    session.wait_quiet(Duration::from_millis(3000), BUILD_DEADLINE);

    // The cpu implementation: swapped in, checked, timed alone, serving.
    let mark = session.mark();
    implement(&copy, "kernels/cpu/src/declared/relu.rs", &rust);
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    let call = wait_calls_of(&mut session, "relu", true);
    assert_eq!(call.version(), swapped.version(), "{}", call.line);
    assert!(
        call.fields::<events::Replay>().verdict.is_none(),
        "no comparison with a version that cannot run it: {}",
        call.line
    );
    session.wait_quiet(Duration::from_millis(3000), BUILD_DEADLINE);
    assert!(
        session.named_since(mark, EventKind::RolledBack).is_empty()
            && session
                .named_since(mark, EventKind::ReplayFailed)
                .is_empty(),
        "the new version is not failed for what the old one lacks"
    );
    let why = session
        .events
        .iter()
        .skip(mark)
        .find(|e| e.message().contains("cannot run it"))
        .unwrap_or_else(|| session.fail("no word of the old version lacking relu"));
    assert!(why.message().contains("not compared"), "{}", why.line);
    let _ = session.stop();
}
