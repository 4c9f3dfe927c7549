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
    println!("cargo:rerun-if-changed=build.rs");
}
