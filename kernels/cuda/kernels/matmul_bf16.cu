// c[m,n] = a[m,k] @ b[k,n] over bf16 (kernels/declarations/matmul_bf16.toml):
// products and sum in f32 in increasing k order (as the reference), the sum
// rounded once to bf16 (to nearest, ties to even; a NaN stays a quiet NaN).
// bf16 values are raw 16-bit words (the upper half of an f32; NVRTC's wheel
// ships no cuda_bf16.h), one thread per output.
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

extern "C" __global__ void matmul_bf16(const unsigned short* a, const unsigned short* b,
                                       unsigned short* c, unsigned int m, unsigned int k,
                                       unsigned int n) {
    unsigned int row = blockIdx.y * blockDim.y + threadIdx.y;
    unsigned int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= m || col >= n) {
        return;
    }
    float acc = 0.0f;
    for (unsigned int p = 0; p < k; ++p) {
        acc += bf16_to_f32(a[(size_t)row * k + p]) * bf16_to_f32(b[(size_t)p * n + col]);
    }
    c[(size_t)row * n + col] = f32_to_bf16(acc);
}
