// kiln's compute peak: an f32 FMA loop, 16 independent chains per
// invocation (four vec4s), `iters` rounds; an FMA counts 2 flops. Not a
// user kernel: the host hands it to the engine as `kiln_peak_fma`
// (harness/src/machine/peak_kernels.rs) and times two round counts.
// The chains converge (x -> x*m + d with m < 1), so nothing overflows, and
// their sum is written so that no compiler drops the loop.

struct Params {
    n: u32,
    iters: i32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.n) {
        return;
    }
    let m = vec4<f32>(0.9999);
    let d = vec4<f32>(0.0001);
    var a0 = vec4<f32>(x[i], x[i] + 1.0, x[i] + 2.0, x[i] + 3.0);
    var a1 = a0 + vec4<f32>(4.0);
    var a2 = a0 + vec4<f32>(8.0);
    var a3 = a0 + vec4<f32>(12.0);
    for (var k = 0; k < params.iters; k += 1) {
        a0 = fma(a0, m, d);
        a1 = fma(a1, m, d);
        a2 = fma(a2, m, d);
        a3 = fma(a3, m, d);
    }
    let sum = a0 + a1 + a2 + a3;
    out[i] = sum.x + sum.y + sum.z + sum.w;
}
