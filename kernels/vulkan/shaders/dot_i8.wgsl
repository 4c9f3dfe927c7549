// out[0] = sum(x*y) over i8 with an i32 result (kernels/declarations/
// dot_i8.toml), wrapping: WGSL i32 arithmetic wraps, and a wrapped sum is
// the same in any order, so the two-pass tree reduction (as dot.wgsl) gives
// the reference's value exactly. Inputs packed four i8 to a 32-bit word.

struct Params {
    n: u32,
}

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read> y: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<i32>;
@group(0) @binding(3) var<storage, read_write> partials: array<i32>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> scratch: array<i32, 256>;

fn byte_of(word: u32, i: u32) -> i32 {
    return bitcast<i32>(word << (24u - (i & 3u) * 8u)) >> 24u;
}

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
    var acc = 0i;
    for (var i = wid.x * 256u + lid; i < n; i += stride) {
        acc += byte_of(x[i >> 2u], i) * byte_of(y[i >> 2u], i);
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
    var acc = 0i;
    for (var i = lid; i < count; i += 256u) {
        acc += partials[i];
    }
    scratch[lid] = acc;
    reduce_scratch(lid);
    if lid == 0u {
        out[0] = scratch[0];
    }
}
