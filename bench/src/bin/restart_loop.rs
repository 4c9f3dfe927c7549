//! The program of the "restart loop" alternative in kiln's benchmark
//! (section 2, save to serving): the CPU kernels compiled in statically, a
//! 2-thread rayon pool, state read from a file, one call of every kernel
//! answered. Every kernel is called, so rustc compiles every one of them,
//! as it does in the kernel module (a kernel left uncalled in a binary is
//! dead code that rustc never optimises nor emits: a rebuild would then be
//! cheaper than the module's, and the comparison unfair).
//!
//! It depends on rayon and std only, so the benchmark can copy it, with the
//! kernels, into a crate of its own (`save_serving::restart_loop`) where a
//! one-line kernel edit rebuilds exactly this program with `cargo build`.
//! The relative `#[path]` below holds in that copy too.
//!
//! Usage: `kiln-bench-restart-loop STATE_FILE THREADS`; prints
//! `answer 3.5 kernels 5 state BYTES` (saxpy's answer, then how many
//! kernels answered correctly).

use std::process::ExitCode;

/// The CPU kernels, the very source the `kernel-cpu` module compiles, every
/// one of them called below.
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
    let (answer, correct) = call_every_kernel(&pool);
    println!("answer {answer} kernels {correct} state {}", state.len());
    ExitCode::SUCCESS
}

/// Calls each kernel once on small inputs with known results: saxpy's
/// answer and how many kernels answered right (5 when all did).
fn call_every_kernel(pool: &rayon::ThreadPool) -> (f32, usize) {
    let answer = kernels::saxpy(pool, 1.5, &[1.0], &[2.0])[0];
    let results = [
        answer == 3.5,
        kernels::dot(pool, &[1.0, 2.0], &[3.0, 4.0]) == 11.0,
        kernels::matmul(pool, &[1.0, 2.0], &[3.0, 4.0], (1, 2, 1), 64) == [11.0],
        kernels::stencil2d(pool, &[1.0; 4], (2, 2), 0.1) == [1.0; 4],
        kernels::softmax(pool, &[0.0, 0.0], (1, 2)) == [0.5, 0.5],
    ];
    (answer, results.iter().filter(|&&ok| ok).count())
}
