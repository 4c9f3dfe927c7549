#!/usr/bin/env bash
# Where the build of a kiln Rust kernel edit goes, and what per-package
# settings of the kernel package change: the one-line edit of section 2
# (MIN_CHUNK flipped in kernels/cpu/src/kernels.rs) on a copy of the
# workspace, `cargo build --release -p kernel-cpu` timed per edit, with
# cargo's own `--timings` splitting it into rustc for kernel-cpu (compile +
# link) and the rest (cargo: manifests, lock file, fingerprints of every
# dependency). Levers are passed as `--config` so the workspace's
# Cargo.toml is not touched; each changes kernel-cpu's profile only, so
# only kernel-cpu rebuilds when switching (the contract crates keep their
# metadata: the fingerprint accepts such a module).
#
# usage: bench/scripts/rust_edit_levers.sh [ROUNDS]     (from the repo root)
# Prints one line per edit and a median per setting. Measures, asserts nothing.
set -euo pipefail

rounds="${1:-5}"
scratch="target/levers"
copy="$scratch/ws"
tdir="$scratch/target"
mkdir -p "$scratch"
rm -rf "$copy"
mkdir -p "$copy"
tar --exclude=./target --exclude=./.git -cf - . | tar -C "$copy" -xf -
src="$copy/kernels/cpu/src/kernels.rs"
grep -q '^const MIN_CHUNK: usize = ' "$src"

flip() {
    python3 - "$src" <<'EOF'
import re, sys
p = sys.argv[1]
s = open(p).read()
m = re.search(r"^const MIN_CHUNK: usize = (\d+);", s, re.M)
v = int(m.group(1))
s = s.replace(m.group(0), f"const MIN_CHUNK: usize = {v + 1 if v % 2 == 0 else v - 1};", 1)
open(p, "w").write(s)
EOF
}

# Seconds of the kernel-cpu unit in the newest --timings report.
unit_seconds() {
    python3 - "$tdir/cargo-timings/cargo-timing.html" <<'EOF'
import json, re, sys
html = open(sys.argv[1]).read()
m = re.search(r"const UNIT_DATA = (\[.*?\]);\n", html, re.S)
units = json.loads(m.group(1)) if m else []
print(sum(u["duration"] for u in units if u["name"] == "kernel-cpu"))
EOF
}

measure() {
    local label="$1"
    shift
    (cd "$copy" && cargo build --quiet --release -p kernel-cpu --target-dir "../target" "$@")
    local totals=() rustcs=()
    for ((r = 0; r < rounds; r++)); do
        flip
        local t0 t1
        t0=$(date +%s.%N)
        (cd "$copy" && cargo build --quiet --release -p kernel-cpu --target-dir "../target" --timings "$@" 2>/dev/null)
        t1=$(date +%s.%N)
        local total rustc
        total=$(python3 -c "print(round(($t1 - $t0) * 1000))")
        rustc=$(python3 -c "print(round($(unit_seconds) * 1000))")
        totals+=("$total")
        rustcs+=("$rustc")
        echo "$label edit $r: cargo build $total ms, of which rustc kernel-cpu $rustc ms"
    done
    local t0 t1
    t0=$(date +%s.%N)
    (cd "$copy" && cargo build --quiet --release -p kernel-cpu --target-dir "../target" "$@")
    t1=$(date +%s.%N)
    python3 - "$label" "$(python3 -c "print(round(($t1 - $t0) * 1000))")" "${totals[*]}" "${rustcs[*]}" <<'EOF'
import statistics, sys
label, noop, totals, rustcs = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
t = [int(x) for x in totals]; r = [int(x) for x in rustcs]
print(f"== {label}: median cargo build {statistics.median(t):.0f} ms, rustc kernel-cpu "
      f"{statistics.median(r):.0f} ms, the rest {statistics.median(a - b for a, b in zip(t, r)):.0f} ms; "
      f"no-op build {noop} ms")
EOF
}

echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
measure "workspace profile"
measure "kernel-cpu opt-level=2" --config 'profile.release.package.kernel-cpu.opt-level=2'
measure "kernel-cpu codegen-units=64" --config 'profile.release.package.kernel-cpu.codegen-units=64'
measure "workspace profile (again)"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
