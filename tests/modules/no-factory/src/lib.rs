//! A library with a valid fingerprint but no engine factory.

shared_state::export_fingerprint!();
