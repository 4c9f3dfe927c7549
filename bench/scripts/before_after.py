#!/usr/bin/env python3
"""Every call of a workload, timed on the build from before a change and on
the build after it, interleaved: one `kiln replay` of each per round, the
order alternating, on the same workload state. A build from before a change
of the release profile cannot be loaded by a host built after it (cargo
hashes the profile into the contract crate's metadata, so its TypeIds
differ and the ABI fingerprint refuses the module), so each side is its own
host + module pair, and the rounds are interleaved instead of the calls.

Per call, each side's samples are the replay medians of the rounds; the
verdict is kiln's rule for timings taken at different times
(`verdict_recorded` in harness/src/workload/timing.rs): slower or faster
only when the medians differ by more than 3 combined MADs (scaled to a
standard deviation) and by more than 10%.

usage: before_after.py ROUNDS WORKLOAD OLD_KILN OLD_MODULE NEW_KILN NEW_MODULE
"""
import json
import statistics
import subprocess
import sys


def replay(kiln, module, workload):
    out = subprocess.run(
        [kiln, "--log-format", "json", "replay", workload, "--module", module],
        capture_output=True, text=True, check=True,
    ).stdout
    calls = {}
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        e = json.loads(line)
        if e.get("event") == "replay":
            if not e["pass"]:
                sys.exit(f"{module}: call {e['call']} {e['kernel']} failed: {line}")
            calls[(e["call"], e["kernel"])] = e["ms"]
    return calls


def mad(xs):
    m = statistics.median(xs)
    return statistics.median([abs(x - m) for x in xs])


def verdict(old, new):
    spread = lambda xs: mad(xs) * 1.4826
    combined = (spread(old) ** 2 + spread(new) ** 2) ** 0.5
    change = statistics.median(new) - statistics.median(old)
    threshold = max(3.0 * combined, 0.10 * statistics.median(old))
    if change > threshold:
        return "slower"
    if -change > threshold:
        return "faster"
    return "no clear change"


def main():
    rounds, workload, old_kiln, old_module, new_kiln, new_module = sys.argv[1:7]
    samples = {"old": {}, "new": {}}
    sides = [("old", old_kiln, old_module), ("new", new_kiln, new_module)]
    for r in range(int(rounds)):
        for side, kiln, module in (sides if r % 2 == 0 else sides[::-1]):
            for key, ms in replay(kiln, module, workload).items():
                samples[side].setdefault(key, []).append(ms)
    print(f"{'#':<3} {'kernel':<10} {'before ms':>16} {'after ms':>16} {'after/before':>12}  verdict")
    for key in sorted(samples["old"]):
        old, new = samples["old"][key], samples["new"][key]
        mo, mn = statistics.median(old), statistics.median(new)
        print(f"{key[0]:<3} {key[1]:<10} {mo:>8.2f} ± {mad(old):<5.2f} {mn:>8.2f} ± {mad(new):<5.2f} "
              f"{mn / mo:>12.2f}  {verdict(old, new)}")


main()
