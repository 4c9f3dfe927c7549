// Row-wise layer norm of a rows x cols matrix:
// y = (x - mean) / sqrt(var + eps) * gamma + beta, with the biased variance.
// One workgroup per row (grid-strided over rows); the mean, then the sum of
// squared deviations from it, are reduced in workgroup memory.

// The binding convention (kernels/declarations/layer_norm.toml): inputs,
// output, then the dims and the parameter.
struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> scratch: array<f32, 256>;

// The sum of every invocation's `v`, returned to all of them.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    scratch[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if lid < s {
            scratch[lid] += scratch[lid + s];
        }
        workgroupBarrier();
    }
    let total = scratch[0];
    // Every invocation has read the total before scratch is reused.
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let rows = params.rows;
    let cols = params.cols;
    let count = f32(max(cols, 1u));
    for (var r = wid.x; r < rows; r += groups.x) {
        let base = r * cols;
        var sum = 0.0;
        for (var c = lid; c < cols; c += 256u) {
            sum += x[base + c];
        }
        let mean = workgroup_sum(lid, sum) / count;
        var squares = 0.0;
        for (var c = lid; c < cols; c += 256u) {
            let d = x[base + c] - mean;
            squares += d * d;
        }
        let inv = inverseSqrt(workgroup_sum(lid, squares) / count + params.eps);
        for (var c = lid; c < cols; c += 256u) {
            y[base + c] = (x[base + c] - mean) * inv * gamma[c] + beta[c];
        }
    }
}
