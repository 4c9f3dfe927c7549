//! `switch BACKEND` (key `s`, `kiln ctl switch`): serve another backend
//! with the state. A placeholder until backend switching lands: the one
//! function below is the whole of it, to be replaced.

use super::session::Session;

impl Session {
    /// Switches the session to `backend` (empty: pick the next one this
    /// machine can run); the message says what happened.
    pub(super) fn switch_backend(&mut self, backend: &str) -> Result<String, String> {
        let _ = backend;
        Err(format!(
            "switching backends is not available yet; {} keeps serving {}",
            self.label(),
            self.module.backend
        ))
    }
}
