// c[m,n] = a[m,k] @ b[k,n] over f16 (kernels/declarations/matmul_f16.toml):
// products and sum in f32 in increasing k order (as the reference), the sum
// rounded once to f16 (cvt.rn: to nearest, ties to even). The f16 values are
// raw 16-bit words converted with PTX `cvt` (NVRTC's wheel ships no
// cuda_fp16.h), one thread per output.
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ unsigned short f32_to_f16(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

extern "C" __global__ void matmul_f16(const unsigned short* a, const unsigned short* b,
                                      unsigned short* c, unsigned int m, unsigned int k,
                                      unsigned int n) {
    unsigned int row = blockIdx.y * blockDim.y + threadIdx.y;
    unsigned int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= m || col >= n) {
        return;
    }
    float acc = 0.0f;
    for (unsigned int p = 0; p < k; ++p) {
        acc += f16_to_f32(a[(size_t)row * k + p]) * f16_to_f32(b[(size_t)p * n + col]);
    }
    c[(size_t)row * n + col] = f32_to_f16(acc);
}
