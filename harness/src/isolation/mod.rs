//! Module code in a worker process, seen from the process that starts it:
//! [`isolated`] (`IsolatedEngine`: the engine in a worker; start, swap,
//! replay, checkpoint, restart), [`worker_process`] (spawn `kiln worker` in
//! its own process group under a memory limit, kill it, its last words),
//! [`worker_client`] (one request, watched: reply, crash, hang, Ctrl-C),
//! [`checkpoint`] (the last good point's state in shared memory, in
//! [`checkpoint_parts`]), with
//! [`disk_copy`] (each checkpoint copied to a file behind the session),
//! [`deadlines`] (how long a call may take), [`memory_limit`]
//! (`--worker-memory`) and [`preload`] (the workload's large residents
//! copied into memory while the modules build).
//!
//! `kiln dev`, `kiln replay` and `kiln backends` run module code only
//! through this layer; it knows nothing of sessions or versions' history.

pub mod checkpoint;
pub mod checkpoint_parts;
pub mod deadlines;
pub mod disk_copy;
pub mod isolated;
pub mod memory_limit;
pub mod preload;
pub mod worker_client;
pub mod worker_process;
