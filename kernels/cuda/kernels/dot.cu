// out[0] = sum(x*y), accumulated in double. Two passes with a fixed launch
// shape, so the result does not depend on scheduling: `dot_partial` writes
// one double per block (grid-stride sum, then a tree reduction in shared
// memory); `dot_finish` (one block) sums the partials the same way.
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

extern "C" __global__ void dot_partial(const float* x, const float* y, double* partial,
                                       unsigned long long n) {
    double acc = 0.0;
    unsigned long long stride = (unsigned long long)DOT_THREADS * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * DOT_THREADS + threadIdx.x; i < n;
         i += stride) {
        acc += (double)x[i] * (double)y[i];
    }
    double total = block_sum(acc);
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = total;
    }
}

extern "C" __global__ void dot_finish(const double* partial, unsigned int count, float* out) {
    double acc = 0.0;
    for (unsigned int i = threadIdx.x; i < count; i += DOT_THREADS) {
        acc += partial[i];
    }
    double total = block_sum(acc);
    if (threadIdx.x == 0) {
        out[0] = (float)total;
    }
}
