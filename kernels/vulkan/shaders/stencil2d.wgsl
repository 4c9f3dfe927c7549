// One explicit heat-diffusion step on an h x w grid, 5-point, neighbours
// clamped at the edges: out = g + alpha*(N + S + W + E - 4g).

// The binding convention (kernels/declarations/stencil2d.toml): input,
// output, then the dims and the parameter.
struct Params {
    h: u32,
    w: u32,
    alpha: f32,
}

@group(0) @binding(0) var<storage, read> grid: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(256)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let h = params.h;
    let w = params.w;
    let alpha = params.alpha;
    let total = h * w;
    let stride = groups.x * 256u;
    for (var idx = gid.x; idx < total; idx += stride) {
        let i = idx / w;
        let j = idx % w;
        let up = select(i - 1u, 0u, i == 0u);
        let down = min(i + 1u, h - 1u);
        let west = select(j - 1u, 0u, j == 0u);
        let east = min(j + 1u, w - 1u);
        let c = grid[idx];
        let sum = grid[up * w + j] + grid[down * w + j] + grid[i * w + west] + grid[i * w + east];
        out[idx] = c + alpha * (sum - 4.0 * c);
    }
}
