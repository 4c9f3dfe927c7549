//! What the CPU module's engine has beyond the reference module's: a rayon
//! pool whose threads the host starts and joins, tuning (the matmul tile and
//! the tunable values the host's tuner keeps) and call counters, all of it
//! carried in the state.

use std::collections::BTreeMap;

use rayon::ThreadPool;
use shared_state::{Call, EngineContext, EngineError, KernelDecl, KernelSet, Scalar, Snapshot};

use crate::registry::Entry;

/// Default row/column tile of the blocked matmul.
const DEFAULT_TILE: usize = 64;

/// The call parameter telling the engine to keep the call's tunable values.
const KEEP_TUNING: &str = "kiln.keep_tuning";

pub struct Pooled {
    pub threads: usize,
    pub pool: ThreadPool,
    /// Matmul tile size: a tuning parameter that moves with the state.
    pub tile: usize,
    /// Tunable values kept by the host's tuner (`KERNEL/PARAM` -> value;
    /// snapshot scalars `tuning/KERNEL/PARAM`): used for calls that do not
    /// give the parameter.
    tuned: BTreeMap<String, Scalar>,
    /// Counts the changes to `tuned`: a binding made under another count
    /// is made again (`CpuEngine`'s memo of bindings).
    tuning_changes: u64,
    /// Calls served per kernel, across versions.
    calls: BTreeMap<String, i64>,
}

impl Pooled {
    /// Builds the pool on host-spawned threads (`ctx.threads`, at least 1).
    pub fn start(ctx: &EngineContext) -> Result<Pooled, EngineError> {
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
        Ok(Pooled {
            threads,
            pool,
            tile: DEFAULT_TILE,
            tuned: BTreeMap::new(),
            tuning_changes: 0,
            calls: BTreeMap::new(),
        })
    }

    /// Takes the tile, the kept tunables and the counters from a prior
    /// state; returns what it had to default.
    pub fn import(&mut self, snapshot: &mut Snapshot) -> Vec<String> {
        let mut defaulted = Vec::new();
        match snapshot.take_scalar("tuning/tile").and_then(|s| s.as_i64()) {
            Some(tile) if tile > 0 => self.tile = tile as usize,
            _ => defaulted.push("tuning/tile".to_string()),
        }
        for name in snapshot.section_names() {
            if let Some(key) = name.strip_prefix("tuning/").filter(|k| k.contains('/')) {
                if let Some(v) = snapshot.take_scalar(&name) {
                    self.tuned.insert(key.to_string(), v);
                    self.tuning_changes += 1;
                }
                continue;
            }
            if let Some(kernel) = name.strip_prefix("counters/calls/") {
                if let Some(n) = snapshot.take_scalar(&name).and_then(|s| s.as_i64()) {
                    self.calls.insert(kernel.to_string(), n);
                }
            }
        }
        defaulted
    }

    /// How many times the kept tunables have changed: the bindings made
    /// before a change may bind a tunable to another value.
    pub fn tuning_changes(&self) -> u64 {
        self.tuning_changes
    }

    /// The call's parameters for binding: host directives (`kiln.*`)
    /// removed, and each tunable the call does not give taken from the
    /// kept values.
    pub fn params_of(&self, call: &Call, decl: &KernelDecl) -> BTreeMap<String, Scalar> {
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

    /// After a call that succeeded: `kiln.keep_tuning = true` keeps the
    /// call's explicit tunable values; the call is counted.
    pub fn served(&mut self, call: &Call, declared: &KernelSet) {
        if call.params.get(KEEP_TUNING) == Some(&Scalar::Bool(true)) {
            if let Some(decl) = declared.get(&call.kernel) {
                for t in &decl.tunables {
                    if let Some(v) = call.params.get(&t.name) {
                        self.tuned
                            .insert(format!("{}/{}", decl.name, t.name), v.clone());
                        self.tuning_changes += 1;
                    }
                }
            }
        }
        // No allocation once the kernel has a counter: this runs in the
        // timed span of every call.
        match self.calls.get_mut(call.kernel.as_str()) {
            Some(n) => *n += 1,
            None => {
                self.calls.insert(call.kernel.clone(), 1);
            }
        }
    }

    /// The engine's notes: the tile, the threads, `tuning/KERNEL/PARAM` for
    /// every tunable of an implemented kernel (the kept value, else the
    /// declared default: the host tunes the tunables listed here), and the
    /// counters.
    pub fn notes(
        &self,
        declared: &KernelSet,
        registry: &BTreeMap<&'static str, Entry>,
    ) -> BTreeMap<String, Scalar> {
        let mut notes = BTreeMap::new();
        notes.insert("tuning/tile".to_string(), Scalar::I64(self.tile as i64));
        notes.insert("threads".to_string(), Scalar::I64(self.threads as i64));
        for decl in declared.iter() {
            if !registry
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
        for (kernel, n) in &self.calls {
            notes.insert(format!("counters/calls/{kernel}"), Scalar::I64(*n));
        }
        notes
    }

    /// The tile, the kept tunables and the counters into `snapshot`.
    pub fn export(&self, snapshot: &mut Snapshot) {
        snapshot.insert_scalar("tuning/tile", Scalar::I64(self.tile as i64));
        for (key, v) in &self.tuned {
            snapshot.insert_scalar(format!("tuning/{key}"), v.clone());
        }
        for (kernel, n) in &self.calls {
            snapshot.insert_scalar(format!("counters/calls/{kernel}"), Scalar::I64(*n));
        }
    }
}
