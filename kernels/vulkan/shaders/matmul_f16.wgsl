// out = a @ b over f16 (kernels/declarations/matmul_f16.toml): products and
// sum in f32 in increasing k order (as the reference), rounded once to f16.
// f16 tensors are bound packed two to a 32-bit word (`unpack2x16float`,
// `pack2x16float`), so no shader-f16 feature is needed. Output element t
// (flat index) is in word t/2: the invocation of the even t writes the
// whole word (both halves, the second possibly in the next row, or the
// padding past an odd-length output), the odd one writes nothing.


// lavapipe (llvmpipe) ends the loops of one invocation after 65535
// iterations in all, so there k must stay below that (dot_i8 grid-strides
// instead, and wraps exactly at 2^20 elements on lavapipe).

struct Params {
    m: u32,
    k: u32,
    n: u32,
}

@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@group(0) @binding(3) var<uniform> params: Params;

fn load(word: u32, i: u32) -> f32 {
    return unpack2x16float(word)[i & 1u];
}

fn a_at(i: u32) -> f32 {
    return load(a[i >> 1u], i);
}

fn b_at(i: u32) -> f32 {
    return load(b[i >> 1u], i);
}

// Element t of the m x n output, 0 past the end.
fn element(t: u32) -> f32 {
    let total = params.m * params.n;
    if t >= total {
        return 0.0;
    }
    let row = t / params.n;
    let col = t % params.n;
    var acc = 0.0;
    for (var p = 0u; p < params.k; p++) {
        acc += a_at(row * params.k + p) * b_at(p * params.n + col);
    }
    return acc;
}

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let row = gid.y;
    if row >= params.m || col >= params.n {
        return;
    }
    let t = row * params.n + col;
    if (t & 1u) != 0u {
        return;
    }
    out[t >> 1u] = pack2x16float(vec2<f32>(element(t), element(t + 1u)));
}
