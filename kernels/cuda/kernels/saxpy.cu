// out = a*x + y. Rounded multiply then rounded add (no fused multiply-add),
// so the result is bit-identical to the CPU module's `a * x + y`.
// Parameters by the binding convention (kernels/declarations/saxpy.toml):
// inputs, output, dims, parameters. Grid-stride: the grid is capped.
extern "C" __global__ void saxpy(const float* x, const float* y, float* out, unsigned int n,
                                 float a) {
    unsigned long long stride = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        out[i] = __fadd_rn(__fmul_rn(a, x[i]), y[i]);
    }
}
