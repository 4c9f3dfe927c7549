//! Records the cargo profile this host is built with, so that `kiln dev`
//! builds kernel modules with exactly the same profile (see
//! src/workspace.rs).

fn main() {
    // OUT_DIR is <target>/<profile-dir>/build/<pkg>-<hash>/out; the profile
    // directory is `debug` for the dev profile and the profile name otherwise.
    let out_dir = std::env::var("OUT_DIR").unwrap_or_default();
    let parts: Vec<&str> = out_dir.split(std::path::MAIN_SEPARATOR).collect();
    let profile_dir = parts
        .iter()
        .rposition(|p| *p == "build")
        .and_then(|i| i.checked_sub(1))
        .map(|i| parts[i])
        .unwrap_or("debug");
    let profile = if profile_dir == "debug" {
        "dev"
    } else {
        profile_dir
    };
    println!("cargo:rustc-env=KILN_HOST_PROFILE={profile}");
    // The flags rustc got for this host, space-separated: `kiln dev` checks
    // that the loop alignment the verdicts rely on is among them
    // (src/loop_alignment.rs).
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS")
        .unwrap_or_default()
        .replace('\x1f', " ");
    println!("cargo:rustc-env=KILN_HOST_RUSTFLAGS={flags}");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    // AVX-512 target features and intrinsics are stable since Rust 1.89,
    // above the workspace's 1.87: the AVX-512 peak loops
    // (src/machine/fma.rs, i8dot.rs) are compiled only by a compiler that
    // has them (`kiln_avx512`); an older one measures on AVX2.
    println!("cargo::rustc-check-cfg=cfg(kiln_avx512)");
    if rustc_minor().is_some_and(|minor| minor >= 89) {
        println!("cargo:rustc-cfg=kiln_avx512");
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// The minor version of the rustc cargo builds with (`1.95.0` -> 95).
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    (parts.next()? == "1").then_some(())?;
    parts.next()?.parse().ok()
}
