//! The reference engine: resident buffers and calls checked against their
//! declarations, run on the plain kernels, one at a time, on the engine
//! thread.

use std::collections::BTreeMap;
use std::sync::Arc;

use shared_state::{
    Arg, Call, DType, DeviceInfo, Engine, EngineContext, EngineError, ErrorKind, KernelSet,
    ModuleInfo, Output, ResidentInfo, Snapshot, Tensor,
};

use crate::registry::{Args, Entry};

pub struct ReferenceEngine {
    label: String,
    resident: BTreeMap<String, Tensor>,
    declared: Arc<KernelSet>,
    registry: BTreeMap<&'static str, Entry>,
}

impl ReferenceEngine {
    pub fn create(
        ctx: EngineContext,
        prior: Option<&mut Snapshot>,
    ) -> Result<(ReferenceEngine, Vec<String>), EngineError> {
        let mut engine = ReferenceEngine {
            label: ctx.label.clone(),
            resident: BTreeMap::new(),
            declared: ctx.kernels.clone(),
            registry: crate::declared::entries()
                .into_iter()
                .map(|e| (e.name, e))
                .collect(),
        };
        if let Some(snapshot) = prior {
            engine.resident = snapshot
                .take_tensors_with_prefix("resident/")
                .into_iter()
                .collect();
        }
        shared_state::tracing::debug!(target: "kernel_reference", label = %engine.label, "reference engine created");
        Ok((engine, Vec::new()))
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

    fn compute(&self, call: &Call) -> Result<Vec<Tensor>, EngineError> {
        let decl = self.declared.lookup(&call.kernel)?;
        let entry = self
            .registry
            .get(call.kernel.as_str())
            .filter(|e| e.implemented)
            .ok_or_else(|| {
                EngineError::new(
                    ErrorKind::UnknownKernel,
                    format!(
                        "{} is declared but not in the reference module yet",
                        call.kernel
                    ),
                )
            })?;
        let inputs = call
            .args
            .iter()
            .map(|a| self.tensor(a))
            .collect::<Result<Vec<_>, _>>()?;
        let shapes: Vec<(DType, &[usize])> =
            inputs.iter().map(|t| (t.dtype(), t.shape())).collect();
        let bound = decl
            .bind(&shapes, &call.params)
            .map_err(|e| EngineError::bad_call(e.0))?;
        let outputs = (entry.run)(&Args {
            bound: &bound,
            inputs,
        })?;
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

impl Engine for ReferenceEngine {
    fn info(&self) -> Result<ModuleInfo, EngineError> {
        Ok(ModuleInfo {
            name: env!("CARGO_PKG_NAME").to_string(),
            backend: "reference".to_string(),
            device: "cpu (plain reference kernels, one thread)".to_string(),
            kernels: self
                .registry
                .values()
                .filter(|e| e.implemented && self.declared.get(e.name).is_some())
                .map(|e| e.name.to_string())
                .collect(),
            notes: BTreeMap::new(),
        })
    }

    fn run(&mut self, call: Call) -> Result<Output, EngineError> {
        let mut outs = self.compute(&call)?;
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
        let mut snapshot = Snapshot::new(env!("CARGO_PKG_NAME"), "reference");
        for (name, t) in &self.resident {
            snapshot.insert_tensor(format!("resident/{name}"), t.clone());
        }
        Ok(snapshot)
    }
}

/// The reference backend runs on this CPU, single-threaded.
pub fn probe_devices() -> Result<Vec<DeviceInfo>, EngineError> {
    Ok(vec![DeviceInfo {
        index: 0,
        name: "reference".to_string(),
        kind: "cpu".to_string(),
        driver: "plain Rust, one thread".to_string(),
        api: String::new(),
    }])
}
