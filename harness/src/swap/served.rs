//! The served module: routes calls to the current engine version and swaps
//! versions with a state handoff.
//!
//! Handoff protocol (under the routing write lock, so no call can slip in
//! between): the old engine finishes every call already queued, exports a
//! snapshot (a copy: it keeps its state), the new engine is created from
//! the snapshot on its own thread, and only then are calls routed to it. If
//! export, creation or import fails, or panics, nothing changed: the old
//! version keeps serving with its state untouched. The old version is
//! retired after the lock is released (dropped on its thread, threads
//! joined, library closed once nobody holds a handle to it).

use std::sync::{Arc, RwLock};
use std::time::Instant;

use kiln_stats::bytes;
use shared_state::{Call, ErrorKind, ImportReport, Output, Snapshot};

use crate::events::{self, emit};
use crate::swap::engine_handle::{CallError, EngineHandle, EngineOptions};
use crate::swap::load::LoadedModule;

/// What a swap did, with timings.
#[derive(Clone, Debug)]
pub struct SwapReport {
    pub from: String,
    pub to: String,
    /// Bytes of state handed over.
    pub bytes: usize,
    pub export_ms: f64,
    pub import_ms: f64,
    /// Calls were held (not lost) for this long.
    pub paused_ms: f64,
    /// Retiring the old version (if this was its last handle).
    pub retire_ms: f64,
    pub import: ImportReport,
}

/// Why a swap did not happen. The old version is still serving.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("{to} not swapped in: the serving version {from} could not export its state: {error}")]
    Export {
        from: String,
        to: String,
        error: CallError,
    },
    #[error("{to} not swapped in: creating it from {from}'s state failed: {error}")]
    Create {
        from: String,
        to: String,
        error: CallError,
    },
}

/// A module being served: one current version, swappable.
pub struct ServedModule {
    current: RwLock<EngineHandle>,
    options: EngineOptions,
}

impl ServedModule {
    /// Serves `module`, optionally starting from saved state.
    pub fn start(
        module: LoadedModule,
        options: EngineOptions,
        prior: Option<Snapshot>,
    ) -> Result<(ServedModule, ImportReport), CallError> {
        let (handle, report) = EngineHandle::start(Arc::new(module), &options, prior)?;
        Ok((
            ServedModule {
                current: RwLock::new(handle),
                options,
            },
            report,
        ))
    }

    /// A handle pinned to the current version: it keeps working (on that
    /// version) after a swap, until dropped.
    pub fn handle(&self) -> EngineHandle {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn label(&self) -> String {
        self.handle().label().to_string()
    }

    /// Runs a call on the current version. The call is queued while the
    /// routing lock is held, so a swap sees it either before the state
    /// export (it runs on the old version and its effect moves over) or
    /// after the new version is promoted (it runs there). Never both, never
    /// lost.
    pub fn call(&self, call: Call) -> Result<Output, CallError> {
        let (handle, rx) = {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            let rx = current.submit(move |e| e.run(call))?;
            (current.clone(), rx)
        };
        handle.wait(rx)
    }

    /// Swaps to `module`, handing the current state over, and retires the
    /// old version.
    pub fn swap(&self, module: LoadedModule) -> Result<SwapReport, SwapError> {
        let (mut report, old) = self.swap_keeping_old(module)?;
        let retire_start = Instant::now();
        drop(old);
        report.retire_ms = retire_start.elapsed().as_secs_f64() * 1e3;
        Ok(report)
    }

    /// Swaps to `module` like [`ServedModule::swap`], but hands back a
    /// handle to the old version instead of retiring it: calls no longer go
    /// there, but its engine (with the state it had at the swap) stays alive
    /// until the handle is dropped. `kiln dev` uses it to time the old and
    /// new versions interleaved, in one run.
    pub fn swap_keeping_old(
        &self,
        module: LoadedModule,
    ) -> Result<(SwapReport, EngineHandle), SwapError> {
        self.swap_with(module, None)
    }

    /// Swaps to `module` like [`ServedModule::swap_keeping_old`], the new
    /// engine starting from `state` instead of the serving engine's export
    /// (a rollback: the last good point's state, not the failed version's).
    pub fn swap_to_state(
        &self,
        module: LoadedModule,
        state: Snapshot,
    ) -> Result<(SwapReport, EngineHandle), SwapError> {
        self.swap_with(module, Some(state))
    }

    fn swap_with(
        &self,
        module: LoadedModule,
        state: Option<Snapshot>,
    ) -> Result<(SwapReport, EngineHandle), SwapError> {
        let to = module.label().to_string();
        let module = Arc::new(module);
        let paused = Instant::now();
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let from = current.label().to_string();
        // A new version of the same module may take the buffers on the
        // device; another module (a backend switch) gets them in host memory.
        let same_module = current.module().staged.module == module.staged.module;
        let export_error = |error| SwapError::Export {
            from: from.clone(),
            to: to.clone(),
            error,
        };
        let snapshot = match state {
            Some(state) => state,
            None if same_module => current.export_handoff().map_err(export_error)?,
            None => current.export_state().map_err(export_error)?,
        };
        let export_ms = paused.elapsed().as_secs_f64() * 1e3;
        // The state handed over: cache sections (a GPU engine's host copies,
        // shared with the new version, never copied) are left out.
        let bytes = snapshot.byte_len()
            - snapshot
                .sections()
                .filter(|(name, _)| Snapshot::is_cache_section(name))
                .map(|(_, s)| s.byte_len())
                .sum::<usize>();
        let import_start = Instant::now();
        let on_device = snapshot.has_device_sections();
        let mut device_bytes: u64 = snapshot.device_sections().map(|(_, d)| d.bytes).sum();
        let started = match EngineHandle::start(module.clone(), &self.options, Some(snapshot)) {
            // The new engine cannot import the device's buffers (another
            // device or driver): hand the state over through host memory.
            Err(error)
                if on_device && error.engine_error().map(|e| e.kind) == Some(ErrorKind::State) =>
            {
                tracing::warn!(
                    "{to} cannot take {from}'s buffers on the device ({error}); handing them over through host memory"
                );
                let snapshot = current.export_state().map_err(export_error)?;
                device_bytes = 0;
                EngineHandle::start(module, &self.options, Some(snapshot))
            }
            other => other,
        };
        let (new_handle, import) = started.map_err(|error| SwapError::Create {
            from: from.clone(),
            to: to.clone(),
            error,
        })?;
        let import_ms = import_start.elapsed().as_secs_f64() * 1e3;
        let new_version = new_handle.module().staged.version;
        let old = std::mem::replace(&mut *current, new_handle);
        drop(current);
        let paused_ms = paused.elapsed().as_secs_f64() * 1e3;
        let module_name = old.module().staged.module.clone();
        let report = SwapReport {
            from,
            to,
            bytes,
            export_ms,
            import_ms,
            paused_ms,
            retire_ms: 0.0,
            import,
        };
        emit!(
            tracing::Level::INFO,
            events::Handoff {
                module: module_name.clone(),
                version: new_version,
                bytes: report.bytes as u64,
                ms: report.export_ms + report.import_ms,
            },
            "handoff {} -> {}: {} in {:.1} ms (export {:.1}, import {:.1}){}; {}",
            report.from,
            report.to,
            bytes::human(report.bytes as u64),
            report.export_ms + report.import_ms,
            report.export_ms,
            report.import_ms,
            match device_bytes {
                0 => String::new(),
                n => format!(", {} of it left on the device", bytes::human(n)),
            },
            report.import
        );
        if !report.import.dropped.is_empty() {
            emit!(
                tracing::Level::WARN,
                events::StateDropped {
                    module: module_name.clone(),
                },
                "{} does not know these state sections of {}; they were not carried over: {}",
                report.to,
                report.from,
                report.import.dropped.join(", ")
            );
        }
        Ok((report, old))
    }
}
