// kiln's bandwidth peak: the STREAM triad a = b + s*c on f32 arrays well
// beyond the device's caches. Not a user kernel: the host hands it to the
// engine under its own declarations (harness/src/machine/peak_kernels.rs),
// as `kiln_peak_triad` (one pass) and `kiln_peak_triad_x3`/`_x33` (3 or 33
// passes in one submission), and times the difference. Any n.

struct Params {
    n: u32,
    s: f32,
}

@group(0) @binding(0) var<storage, read> b: array<f32>;
@group(0) @binding(1) var<storage, read> c: array<f32>;
@group(0) @binding(2) var<storage, read_write> a: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

// Each workgroup sweeps contiguous blocks of 4096 elements (16 per
// invocation, neighbours side by side), then the next block of the grid:
// loops of the same trip count in every lane, and streams a CPU device's
// prefetchers follow.
@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let n = params.n;
    let s = params.s;
    for (var base = wg.x * 4096u; base < n; base += groups.x * 4096u) {
        for (var k = 0u; k < 16u; k += 1u) {
            let i = base + k * 256u + lid.x;
            if (i < n) {
                a[i] = b[i] + s * c[i];
            }
        }
    }
}
