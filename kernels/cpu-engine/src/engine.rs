//! The engine of the CPU and reference modules: resident buffers, calls
//! checked against their declarations and run by the kernel registered
//! under their name, the state handoff. The CPU module's engine
//! ([`CpuEngine::create`]) adds a rayon pool whose threads the host starts
//! and joins, tuning and counters ([`Pooled`]); the reference module's
//! ([`CpuEngine::create_reference`]) runs its kernels one at a time on the
//! engine thread and keeps nothing but the residents.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use shared_state::{
    Arg, Bound, Call, DType, Engine, EngineContext, EngineError, ErrorKind, KernelSet, ModuleInfo,
    Output, ResidentInfo, Scalar, Snapshot, Tensor,
};

#[cfg(feature = "rayon")]
use crate::pooled::Pooled;
use crate::registry::{CallArgs, Entry, KernelFn};

/// Which module's engine this is.
enum Flavour {
    /// The CPU module (backend `cpu`).
    #[cfg(feature = "rayon")]
    Pooled(Box<Pooled>),
    /// The reference module (backend `reference`): plain kernels, one
    /// thread, no tuning, no counters.
    Reference,
}

pub struct CpuEngine {
    /// The module's package name (`kernel-cpu`), for `info` and snapshots.
    module: &'static str,
    label: String,
    flavour: Flavour,
    /// Named buffers that stay loaded between calls.
    resident: BTreeMap<String, Tensor>,
    /// This version's kernel declarations (staged with it).
    declared: Arc<KernelSet>,
    /// The kernel functions of this module, by declared name.
    registry: BTreeMap<&'static str, Entry>,
    /// The last binding of each kernel ([`BindMemo`]). In a `RefCell`
    /// because a call borrows the residents it reads for as long as it
    /// runs; only the engine thread touches it.
    binds: RefCell<BTreeMap<String, BindMemo>>,
}

/// A kernel's last call bound to its declaration, reused while its calls
/// come with the same input dtypes and shapes, the same parameters and the
/// same kept tunables. A replay runs one call back to back, and binding it
/// again each time (maps of dims and parameters: 0.4 to 0.9 us a call
/// here, `cargo bench -p kiln-bench -- calls`) was in the timed span of
/// every call, where the same kernel linked into a program binds nothing.
struct BindMemo {
    inputs: Vec<(DType, Vec<usize>)>,
    params: BTreeMap<String, Scalar>,
    /// [`Pooled::tuning_changes`] when it was bound (0 for the reference
    /// engine, which keeps no tuning). Today only a call of the kernel
    /// itself changes its kept tunables, and that call's parameters already
    /// differ; the count keeps the memo right if anything else ever does.
    tuning: u64,
    bound: Bound,
}

impl BindMemo {
    /// Whether a call with these inputs and parameters binds as this one.
    fn fits(&self, inputs: &[&Tensor], params: &BTreeMap<String, Scalar>, tuning: u64) -> bool {
        self.tuning == tuning
            && self.params == *params
            && self.inputs.len() == inputs.len()
            && self
                .inputs
                .iter()
                .zip(inputs)
                .all(|((dtype, shape), t)| *dtype == t.dtype() && shape.as_slice() == t.shape())
    }
}

impl CpuEngine {
    /// The CPU module's factory: builds the pool on host-spawned threads
    /// and takes over what it knows of the prior state (residents, tuning,
    /// counters). `module` is the module's package name and `entries` its
    /// kernels (one per file).
    #[cfg(feature = "rayon")]
    pub fn create(
        ctx: EngineContext,
        prior: Option<&mut Snapshot>,
        module: &'static str,
        entries: Vec<Entry>,
    ) -> Result<(CpuEngine, Vec<String>), EngineError> {
        let pooled = Pooled::start(&ctx)?;
        let threads = pooled.threads;
        let mut engine = CpuEngine::new(&ctx, module, Flavour::Pooled(Box::new(pooled)), entries);
        let mut defaulted = Vec::new();
        if let Some(snapshot) = prior {
            engine.take_residents(snapshot);
            if let Flavour::Pooled(pooled) = &mut engine.flavour {
                defaulted = pooled.import(snapshot);
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

    /// The reference module's factory: the residents of the prior state,
    /// nothing else; it spawns no thread.
    pub fn create_reference(
        ctx: EngineContext,
        prior: Option<&mut Snapshot>,
        module: &'static str,
        entries: Vec<Entry>,
    ) -> Result<(CpuEngine, Vec<String>), EngineError> {
        let mut engine = CpuEngine::new(&ctx, module, Flavour::Reference, entries);
        if let Some(snapshot) = prior {
            engine.take_residents(snapshot);
        }
        shared_state::tracing::debug!(target: "kernel_reference", label = %engine.label, "reference engine created");
        Ok((engine, Vec::new()))
    }

    fn new(
        ctx: &EngineContext,
        module: &'static str,
        flavour: Flavour,
        entries: Vec<Entry>,
    ) -> CpuEngine {
        CpuEngine {
            module,
            label: ctx.label.clone(),
            flavour,
            resident: BTreeMap::new(),
            declared: ctx.kernels.clone(),
            registry: entries.into_iter().map(|e| (e.name, e)).collect(),
            binds: RefCell::new(BTreeMap::new()),
        }
    }

    fn take_residents(&mut self, snapshot: &mut Snapshot) {
        self.resident = snapshot
            .take_tensors_with_prefix("resident/")
            .into_iter()
            .collect();
    }

    /// The backend's name.
    fn backend(&self) -> &'static str {
        match self.flavour {
            #[cfg(feature = "rayon")]
            Flavour::Pooled(_) => "cpu",
            Flavour::Reference => "reference",
        }
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
                let place = match self.flavour {
                    #[cfg(feature = "rayon")]
                    Flavour::Pooled(_) => "on cpu",
                    Flavour::Reference => "in the reference module",
                };
                EngineError::new(
                    ErrorKind::UnknownKernel,
                    format!("{} is declared but not {place} yet", call.kernel),
                )
            })?;
        let inputs = call
            .args
            .iter()
            .map(|a| self.tensor(a))
            .collect::<Result<Vec<_>, _>>()?;
        let tuning = match &self.flavour {
            #[cfg(feature = "rayon")]
            Flavour::Pooled(pooled) => pooled.tuning_changes(),
            Flavour::Reference => 0,
        };
        let mut binds = self.binds.borrow_mut();
        let memo = match binds.get(call.kernel.as_str()) {
            Some(memo) if memo.fits(&inputs, &call.params, tuning) => memo,
            _ => {
                let shapes: Vec<(DType, &[usize])> =
                    inputs.iter().map(|t| (t.dtype(), t.shape())).collect();
                // The CPU engine binds without the host's directives and
                // with the kept tunables; the reference engine binds the
                // call as it is.
                let params = match &self.flavour {
                    #[cfg(feature = "rayon")]
                    Flavour::Pooled(pooled) => pooled.params_of(call, decl),
                    Flavour::Reference => call.params.clone(),
                };
                let bound = decl
                    .bind(&shapes, &params)
                    .map_err(|e| EngineError::bad_call(e.0))?;
                let memo = BindMemo {
                    inputs: shapes.iter().map(|(d, s)| (*d, s.to_vec())).collect(),
                    params: call.params.clone(),
                    tuning,
                    bound,
                };
                binds.insert(call.kernel.clone(), memo);
                &binds[call.kernel.as_str()]
            }
        };
        let bound = &memo.bound;
        let args = CallArgs { bound, inputs };
        let outputs = match (&entry.run, &self.flavour) {
            (KernelFn::Plain(run), _) => run(&args)?,
            #[cfg(feature = "rayon")]
            (KernelFn::Pooled(run), Flavour::Pooled(pooled)) => run(&crate::registry::Args {
                call: args,
                pool: &pooled.pool,
                tile: pooled.tile,
            })?,
            #[cfg(feature = "rayon")]
            (KernelFn::Pooled(_), Flavour::Reference) => {
                return Err(EngineError::internal(format!(
                    "{} runs on a rayon pool, and the reference engine has none",
                    call.kernel
                )));
            }
        };
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

impl Engine for CpuEngine {
    fn info(&self) -> Result<ModuleInfo, EngineError> {
        let (device, notes) = match &self.flavour {
            #[cfg(feature = "rayon")]
            Flavour::Pooled(pooled) => (
                format!("cpu ({} rayon threads)", pooled.threads),
                pooled.notes(&self.declared, &self.registry),
            ),
            Flavour::Reference => (
                "cpu (plain reference kernels, one thread)".to_string(),
                BTreeMap::new(),
            ),
        };
        Ok(ModuleInfo {
            name: self.module.to_string(),
            backend: self.backend().to_string(),
            device,
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
        #[cfg(feature = "rayon")]
        if let Flavour::Pooled(pooled) = &mut self.flavour {
            pooled.served(&call, &self.declared);
        }
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
        let mut snapshot = Snapshot::new(self.module, self.backend());
        for (name, t) in &self.resident {
            snapshot.insert_tensor(format!("resident/{name}"), t.clone());
        }
        #[cfg(feature = "rayon")]
        if let Flavour::Pooled(pooled) = &self.flavour {
            pooled.export(&mut snapshot);
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
