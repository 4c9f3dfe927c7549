// One explicit diffusion step on an h x w grid, neighbours clamped at the
// edges: out = g + alpha*(N + S + E + W - 4g). Every operation is rounded
// on its own (no fused multiply-add), in the CPU module's order, so the
// result is bit-identical to it. Parameters by the binding convention
// (kernels/declarations/stencil2d.toml): input, output, dims, parameter.
extern "C" __global__ void stencil2d(const float* grid, float* out, unsigned int h, unsigned int w,
                                     float alpha) {
    unsigned long long total = (unsigned long long)h * w;
    unsigned long long stride = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long idx = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         idx < total; idx += stride) {
        unsigned long long i = idx / w;
        unsigned long long j = idx - i * w;
        unsigned long long up = i > 0 ? i - 1 : 0;
        unsigned long long down = i + 1 < h ? i + 1 : h - 1;
        unsigned long long west = j > 0 ? j - 1 : 0;
        unsigned long long east = j + 1 < w ? j + 1 : w - 1;
        float c = grid[idx];
        float sum = __fadd_rn(grid[up * w + j], grid[down * w + j]);
        sum = __fadd_rn(sum, grid[i * w + west]);
        sum = __fadd_rn(sum, grid[i * w + east]);
        float lap = __fsub_rn(sum, __fmul_rn(4.0f, c));
        out[idx] = __fadd_rn(c, __fmul_rn(alpha, lap));
    }
}
