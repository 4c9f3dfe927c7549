//! 1,100 swaps in one process, with rayon kernel calls between them and a
//! second thread hammering calls during the swaps: no crash, no lost or
//! duplicated call, at most one module file still mapped executable, the
//! thread count back to where it started, and no pthread keys leaked (a
//! leak of one key per load would exhaust glibc's 1,024 before the end), and
//! memory that does not grow with the state: each version leaks only rayon's
//! crossbeam-epoch collector, a static of its library copy that nothing can
//! free at dlclose (about 12 KiB a version here), never the engine's state.
//!
//! Run in release (`cargo test --release`); in a debug build it is slow.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kiln::process::{free_pthread_keys, mapped_files_under, rss_bytes, thread_count};
use kiln::{EngineOptions, ServedModule};
use kiln_e2e::*;
use shared_state::{Call, Scalar, Tensor};

const SWAPS: usize = 1_100;

#[test]
fn eleven_hundred_swaps_under_load() {
    // As the kiln binary does (see `configure_malloc`).
    kiln::process::configure_malloc();
    let stage = staging("soak");
    let artifact = module_artifact("kernel-cpu");
    let threads_at_start = thread_count(None);
    let keys_at_start = free_pthread_keys();

    let options = EngineOptions {
        threads: 2,
        ..Default::default()
    };
    let first = kiln::LoadedModule::open(stage.stage("kernel-cpu", &artifact).unwrap()).unwrap();
    let (served, _) = ServedModule::start(first, options, None).unwrap();
    let served = Arc::new(served);
    served
        .handle()
        .put_resident(
            "x",
            Tensor::from_f32(
                &[10_000],
                random_bits(10_000, 1)
                    .iter()
                    .map(|v| v.clamp(-1.0, 1.0))
                    .collect(),
            ),
        )
        .unwrap();
    let threads_after_first = thread_count(None);

    let stop = Arc::new(AtomicBool::new(false));
    let hammered = Arc::new(AtomicU64::new(0));
    let hammer = {
        let (served, stop, hammered) = (served.clone(), stop.clone(), hammered.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = served
                    .call(Call::new("dot").resident("x").resident("x"))
                    .expect("hammer call failed");
                assert_eq!(out.into_tensor().unwrap().shape(), [1]);
                hammered.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let mut saxpys = 0i64;
    let mut rss_after_warmup = 0;
    for i in 0..SWAPS {
        if i == 100 {
            rss_after_warmup = rss_bytes();
        }
        let staged = stage.stage("kernel-cpu", &artifact).unwrap();
        let module = kiln::LoadedModule::open(staged).unwrap();
        served
            .swap(module)
            .unwrap_or_else(|e| panic!("swap {i}: {e}"));
        served
            .call(
                Call::new("saxpy")
                    .resident("x")
                    .resident("x")
                    .param("a", Scalar::F64(0.5)),
            )
            .unwrap();
        saxpys += 1;
        if i % 100 == 0 {
            let mapped = mapped_files_under(stage.path(), None);
            assert!(
                mapped.iter().filter(|m| m.executable).count() <= 2,
                "swap {i}: {mapped:?}"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    hammer.join().expect("hammer thread");

    // Every call counted exactly once, across 1,101 versions.
    let notes = served.handle().info().unwrap().notes;
    assert_eq!(notes["counters/calls/saxpy"], Scalar::I64(saxpys));
    let hammered = hammered.load(Ordering::Relaxed) as i64;
    assert!(hammered > 0);
    assert_eq!(notes["counters/calls/dot"], Scalar::I64(hammered));
    assert_eq!(served.label(), format!("kernel-cpu-v{}", SWAPS + 1));

    let mapped = mapped_files_under(stage.path(), None);
    assert!(
        mapped.iter().filter(|m| m.executable).count() <= 1,
        "{mapped:?}"
    );
    assert_eq!(thread_count(None), threads_after_first, "threads leaked");
    let growth = rss_bytes().saturating_sub(rss_after_warmup);
    let per_swap = growth / (SWAPS as u64 - 100);
    eprintln!(
        "RSS grew {} KiB over the last {} swaps ({per_swap} B per swap)",
        growth / 1024,
        SWAPS - 100
    );
    assert!(
        per_swap < 64 * 1024,
        "RSS grows {per_swap} bytes per swap: state is leaking (1 MiB resident)"
    );
    let keys_now = free_pthread_keys();
    assert!(
        keys_now + 8 >= keys_at_start,
        "pthread keys leaked: {keys_at_start} free at start, {keys_now} now"
    );

    drop(served);
    assert!(mapped_files_under(stage.path(), None).is_empty());
    assert_eq!(thread_count(None), threads_at_start);
}
