//! The version both ends of a connection must share: the crate version
//! and a hash of the build's ABI fingerprint (rustc, target, profile,
//! contract; the same fields a module is checked against), so that a
//! remote kiln builds modules the local one would accept as its own.

use crate::swap::load::host_fingerprint;

/// Test-only: makes `kiln agent` report this version instead of its own,
/// so that the refusal of a mismatched agent can be tested with one binary.
/// Never set it otherwise.
pub const PRETEND_VERSION_ENV: &str = "KILN_AGENT_PRETEND_VERSION";

/// This build's version: `0.1.0+fp.<16 hex digits>`.
pub fn own() -> String {
    let fingerprint = host_fingerprint().encode();
    format!(
        "{}+fp.{:016x}",
        env!("CARGO_PKG_VERSION"),
        xxhash_rust::xxh3::xxh3_64(fingerprint.as_bytes())
    )
}

/// The version the agent reports: its own, or the test-only pretended one.
pub fn reported_by_agent() -> String {
    match std::env::var(PRETEND_VERSION_ENV) {
        Ok(v) if !v.is_empty() => v,
        _ => own(),
    }
}

/// The refusal when the remote's version is not this one: both versions,
/// and the commands that put this build on the remote.
pub fn mismatch(destination: &str, remote: &str, ssh_config: Option<&str>) -> String {
    let ssh = match ssh_config {
        Some(config) => format!("ssh -F {config}"),
        None => "ssh".to_string(),
    };
    let rsync_e = match ssh_config {
        Some(config) => format!(" -e 'ssh -F {config}'"),
        None => String::new(),
    };
    format!(
        "the remote kiln on {destination} is version {remote}, this kiln is version {local}: \
         both must be the same build. Update the remote from this workspace:\n  \
         rsync -a --exclude target{rsync_e} ./ {destination}:kiln-src/ && \
         {ssh} {destination} 'cd kiln-src && cargo install --locked --path harness'\n\
         (or pass --remote-kiln PATH naming a kiln built from this commit there)",
        local = own()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_is_the_crate_version_and_a_fingerprint_hash() {
        let v = super::own();
        let (crate_version, fp) = v.split_once("+fp.").expect(&v);
        assert_eq!(crate_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(fp.len(), 16, "{v}");
        assert_eq!(v, super::own(), "stable within a build");
    }
}
