//! The loop alignment the verdicts rely on. `.cargo/config.toml` builds
//! host and modules with `-C llvm-args=-align-loops=64`: without it an edit
//! of one kernel moves the loops of the others by 16-byte steps, and the
//! same machine code times 10-15% apart (ARCHITECTURE.md, "Verdicts").
//! Cargo takes rustflags from the first of `CARGO_ENCODED_RUSTFLAGS`,
//! `RUSTFLAGS`, `[target.*] rustflags` (or `CARGO_TARGET_<TRIPLE>_RUSTFLAGS`)
//! and `[build] rustflags` (or `CARGO_BUILD_RUSTFLAGS`) that is set, so any
//! of the first ones replaces the configuration silently. `kiln dev` checks
//! the flags its own build had and those its module builds will get, and
//! warns, naming what replaced them.

/// The flag, as `.cargo/config.toml` gives it.
pub const FLAG: &str = "-align-loops=64";

/// The flags rustc got for this host (recorded by build.rs).
pub fn host_flags() -> &'static str {
    env!("KILN_HOST_RUSTFLAGS")
}

/// Why host or modules lack the loop alignment, if they do: `host` is the
/// host's own flags, `env` reads the environment module builds inherit,
/// `config` is the workspace's `.cargo/config.toml` (if any).
pub fn problem(
    host: &str,
    env: &dyn Fn(&str) -> Option<String>,
    config: Option<&str>,
) -> Option<String> {
    let target_var = format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        host_triple().to_uppercase().replace(['-', '.'], "_")
    );
    // What the module builds get, in cargo's order of precedence.
    let replaced = ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", target_var.as_str()]
        .into_iter()
        .find_map(|var| {
            env(var)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (var.to_string(), v))
        })
        .or_else(|| {
            config.filter(|c| has_target_rustflags(c)).map(|_| {
                (
                    "[target.*] rustflags in .cargo/config.toml".to_string(),
                    String::new(),
                )
            })
        });
    if let Some((what, value)) = replaced
        && !value.contains(FLAG)
    {
        let shown = if value.is_empty() {
            String::new()
        } else {
            format!(" (`{}`)", value.replace('\x1f', " "))
        };
        return Some(format!(
            "{what}{shown} replaces the rustflags of .cargo/config.toml, so kernel modules are built without \
             `-C llvm-args={FLAG}`: an edit of one kernel then moves the loops of the others and unchanged \
             kernels can read faster or slower; add `-C llvm-args={FLAG}` to it (host and modules alike) or unset it"
        ));
    }
    if !host.contains(FLAG) {
        return Some(format!(
            "this kiln was built without `-C llvm-args={FLAG}` (its rustflags: `{}`): host and modules must \
             be built with the loop alignment of .cargo/config.toml for the verdicts to hold; rebuild kiln \
             without RUSTFLAGS overriding it",
            if host.trim().is_empty() {
                "none"
            } else {
                host.trim()
            }
        ));
    }
    None
}

/// Whether `config` (a `.cargo/config.toml`) sets rustflags for a target,
/// which replace `[build] rustflags`.
fn has_target_rustflags(config: &str) -> bool {
    let mut in_target = false;
    for line in config.lines().map(str::trim) {
        if line.starts_with('[') {
            in_target = line.starts_with("[target.");
        } else if in_target && line.starts_with("rustflags") {
            return true;
        }
    }
    false
}

/// The target this host was built for (cargo's `TARGET` has it only in
/// build scripts; the architecture and OS are enough here).
fn host_triple() -> String {
    format!(
        "{}-unknown-{}-gnu",
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}

/// Logs the warning at the start of `kiln dev` (event `loop_alignment`), for
/// the workspace at `root`.
pub fn warn_at_start(root: &std::path::Path) {
    let config = std::fs::read_to_string(root.join(".cargo/config.toml")).ok();
    if let Some(why) = problem(host_flags(), &|v| std::env::var(v).ok(), config.as_deref()) {
        crate::events::emit!(
            tracing::Level::WARN,
            crate::events::LoopAlignment {},
            "{why}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIGNED: &str = "-C llvm-args=-align-loops=64";
    const CONFIG: &str = "[build]\nrustflags = [\"-C\", \"llvm-args=-align-loops=64\"]\n";

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn an_override_without_the_flag_is_named() {
        let why = problem(
            ALIGNED,
            &env_of(&[("RUSTFLAGS", "-Copt-level=3")]),
            Some(CONFIG),
        )
        .expect("a warning");
        assert!(
            why.starts_with("RUSTFLAGS (`-Copt-level=3`) replaces"),
            "{why}"
        );
        let why = problem(
            ALIGNED,
            &env_of(&[("CARGO_ENCODED_RUSTFLAGS", "-C\x1ftarget-cpu=native")]),
            Some(CONFIG),
        )
        .expect("a warning");
        assert!(
            why.starts_with("CARGO_ENCODED_RUSTFLAGS (`-C target-cpu=native`)"),
            "{why}"
        );
        let target = format!(
            "[build]\nrustflags = [\"-C\", \"llvm-args=-align-loops=64\"]\n[target.{}]\nrustflags = [\"-C\", \"target-cpu=native\"]\n",
            host_triple()
        );
        let why = problem(ALIGNED, &env_of(&[]), Some(&target)).expect("a warning");
        assert!(why.starts_with("[target.*] rustflags"), "{why}");
    }

    #[test]
    fn the_flag_kept_or_nothing_overridden_is_quiet() {
        assert_eq!(problem(ALIGNED, &env_of(&[]), Some(CONFIG)), None);
        assert_eq!(
            problem(
                ALIGNED,
                &env_of(&[("RUSTFLAGS", "-Copt-level=3 -C llvm-args=-align-loops=64")]),
                Some(CONFIG)
            ),
            None
        );
        // An empty variable replaces nothing.
        assert_eq!(
            problem(ALIGNED, &env_of(&[("RUSTFLAGS", " ")]), Some(CONFIG)),
            None
        );
    }

    #[test]
    fn a_host_built_without_it_is_named() {
        let why = problem("-Copt-level=3", &env_of(&[]), Some(CONFIG)).expect("a warning");
        assert!(why.contains("this kiln was built without"), "{why}");
        assert!(why.contains("-Copt-level=3"), "{why}");
    }

    #[test]
    fn this_host_was_built_with_it() {
        // The workspace's .cargo/config.toml applies to this test binary's
        // crate too: a build that lost the flag fails here.
        assert!(host_flags().contains(FLAG), "{}", host_flags());
    }
}
