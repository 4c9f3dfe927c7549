// out[0] = sum(x*y), in two passes recorded into one command buffer:
// `partial` runs G workgroups, each sums a grid-strided share of the products
// and tree-reduces it in workgroup memory to partials[group]; `finish` runs
// one workgroup that tree-reduces the G partial sums to out[0]. G is the
// length of `partials` (kernels/declarations/dot.toml sizes it and launches
// that many workgroups).

// The binding convention: inputs, output, scratch, then the dims.
struct Params {
    n: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> scratch: array<f32, 256>;

// Sums scratch[0..256] into scratch[0]; every invocation must call it.
fn reduce_scratch(lid: u32) {
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if lid < s {
            scratch[lid] += scratch[lid + s];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn partial(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let n = params.n;
    let stride = groups.x * 256u;
    var acc = 0.0;
    for (var i = wid.x * 256u + lid; i < n; i += stride) {
        acc += x[i] * y[i];
    }
    scratch[lid] = acc;
    reduce_scratch(lid);
    if lid == 0u {
        partials[wid.x] = scratch[0];
    }
}

@compute @workgroup_size(256)
fn finish(@builtin(local_invocation_index) lid: u32) {
    let count = arrayLength(&partials);
    var acc = 0.0;
    for (var i = lid; i < count; i += 256u) {
        acc += partials[i];
    }
    scratch[lid] = acc;
    reduce_scratch(lid);
    if lid == 0u {
        out[0] = scratch[0];
    }
}
