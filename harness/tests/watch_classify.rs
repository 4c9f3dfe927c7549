//! The module graph of this very workspace, from a real `cargo metadata`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kiln::build::module_graph::{Classified, ModuleGraph};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn modules(names: &[&str]) -> Classified {
    Classified::Modules(names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>())
}

#[test]
fn discovers_the_kernel_modules_and_the_contract() {
    let root = workspace_root();
    let graph = ModuleGraph::discover(&root).unwrap();
    let found: Vec<(&str, &str)> = graph
        .modules()
        .iter()
        .map(|m| (m.package.as_str(), m.backend.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("kernel-cpu", "cpu"),
            ("kernel-cuda", "cuda"),
            ("kernel-reference-module", "reference"),
            ("kernel-vulkan", "vulkan")
        ]
    );
    let cpu = graph.module("kernel-cpu").unwrap();
    assert_eq!(cpu.dir, root.join("kernels/cpu"));
    // The contract is recorded apart, not as a path dependency; the CPU
    // engine crate (compiled once, edited rarely) is one: editing it
    // rebuilds the module.
    assert_eq!(cpu.path_deps, [root.join("kernels/cpu-engine")]);
    assert_eq!(graph.contract_dirs(), [root.join("shared-state")]);
    let watched = graph.watch_dirs();
    assert!(watched.contains(&root.join("kernels/cpu")));
    assert!(watched.contains(&root.join("shared-state")));
    assert!(!watched.iter().any(|d| d.starts_with(root.join("target"))));
    assert!(!watched.contains(&root.join("harness")));
}

#[test]
fn classifies_changed_paths() {
    let root = workspace_root();
    let mut graph = ModuleGraph::discover(&root).unwrap();
    let staging = root.join("stage-area");
    graph.ignore_dir(&staging);
    let all = modules(&[
        "kernel-cpu",
        "kernel-cuda",
        "kernel-reference-module",
        "kernel-vulkan",
    ]);
    let cases: &[(&str, Classified)] = &[
        ("kernels/cpu/src/lib.rs", modules(&["kernel-cpu"])),
        ("kernels/cpu/Cargo.toml", modules(&["kernel-cpu"])),
        ("kernels/cpu/build.rs", modules(&["kernel-cpu"])),
        (
            "kernels/vulkan/shaders/add.comp",
            modules(&["kernel-vulkan"]),
        ),
        (
            "kernels/vulkan/src/matmul.wgsl",
            modules(&["kernel-vulkan"]),
        ),
        ("kernels/cuda/src/add.cu", modules(&["kernel-cuda"])),
        ("Cargo.lock", all.clone()),
        // Cargo's configuration: the flags of every build.
        (".cargo/config.toml", all.clone()),
        // Any other file in a module's folder may be read by its build
        // (`include_bytes!`, `#![doc = include_str!("../README.md")]`).
        ("kernels/cpu/data/table.bin", modules(&["kernel-cpu"])),
        ("kernels/cpu/README.md", modules(&["kernel-cpu"])),
        ("shared-state/src/engine.rs", Classified::Contract),
        ("shared-state/Cargo.toml", Classified::Contract),
        ("harness/src/main.rs", Classified::Ignored),
        ("tests/src/lib.rs", Classified::Ignored),
        ("target/release/build/out.rs", Classified::Ignored),
        ("kernels/cpu/target/x.rs", Classified::Ignored),
        ("stage-area/kernel-cpu-v1.rs", Classified::Ignored),
        (".git/HEAD", Classified::Ignored),
        ("kernels/cpu/src/.lib.rs.swp", Classified::Ignored),
        ("kernels/cpu/src/lib.rs~", Classified::Ignored),
        ("kernels/cpu/src/4913", Classified::Ignored),
        ("kernels/cpu/src/#lib.rs#", Classified::Ignored),
        ("kernels/cpu/src/.#lib.rs", Classified::Ignored),
        ("kernels/cpu/src/lib.rs.tmp", Classified::Ignored),
        ("kernels/cpu/src/.lib.rs.tmp", Classified::Ignored),
        ("kernels/cpu/src/lib.rs.crswap", Classified::Ignored),
        ("kernels/cpu/data/.table.bin.swp", Classified::Ignored),
        ("README.md", Classified::Ignored),
        (".cargo/other.toml", Classified::Ignored),
    ];
    for (path, expected) in cases {
        assert_eq!(&graph.classify(&root.join(path)), expected, "{path}");
        // Relative paths are taken from the workspace root.
        assert_eq!(&graph.classify(Path::new(path)), expected, "{path}");
    }
    assert_eq!(
        graph.classify(Path::new("/elsewhere/kernels/cpu/src/lib.rs")),
        Classified::Ignored
    );
}
