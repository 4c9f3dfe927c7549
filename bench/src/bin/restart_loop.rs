//! The program of the "restart loop" alternative in kiln's benchmark
//! (section 2, save to serving): the CPU kernels compiled in statically, a
//! 2-thread rayon pool, state read from a file, one call answered.
//!
//! It depends on rayon and std only, so the benchmark can copy it, with the
//! kernels, into a crate of its own (`save_serving::restart_loop`) where a
//! one-line kernel edit rebuilds exactly this program with `cargo build`.
//! The relative `#[path]` below holds in that copy too.
//!
//! Usage: `kiln-bench-restart-loop STATE_FILE THREADS`; prints
//! `answer 3.5 state BYTES`.

use std::process::ExitCode;

/// The CPU kernels, the very source the `kernel-cpu` module compiles. Only
/// `saxpy` answers here; the others are compiled in like in a real program.
#[allow(dead_code)]
#[path = "../../../kernels/cpu/src/kernels.rs"]
mod kernels;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), Some(threads)) = (args.next(), args.next()) else {
        eprintln!("usage: kiln-bench-restart-loop STATE_FILE THREADS");
        return ExitCode::from(2);
    };
    let Some(threads) = threads.to_str().and_then(|t| t.parse::<usize>().ok()) else {
        eprintln!("kiln-bench-restart-loop: THREADS must be a number, got {threads:?}");
        return ExitCode::from(2);
    };
    let path = std::path::PathBuf::from(path);
    let state = match std::fs::read(&path) {
        Ok(state) => state,
        Err(e) => {
            eprintln!(
                "kiln-bench-restart-loop: cannot read {}: {e}",
                path.display()
            );
            return ExitCode::from(2);
        }
    };
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("kiln-bench-restart-loop: cannot start the rayon pool: {e}");
            return ExitCode::from(2);
        }
    };
    let out = kernels::saxpy(&pool, 1.5, &[1.0], &[2.0]);
    println!("answer {} state {}", out[0], state.len());
    ExitCode::SUCCESS
}
