// out = a*x + y, element-wise. Grid-stride loop: any n with a capped
// number of workgroups.

// The binding convention (kernels/declarations/saxpy.toml): inputs, outputs,
// then the dims and parameters.
struct Params {
    n: u32,
    a: f32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(256)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let n = params.n;
    let a = params.a;
    let stride = groups.x * 256u;
    for (var i = gid.x; i < n; i += stride) {
        out[i] = a * x[i] + y[i];
    }
}
