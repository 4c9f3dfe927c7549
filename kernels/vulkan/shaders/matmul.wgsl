// out[m,n] = a[m,k] @ b[k,n], row-major. One 16x16 output tile per
// workgroup; tiles of a and b are staged through workgroup memory. Products
// are summed in increasing k order.

const TILE: u32 = 16u;

// The binding convention (kernels/declarations/matmul.toml): inputs, outputs,
// then the dims (the tunable `tile` that follows is the CPU module's).
struct Params {
    m: u32,
    k: u32,
    n: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> tile_a: array<f32, 256>;
var<workgroup> tile_b: array<f32, 256>;

@compute @workgroup_size(16, 16)
fn main(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let m = params.m;
    let k = params.k;
    let n = params.n;
    let row = wid.y * TILE + lid.y;
    let col = wid.x * TILE + lid.x;
    let slot = lid.y * TILE + lid.x;
    var acc = 0.0;
    let tiles = (k + TILE - 1u) / TILE;
    for (var t = 0u; t < tiles; t++) {
        let ka = t * TILE + lid.x;
        var va = 0.0;
        if row < m && ka < k {
            va = a[row * k + ka];
        }
        tile_a[slot] = va;
        let kb = t * TILE + lid.y;
        var vb = 0.0;
        if kb < k && col < n {
            vb = b[kb * n + col];
        }
        tile_b[slot] = vb;
        workgroupBarrier();
        for (var i = 0u; i < TILE; i++) {
            acc += tile_a[lid.y * TILE + i] * tile_b[i * TILE + lid.x];
        }
        workgroupBarrier();
    }
    if row < m && col < n {
        out[row * n + col] = acc;
    }
}
