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

# Settings: a label and the --config of each (empty: the workspace profile).
labels=("workspace profile" "kernel-cpu opt-level=2" "kernel-cpu codegen-units=64" "kernel-cpu codegen-units=16")
configs=("" "profile.release.package.kernel-cpu.opt-level=2" "profile.release.package.kernel-cpu.codegen-units=64" "profile.release.package.kernel-cpu.codegen-units=16")

build() { # CONFIG [--timings]
    local config="$1"
    shift
    if [[ -n "$config" ]]; then
        (cd "$copy" && cargo build --quiet --release -p kernel-cpu --target-dir "../target" --config "$config" "$@" 2>/dev/null)
    else
        (cd "$copy" && cargo build --quiet --release -p kernel-cpu --target-dir "../target" "$@" 2>/dev/null)
    fi
}

now_ms() { python3 -c 'import time; print(time.monotonic_ns() // 1000000)'; }

echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
# Every setting built once (each keeps its own incremental state), then
# interleaved: after each edit, every setting rebuilds (order rotating), so
# load drift hits all alike.
for config in "${configs[@]}"; do build "$config"; done
results=$(mktemp)
for ((r = 0; r < rounds; r++)); do
    flip
    for ((j = 0; j < ${#configs[@]}; j++)); do
        i=$(((j + r) % ${#configs[@]}))
        t0=$(now_ms)
        build "${configs[$i]}" --timings
        t1=$(now_ms)
        rustc=$(python3 -c "print(round($(unit_seconds) * 1000))")
        t2=$(now_ms)
        build "${configs[$i]}"
        t3=$(now_ms)
        echo "$i $((t1 - t0)) $rustc $((t3 - t2))" >>"$results"
        echo "${labels[$i]} edit $r: cargo build $((t1 - t0)) ms, rustc kernel-cpu $rustc ms; no-op build after it $((t3 - t2)) ms"
    done
done
python3 - "$results" "${labels[@]}" <<'EOF'
import statistics, sys
rows = [list(map(int, l.split())) for l in open(sys.argv[1])]
for i, label in enumerate(sys.argv[2:]):
    mine = [r for r in rows if r[0] == i]
    med = lambda k: statistics.median(r[k] for r in mine)
    print(f"== {label}: median cargo build {med(1):.0f} ms, rustc kernel-cpu {med(2):.0f} ms, "
          f"no-op cargo build {med(3):.0f} ms ({len(mine)} edits)")
EOF
rm -f "$results"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
