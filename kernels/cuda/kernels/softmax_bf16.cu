// Row-wise softmax over bf16 (kernels/declarations/softmax_bf16.toml), in
// f32: one block per row (grid-strided over rows), max and sum reduced in
// shared memory, each output rounded once to bf16 (to nearest, ties to
// even). bf16 values are raw 16-bit words (the upper half of an f32).
#define SOFTMAX_THREADS 256

__device__ __forceinline__ float bf16_to_f32(unsigned short h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

__device__ __forceinline__ unsigned short f32_to_bf16(float f) {
    unsigned int bits = __float_as_uint(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        return (unsigned short)((bits >> 16) | 0x40u);
    }
    return (unsigned short)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

extern "C" __global__ void softmax_bf16(const unsigned short* x, unsigned short* out,
                                        unsigned int rows, unsigned int cols) {
    __shared__ float lane[SOFTMAX_THREADS];
    for (unsigned int r = blockIdx.x; r < rows; r += gridDim.x) {
        const unsigned short* row = x + (size_t)r * cols;
        float m = -3.402823466e38f;
        for (unsigned int c = threadIdx.x; c < cols; c += SOFTMAX_THREADS) {
            m = fmaxf(m, bf16_to_f32(row[c]));
        }
        lane[threadIdx.x] = m;
        __syncthreads();
        for (unsigned int s = SOFTMAX_THREADS / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) {
                lane[threadIdx.x] = fmaxf(lane[threadIdx.x], lane[threadIdx.x + s]);
            }
            __syncthreads();
        }
        float row_max = lane[0];
        __syncthreads();
        float sum = 0.0f;
        for (unsigned int c = threadIdx.x; c < cols; c += SOFTMAX_THREADS) {
            sum += expf(bf16_to_f32(row[c]) - row_max);
        }
        lane[threadIdx.x] = sum;
        __syncthreads();
        for (unsigned int s = SOFTMAX_THREADS / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) {
                lane[threadIdx.x] += lane[threadIdx.x + s];
            }
            __syncthreads();
        }
        float inv = 1.0f / lane[0];
        __syncthreads();
        for (unsigned int c = threadIdx.x; c < cols; c += SOFTMAX_THREADS) {
            out[(size_t)r * cols + c] = f32_to_bf16(expf(bf16_to_f32(row[c]) - row_max) * inv);
        }
    }
}
