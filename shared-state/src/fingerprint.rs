//! The ABI fingerprint: everything that must be equal between the host and a
//! module for `extern "Rust"` calls, trait objects and `Box`es to be sound
//! across the boundary.
//!
//! Build-time facts come from this crate's `build.rs`; the profile switches
//! that can differ per crate (`debug_assertions`, the panic strategy) are
//! evaluated by the `fingerprint!` macro in the crate that expands it (the
//! host, or the module via `export_module!`).

use std::any::TypeId;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};

/// Bumped whenever the contract changes in a way the source hash could miss.
pub const CONTRACT_VERSION: &str = "kiln-contract/5";

/// Collects the fingerprint of the crate that expands this macro.
#[macro_export]
macro_rules! fingerprint {
    () => {
        $crate::fingerprint::Fingerprint::collect(
            cfg!(debug_assertions),
            if cfg!(panic = "unwind") {
                "unwind"
            } else {
                "abort"
            },
        )
    };
}

/// An ordered list of `field = value` facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub fields: Vec<(String, String)>,
}

/// One field that differs between a module and the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub field: String,
    /// The module's value (`None`: the module does not report the field).
    pub module: Option<String>,
    /// The host's value (`None`: the host does not know the field).
    pub host: Option<String>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.module, &self.host) {
            (Some(m), Some(h)) => write!(f, "built with {} {m}, host has {h}", self.field),
            (None, Some(h)) => write!(f, "module does not report {} (host has {h})", self.field),
            (Some(m), None) => write!(f, "module reports {} {m}, unknown to the host", self.field),
            (None, None) => write!(f, "{} missing on both sides", self.field),
        }
    }
}

/// A stable hash of the contract types as this crate's build sees them. It
/// changes when `shared-state` or a crate it depends on is compiled with
/// other features, another profile or another version: the cases where
/// `TypeId`s and layouts silently diverge.
fn contract_type_identity() -> String {
    let mut h = DefaultHasher::new();
    TypeId::of::<crate::Snapshot>().hash(&mut h);
    TypeId::of::<dyn crate::Engine>().hash(&mut h);
    TypeId::of::<crate::EngineError>().hash(&mut h);
    TypeId::of::<tracing::Dispatch>().hash(&mut h);
    format!("{:016x}", h.finish())
}

impl Fingerprint {
    /// The fingerprint of the current build. Use the [`fingerprint!`] macro,
    /// which passes the caller's own `debug_assertions` and panic strategy.
    pub fn collect(debug_assertions: bool, panic_strategy: &str) -> Fingerprint {
        let fields: Vec<(&str, String)> = vec![
            ("contract", CONTRACT_VERSION.to_string()),
            ("rustc", env!("KILN_RUSTC_VERSION").to_string()),
            ("rustc-commit", env!("KILN_RUSTC_COMMIT").to_string()),
            ("llvm", env!("KILN_LLVM_VERSION").to_string()),
            ("target", env!("KILN_TARGET").to_string()),
            ("profile", env!("KILN_PROFILE").to_string()),
            ("opt-level", env!("KILN_OPT_LEVEL").to_string()),
            ("debug-assertions", debug_assertions.to_string()),
            ("overflow-checks", env!("KILN_OVERFLOW_CHECKS").to_string()),
            ("panic", panic_strategy.to_string()),
            ("allocator", "system".to_string()),
            ("rustflags", env!("KILN_RUSTFLAGS_HASH").to_string()),
            (
                "contract-source",
                env!("KILN_CONTRACT_SOURCE_HASH").to_string(),
            ),
            ("contract-types", contract_type_identity()),
            ("crates", env!("KILN_CONTRACT_CRATES").to_string()),
        ];
        Fingerprint {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }

    /// `field=value` lines.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.fields {
            out.push_str(k);
            out.push('=');
            out.push_str(v);
            out.push('\n');
        }
        out
    }

    /// Parses [`Fingerprint::encode`]'s output.
    pub fn parse(text: &str) -> Result<Fingerprint, String> {
        let mut fields = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("line {}: expected field=value, got {line:?}", n + 1))?;
            fields.push((k.to_string(), v.to_string()));
        }
        if fields.is_empty() {
            return Err("empty fingerprint".to_string());
        }
        Ok(Fingerprint { fields })
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.as_str())
    }

    /// Every field where `self` (a module) differs from `host`, in the
    /// host's field order, then fields only the module has.
    pub fn differences(&self, host: &Fingerprint) -> Vec<Difference> {
        let mut out = Vec::new();
        for (k, hv) in &host.fields {
            let mv = self.get(k);
            if mv != Some(hv.as_str()) {
                out.push(Difference {
                    field: k.clone(),
                    module: mv.map(str::to_string),
                    host: Some(hv.clone()),
                });
            }
        }
        for (k, mv) in &self.fields {
            if host.get(k).is_none() {
                out.push(Difference {
                    field: k.clone(),
                    module: Some(mv.clone()),
                    host: None,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_parse_round_trip_and_differences_name_fields() {
        let host = crate::fingerprint!();
        let parsed = Fingerprint::parse(&host.encode()).unwrap();
        assert_eq!(parsed, host);
        assert!(parsed.differences(&host).is_empty());

        let mut module = host.clone();
        for (k, v) in &mut module.fields {
            if k == "opt-level" {
                *v = "0".to_string();
            }
        }
        module.fields.retain(|(k, _)| k != "allocator");
        let diffs = module.differences(&host);
        assert_eq!(diffs.len(), 2, "{diffs:?}");
        let text = diffs[0].to_string();
        assert!(
            text.starts_with("built with opt-level 0, host has"),
            "{text}"
        );
        assert!(diffs[1].to_string().contains("does not report allocator"));
    }

    #[test]
    fn build_facts_are_filled_in() {
        let f = crate::fingerprint!();
        for field in [
            "rustc",
            "rustc-commit",
            "target",
            "opt-level",
            "contract-source",
        ] {
            let v = f.get(field).unwrap();
            assert!(!v.is_empty() && v != "unknown", "{field} = {v:?}");
        }
        let crates = f.get("crates").unwrap();
        assert!(crates.contains("tracing-core@"), "{crates}");
        assert!(Fingerprint::parse("no equals sign").is_err());
    }
}
