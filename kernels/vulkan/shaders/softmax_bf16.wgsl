// Row-wise softmax over bf16 (kernels/declarations/softmax_bf16.toml), in
// f32: one workgroup per row (grid-strided over rows), max and sum reduced
// in workgroup memory, each output rounded once to bf16 (to nearest, ties
// to even). WGSL has no bf16: tensors are bound packed two to a 32-bit
// word. Output word w holds elements 2w and 2w+1 and is written by the
// workgroup of element 2w's row; when a row ends on an even element the
// word's other half is the first element of the next row, whose max and
// sum that workgroup also computes (once per row, uniform control flow).

struct Params {
    rows: u32,
    cols: u32,
}

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> scratch: array<f32, 256>;

const LOWEST: f32 = -3.40282347e38;

fn at(i: u32) -> f32 {
    return bitcast<f32>(((x[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu) << 16u);
}

fn to_bf16(v: f32) -> u32 {
    let bits = bitcast<u32>(v);
    if (bits & 0x7fffffffu) > 0x7f800000u {
        return (bits >> 16u) | 0x40u;
    }
    return (bits + 0x7fffu + ((bits >> 16u) & 1u)) >> 16u;
}

// (max, 1/sum of exp(x - max)) of row r; every invocation calls it.
fn row_stats(r: u32, lid: u32) -> vec2<f32> {
    let cols = params.cols;
    let base = r * cols;
    var m = LOWEST;
    for (var c = lid; c < cols; c += 256u) {
        m = max(m, at(base + c));
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
        sum += exp(at(base + c) - row_max);
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
    workgroupBarrier();
    return vec2<f32>(row_max, inv);
}

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
        let end = base + cols;
        let here = row_stats(r, lid);
        // The next row's stats, when this row's last word reaches into it.
        var next = vec2<f32>(0.0, 0.0);
        let straddles = (end & 1u) == 1u && r + 1u < rows;
        if straddles {
            next = row_stats(r + 1u, lid);
        }
        // The words whose first element is in this row.
        for (var e = base + (base & 1u) + 2u * lid; e < end; e += 512u) {
            let lo = to_bf16(exp(at(e) - here.x) * here.y);
            var hi = 0u;
            if e + 1u < end {
                hi = to_bf16(exp(at(e + 1u) - here.x) * here.y);
            } else if straddles {
                hi = to_bf16(exp(at(e + 1u) - next.x) * next.y);
            }
            out[e >> 1u] = lo | (hi << 16u);
        }
    }
}
