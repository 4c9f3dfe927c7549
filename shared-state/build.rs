//! Computes the build-time facts of the ABI fingerprint (see
//! src/fingerprint.rs): compiler, target, profile, a hash of this crate's own
//! sources, and the versions of the crates whose types cross the boundary,
//! read from the workspace's Cargo.lock.

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x100_0000_01b3);
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Tells cargo to run this script again when `path` changes, naming it
/// relative to this crate's folder: cargo keeps the path in the build's
/// fingerprint, and an absolute one made every copy of the workspace at
/// another path (the remote mirror, the tests' workspace copies sharing one
/// module target dir) rebuild this crate and everything above it.
fn rerun_if_changed(manifest_dir: &Path, path: &Path) {
    let relative = path.strip_prefix(manifest_dir).unwrap_or(path);
    println!("cargo:rerun-if-changed={}", relative.display());
}

fn emit(key: &str, value: &str) {
    println!("cargo:rustc-env={key}={value}");
}

fn rustc_facts() -> (String, String, String) {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "unknown".to_string())
    };
    let version = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("rustc "))
        .unwrap_or("unknown")
        .to_string();
    (version, field("commit-hash:"), field("LLVM version:"))
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            source_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Hash of this crate's sources, build script and manifest. Each file is
/// watched, not the `src` folder: a copy of the workspace made with its
/// files' times kept has new folder times, and a file added or removed
/// that the crate uses changes `lib.rs` too.
fn contract_source_hash(manifest_dir: &Path) -> String {
    let mut files = Vec::new();
    source_files(&manifest_dir.join("src"), &mut files);
    files.push(manifest_dir.join("build.rs"));
    files.push(manifest_dir.join("Cargo.toml"));
    files.sort();
    let mut hash = FNV_OFFSET;
    for file in &files {
        rerun_if_changed(manifest_dir, file);
        let rel = file.strip_prefix(manifest_dir).unwrap_or(file);
        fnv1a(&mut hash, rel.to_string_lossy().as_bytes());
        fnv1a(&mut hash, &fs::read(file).unwrap_or_default());
    }
    format!("{hash:016x}")
}

/// `name@version` of this crate's dependency closure, from Cargo.lock
/// (registry crates only: path crates are covered by their sources).
fn contract_crates(manifest_dir: &Path) -> String {
    let lock_path = manifest_dir.join("../Cargo.lock");
    println!("cargo:rerun-if-changed=../Cargo.lock");
    let Ok(lock) = fs::read_to_string(&lock_path) else {
        return "unknown".to_string();
    };
    // name -> [(version, deps)]
    let mut packages: BTreeMap<String, Vec<(String, Vec<String>)>> = BTreeMap::new();
    for block in lock.split("[[package]]").skip(1) {
        let mut name = String::new();
        let mut version = String::new();
        let mut deps = Vec::new();
        let mut in_deps = false;
        for line in block.lines() {
            let line = line.trim();
            if let Some(v) = line.strip_prefix("name = ") {
                name = v.trim_matches('"').to_string();
            } else if let Some(v) = line.strip_prefix("version = ") {
                version = v.trim_matches('"').to_string();
            } else if line.starts_with("dependencies = [") {
                in_deps = !line.ends_with(']');
            } else if in_deps {
                if line.starts_with(']') {
                    in_deps = false;
                } else {
                    deps.push(line.trim_end_matches(',').trim_matches('"').to_string());
                }
            }
        }
        packages.entry(name).or_default().push((version, deps));
    }
    let mut seen = BTreeSet::new();
    let mut stack = vec![("shared-state".to_string(), None::<String>)];
    while let Some((name, want_version)) = stack.pop() {
        let Some(candidates) = packages.get(&name) else {
            continue;
        };
        let Some((version, deps)) = candidates
            .iter()
            .find(|(v, _)| want_version.as_ref().is_none_or(|w| w == v))
        else {
            continue;
        };
        if !seen.insert((name.clone(), version.clone())) {
            continue;
        }
        for dep in deps {
            let mut parts = dep.split_whitespace();
            let dep_name = parts.next().unwrap_or_default().to_string();
            stack.push((dep_name, parts.next().map(str::to_string)));
        }
    }
    seen.into_iter()
        .filter(|(n, _)| n != "shared-state")
        .map(|(n, v)| format!("{n}@{v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn overflow_checks(profile: &str, manifest_dir: &Path) -> String {
    let profile_key = if profile == "debug" { "DEV" } else { "RELEASE" };
    if let Ok(v) = env::var(format!("CARGO_PROFILE_{profile_key}_OVERFLOW_CHECKS")) {
        return v;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    for flag in flags.split('\x1f') {
        if let Some(v) = flag.strip_prefix("overflow-checks=") {
            return (v == "on" || v == "yes" || v == "true" || v == "y").to_string();
        }
    }
    // `[profile.dev]` / `[profile.release]` in the workspace manifest.
    let section = if profile == "debug" {
        "[profile.dev]"
    } else {
        "[profile.release]"
    };
    let manifest = manifest_dir.join("../Cargo.toml");
    println!("cargo:rerun-if-changed=../Cargo.toml");
    if let Ok(text) = fs::read_to_string(manifest) {
        let mut in_section = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_section = line == section;
            } else if in_section && line.starts_with("overflow-checks") {
                if let Some((_, v)) = line.split_once('=') {
                    return v.trim().to_string();
                }
            }
        }
    }
    (profile == "debug").to_string()
}

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let (version, commit, llvm) = rustc_facts();
    emit("KILN_RUSTC_VERSION", &version);
    emit("KILN_RUSTC_COMMIT", &commit);
    emit("KILN_LLVM_VERSION", &llvm);
    emit("KILN_TARGET", &env::var("TARGET").unwrap_or_default());
    let profile = env::var("PROFILE").unwrap_or_default();
    emit("KILN_PROFILE", &profile);
    emit("KILN_OPT_LEVEL", &env::var("OPT_LEVEL").unwrap_or_default());
    emit(
        "KILN_OVERFLOW_CHECKS",
        &overflow_checks(&profile, &manifest_dir),
    );
    let mut flags_hash = FNV_OFFSET;
    fnv1a(
        &mut flags_hash,
        env::var("CARGO_ENCODED_RUSTFLAGS")
            .unwrap_or_default()
            .as_bytes(),
    );
    emit("KILN_RUSTFLAGS_HASH", &format!("{flags_hash:016x}"));
    emit(
        "KILN_CONTRACT_SOURCE_HASH",
        &contract_source_hash(&manifest_dir),
    );
    emit("KILN_CONTRACT_CRATES", &contract_crates(&manifest_dir));
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    println!("cargo:rerun-if-env-changed=CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS");
    println!("cargo:rerun-if-env-changed=CARGO_PROFILE_DEV_OVERFLOW_CHECKS");
}
