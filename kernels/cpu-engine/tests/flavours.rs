//! The engine's two flavours as the CPU and reference modules see them:
//! names, device strings, notes, snapshot sections, what each takes from a
//! prior state, and its errors. (Through the host, with the real modules:
//! `tests/workload_replay.rs`, `tests/tuning.rs`, `tests/core_swap.rs`.)

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use kernel_cpu_engine::CpuEngine;
use kernel_cpu_engine::registry::{CallArgs, Entry, KernelFn};
use shared_state::{
    Call, Engine, EngineContext, EngineError, ErrorKind, KernelSet, Output, Scalar, Snapshot,
    Tensor, ThreadSpawner,
};

/// `out = a * x`, with a tunable (`block`, default 8).
const SCALE: &str = "inputs = [\"x: f32[n]\"]\noutputs = [\"out: f32[n]\"]\nparams = { a = 2.0 }\n\
                     [[tunables]]\nname = \"block\"\ncandidates = [8, 16]\n";
/// Two outputs.
const PAIR: &str = "inputs = [\"x: f32[n]\"]\noutputs = [\"lo: f32[n]\", \"hi: f32[n]\"]\n";
/// Declared, not written yet.
const STUB: &str = "inputs = [\"x: f32[n]\"]\noutputs = [\"out: f32[n]\"]\n";

fn kernels() -> KernelSet {
    KernelSet::new(
        [("scale", SCALE), ("pair", PAIR), ("stub", STUB)].map(|(name, text)| {
            kiln_decl::parse(
                Path::new(&format!("kernels/declarations/{name}.toml")),
                text,
            )
            .unwrap()
        }),
    )
}

fn scale_plain(args: &CallArgs<'_>) -> Result<Vec<Tensor>, EngineError> {
    let a = args.param("a")? as f32;
    let out = args.input::<f32>(0)?.iter().map(|v| a * v).collect();
    Ok(vec![args.output(0, out)?])
}

fn pair_plain(args: &CallArgs<'_>) -> Result<Vec<Tensor>, EngineError> {
    let x = args.input::<f32>(0)?;
    let lo = x.iter().map(|v| v.min(0.0)).collect();
    let hi = x.iter().map(|v| v.max(0.0)).collect();
    Ok(vec![args.output(0, lo)?, args.output(1, hi)?])
}

fn entries(scale: KernelFn) -> Vec<Entry> {
    vec![
        Entry {
            name: "scale",
            run: scale,
            implemented: true,
        },
        Entry {
            name: "pair",
            run: KernelFn::Plain(pair_plain),
            implemented: true,
        },
        Entry {
            name: "stub",
            run: KernelFn::Plain(scale_plain),
            implemented: false,
        },
    ]
}

/// Starts threads when asked, and counts them.
#[derive(Default)]
struct Spawner(Mutex<Vec<String>>);

impl ThreadSpawner for Spawner {
    fn spawn_boxed(&self, name: String, body: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
        self.0.lock().unwrap().push(name.clone());
        std::thread::Builder::new()
            .name(name)
            .spawn(body)
            .map(|_| ())
    }
}

fn context(threads: usize, spawner: Arc<Spawner>) -> EngineContext {
    EngineContext {
        label: "flavours".to_string(),
        threads,
        options: BTreeMap::new(),
        spawner,
        kernels: Arc::new(kernels()),
        sources: Arc::new(Vec::new()),
    }
}

fn x() -> Tensor {
    Tensor::from_f32(&[3], vec![1.0, -2.0, 0.5])
}

/// A CPU module's state: a resident, the tile, a kept tunable, a counter.
fn cpu_snapshot() -> Snapshot {
    let mut s = Snapshot::new("kernel-cpu", "cpu");
    s.insert_tensor("resident/x", x());
    s.insert_scalar("tuning/tile", Scalar::I64(32));
    s.insert_scalar("tuning/scale/block", Scalar::I64(16));
    s.insert_scalar("counters/calls/scale", Scalar::I64(5));
    s
}

fn reference(prior: Option<&mut Snapshot>) -> (CpuEngine, Arc<Spawner>) {
    let spawner = Arc::new(Spawner::default());
    let (engine, defaulted) = CpuEngine::create_reference(
        context(4, spawner.clone()),
        prior,
        "kernel-reference-module",
        entries(KernelFn::Plain(scale_plain)),
    )
    .unwrap();
    assert!(defaulted.is_empty(), "{defaulted:?}");
    (engine, spawner)
}

#[test]
fn the_reference_flavour_names_itself_and_starts_no_thread() {
    let (mut e, spawner) = reference(None);
    let info = e.info().unwrap();
    assert_eq!(info.name, "kernel-reference-module");
    assert_eq!(info.backend, "reference");
    assert_eq!(info.device, "cpu (plain reference kernels, one thread)");
    assert_eq!(info.kernels, ["pair", "scale"]);
    assert!(info.notes.is_empty(), "{:?}", info.notes);
    let out = e.run(Call::new("scale").arg(x())).unwrap();
    assert_eq!(
        out,
        Output::Value(Tensor::from_f32(&[3], vec![2.0, -4.0, 1.0]))
    );
    // Nothing counted, nothing tuned: still no notes.
    assert!(e.info().unwrap().notes.is_empty());
    assert!(spawner.0.lock().unwrap().is_empty(), "no thread");
}

#[test]
fn the_reference_flavour_takes_and_gives_residents_only() {
    let mut prior = cpu_snapshot();
    let (mut e, _) = reference(Some(&mut prior));
    assert_eq!(
        prior.section_names(),
        ["counters/calls/scale", "tuning/scale/block", "tuning/tile"],
        "left for the import report (dropped)"
    );
    assert_eq!(e.read_resident("x").unwrap(), x());
    e.run(Call::new("scale").resident("x").store_as("y"))
        .unwrap();
    let state = e.export_state().unwrap();
    assert_eq!(state.module, "kernel-reference-module");
    assert_eq!(state.backend, "reference");
    assert_eq!(state.section_names(), ["resident/x", "resident/y"]);
}

#[test]
fn the_reference_flavour_errors() {
    let (mut e, _) = reference(None);
    let err = e.run(Call::new("stub").arg(x())).unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownKernel);
    assert_eq!(
        err.message,
        "stub is declared but not in the reference module yet"
    );
    let err = e.run(Call::new("scale").resident("nope")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownBuffer);
    assert_eq!(err.message, "no resident buffer \"nope\"");
    // The call's parameters are bound as they are: a host directive is an
    // unknown parameter here.
    let err = e
        .run(
            Call::new("scale")
                .arg(x())
                .param("kiln.keep_tuning", Scalar::Bool(true)),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadCall);
    assert!(
        err.message.contains("has no parameter kiln.keep_tuning"),
        "{err}"
    );
    let err = e
        .run(Call::new("pair").arg(x()).store_as("both"))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadCall);
    assert_eq!(
        err.message,
        "pair has 2 outputs: store_as takes a kernel with one"
    );
    let Output::Values(outs) = e.run(Call::new("pair").arg(x())).unwrap() else {
        panic!("two outputs come back as Values");
    };
    assert_eq!(outs.len(), 2);
}

#[cfg(feature = "rayon")]
mod cpu {
    use super::*;
    use kernel_cpu_engine::registry::Args;
    use shared_state::Section;

    fn scale_pooled(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
        let a = args.param("a")? as f32;
        let x = args.input::<f32>(0)?;
        let out = args.pool.install(|| x.iter().map(|v| a * v).collect());
        Ok(vec![args.output(0, out)?])
    }

    fn cpu(prior: Option<&mut Snapshot>) -> (CpuEngine, Vec<String>, Arc<Spawner>) {
        let spawner = Arc::new(Spawner::default());
        let (engine, defaulted) = CpuEngine::create(
            context(3, spawner.clone()),
            prior,
            "kernel-cpu",
            entries(KernelFn::Pooled(scale_pooled)),
        )
        .unwrap();
        (engine, defaulted, spawner)
    }

    #[test]
    fn the_cpu_flavour_names_itself_and_its_pool() {
        let (mut e, defaulted, spawner) = cpu(None);
        assert!(defaulted.is_empty());
        assert_eq!(spawner.0.lock().unwrap().len(), 3, "the pool's threads");
        let info = e.info().unwrap();
        assert_eq!(info.name, "kernel-cpu");
        assert_eq!(info.backend, "cpu");
        assert_eq!(info.device, "cpu (3 rayon threads)");
        assert_eq!(info.kernels, ["pair", "scale"]);
        assert_eq!(
            info.notes,
            BTreeMap::from([
                ("threads".to_string(), Scalar::I64(3)),
                ("tuning/scale/block".to_string(), Scalar::I64(8)),
                ("tuning/tile".to_string(), Scalar::I64(64)),
            ])
        );
        e.run(Call::new("scale").arg(x())).unwrap();
        // Host directives are not parameters; a kept tunable is listed.
        e.run(
            Call::new("scale")
                .arg(x())
                .param("block", Scalar::I64(16))
                .param("kiln.keep_tuning", Scalar::Bool(true)),
        )
        .unwrap();
        let notes = e.info().unwrap().notes;
        assert_eq!(notes["tuning/scale/block"], Scalar::I64(16));
        assert_eq!(notes["counters/calls/scale"], Scalar::I64(2));
        let err = e.run(Call::new("stub").arg(x())).unwrap_err();
        assert_eq!(err.message, "stub is declared but not on cpu yet");
    }

    #[test]
    fn the_cpu_flavour_takes_and_gives_tuning_and_counters() {
        let mut prior = cpu_snapshot();
        let (e, defaulted, _) = cpu(Some(&mut prior));
        assert!(defaulted.is_empty(), "{defaulted:?}");
        assert!(prior.is_empty(), "{:?}", prior.section_names());
        let state = e.export_state().unwrap();
        assert_eq!(state.module, "kernel-cpu");
        assert_eq!(state.backend, "cpu");
        assert!(state.bit_eq(&cpu_snapshot()), "{:?}", state.section_names());
        // A reference module's state has no tile: it is defaulted.
        let mut prior = Snapshot::new("kernel-reference-module", "reference");
        prior.insert_tensor("resident/x", x());
        let (e, defaulted, _) = cpu(Some(&mut prior));
        assert_eq!(defaulted, ["tuning/tile"]);
        assert_eq!(
            e.export_state().unwrap().get("tuning/tile"),
            Some(&Section::Scalar(Scalar::I64(64)))
        );
    }

    /// `out = a * block * x`: what the kernel was bound with shows in
    /// every value.
    fn scale_by_block(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
        let k = (args.param("a")? * args.param("block")?) as f32;
        let x = args.input::<f32>(0)?;
        Ok(vec![args.output(0, x.iter().map(|v| k * v).collect())?])
    }

    /// The engine keeps each kernel's last binding and reuses it for calls
    /// that bind alike (`BindMemo`): a call with other parameters, other
    /// shapes or after a kept tunable changed is bound again.
    #[test]
    fn a_kept_binding_serves_only_calls_that_bind_alike() {
        let spawner = Arc::new(Spawner::default());
        let (mut e, _) = CpuEngine::create(
            context(2, spawner),
            None,
            "kernel-cpu",
            entries(KernelFn::Pooled(scale_by_block)),
        )
        .unwrap();
        let values = |e: &mut CpuEngine, call: Call| match e.run(call).unwrap() {
            Output::Value(t) => t.as_f32().unwrap().to_vec(),
            other => panic!("one output comes back as a Value: {other:?}"),
        };
        // a = 2 and block = 8 by default.
        assert_eq!(
            values(&mut e, Call::new("scale").arg(x())),
            [16.0, -32.0, 8.0]
        );
        assert_eq!(
            values(&mut e, Call::new("scale").arg(x())),
            [16.0, -32.0, 8.0]
        );
        let a3 = Call::new("scale").arg(x()).param("a", Scalar::F64(3.0));
        assert_eq!(values(&mut e, a3), [24.0, -48.0, 12.0]);
        let two = Call::new("scale").arg(Tensor::from_f32(&[2], vec![1.0, 2.0]));
        assert_eq!(values(&mut e, two), [16.0, 32.0]);
        // Keeping block = 16 changes what a call without it binds to.
        let keep = Call::new("scale")
            .arg(x())
            .param("block", Scalar::I64(16))
            .param("kiln.keep_tuning", Scalar::Bool(true));
        assert_eq!(values(&mut e, keep), [32.0, -64.0, 16.0]);
        assert_eq!(
            values(&mut e, Call::new("scale").arg(x())),
            [32.0, -64.0, 16.0]
        );
        // A call that does not bind is refused, and the kept one still serves.
        let bad = Call::new("scale").arg(Tensor::from_vec::<i32>(&[3], vec![1, 2, 3]));
        assert_eq!(e.run(bad).unwrap_err().kind, ErrorKind::BadCall);
        assert_eq!(
            values(&mut e, Call::new("scale").arg(x())),
            [32.0, -64.0, 16.0]
        );
    }

    #[test]
    fn a_pooled_kernel_on_the_reference_flavour_is_an_internal_error() {
        let spawner = Arc::new(Spawner::default());
        let (mut e, _) = CpuEngine::create_reference(
            context(1, spawner),
            None,
            "kernel-reference-module",
            entries(KernelFn::Pooled(scale_pooled)),
        )
        .unwrap();
        let err = e.run(Call::new("scale").arg(x())).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Internal);
    }
}
