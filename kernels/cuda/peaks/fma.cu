// kiln's compute peak: an f32 FMA loop, 16 independent chains per thread,
// `iters` rounds; an FMA counts 2 flops. Not a user kernel: the host hands
// it to the engine as `kiln_peak_fma` (harness/src/machine/peak_kernels.rs)
// and times two round counts. The chains converge (x -> x*m + d, m < 1),
// and their sum is written so that the compiler keeps the loop.
extern "C" __global__ void kiln_peak_fma(const float* x, float* out, unsigned int n, int iters) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) {
        return;
    }
    const float m = 0.9999f, d = 0.0001f;
    float v[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        v[j] = x[i] + (float)j;
    }
    for (int k = 0; k < iters; ++k) {
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            v[j] = fmaf(v[j], m, d);
        }
    }
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        sum += v[j];
    }
    out[i] = sum;
}
