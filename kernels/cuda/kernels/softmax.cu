// Row-wise, numerically stable softmax of a rows x cols matrix: one block
// per row (grid-strided over rows: the grid is capped); the row maximum and
// the sum of exp(x - max) are block reductions. Parameters by the binding
// convention (kernels/declarations/softmax.toml): input, output, dims.
#define SOFTMAX_THREADS 256

extern "C" __global__ void softmax(const float* x, float* out, unsigned int rows,
                                   unsigned int cols) {
    __shared__ float lane[SOFTMAX_THREADS];
    for (unsigned int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* row = x + (unsigned long long)r * cols;
        float* dst = out + (unsigned long long)r * cols;

        float m = __int_as_float(0xff800000);  // -infinity
        for (unsigned int j = threadIdx.x; j < cols; j += SOFTMAX_THREADS) {
            m = fmaxf(m, row[j]);
        }
        lane[threadIdx.x] = m;
        __syncthreads();
        for (unsigned int s = SOFTMAX_THREADS / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) {
                lane[threadIdx.x] = fmaxf(lane[threadIdx.x], lane[threadIdx.x + s]);
            }
            __syncthreads();
        }
        float max = lane[0];
        __syncthreads();

        float sum = 0.0f;
        for (unsigned int j = threadIdx.x; j < cols; j += SOFTMAX_THREADS) {
            float e = expf(row[j] - max);
            dst[j] = e;
            sum += e;
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
        // Every thread has read lane[0] before the next row reuses it.
        __syncthreads();
        for (unsigned int j = threadIdx.x; j < cols; j += SOFTMAX_THREADS) {
            dst[j] *= inv;
        }
    }
}
