//! The process-restart alternative of kiln's benchmark: a fresh process
//! that loads its state from a file, starts a 2-thread rayon pool, answers
//! one call (saxpy on one element) and exits.
//!
//! Usage: `kiln-bench-restart STATE_FILE`; prints `answer 3.5 state BYTES`.
//! The argument is read by hand, not with clap: this program's start-up is
//! what the benchmark times.

use std::process::ExitCode;

use kiln_bench::static_kernels;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1).map(std::path::PathBuf::from) else {
        eprintln!("usage: kiln-bench-restart STATE_FILE");
        return ExitCode::from(2);
    };
    let state = match std::fs::read(&path) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("kiln-bench-restart: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let pool = match rayon::ThreadPoolBuilder::new()
        .num_threads(kiln_bench::kiln_side::THREADS)
        .build()
    {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("kiln-bench-restart: cannot start the rayon pool: {e}");
            return ExitCode::from(2);
        }
    };
    let out = static_kernels::saxpy(&pool, 1.5, &[1.0], &[2.0]);
    println!("answer {} state {}", out[0], state.len());
    ExitCode::SUCCESS
}
