// out = a @ b over i8 with i32 results (kernels/declarations/matmul_i8.toml):
// WGSL i32 arithmetic wraps (two's complement), as the declaration asks.
// WGSL has no i8: the inputs are bound packed four to a 32-bit word.


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
@group(0) @binding(2) var<storage, read_write> out: array<i32>;
@group(0) @binding(3) var<uniform> params: Params;

// Byte i of a packed i8 array, sign-extended.
fn byte_of(word: u32, i: u32) -> i32 {
    return bitcast<i32>(word << (24u - (i & 3u) * 8u)) >> 24u;
}

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let row = gid.y;
    if row >= params.m || col >= params.n {
        return;
    }
    var acc = 0i;
    for (var p = 0u; p < params.k; p++) {
        let i = row * params.k + p;
        let j = p * params.n + col;
        acc += byte_of(a[i >> 2u], i) * byte_of(b[j >> 2u], j);
    }
    out[row * params.n + col] = acc;
}
