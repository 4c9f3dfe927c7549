//! A module that panics where it is told to, for the containment tests.
//!
//! - engine option `panic_in=create` panics in the factory;
//! - kernel `panic` panics in `run`;
//! - kernel `arm` with text param `panic_in` = `export` | `drop` | `import`
//!   makes the next export, the drop, or the next version's import panic
//!   (`import` travels in the snapshot as the scalar `panic_in_import`);
//! - kernel `count` increments a counter (state) and returns it.

use shared_state::{
    Call, DeviceInfo, Engine, EngineContext, EngineError, ModuleInfo, Output, ResidentInfo, Scalar,
    Snapshot, Tensor,
};

#[derive(Default)]
struct Misbehaving {
    count: i64,
    panic_in_export: bool,
    panic_in_drop: bool,
    panic_in_import: bool,
}

fn create(
    ctx: EngineContext,
    prior: Option<&mut Snapshot>,
) -> Result<(Misbehaving, Vec<String>), EngineError> {
    if ctx.option("panic_in") == Some("create") {
        panic!("deliberate panic in create");
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
    }
    shared_state::tracing::info!(target: "kiln_test_misbehaving", count = engine.count, "misbehaving engine created");
    Ok((engine, Vec::new()))
}

fn probe() -> Result<Vec<DeviceInfo>, EngineError> {
    Ok(Vec::new())
}

impl Engine for Misbehaving {
    fn info(&self) -> Result<ModuleInfo, EngineError> {
        Ok(ModuleInfo {
            name: "kiln-test-misbehaving".into(),
            backend: "test".into(),
            device: "none".into(),
            kernels: Vec::new(),
            notes: Default::default(),
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
            other => Err(EngineError::bad_call(format!("no kernel {other}"))),
        }
    }

    fn put_resident(&mut self, _name: &str, _tensor: Tensor) -> Result<(), EngineError> {
        Err(EngineError::bad_call("no residents here"))
    }

    fn read_resident(&self, name: &str) -> Result<Tensor, EngineError> {
        Err(EngineError::bad_call(format!("no resident {name}")))
    }

    fn residents(&self) -> Result<Vec<ResidentInfo>, EngineError> {
        Ok(Vec::new())
    }

    fn export_state(&self) -> Result<Snapshot, EngineError> {
        if self.panic_in_export {
            panic!("deliberate panic in export");
        }
        let mut s = Snapshot::new("kiln-test-misbehaving", "test");
        s.insert_scalar("count", Scalar::I64(self.count));
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
