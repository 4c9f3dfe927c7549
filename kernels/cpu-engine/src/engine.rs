//! The CPU engine: resident buffers, tuning and counters, a rayon pool whose
//! threads the host starts and joins.

use std::collections::BTreeMap;

use rayon::ThreadPool;
use std::sync::Arc;

use shared_state::{
    Arg, Call, DType, Engine, EngineContext, EngineError, ErrorKind, KernelSet, ModuleInfo, Output,
    ResidentInfo, Scalar, Snapshot, Tensor,
};

use crate::registry::{Args, Entry};

/// Default row/column tile of the blocked matmul.
const DEFAULT_TILE: usize = 64;

pub struct CpuEngine {
    /// The module's package name (`kernel-cpu`), for `info` and snapshots.
    module: &'static str,
    label: String,
    threads: usize,
    pool: ThreadPool,
    /// Named buffers that stay loaded between calls.
    resident: BTreeMap<String, Tensor>,
    /// Matmul tile size: a tuning parameter that moves with the state.
    tile: usize,
    /// Tunable values kept by the host's tuner (`KERNEL/PARAM` -> value;
    /// snapshot scalars `tuning/KERNEL/PARAM`): used for calls that do not
    /// give the parameter.
    tuned: BTreeMap<String, Scalar>,
    /// Calls served per kernel, across versions.
    calls: BTreeMap<String, i64>,
    /// This version's kernel declarations (staged with it).
    declared: Arc<KernelSet>,
    /// The kernel functions of this module, by declared name.
    registry: BTreeMap<&'static str, Entry>,
}

impl CpuEngine {
    /// The module's factory: builds the pool on host-spawned threads and
    /// takes over what it knows of the prior state. `module` is the
    /// module's package name and `entries` its kernels (one per file).
    pub fn create(
        ctx: EngineContext,
        prior: Option<&mut Snapshot>,
        module: &'static str,
        entries: Vec<Entry>,
    ) -> Result<(CpuEngine, Vec<String>), EngineError> {
        let threads = ctx.threads.max(1);
        let label = ctx.label.clone();
        let spawn_ctx = ctx.clone();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("{label}-rayon-{i}"))
            .spawn_handler(move |thread| {
                let name = thread.name().unwrap_or("kiln-rayon").to_string();
                spawn_ctx.spawn(name, move || thread.run())
            })
            .build()
            .map_err(|e| EngineError::internal(format!("cannot start the rayon pool: {e}")))?;
        let mut engine = CpuEngine {
            module,
            label: ctx.label.clone(),
            threads,
            pool,
            resident: BTreeMap::new(),
            tile: DEFAULT_TILE,
            tuned: BTreeMap::new(),
            calls: BTreeMap::new(),
            declared: ctx.kernels.clone(),
            registry: entries.into_iter().map(|e| (e.name, e)).collect(),
        };
        let mut defaulted = Vec::new();
        if let Some(snapshot) = prior {
            engine.resident = snapshot
                .take_tensors_with_prefix("resident/")
                .into_iter()
                .collect();
            match snapshot.take_scalar("tuning/tile").and_then(|s| s.as_i64()) {
                Some(tile) if tile > 0 => engine.tile = tile as usize,
                _ => defaulted.push("tuning/tile".to_string()),
            }
            for name in snapshot.section_names() {
                if let Some(key) = name.strip_prefix("tuning/").filter(|k| k.contains('/')) {
                    if let Some(v) = snapshot.take_scalar(&name) {
                        engine.tuned.insert(key.to_string(), v);
                    }
                    continue;
                }
                if let Some(kernel) = name.strip_prefix("counters/calls/") {
                    if let Some(n) = snapshot.take_scalar(&name).and_then(|s| s.as_i64()) {
                        engine.calls.insert(kernel.to_string(), n);
                    }
                }
            }
        }
        shared_state::tracing::debug!(
            target: "kernel_cpu",
            label = %engine.label,
            threads,
            residents = engine.resident.len(),
            "cpu engine created"
        );
        Ok((engine, defaulted))
    }

    fn tensor<'a>(&'a self, arg: &'a Arg) -> Result<&'a Tensor, EngineError> {
        match arg {
            Arg::Tensor(t) => Ok(t),
            Arg::Resident(name) => self.resident.get(name).ok_or_else(|| {
                EngineError::new(
                    ErrorKind::UnknownBuffer,
                    format!("no resident buffer {name:?}"),
                )
            }),
        }
    }

    /// Runs `call`: checks it against its declaration, then runs the
    /// kernel registered under its name. Returns the outputs in declared
    /// order.
    fn compute(&self, call: &Call) -> Result<Vec<Tensor>, EngineError> {
        let decl = self.declared.lookup(&call.kernel)?;
        let entry = self
            .registry
            .get(call.kernel.as_str())
            .filter(|e| e.implemented)
            .ok_or_else(|| {
                EngineError::new(
                    ErrorKind::UnknownKernel,
                    format!("{} is declared but not on cpu yet", call.kernel),
                )
            })?;
        let inputs = call
            .args
            .iter()
            .map(|a| self.tensor(a))
            .collect::<Result<Vec<_>, _>>()?;
        let shapes: Vec<(DType, &[usize])> =
            inputs.iter().map(|t| (t.dtype(), t.shape())).collect();
        let params = self.params_of(call, decl);
        let bound = decl
            .bind(&shapes, &params)
            .map_err(|e| EngineError::bad_call(e.0))?;
        let args = Args {
            bound: &bound,
            inputs,
            pool: &self.pool,
            tile: self.tile,
        };
        let outputs = (entry.run)(&args)?;
        if outputs.len() != bound.outputs.len() {
            return Err(EngineError::internal(format!(
                "{} returned {} output(s), its declaration has {}",
                call.kernel,
                outputs.len(),
                bound.outputs.len()
            )));
        }
        Ok(outputs)
    }
}

impl CpuEngine {
    /// The call's parameters for binding: host directives (`kiln.*`)
    /// removed, and each tunable the call does not give taken from the
    /// kept values.
    fn params_of(&self, call: &Call, decl: &shared_state::KernelDecl) -> BTreeMap<String, Scalar> {
        let mut params: BTreeMap<String, Scalar> = call
            .params
            .iter()
            .filter(|(k, _)| !k.starts_with("kiln."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for t in &decl.tunables {
            if let Some(v) = self.tuned.get(&format!("{}/{}", decl.name, t.name)) {
                params.entry(t.name.clone()).or_insert_with(|| v.clone());
            }
        }
        params
    }

    /// `kiln.keep_tuning = true`: keep the call's explicit tunable values.
    fn keep_tuning(&mut self, call: &Call) {
        if call.params.get(KEEP_TUNING) != Some(&Scalar::Bool(true)) {
            return;
        }
        if let Some(decl) = self.declared.get(&call.kernel) {
            for t in &decl.tunables {
                if let Some(v) = call.params.get(&t.name) {
                    self.tuned
                        .insert(format!("{}/{}", decl.name, t.name), v.clone());
                }
            }
        }
    }

    /// `tuning/KERNEL/PARAM` for every tunable of an implemented kernel:
    /// the kept value, else the declared default. The host tunes the
    /// tunables listed here.
    fn tuning_notes(&self) -> BTreeMap<String, Scalar> {
        let mut notes = BTreeMap::new();
        for decl in self.declared.iter() {
            if !self
                .registry
                .get(decl.name.as_str())
                .is_some_and(|e| e.implemented)
            {
                continue;
            }
            for t in &decl.tunables {
                let key = format!("{}/{}", decl.name, t.name);
                let v = self.tuned.get(&key).cloned().unwrap_or(t.default.clone());
                notes.insert(format!("tuning/{key}"), v);
            }
        }
        notes
    }
}

/// The call parameter telling the engine to keep the call's tunable values.
const KEEP_TUNING: &str = "kiln.keep_tuning";

impl Engine for CpuEngine {
    fn info(&self) -> Result<ModuleInfo, EngineError> {
        let mut notes = BTreeMap::new();
        notes.insert("tuning/tile".to_string(), Scalar::I64(self.tile as i64));
        notes.insert("threads".to_string(), Scalar::I64(self.threads as i64));
        notes.extend(self.tuning_notes());
        for (kernel, n) in &self.calls {
            notes.insert(format!("counters/calls/{kernel}"), Scalar::I64(*n));
        }
        Ok(ModuleInfo {
            name: self.module.to_string(),
            backend: "cpu".to_string(),
            device: format!("cpu ({} rayon threads)", self.threads),
            kernels: self
                .registry
                .values()
                .filter(|e| e.implemented && self.declared.get(e.name).is_some())
                .map(|e| e.name.to_string())
                .collect(),
            notes,
        })
    }

    fn run(&mut self, call: Call) -> Result<Output, EngineError> {
        let mut outs = self.compute(&call)?;
        self.keep_tuning(&call);
        *self.calls.entry(call.kernel.clone()).or_insert(0) += 1;
        match call.store_as {
            Some(name) if outs.len() == 1 => {
                let out = outs.remove(0);
                let shape = out.shape().to_vec();
                self.resident.insert(name.clone(), out);
                Ok(Output::Stored { name, shape })
            }
            Some(_) => Err(EngineError::bad_call(format!(
                "{} has {} outputs: store_as takes a kernel with one",
                call.kernel,
                outs.len()
            ))),
            None if outs.len() == 1 => Ok(Output::Value(outs.remove(0))),
            None => Ok(Output::Values(outs)),
        }
    }

    fn put_resident(&mut self, name: &str, tensor: Tensor) -> Result<(), EngineError> {
        self.resident.insert(name.to_string(), tensor);
        Ok(())
    }

    fn read_resident(&self, name: &str) -> Result<Tensor, EngineError> {
        self.tensor(&Arg::Resident(name.to_string())).cloned()
    }

    fn residents(&self) -> Result<Vec<ResidentInfo>, EngineError> {
        Ok(self
            .resident
            .iter()
            .map(|(name, t)| ResidentInfo {
                name: name.clone(),
                dtype: t.dtype(),
                shape: t.shape().to_vec(),
            })
            .collect())
    }

    fn export_state(&self) -> Result<Snapshot, EngineError> {
        let mut snapshot = Snapshot::new(self.module, "cpu");
        for (name, t) in &self.resident {
            snapshot.insert_tensor(format!("resident/{name}"), t.clone());
        }
        snapshot.insert_scalar("tuning/tile", Scalar::I64(self.tile as i64));
        for (key, v) in &self.tuned {
            snapshot.insert_scalar(format!("tuning/{key}"), v.clone());
        }
        for (kernel, n) in &self.calls {
            snapshot.insert_scalar(format!("counters/calls/{kernel}"), Scalar::I64(*n));
        }
        Ok(snapshot)
    }
}

/// The CPU backend always has one device: this machine.
pub fn probe_devices() -> Result<Vec<shared_state::DeviceInfo>, EngineError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    Ok(vec![shared_state::DeviceInfo {
        index: 0,
        name: model,
        kind: "cpu".to_string(),
        driver: format!("rayon, {cores} hardware threads"),
        api: String::new(),
    }])
}
