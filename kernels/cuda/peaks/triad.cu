// kiln's bandwidth peak: the STREAM triad a = b + s*c on f32 arrays well
// beyond the device's caches. Not a user kernel: the host hands this file
// to the engine under its own declarations
// (harness/src/machine/peak_kernels.rs) as `kiln_peak_triad` (one pass)
// and `kiln_peak_triad_x3`/`_x33` (3 or 33 passes), and times the
// difference; all three names are defined here. Parameters by the binding convention: inputs,
// output, dims, parameters. Any n; blocks of 256 threads (the declaration's
// group).
// Each block sweeps contiguous tiles of 4096 elements (16 per thread,
// neighbours side by side), then the next tile of the grid.
#define KILN_PEAK_TRIAD(NAME)                                                                 \
    extern "C" __global__ void NAME(const float* b, const float* c, float* a, unsigned int n, \
                                    float s) {                                                \
        for (unsigned long long base = (unsigned long long)blockIdx.x * 4096ull; base < n;    \
             base += (unsigned long long)gridDim.x * 4096ull) {                               \
            _Pragma("unroll") for (unsigned int k = 0; k < 16; ++k) {                         \
                unsigned long long i = base + k * 256ull + threadIdx.x;                       \
                if (i < n) {                                                                  \
                    a[i] = b[i] + s * c[i];                                                   \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }

KILN_PEAK_TRIAD(kiln_peak_triad)
KILN_PEAK_TRIAD(kiln_peak_triad_x3)
KILN_PEAK_TRIAD(kiln_peak_triad_x33)
