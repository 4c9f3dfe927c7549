// c[m,n] = a[m,k] @ b[k,n] over int8_t with int32 results
// (kernels/declarations/matmul_i8.toml), wrapping: the sum is kept in an
// unsigned int (defined modular arithmetic in C++) and reinterpreted.
typedef signed char int8_t;

extern "C" __global__ void matmul_i8(const int8_t* a, const int8_t* b, int* c, unsigned int m,
                                     unsigned int k, unsigned int n) {
    unsigned int row = blockIdx.y * blockDim.y + threadIdx.y;
    unsigned int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= m || col >= n) {
        return;
    }
    unsigned int acc = 0u;
    for (unsigned int p = 0; p < k; ++p) {
        acc += (unsigned int)((int)a[(size_t)row * k + p] * (int)b[(size_t)p * n + col]);
    }
    c[(size_t)row * n + col] = (int)acc;
}
