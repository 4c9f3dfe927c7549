// Inclusive prefix sum, out[i] = x[0] + ... + x[i], in three passes (see
// kernels/declarations/prefix_sum.toml). The input is cut in tiles of 1024
// elements; each of the 256 invocations of a workgroup owns 4 consecutive
// elements of a tile.
//   tile_sums:  sums[t] = the sum of tile t
//   scan_sums:  one workgroup turns sums into exclusive offsets, 1024 at a
//               time, carrying the running total from chunk to chunk
//   scan_tiles: out = the inclusive scan of each tile + its offset
// Passes 1 and 3 loop over tiles when there are more than workgroups, so
// every size works, including sizes that are not a multiple of the tile.

// The binding convention: input, output, scratch, then the dims.
struct Params {
    n: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> sums: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const THREADS: u32 = 256u;
const PER_THREAD: u32 = 4u;
const TILE: u32 = 1024u;

var<workgroup> lanes: array<f32, 256>;

fn tiles() -> u32 {
    return (params.n + TILE - 1u) / TILE;
}

// Exclusive scan of every invocation's `v` across the workgroup
// (Hillis-Steele in workgroup memory); every invocation must call it. The
// workgroup's total is left in lanes[THREADS - 1] until the next call.
fn exclusive_scan(lid: u32, v: f32) -> f32 {
    lanes[lid] = v;
    workgroupBarrier();
    for (var offset = 1u; offset < THREADS; offset <<= 1u) {
        var add = 0.0;
        if lid >= offset {
            add = lanes[lid - offset];
        }
        workgroupBarrier();
        lanes[lid] += add;
        workgroupBarrier();
    }
    return lanes[lid] - v;
}

@compute @workgroup_size(256)
fn tile_sums(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let n = params.n;
    for (var t = wid.x; t < tiles(); t += groups.x) {
        let first = t * TILE + lid * PER_THREAD;
        var acc = 0.0;
        for (var j = 0u; j < PER_THREAD; j++) {
            if first + j < n {
                acc += x[first + j];
            }
        }
        lanes[lid] = acc;
        workgroupBarrier();
        for (var s = THREADS / 2u; s > 0u; s >>= 1u) {
            if lid < s {
                lanes[lid] += lanes[lid + s];
            }
            workgroupBarrier();
        }
        if lid == 0u {
            sums[t] = lanes[0];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn scan_sums(@builtin(local_invocation_index) lid: u32) {
    let count = tiles();
    var carry = 0.0;
    for (var chunk = 0u; chunk < count; chunk += TILE) {
        let first = chunk + lid * PER_THREAD;
        var v: array<f32, 4>;
        var own = 0.0;
        for (var j = 0u; j < PER_THREAD; j++) {
            v[j] = 0.0;
            if first + j < count {
                v[j] = sums[first + j];
            }
            own += v[j];
        }
        var running = carry + exclusive_scan(lid, own);
        let total = lanes[THREADS - 1u];
        for (var j = 0u; j < PER_THREAD; j++) {
            if first + j < count {
                sums[first + j] = running;
            }
            running += v[j];
        }
        carry += total;
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn scan_tiles(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let n = params.n;
    for (var t = wid.x; t < tiles(); t += groups.x) {
        let first = t * TILE + lid * PER_THREAD;
        var v: array<f32, 4>;
        var own = 0.0;
        for (var j = 0u; j < PER_THREAD; j++) {
            v[j] = 0.0;
            if first + j < n {
                v[j] = x[first + j];
            }
            own += v[j];
        }
        var running = sums[t] + exclusive_scan(lid, own);
        for (var j = 0u; j < PER_THREAD; j++) {
            running += v[j];
            if first + j < n {
                out[first + j] = running;
            }
        }
        workgroupBarrier();
    }
}
