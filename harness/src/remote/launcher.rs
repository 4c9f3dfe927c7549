//! `--launcher "srun -N1 -n1 -u ..."`: the agent started as a Slurm job step
//! from the login node that DEST names. The remote command becomes
//! `LAUNCHER REMOTE_KILN agent --stdio`, read by the login node's shell;
//! srun carries the agent's stdin and stdout (give it `-u`, unbuffered).
//!
//! The allocation lives as long as the step: when the session ends (the
//! stream closed, kiln interrupted, the connection cut) srun's stdin ends,
//! srun closes the agent's stdin, the agent leaves, even mid-command
//! ([`super::hangup`]), the step ends and srun releases the allocation it
//! made. A launcher that fails (no srun, no such partition, a job refused)
//! prints its own message, which ssh carries to our stderr.

/// The remote kiln command run through `launcher` (none: as it is).
pub fn wrap(launcher: Option<&str>, remote_kiln: &str) -> Result<String, String> {
    match launcher.map(str::trim) {
        None => Ok(remote_kiln.to_string()),
        Some("") => Err("--launcher: expected a command (such as \"srun -N1 -n1 -u\")".into()),
        Some(launcher) => Ok(format!("{launcher} {remote_kiln}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launcher_goes_before_the_remote_kiln() {
        assert_eq!(wrap(None, "kiln").unwrap(), "kiln");
        assert_eq!(
            wrap(Some(" srun -N1 -n1 -u "), "~/bin/kiln").unwrap(),
            "srun -N1 -n1 -u ~/bin/kiln"
        );
        let err = wrap(Some("  "), "kiln").unwrap_err();
        assert!(err.contains("--launcher"), "{err}");
    }
}
