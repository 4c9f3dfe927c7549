//! The program of the "restart loop" alternative in kiln's benchmark
//! (section 2, save to serving): the CPU module's kernel sources compiled
//! in statically (the very files `kernel-cpu` compiles: `kernels.rs`,
//! `low_precision.rs`, `registry.rs`, `declared/*.rs`, every kernel
//! reachable from the kernel table as in the module, with the engine rlib
//! `kernel-cpu-engine` and `shared-state` as dependencies, compiled once,
//! as for the module), a 2-thread rayon pool, state read from a file, one
//! call of each f32 kernel of `kernels.rs` answered. A kernel nothing
//! reaches is dead code that rustc never optimises nor emits: a rebuild
//! would then be cheaper than the module's, and the comparison unfair.
//!
//! The benchmark copies it, with the kernel sources, into a crate of its
//! own (`save_serving::restart_loop`) where a one-line kernel edit rebuilds
//! exactly this program with `cargo build`. The relative `#[path]`s below
//! hold in that copy too.
//!
//! Usage: `kiln-bench-restart-loop STATE_FILE THREADS`; prints
//! `answer 3.5 kernels 5 table N state BYTES` (saxpy's answer, how many
//! kernels answered correctly, how many kernels the table holds).
//!
//! Its two arguments are read by hand, not with clap like the other
//! binaries: each measured round links the program and expands its macros
//! again, and clap would be the benchmark's cost, not the restart loop's
//! (with clap derive a one-line kernel edit rebuilt it in 526 ms against
//! 471 ms without, medians of 17 interleaved rounds on a busy 2-core
//! machine; the program grew from 1.0 to 1.7 MB).

use std::process::ExitCode;

// The CPU module's kernel sources, as `kernels/cpu/src/lib.rs` declares
// them (everything but its export glue).
#[path = "../../../kernels/cpu/src/declared/mod.rs"]
mod declared;
#[path = "../../../kernels/cpu/src/kernels.rs"]
mod kernels;
#[path = "../../../kernels/cpu/src/low_precision.rs"]
mod low_precision;
// The module re-exports the registry's `KernelFn` for its kernels; this
// program has no use for it.
#[allow(unused_imports)]
#[path = "../../../kernels/cpu/src/registry.rs"]
mod registry;

const USAGE: &str = "usage: kiln-bench-restart-loop STATE_FILE THREADS";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let first = args.next();
    if first.as_ref().is_some_and(|a| a == "-h" || a == "--help") {
        println!(
            "The restart-loop program of kiln's benchmark (save to serving): reads STATE_FILE,\n\
             starts a pool of THREADS rayon threads, calls each f32 kernel of the CPU module's\n\
             kernels.rs once and prints `answer A kernels K table N state BYTES`.\n\n{USAGE}"
        );
        return ExitCode::SUCCESS;
    }
    let (Some(path), Some(threads)) = (first, args.next()) else {
        eprintln!("{USAGE}");
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
    // Every kernel of the table reachable, as in the module: rustc compiles
    // them all.
    let table = std::hint::black_box(declared::entries());
    println!(
        "answer {answer} kernels {correct} table {} state {}",
        table.len(),
        state.len()
    );
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
