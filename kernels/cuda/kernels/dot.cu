// out[0] = sum(x*y). Two passes with a fixed launch shape, so the result
// does not depend on scheduling: `dot_partial` (one block per partial, see
// kernels/declarations/dot.toml) accumulates its grid-stride share in double
// and writes one partial per block; `dot_finish` (one block) sums the
// partials in double. Parameters by the binding convention: inputs, output,
// scratch, dims.
#define DOT_THREADS 256

__device__ double block_sum(double v) {
    __shared__ double lane[DOT_THREADS];
    lane[threadIdx.x] = v;
    __syncthreads();
    for (unsigned int s = DOT_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            lane[threadIdx.x] += lane[threadIdx.x + s];
        }
        __syncthreads();
    }
    return lane[0];
}

extern "C" __global__ void dot_partial(const float* x, const float* y, float* out,
                                       float* partials, unsigned int n) {
    double acc = 0.0;
    unsigned long long stride = (unsigned long long)DOT_THREADS * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * DOT_THREADS + threadIdx.x; i < n;
         i += stride) {
        acc += (double)x[i] * (double)y[i];
    }
    double total = block_sum(acc);
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = (float)total;
    }
}

extern "C" __global__ void dot_finish(const float* x, const float* y, float* out,
                                      const float* partials, unsigned int n) {
    // The length of `partials`: max(min(ceil_div(n, 256), 256), 1).
    unsigned int count = (unsigned int)((n + 255ull) / 256ull);
    count = count < 256 ? count : 256;
    count = count > 1 ? count : 1;
    double acc = 0.0;
    for (unsigned int i = threadIdx.x; i < count; i += DOT_THREADS) {
        acc += partials[i];
    }
    double total = block_sum(acc);
    if (threadIdx.x == 0) {
        out[0] = (float)total;
    }
}
