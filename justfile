# kiln's everyday commands. `just` alone runs the dev loop.

# Watch kernels/*, rebuild the changed module, swap it in, replay the workload.
dev *ARGS:
    cargo run --release --quiet -p kiln --bin kiln -- dev {{ARGS}}

# The whole test suite, as CI runs it (Vulkan tests need lavapipe: see .ci/run).
test:
    cargo test --workspace --release

# Benchmarks against the alternatives (table + target/kiln-bench/report.json + chart).
# NVRTC on the library path for section 2's .cu row (the row says so when it is missing).
bench:
    LD_LIBRARY_PATH="$(bash scripts/install-nvrtc.sh target/nvrtc || true)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" cargo bench -p kiln-bench

# Section 2 alone (save to serving: Rust edit vs the restart loop, WGSL edit on
# lavapipe, .cu compile, every call before/after): prints the section, writes
# target/kiln-bench/save-to-serving.{txt,json}. Run it on a quiet machine.
bench-save:
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p target/kiln-bench
    nvrtc="$(bash scripts/install-nvrtc.sh target/nvrtc || true)"
    LD_LIBRARY_PATH="$nvrtc${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" cargo bench -p kiln-bench -- save 2>&1 | tee target/kiln-bench/save-to-serving.txt

# Record a workload: just record --kernel matmul --shape 512x512x512 --seed 7 -o mm.kiln
record *ARGS:
    cargo run --release --quiet -p kiln --bin kiln -- record {{ARGS}}

# Replay a workload: just replay mm.kiln --backend vulkan
replay *ARGS:
    cargo run --release --quiet -p kiln --bin kiln -- replay {{ARGS}}

# What this machine can run.
backends:
    cargo run --release --quiet -p kiln --bin kiln -- backends

# Formatting and lints, as CI checks them.
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# On a machine with an NVIDIA GPU: CUDA tests, replay vs CPU, swap, timings.
gpu-check:
    bash scripts/gpu-check.sh
