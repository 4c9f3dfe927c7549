// out = a @ b over bf16 (kernels/declarations/matmul_bf16.toml): products
// and sum in f32 in increasing k order (as the reference), rounded once to
// bf16 (to nearest, ties to even). WGSL has no bf16: tensors are bound
// packed two to a 32-bit word; a bf16 is the upper half of an f32. Output
// element t (flat index) is in word t/2: the invocation of the even t
// writes the whole word, the odd one nothing.


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
    return bitcast<f32>(((word >> ((i & 1u) * 16u)) & 0xffffu) << 16u);
}

// f32 -> bf16 bits, to nearest, ties to even; a NaN stays a (quiet) NaN.
fn to_bf16(v: f32) -> u32 {
    let bits = bitcast<u32>(v);
    if (bits & 0x7fffffffu) > 0x7f800000u {
        return (bits >> 16u) | 0x40u;
    }
    return (bits + 0x7fffu + ((bits >> 16u) & 1u)) >> 16u;
}

fn element(t: u32) -> f32 {
    if t >= params.m * params.n {
        return 0.0;
    }
    let row = t / params.n;
    let col = t % params.n;
    var acc = 0.0;
    for (var p = 0u; p < params.k; p++) {
        let i = row * params.k + p;
        let j = p * params.n + col;
        acc += load(a[i >> 1u], i) * load(b[j >> 1u], j);
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
    out[t >> 1u] = to_bf16(element(t)) | (to_bf16(element(t + 1u)) << 16u);
}
