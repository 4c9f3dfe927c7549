// Inclusive prefix sum, out[i] = x[0] + ... + x[i], in three passes (see
// kernels/declarations/prefix_sum.toml). The input is cut in tiles of 1024
// elements; each of the 256 threads of a block owns 4 consecutive elements
// of a tile.
//   prefix_sum_tile_sums:  sums[t] = the sum of tile t
//   prefix_sum_scan_sums:  one block turns sums into exclusive offsets,
//                          1024 at a time, carrying the running total
//   prefix_sum_scan_tiles: out = the inclusive scan of each tile + its offset
// Passes 1 and 3 loop over tiles when there are more than blocks.
// Parameters by the binding convention: input, output, scratch, dims.
#define THREADS 256
#define PER_THREAD 4
#define TILE (THREADS * PER_THREAD)

__device__ unsigned int tile_count(unsigned int n) {
    return (unsigned int)(((unsigned long long)n + TILE - 1) / TILE);
}

// Exclusive scan of every thread's `v` across the block (Hillis-Steele in
// shared memory); every thread must call it. `*total` is the block's sum.
__device__ float exclusive_scan(float v, float* total) {
    __shared__ float lanes[THREADS];
    lanes[threadIdx.x] = v;
    __syncthreads();
    for (unsigned int offset = 1; offset < THREADS; offset <<= 1) {
        float add = threadIdx.x >= offset ? lanes[threadIdx.x - offset] : 0.0f;
        __syncthreads();
        lanes[threadIdx.x] += add;
        __syncthreads();
    }
    float inclusive = lanes[threadIdx.x];
    *total = lanes[THREADS - 1];
    // Every thread has read its lanes before the next call writes them.
    __syncthreads();
    return inclusive - v;
}

extern "C" __global__ void prefix_sum_tile_sums(const float* x, float* out, float* sums,
                                                unsigned int n) {
    unsigned int tiles = tile_count(n);
    for (unsigned int t = blockIdx.x; t < tiles; t += gridDim.x) {
        unsigned long long first = (unsigned long long)t * TILE + threadIdx.x * PER_THREAD;
        float acc = 0.0f;
        for (unsigned int j = 0; j < PER_THREAD; ++j) {
            if (first + j < n) {
                acc += x[first + j];
            }
        }
        float total;
        exclusive_scan(acc, &total);
        if (threadIdx.x == 0) {
            sums[t] = total;
        }
    }
}

extern "C" __global__ void prefix_sum_scan_sums(const float* x, float* out, float* sums,
                                                unsigned int n) {
    unsigned int count = tile_count(n);
    float carry = 0.0f;
    for (unsigned int chunk = 0; chunk < count; chunk += TILE) {
        unsigned int first = chunk + threadIdx.x * PER_THREAD;
        float v[PER_THREAD];
        float own = 0.0f;
        for (unsigned int j = 0; j < PER_THREAD; ++j) {
            v[j] = first + j < count ? sums[first + j] : 0.0f;
            own += v[j];
        }
        float total;
        float running = carry + exclusive_scan(own, &total);
        for (unsigned int j = 0; j < PER_THREAD; ++j) {
            if (first + j < count) {
                sums[first + j] = running;
            }
            running += v[j];
        }
        carry += total;
    }
}

extern "C" __global__ void prefix_sum_scan_tiles(const float* x, float* out, const float* sums,
                                                 unsigned int n) {
    unsigned int tiles = tile_count(n);
    for (unsigned int t = blockIdx.x; t < tiles; t += gridDim.x) {
        unsigned long long first = (unsigned long long)t * TILE + threadIdx.x * PER_THREAD;
        float v[PER_THREAD];
        float own = 0.0f;
        for (unsigned int j = 0; j < PER_THREAD; ++j) {
            v[j] = first + j < n ? x[first + j] : 0.0f;
            own += v[j];
        }
        float total;
        float running = sums[t] + exclusive_scan(own, &total);
        for (unsigned int j = 0; j < PER_THREAD; ++j) {
            running += v[j];
            if (first + j < n) {
                out[first + j] = running;
            }
        }
    }
}
