// Row-wise, numerically stable softmax of a rows x cols matrix: one
// workgroup per row (grid-strided over rows), max and sum reduced in
// workgroup memory.

// The binding convention (kernels/declarations/softmax.toml): input, output,
// then the dims.
struct Params {
    rows: u32,
    cols: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> scratch: array<f32, 256>;

const LOWEST: f32 = -3.40282347e38;

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let rows = params.rows;
    let cols = params.cols;
    for (var r = wid.x; r < rows; r += groups.x) {
        let base = r * cols;

        var m = LOWEST;
        for (var c = lid; c < cols; c += 256u) {
            m = max(m, x[base + c]);
        }
        scratch[lid] = m;
        workgroupBarrier();
        for (var s = 128u; s > 0u; s >>= 1u) {
            if lid < s {
                scratch[lid] = max(scratch[lid], scratch[lid + s]);
            }
            workgroupBarrier();
        }
        let row_max = scratch[0];
        workgroupBarrier();

        var sum = 0.0;
        for (var c = lid; c < cols; c += 256u) {
            let e = exp(x[base + c] - row_max);
            out[base + c] = e;
            sum += e;
        }
        scratch[lid] = sum;
        workgroupBarrier();
        for (var s = 128u; s > 0u; s >>= 1u) {
            if lid < s {
                scratch[lid] += scratch[lid + s];
            }
            workgroupBarrier();
        }
        let inv = 1.0 / scratch[0];
        // Every invocation has read scratch[0] before the next row reuses it.
        workgroupBarrier();

        // Each invocation rescales only the elements it wrote itself.
        for (var c = lid; c < cols; c += 256u) {
            out[base + c] = out[base + c] * inv;
        }
    }
}
