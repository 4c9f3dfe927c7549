#!/usr/bin/env bash
# The one command for a GPU machine (no network there), run from the repo root.
#
#   scripts/gpu-check.sh --prepare   here, before: builds the CUDA module's release
#                                    test binary and packs NVRTC into target/gpu-check/
#                                    (carry that one path to the GPU machine)
#   scripts/gpu-check.sh             there: runs the CUDA module's GPU tests with the
#                                    GPU and NVRTC required (every declared kernel, the
#                                    two new ones included, against a plain reference
#                                    on the GPU; a kernel added by a declaration and a
#                                    .cu file; a .cu edit taking effect in the next
#                                    engine with the state, a broken one refused; state
#                                    swap bit for bit; no-device stub; residents handed
#                                    over on the device with 0 bytes through the host, at
#                                    4 MiB, 1 GiB and, where the GPU has room, 8 GiB) and prints
#                                    per-kernel timings and NVRTC times; then,
#                                    through the kiln host, replays the bundled workload
#                                    on the CPU and CUDA modules (per-kernel tables side
#                                    by side) and swaps 1 GiB of device state bit for bit
#                                    (then `kiln machine` measures the CUDA device's peaks);
#                                    a .cu that crashes on the GPU is reported as a failed
#                                    call, and the good one replays again in a new process
#
# The test binary reads the kernel declarations (kernels/declarations/) and the
# .cu files (kernels/cuda/kernels/) from the repository root at run time, as the
# host stages them: run it from the root of a copy of the same tree.
#
# Overrides: KILN_NVRTC_DIR (a directory holding libnvrtc.so.13),
#            KILN_CUDA_TESTS (the kernel-cuda test binary).
set -euo pipefail

pack_dir="target/gpu-check"
nvrtc_archive="$pack_dir/nvrtc.tar.xz"
tests_copy="$pack_dir/kernel-cuda-tests"
# Unpacked outside $pack_dir, so that carrying $pack_dir stays small.
unpacked_nvrtc="target/gpu-check-nvrtc"

prepare() {
    rm -rf "$pack_dir"
    mkdir -p "$pack_dir"
    echo "== building the kernel-cuda release test binary"
    local bin
    bin=$(cargo test --release -p kernel-cuda --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "kernel_cuda":
        print(m["executable"])' | tail -n 1)
    if [[ -z "$bin" ]]; then
        echo "gpu-check: could not build the kernel-cuda test binary" >&2
        exit 1
    fi
    cp "$bin" "$tests_copy"
    echo "== building the kiln host and the CPU and CUDA modules (release)"
    cargo build --release --quiet -p kiln
    cargo build --release --quiet -p kernel-cpu -p kernel-cuda --target-dir target/kiln-modules
    cp target/release/kiln "$pack_dir/kiln"
    cp target/kiln-modules/release/libkernel_cpu.so target/kiln-modules/release/libkernel_cuda.so "$pack_dir/"
    echo "== packing NVRTC"
    local libdir
    libdir=$(scripts/install-nvrtc.sh target/nvrtc)
    tar -C "$libdir" -cf - libnvrtc.so.13 libnvrtc-builtins.so.13.0 | xz -6 -T2 >"$nvrtc_archive"
    du -sh "$pack_dir"/*
    echo "carry: $pack_dir (about $(du -sh "$pack_dir" | cut -f1))"
}

find_nvrtc() {
    if [[ -n "${KILN_NVRTC_DIR:-}" ]]; then
        echo "$KILN_NVRTC_DIR"
    elif [[ -e "$unpacked_nvrtc/libnvrtc.so.13" && ! "$nvrtc_archive" -nt "$unpacked_nvrtc" ]]; then
        echo "$unpacked_nvrtc"
    elif [[ -e "$nvrtc_archive" ]]; then
        rm -rf "$unpacked_nvrtc"
        mkdir -p "$unpacked_nvrtc"
        if command -v xz >/dev/null; then
            tar -C "$unpacked_nvrtc" -xJf "$nvrtc_archive" >&2
        else
            python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
                "$nvrtc_archive" "$unpacked_nvrtc" >&2
        fi
        echo "$unpacked_nvrtc"
    elif [[ -e target/nvrtc/nvidia/cu13/lib/libnvrtc.so.13 ]]; then
        echo "target/nvrtc/nvidia/cu13/lib"
    else
        echo "gpu-check: no NVRTC: set KILN_NVRTC_DIR or run 'scripts/gpu-check.sh --prepare' first" >&2
        exit 1
    fi
}

find_tests() {
    if [[ -n "${KILN_CUDA_TESTS:-}" ]]; then
        echo "$KILN_CUDA_TESTS"
    elif [[ -x "$tests_copy" ]]; then
        echo "$tests_copy"
    else
        local newest
        newest=$(ls -t target/release/deps/kernel_cuda-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)
        if [[ -z "$newest" ]]; then
            echo "gpu-check: no kernel-cuda test binary: run 'scripts/gpu-check.sh --prepare' first" >&2
            exit 1
        fi
        echo "$newest"
    fi
}

if [[ "${1:-}" == "--prepare" ]]; then
    prepare
    exit 0
fi

if [[ ! -d kernels/declarations || ! -d kernels/cuda/kernels ]]; then
    echo "gpu-check: run from the repository root (kernels/declarations and kernels/cuda/kernels are read at run time)" >&2
    exit 1
fi
nvrtc_dir=$(cd "$(find_nvrtc)" && pwd)
tests_bin=$(find_tests)
echo "== GPU"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || true
fi
echo "NVRTC: $nvrtc_dir"
echo "tests: $tests_bin"

echo "== kernel-cuda tests on the GPU (GPU and NVRTC required)"
log=$(mktemp)
status=0
LD_LIBRARY_PATH="$nvrtc_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    KILN_REQUIRE_CUDA=1 KILN_REQUIRE_NVRTC=1 \
    "$tests_bin" --test-threads=1 --nocapture 2>&1 | tee "$log" || status=$?

echo "== CUDA swap with the residents handed over on the device: 1 GiB (and 8 GiB where the GPU has 48 GiB or more)"
# tests::handoff: bytes moved host<->device counted by the engine (0 for the
# residents across a swap, 0 for a checkpoint after an unchanged replay, 0 for
# the new version's first export: the host copies go with the swap), the
# old version's bytes after a new one stores over or writes a resident in
# place, and the swap's time printed ("cuda handoff of ...").
gpu_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -n 1 | tr -dc '0-9' || true)
for mib in 1024 8192; do
    if [[ $mib -gt 1024 && ( -z "$gpu_mib" || "$gpu_mib" -lt 49152 ) ]]; then
        echo "-- skipped the $mib MiB handoff: the GPU has ${gpu_mib:-an unknown number of} MiB"
        continue
    fi
    echo "-- $mib MiB resident"
    LD_LIBRARY_PATH="$nvrtc_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        KILN_REQUIRE_CUDA=1 KILN_REQUIRE_NVRTC=1 KILN_HANDOFF_MIB=$mib \
        "$tests_bin" tests::handoff --test-threads=1 --nocapture 2>&1 | tee -a "$log" || status=$?
done

echo "== per-kernel timings, NVRTC times, handoff times, and the .cu edit swap (engine with an edited saxpy.cu, state handed over)"
grep -oE '(timings on|timing |nvrtc 1|engine with an edited|cuda handoff of|cuda checkpoint export).*' "$log" || true
grep -E 'skipped' "$log" || true
rm -f "$log"

echo "== through the kiln host: the bundled workload on CPU and CUDA, swap with 1 GiB of state"
kiln_bin="${KILN_BIN:-$pack_dir/kiln}"
cpu_module="${KILN_CPU_MODULE:-$pack_dir/libkernel_cpu.so}"
cuda_module="${KILN_CUDA_MODULE:-$pack_dir/libkernel_cuda.so}"
host_status=0
if [[ -x "$kiln_bin" && -e "$cpu_module" && -e "$cuda_module" ]]; then
    workload="$pack_dir/default.kwl"
    export LD_LIBRARY_PATH="$nvrtc_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    "$kiln_bin" record --kernel default -o "$workload" || host_status=$?
    echo "-- CPU backend (reference for the comparison)"
    "$kiln_bin" replay "$workload" --module "$cpu_module" || host_status=$?
    echo "-- CUDA backend (every call checked against the same expected outputs)"
    "$kiln_bin" replay "$workload" --module "$cuda_module" || host_status=$?
    echo "-- a .cu that crashes on the GPU (a write to an illegal address): the replay names the failing call and exits 1; the good .cu replays again"
    saxpy_cu=kernels/cuda/kernels/saxpy.cu
    cp "$saxpy_cu" "$pack_dir/saxpy.cu.good"
    trap 'cp "$pack_dir/saxpy.cu.good" "$saxpy_cu"' EXIT
    sed -i 's|        out\[i\] = __fadd_rn(__fmul_rn(a, x\[i\]), y\[i\]);|        out[i] = __fadd_rn(__fmul_rn(a, x[i]), y[i]); if (i == 0) { *((volatile float*)0x10) = 1.0f; }|' "$saxpy_cu"
    if ! grep -q 'volatile float\*)0x10' "$saxpy_cu"; then
        echo "gpu-check: could not make the crashing saxpy.cu" >&2
        host_status=1
    fi
    crash_log=$(mktemp)
    crash_status=0
    "$kiln_bin" replay "$workload" --module "$cuda_module" >"$crash_log" 2>&1 || crash_status=$?
    cat "$crash_log"
    if [[ $crash_status -eq 0 ]] || ! grep -q 'saxpy' "$crash_log"; then
        echo "gpu-check: the crashing .cu was not reported as a failed saxpy call (exit $crash_status)" >&2
        host_status=1
    fi
    rm -f "$crash_log"
    cp "$pack_dir/saxpy.cu.good" "$saxpy_cu"
    trap - EXIT
    "$kiln_bin" replay "$workload" --module "$cuda_module" || host_status=$?
    echo "-- CUDA swap: 1 GiB of device-resident state, bit for bit"
    "$kiln_bin" check-swap --module "$cuda_module" --state-mib 1024 || host_status=$?
    echo "-- CUDA device peaks (triad and FMA peak kernels, kernels/cuda/peaks/), measured and printed by kiln machine"
    "$kiln_bin" machine --module "$cuda_module" --remeasure || host_status=$?
else
    echo "gpu-check: no kiln binary or modules in $pack_dir: run 'scripts/gpu-check.sh --prepare' first" >&2
    host_status=1
fi

if [[ $status -ne 0 || $host_status -ne 0 ]]; then
    echo "gpu-check: FAILED (kernel-cuda tests: $status, host checks: $host_status)" >&2
    exit 1
fi
echo "gpu-check: kernel-cuda OK"
