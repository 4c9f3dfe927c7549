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
    println!("cargo:rerun-if-changed=build.rs");
}
