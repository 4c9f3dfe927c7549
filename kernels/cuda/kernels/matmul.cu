// c[m,n] = a[m,k] @ b[k,n], row-major f32. 16x16 output tiles; tiles of a
// and b staged through shared memory; each output sums its products in
// increasing k order. Parameters by the binding convention
// (kernels/declarations/matmul.toml): inputs, output, dims (the tunable
// `tile` that follows is the CPU module's and is not read).
#define TILE 16

extern "C" __global__ void matmul(const float* a, const float* b, float* c, unsigned int m,
                                  unsigned int k, unsigned int n) {
    __shared__ float as[TILE][TILE];
    __shared__ float bs[TILE][TILE];
    unsigned int row = blockIdx.y * TILE + threadIdx.y;
    unsigned int col = blockIdx.x * TILE + threadIdx.x;
    float acc = 0.0f;
    for (unsigned int k0 = 0; k0 < k; k0 += TILE) {
        unsigned int ak = k0 + threadIdx.x;
        unsigned int bk = k0 + threadIdx.y;
        as[threadIdx.y][threadIdx.x] = (row < m && ak < k) ? a[(size_t)row * k + ak] : 0.0f;
        bs[threadIdx.y][threadIdx.x] = (bk < k && col < n) ? b[(size_t)bk * n + col] : 0.0f;
        __syncthreads();
        for (unsigned int kk = 0; kk < TILE; ++kk) {
            acc += as[threadIdx.y][kk] * bs[kk][threadIdx.x];
        }
        __syncthreads();
    }
    if (row < m && col < n) {
        c[(size_t)row * n + col] = acc;
    }
}
