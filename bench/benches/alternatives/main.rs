//! `cargo bench -p kiln-bench`: kiln against hot-lib-reloader, a process
//! restart and static linking, side by side in one run. Prints a table and
//! writes `target/kiln-bench/report.json` and `report.svg`.
//! `KILN_BENCH_QUICK=1` makes it a smoke run of a few seconds.
//! `cargo bench -p kiln-bench -- save` runs section 2 (save to serving)
//! alone and writes `target/kiln-bench/save-to-serving.json`;
//! `cargo bench -p kiln-bench -- relations` prints the machine's timing
//! relations alone; `-- calls` the call overhead (section 3) alone, with
//! what a replay reports for each call against the static call; `--
//! verdicts` the same-code soak (`KILN_BENCH_SESSIONS`, default 20); `--
//! state` what each size of resident state costs a `kiln dev` session
//! (`KILN_BENCH_STATE_MIB`, default 1,64,1024,4096) and writes
//! `target/kiln-bench/state-scale.json`; `-- remote` save to serving
//! through `kiln dev --on` over a loopback sshd next to a local `kiln dev`,
//! and the bytes sent per save (`target/kiln-bench/remote-save.json`).

mod hot_lib_reloader_side;

use std::path::PathBuf;
use std::process::ExitCode;

use kiln_bench::Config;

/// Prints a section's text (success) or its error (failure).
fn printed(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kiln-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    // The kiln binary sets malloc up for timing (see `configure_malloc`); the
    // in-process kiln side of this benchmark does the same.
    kiln::process::configure_malloc();
    let workspace = kiln::workspace::built_workspace_root();
    let out_dir = kiln_bench::default_out_dir(&workspace);
    let mut config = Config::from_env(
        workspace,
        out_dir.clone(),
        PathBuf::from(env!("CARGO_BIN_EXE_kiln-bench-restart")),
    );
    config.module_profile = kiln_bench::artifacts::host_cargo_profile(true).to_string();
    config.module_unify_with = ["-p", "kiln-bench", "--bench", "alternatives"]
        .map(String::from)
        .to_vec();
    if std::env::args().skip(1).any(|a| a == "relations") {
        print!("{}", kiln_bench::machine_relations::measure());
        return ExitCode::SUCCESS;
    }
    if std::env::args().skip(1).any(|a| a == "save") {
        return match kiln_bench::run_save(&config) {
            Ok(text) => {
                print!("{text}");
                println!(
                    "raw figures: {}",
                    out_dir.join("save-to-serving.json").display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kiln-bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if std::env::args().skip(1).any(|a| a == "verdicts") {
        let sessions = std::env::var("KILN_BENCH_SESSIONS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20);
        return printed(kiln_bench::verdict_soak::measure(&config, sessions));
    }
    if std::env::args().skip(1).any(|a| a == "state-vulkan") {
        return printed(kiln_bench::state_scale_vulkan::measure(&config));
    }
    if std::env::args().skip(1).any(|a| a == "remote") {
        return printed(kiln_bench::remote_save::measure(&config));
    }
    if std::env::args().skip(1).any(|a| a == "state") {
        return printed(kiln_bench::state_scale::measure(&config));
    }
    if std::env::args().skip(1).any(|a| a == "calls") {
        let result =
            hot_lib_reloader_side::HotSide::prepare(&config.workspace, &config.module_profile)
                .and_then(|hot| kiln_bench::run_calls(&config, &hot));
        return printed(result);
    }
    let result = hot_lib_reloader_side::HotSide::prepare(&config.workspace, &config.module_profile)
        .and_then(|hot| kiln_bench::run(&config, &hot));
    match result {
        Ok(report) => {
            print!("{}", report.render());
            print!("{}", kiln_bench::machine_relations::measure());
            println!(
                "raw figures: {}\nchart: {}",
                out_dir.join("report.json").display(),
                out_dir.join("report.svg").display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kiln-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
