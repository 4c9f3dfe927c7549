// Row-wise layer norm of a rows x cols matrix:
// y = (x - mean) / sqrt(var + eps) * gamma + beta, with the biased variance.
// One block per row (grid-strided over rows: the grid is capped); the mean,
// then the sum of squared deviations from it, are block reductions in
// double. Parameters by the binding convention
// (kernels/declarations/layer_norm.toml): inputs, output, dims, parameter.
#define LN_THREADS 256

// The sum of every thread's `v`, returned to all of them.
__device__ double block_sum(double v) {
    __shared__ double lane[LN_THREADS];
    lane[threadIdx.x] = v;
    __syncthreads();
    for (unsigned int s = LN_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            lane[threadIdx.x] += lane[threadIdx.x + s];
        }
        __syncthreads();
    }
    double total = lane[0];
    // Every thread has read the total before `lane` is reused.
    __syncthreads();
    return total;
}

extern "C" __global__ void layer_norm(const float* x, const float* gamma, const float* beta,
                                      float* y, unsigned int rows, unsigned int cols, float eps) {
    double count = cols > 0 ? (double)cols : 1.0;
    for (unsigned int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* row = x + (unsigned long long)r * cols;
        float* dst = y + (unsigned long long)r * cols;
        double sum = 0.0;
        for (unsigned int j = threadIdx.x; j < cols; j += LN_THREADS) {
            sum += row[j];
        }
        double mean = block_sum(sum) / count;
        double squares = 0.0;
        for (unsigned int j = threadIdx.x; j < cols; j += LN_THREADS) {
            double d = row[j] - mean;
            squares += d * d;
        }
        double inv = 1.0 / sqrt(block_sum(squares) / count + (double)eps);
        for (unsigned int j = threadIdx.x; j < cols; j += LN_THREADS) {
            dst[j] = (float)((row[j] - mean) * inv * gamma[j] + beta[j]);
        }
    }
}
