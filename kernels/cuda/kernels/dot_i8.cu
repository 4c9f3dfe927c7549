// out[0] = sum(x*y) over int8_t with an int32 result (kernels/declarations/
// dot_i8.toml), wrapping: sums are kept in unsigned int (defined modular
// arithmetic), so the two-pass reduction gives the reference's exact value
// in any order. Parameters: inputs, output, scratch (partials), dims.
typedef signed char int8_t;
#define DOT_THREADS 256

__device__ unsigned int block_sum_u32(unsigned int v) {
    __shared__ unsigned int lane[DOT_THREADS];
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

extern "C" __global__ void dot_i8_partial(const int8_t* x, const int8_t* y, int* out,
                                          int* partials, unsigned int n) {
    unsigned int acc = 0u;
    unsigned long long stride = (unsigned long long)DOT_THREADS * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * DOT_THREADS + threadIdx.x; i < n;
         i += stride) {
        acc += (unsigned int)((int)x[i] * (int)y[i]);
    }
    unsigned int total = block_sum_u32(acc);
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = (int)total;
    }
}

extern "C" __global__ void dot_i8_finish(const int8_t* x, const int8_t* y, int* out,
                                         const int* partials, unsigned int n) {
    // The length of `partials`: max(min(ceil_div(n, 256), 256), 1).
    unsigned int count = (unsigned int)((n + 255ull) / 256ull);
    count = count < 256 ? count : 256;
    count = count > 1 ? count : 1;
    unsigned int acc = 0u;
    for (unsigned int i = threadIdx.x; i < count; i += DOT_THREADS) {
        acc += (unsigned int)partials[i];
    }
    unsigned int total = block_sum_u32(acc);
    if (threadIdx.x == 0) {
        out[0] = (int)total;
    }
}
