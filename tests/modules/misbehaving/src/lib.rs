//! A module that misbehaves where it is told to, for the containment and
//! isolation tests.
//!
//! Panics (caught inside the module, the host stays up):
//! - engine option `panic_in=create` panics in the factory;
//! - kernel `panic` panics in `run`;
//! - kernel `arm` with text param `panic_in` = `export` | `drop` | `import`
//!   makes the next export, the drop, or the next version's import panic
//!   (`import` travels in the snapshot as the scalar `panic_in_import`).
//!
//! Worse than panics (they take the process down; only a worker survives
//! them), chosen per call, per build or at creation:
//! - kernel `misbehave` does what its text param `mode` says, or, without
//!   one, what [`BUILT_MODE`] says (tests edit that line to build a
//!   crashing version): `none`, `segv` (a write through a bad pointer),
//!   `abort`, `stack_overflow` (unbounded recursion), `infinite_loop`,
//!   `oom` (allocates and touches `bytes` bytes, default 4 GiB, as a
//!   runaway allocation would), `panic`, `loop_if_file:PATH` (loops once
//!   PATH exists: a version that served well until then hangs),
//!   `scribble` (writes 0x5a over every byte of every resident buffer it
//!   holds, in place, then fails the call: a version that corrupts the
//!   state it was handed);
//! - engine option `misbehave_in_create=MODE` does it in the factory;
//! - environment variable `KILN_TEST_PROBE_MISBEHAVE=MODE` does it in the
//!   device probe.
//!
//! Tuning (for the autotuner's tests): kernel `tuned_double` returns
//! `2 * x` for its one argument, as its integer param `mode` says: `0`
//! (fast: spins 1 ms), `1` (slow: spins 5 ms), `2` (wrong: no spin, the
//! first element off by one). Without `mode`, the value kept by a call
//! with `kiln.keep_tuning = true`, else 0. The info note
//! `tuning/tuned_double/mode` lists the tunable with its kept value.
//!
//! State: kernel `count` increments a counter and returns it; residents are
//! kept as given (`put_resident`), exported as tensor sections, and kernel
//! `read` returns a copy of its resident argument.

use std::collections::BTreeMap;

use shared_state::{
    Arg, Call, DeviceInfo, Engine, EngineContext, EngineError, ModuleInfo, Output, ResidentInfo,
    Scalar, Snapshot, Tensor,
};

/// What `misbehave` does without a `mode` param.
pub const BUILT_MODE: &str = "none";
/// Changes nothing but the build (tests bump it to make a new version).
pub const REVISION: i64 = 1;

#[derive(Default)]
struct Misbehaving {
    count: i64,
    residents: BTreeMap<String, Tensor>,
    panic_in_export: bool,
    panic_in_drop: bool,
    panic_in_import: bool,
    /// `tuned_double`'s kept `mode`.
    tuned_mode: Option<i64>,
}

/// The info note that says the engine takes `tuned_double.mode`.
const TUNED_NOTE: &str = "tuning/tuned_double/mode";

/// Does what `mode` says; returns only for `none`.
fn misbehave(mode: &str, bytes: usize, depth: u64) -> Result<(), EngineError> {
    shared_state::tracing::warn!(target: "kiln_test_misbehaving", mode, "misbehaving: {mode}");
    match mode {
        "none" => Ok(()),
        "segv" => {
            let bad = std::hint::black_box(0x10usize) as *mut u64;
            // SAFETY: none; this is the deliberate out-of-bounds write the
            // crash tests need (address 0x10 is never mapped).
            unsafe { std::ptr::write_volatile(bad, 1) };
            Ok(())
        }
        "abort" => std::process::abort(),
        "stack_overflow" => {
            recurse(depth);
            Ok(())
        }
        "infinite_loop" => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "oom" => {
            let v = vec![1u8; bytes];
            std::hint::black_box(&v);
            Ok(())
        }
        "panic" => panic!("deliberate panic in misbehave"),
        // Loops like `infinite_loop` once the file exists: a version that
        // served well until then (the old version of an interleaved
        // replay, say) hangs.
        // A slow but finite call: `sleep_ms:N` sleeps N ms.
        other if other.starts_with("sleep_ms:") => {
            let ms: u64 = other["sleep_ms:".len()..]
                .parse()
                .map_err(|_| EngineError::bad_call(format!("misbehave: bad mode {other:?}")))?;
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(())
        }
        other if other.starts_with("loop_if_file:") => {
            let path = &other["loop_if_file:".len()..];
            match std::path::Path::new(path).exists() {
                true => misbehave("infinite_loop", bytes, depth),
                false => Ok(()),
            }
        }
        other => Err(EngineError::bad_call(format!(
            "misbehave: unknown mode {other:?}"
        ))),
    }
}

/// Recursion with no end: it overflows the stack.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    recurse(depth + 1).wrapping_add(frame[depth as usize % 64])
}

fn create(
    ctx: EngineContext,
    prior: Option<&mut Snapshot>,
) -> Result<(Misbehaving, Vec<String>), EngineError> {
    if ctx.option("panic_in") == Some("create") {
        panic!("deliberate panic in create");
    }
    if let Some(mode) = ctx.option("misbehave_in_create") {
        misbehave(mode, 4 << 30, 0)?;
    }
    let mut engine = Misbehaving::default();
    if let Some(snapshot) = prior {
        if snapshot
            .take_scalar("panic_in_import")
            .and_then(|s| s.as_bool())
            == Some(true)
        {
            panic!("deliberate panic in import");
        }
        engine.count = snapshot
            .take_scalar("count")
            .and_then(|s| s.as_i64())
            .unwrap_or(0);
        for (name, tensor) in snapshot.take_tensors_with_prefix("resident/") {
            let name = name.strip_prefix("resident/").unwrap_or(&name).to_string();
            engine.residents.insert(name, tensor);
        }
    }
    shared_state::tracing::info!(target: "kiln_test_misbehaving", count = engine.count, "misbehaving engine created");
    Ok((engine, Vec::new()))
}

fn probe() -> Result<Vec<DeviceInfo>, EngineError> {
    // A driver that crashes while probing, for `kiln backends`.
    if let Ok(mode) = std::env::var("KILN_TEST_PROBE_MISBEHAVE") {
        misbehave(&mode, 4 << 30, 0)?;
    }
    Ok(Vec::new())
}

fn text<'a>(call: &'a Call, name: &str) -> Option<&'a str> {
    match call.params.get(name) {
        Some(Scalar::Text(t)) => Some(t),
        _ => None,
    }
}

impl Misbehaving {
    fn output(&mut self, call: &Call, tensor: Tensor) -> Output {
        match &call.store_as {
            Some(name) => {
                let shape = tensor.shape().to_vec();
                self.residents.insert(name.clone(), tensor);
                Output::Stored {
                    name: name.clone(),
                    shape,
                }
            }
            None => Output::Value(tensor),
        }
    }
}

impl Engine for Misbehaving {
    fn info(&self) -> Result<ModuleInfo, EngineError> {
        let mut notes = BTreeMap::new();
        notes.insert("revision".to_string(), Scalar::I64(REVISION));
        notes.insert(
            TUNED_NOTE.to_string(),
            Scalar::I64(self.tuned_mode.unwrap_or(0)),
        );
        Ok(ModuleInfo {
            name: "kiln-test-misbehaving".into(),
            backend: "test".into(),
            device: "none".into(),
            // Undeclared kernels (no kernels/declarations/*.toml): replay
            // runs them because the module lists them, checked against the
            // workload's stored outputs only.
            kernels: ["arm", "count", "misbehave", "read", "tuned_double"]
                .map(String::from)
                .to_vec(),
            notes,
        })
    }

    fn run(&mut self, call: Call) -> Result<Output, EngineError> {
        match call.kernel.as_str() {
            "panic" => panic!("deliberate panic in run"),
            "arm" => {
                match call.params.get("panic_in") {
                    Some(Scalar::Text(t)) if t == "export" => self.panic_in_export = true,
                    Some(Scalar::Text(t)) if t == "drop" => self.panic_in_drop = true,
                    Some(Scalar::Text(t)) if t == "import" => self.panic_in_import = true,
                    other => {
                        return Err(EngineError::bad_call(format!(
                            "arm: bad panic_in {other:?}"
                        )));
                    }
                }
                Ok(Output::Value(Tensor::from_f32(&[0], vec![])))
            }
            "count" => {
                self.count += 1;
                Ok(Output::Value(Tensor::from_f32(
                    &[1],
                    vec![self.count as f32],
                )))
            }
            "misbehave" => {
                let mode = text(&call, "mode").unwrap_or(BUILT_MODE);
                if mode == "scribble" {
                    shared_state::tracing::warn!(
                        target: "kiln_test_misbehaving",
                        mode,
                        "misbehaving: {mode}"
                    );
                    for tensor in self.residents.values_mut() {
                        tensor.data_mut().as_bytes_mut().fill(0x5a);
                    }
                    return Err(EngineError::bad_call(
                        "misbehave: scribbled over every resident buffer, then failed",
                    ));
                }
                let bytes = match call.params.get("bytes") {
                    Some(Scalar::I64(n)) if *n > 0 => *n as usize,
                    _ => 4 << 30,
                };
                misbehave(mode, bytes, 0)?;
                let out = Tensor::from_f32(&[1], vec![0.0]);
                Ok(self.output(&call, out))
            }
            "tuned_double" => {
                let x = match call.args.first() {
                    Some(Arg::Tensor(t)) => t.clone(),
                    Some(Arg::Resident(name)) => self
                        .residents
                        .get(name)
                        .cloned()
                        .ok_or_else(|| EngineError::bad_call(format!("no resident {name}")))?,
                    None => return Err(EngineError::bad_call("tuned_double: one argument")),
                };
                let explicit = call.params.get("mode").and_then(Scalar::as_i64);
                if call.params.get("kiln.keep_tuning") == Some(&Scalar::Bool(true)) {
                    if let Some(m) = explicit {
                        self.tuned_mode = Some(m);
                    }
                }
                let mode = explicit.or(self.tuned_mode).unwrap_or(0);
                let xs = x
                    .data()
                    .as_f32()
                    .ok_or_else(|| EngineError::bad_call("tuned_double: f32 input"))?;
                // The kernel's cost: fast spins 1 ms, slow 5 ms (so that it
                // dominates the call's transfer), wrong none at all (the
                // fastest candidate, and still never picked).
                let spin = match mode {
                    0 => std::time::Duration::from_millis(1),
                    1 => std::time::Duration::from_millis(5),
                    _ => std::time::Duration::ZERO,
                };
                let started = std::time::Instant::now();
                let mut out: Vec<f32> = xs.iter().map(|v| 2.0 * v).collect();
                while started.elapsed() < spin {
                    std::hint::black_box(&mut out);
                }
                if mode == 2 {
                    if let Some(first) = out.first_mut() {
                        *first += 1.0;
                    }
                }
                let tensor = Tensor::from_f32(x.shape(), out);
                Ok(self.output(&call, tensor))
            }
            "read" => {
                let tensor = match call.args.first() {
                    Some(Arg::Resident(name)) => self
                        .residents
                        .get(name)
                        .cloned()
                        .ok_or_else(|| EngineError::bad_call(format!("no resident {name}")))?,
                    Some(Arg::Tensor(t)) => t.clone(),
                    None => return Err(EngineError::bad_call("read: one argument")),
                };
                Ok(self.output(&call, tensor))
            }
            other => Err(EngineError::bad_call(format!("no kernel {other}"))),
        }
    }

    fn put_resident(&mut self, name: &str, tensor: Tensor) -> Result<(), EngineError> {
        self.residents.insert(name.to_string(), tensor);
        Ok(())
    }

    fn read_resident(&self, name: &str) -> Result<Tensor, EngineError> {
        self.residents
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::bad_call(format!("no resident {name}")))
    }

    fn residents(&self) -> Result<Vec<ResidentInfo>, EngineError> {
        Ok(self
            .residents
            .iter()
            .map(|(name, t)| ResidentInfo {
                name: name.clone(),
                dtype: t.dtype(),
                shape: t.shape().to_vec(),
            })
            .collect())
    }

    fn export_state(&self) -> Result<Snapshot, EngineError> {
        if self.panic_in_export {
            panic!("deliberate panic in export");
        }
        let mut s = Snapshot::new("kiln-test-misbehaving", "test");
        s.insert_scalar("count", Scalar::I64(self.count));
        for (name, tensor) in &self.residents {
            s.insert_tensor(format!("resident/{name}"), tensor.clone());
        }
        if self.panic_in_import {
            s.insert_scalar("panic_in_import", Scalar::Bool(true));
        }
        Ok(s)
    }
}

impl Drop for Misbehaving {
    fn drop(&mut self) {
        if self.panic_in_drop {
            panic!("deliberate panic in drop");
        }
    }
}

shared_state::export_module! {
    create: create,
    probe: probe,
}
