//! What `export_module!` expands to: the module's exported symbols, and the
//! wrappers that keep every panic inside the module.
//!
//! Everything here that runs module code is generic or called from generic
//! code instantiated by the macro, so it is compiled into the module's own
//! library and uses the module's own copy of std. That matters: a panic
//! raised by the module's std and caught by the host's `catch_unwind` aborts
//! the process ("Rust cannot catch foreign exceptions").

use std::any::Any;
use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use crate::engine::{
    Call, Created, DeviceInfo, Engine, EngineContext, EngineError, ErrorKind, ModuleInfo, Output,
    ResidentInfo,
};
use crate::snapshot::{ImportReport, Snapshot};
use crate::tensor::Tensor;

/// C-ABI symbol: `unsafe extern "C" fn(buf: *mut u8, cap: usize) -> usize`.
/// Writes the module's fingerprint (UTF-8, `key=value` lines) into `buf` if
/// it fits and returns its length. Safe to call whatever the Rust ABI of the
/// module is, so the host calls it before anything else.
pub const FINGERPRINT_SYMBOL: &str = "kiln_abi_fingerprint";
/// Rust-ABI symbol of type [`InstallLoggingFn`].
pub const INSTALL_LOGGING_SYMBOL: &str = "kiln_install_logging";
/// Rust-ABI symbol of type [`CreateEngineFn`]: the factory.
pub const CREATE_ENGINE_SYMBOL: &str = "kiln_create_engine";
/// Rust-ABI symbol of type [`ProbeDevicesFn`]: which devices the backend
/// can use here, or why none (an [`ErrorKind::Unavailable`] error).
pub const PROBE_DEVICES_SYMBOL: &str = "kiln_probe_devices";

pub type FingerprintFn = unsafe extern "C" fn(buf: *mut u8, cap: usize) -> usize;
pub type InstallLoggingFn = fn(dispatch: tracing::Dispatch) -> Result<(), EngineError>;
pub type CreateEngineFn =
    fn(ctx: EngineContext, prior: Option<Snapshot>) -> Result<Created, EngineError>;
pub type ProbeDevicesFn = fn() -> Result<Vec<DeviceInfo>, EngineError>;

/// Exports a kernel module. Use once, at the root of a `cdylib` crate:
///
/// ```ignore
/// shared_state::export_module! {
///     create: MyEngine::create,
///     probe: my_backend::probe_devices,
/// }
/// ```
///
/// where `probe` is a `fn() -> Result<Vec<DeviceInfo>, EngineError>` (the
/// devices this backend can use here, or an `Unavailable` error saying why
/// none) and `MyEngine::create` has the signature
/// `fn(EngineContext, Option<&mut Snapshot>) -> Result<(MyEngine, Vec<String>), EngineError>`:
/// it takes from the snapshot the sections it knows and returns the engine
/// with the names of the state it had to default. The sections it leaves in
/// the snapshot are reported to the host as dropped.
#[macro_export]
macro_rules! export_module {
    (create: $create:path, probe: $probe:path $(,)?) => {
        $crate::export_fingerprint!();

        #[unsafe(no_mangle)]
        pub fn kiln_install_logging(
            dispatch: $crate::tracing::Dispatch,
        ) -> ::std::result::Result<(), $crate::EngineError> {
            $crate::export::install_logging(dispatch)
        }

        #[unsafe(no_mangle)]
        pub fn kiln_create_engine(
            ctx: $crate::EngineContext,
            prior: ::std::option::Option<$crate::Snapshot>,
        ) -> ::std::result::Result<$crate::Created, $crate::EngineError> {
            $crate::export::guarded_create(ctx, prior, $create)
        }

        #[unsafe(no_mangle)]
        pub fn kiln_probe_devices()
        -> ::std::result::Result<::std::vec::Vec<$crate::DeviceInfo>, $crate::EngineError> {
            $crate::export::guard($probe)
        }

        // Type checks: the exported functions have exactly the types the
        // host will read them as.
        const _: $crate::export::InstallLoggingFn = kiln_install_logging;
        const _: $crate::export::CreateEngineFn = kiln_create_engine;
        const _: $crate::export::ProbeDevicesFn = kiln_probe_devices;
    };
}

/// Exports only the C-ABI fingerprint function (used by `export_module!`;
/// on its own only by tests of the loader).
#[macro_export]
macro_rules! export_fingerprint {
    () => {
        /// The module's ABI fingerprint (C ABI; see `shared_state::export`).
        ///
        /// # Safety
        /// `buf` must be valid for writes of `cap` bytes (or `cap` must be 0).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn kiln_abi_fingerprint(buf: *mut u8, cap: usize) -> usize {
            let text = match ::std::panic::catch_unwind(|| $crate::fingerprint!().encode()) {
                Ok(text) => text,
                Err(_) => return 0,
            };
            if !buf.is_null() && text.len() <= cap {
                // SAFETY: the caller guarantees `buf` is valid for `cap`
                // bytes and we write `text.len() <= cap` of them; `text` is a
                // fresh String, so the two cannot overlap.
                unsafe { ::std::ptr::copy_nonoverlapping(text.as_ptr(), buf, text.len()) };
            }
            text.len()
        }

        const _: $crate::export::FingerprintFn = kiln_abi_fingerprint;
    };
}

thread_local! {
    /// The last panic seen by this module's hook on this thread: message and
    /// location. Only ever touched on host-spawned version threads, which
    /// the host joins before it closes the library.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static PANIC_HOOK: Once = Once::new();

/// Installs (once per loaded copy of the module) a panic hook in the
/// module's std: the host's hook never sees a module's panics. The hook
/// records message and location for the error the host gets, and logs it.
pub fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = panic_message(info.payload());
            let text = match info.location() {
                Some(loc) => format!(
                    "{message} (at {}:{}:{})",
                    loc.file(),
                    loc.line(),
                    loc.column()
                ),
                None => message,
            };
            tracing::error!(target: "kiln::module", "panic in module: {text}");
            let _ = LAST_PANIC.try_with(|slot| *slot.borrow_mut() = Some(text));
        }));
    });
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

fn panic_error(payload: Box<dyn Any + Send>) -> EngineError {
    let recorded = LAST_PANIC
        .try_with(|slot| slot.borrow_mut().take())
        .ok()
        .flatten();
    let message = recorded.unwrap_or_else(|| panic_message(payload.as_ref()));
    // The payload was allocated by this module's std: drop it here.
    drop(payload);
    EngineError::new(ErrorKind::Panic, message)
}

/// Runs `f`, turning a panic into an [`ErrorKind::Panic`] error.
pub fn guard<T>(f: impl FnOnce() -> Result<T, EngineError>) -> Result<T, EngineError> {
    install_panic_hook();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(panic_error(payload)),
    }
}

/// Hands the host's `tracing` dispatcher to this copy of `tracing`, so the
/// module's events reach the host's subscriber.
pub fn install_logging(dispatch: tracing::Dispatch) -> Result<(), EngineError> {
    guard(|| {
        // A second call in the same copy is harmless: keep the first.
        let _ = tracing::dispatcher::set_global_default(dispatch);
        // The dispatcher was built by the host's copy of tracing-core, so
        // this copy's max-level filter was never updated for it (it starts
        // at OFF and every event would be filtered out before reaching the
        // dispatcher). Recompute interest and the max level here.
        tracing::callsite::rebuild_interest_cache();
        Ok(())
    })
}

/// The factory wrapper behind `kiln_create_engine`.
pub fn guarded_create<E, F>(
    ctx: EngineContext,
    prior: Option<Snapshot>,
    create: F,
) -> Result<Created, EngineError>
where
    E: Engine + 'static,
    F: FnOnce(EngineContext, Option<&mut Snapshot>) -> Result<(E, Vec<String>), EngineError>,
{
    guard(move || {
        let mut prior = prior;
        let bytes_before = prior.as_ref().map_or(0, Snapshot::byte_len);
        let (engine, defaulted) = create(ctx, prior.as_mut())?;
        let report = match &prior {
            Some(snapshot) => ImportReport {
                restored: snapshot.taken_names().to_vec(),
                dropped: snapshot.section_names(),
                defaulted,
                bytes: bytes_before - snapshot.byte_len(),
            },
            None => ImportReport {
                defaulted,
                ..ImportReport::default()
            },
        };
        Ok(Created {
            engine: Box::new(Guarded::new(engine)),
            report,
        })
    })
}

/// An engine whose every method, and whose drop, catches panics inside the
/// module.
pub struct Guarded<E: Engine> {
    inner: ManuallyDrop<E>,
}

impl<E: Engine> Guarded<E> {
    pub fn new(engine: E) -> Guarded<E> {
        Guarded {
            inner: ManuallyDrop::new(engine),
        }
    }
}

impl<E: Engine> Engine for Guarded<E> {
    fn info(&self) -> Result<ModuleInfo, EngineError> {
        guard(|| self.inner.info())
    }

    fn run(&mut self, call: Call) -> Result<Output, EngineError> {
        guard(|| self.inner.run(call))
    }

    fn put_resident(&mut self, name: &str, tensor: Tensor) -> Result<(), EngineError> {
        guard(|| self.inner.put_resident(name, tensor))
    }

    fn read_resident(&self, name: &str) -> Result<Tensor, EngineError> {
        guard(|| self.inner.read_resident(name))
    }

    fn residents(&self) -> Result<Vec<ResidentInfo>, EngineError> {
        guard(|| self.inner.residents())
    }

    fn export_state(&self) -> Result<Snapshot, EngineError> {
        guard(|| self.inner.export_state())
    }

    fn export_handoff(&self) -> Result<Snapshot, EngineError> {
        guard(|| self.inner.export_handoff())
    }
}

impl<E: Engine> Drop for Guarded<E> {
    fn drop(&mut self) {
        // SAFETY: `inner` is taken exactly once, here, and `self` is never
        // used again after `drop`.
        let inner = unsafe { ManuallyDrop::take(&mut self.inner) };
        if let Err(err) = guard(move || {
            drop(inner);
            Ok(())
        }) {
            tracing::error!(target: "kiln::module", "engine drop panicked: {}", err.message);
        }
    }
}
