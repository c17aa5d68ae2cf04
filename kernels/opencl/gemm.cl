// Tiled matrix multiply: Y[b] = act(alpha * A[b] x B[b] + beta * C), for Gemm and
// (batched) MatMul. Operands are read through row/column strides, so transposed
// and broadcast operands need no copies.
//
// A work-group of GEMM_GROUP items shares one strip of GEMM_ROWS rows of A:
// each slice of GEMM_TILE_K columns of that strip is staged in local memory
// once and read by every item of the group. Each item owns a GEMM_ROWS x 16
// block of Y in sixteen-wide vector accumulators, so a CPU driver (PoCL) runs
// the inner loop as vector FMAs and a GPU keeps the block in registers.
//
// batch_offsets holds four element offsets per batch entry (A, B, Y, C):
// MatMul's broadcast batch dimensions and a convolution's images and groups
// are resolved on the host, once per shape. Y rows are N apart.
// Global size: (ceil(N/16) rounded up to GEMM_GROUP, ceil(M/GEMM_ROWS), batches).

#define GEMM_GROUP 16
#define GEMM_ROWS 8
#define GEMM_TILE_K 32

__kernel __attribute__((reqd_work_group_size(GEMM_GROUP, 1, 1)))
void gemm(const int M, const int N, const int K,
          __global const float* A, const int a_rs, const int a_cs,
          __global const float* B, const int b_rs, const int b_cs,
          __global const float* C, const int c_rs, const int c_cs, const int has_c,
          __global float* Y,
          const float alpha, const float beta, const int act,
          __global const int* batch_offsets)
{
    const int lx = get_local_id(0);
    const int n0 = get_global_id(0) * 16;
    const int m0 = get_global_id(1) * GEMM_ROWS;
    const int bt = get_global_id(2);
    const int a_off = batch_offsets[4 * bt];
    const int b_off = batch_offsets[4 * bt + 1];
    const int y_off = batch_offsets[4 * bt + 2];
    const int c_off = batch_offsets[4 * bt + 3];
    // Whole 16-column blocks of a row-major B are read as one vector.
    const int whole = n0 + 16 <= N && b_cs == 1;

    __local float As[GEMM_TILE_K][GEMM_ROWS];

    float16 acc[GEMM_ROWS];
    for (int i = 0; i < GEMM_ROWS; i++)
        acc[i] = (float16)(0.0f);

    for (int k0 = 0; k0 < K; k0 += GEMM_TILE_K) {
        for (int t = lx; t < GEMM_TILE_K * GEMM_ROWS; t += GEMM_GROUP) {
            const int kk = t / GEMM_ROWS;
            const int i = t % GEMM_ROWS;
            const int m = m0 + i;
            const int k = k0 + kk;
            As[kk][i] = (m < M && k < K) ? A[a_off + m * a_rs + k * a_cs] : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        const int kend = min(GEMM_TILE_K, K - k0);
        if (n0 < N) {
            for (int kk = 0; kk < kend; kk++) {
                const int k = k0 + kk;
                float16 b;
                if (whole) {
                    b = vload16(0, B + b_off + k * b_rs + n0);
                } else {
                    float t[16];
                    for (int j = 0; j < 16; j++)
                        t[j] = n0 + j < N ? B[b_off + k * b_rs + (n0 + j) * b_cs] : 0.0f;
                    b = vload16(0, t);
                }
                for (int i = 0; i < GEMM_ROWS; i++)
                    acc[i] = fma((float16)(As[kk][i]), b, acc[i]);
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    if (n0 >= N)
        return;
    for (int i = 0; i < GEMM_ROWS; i++) {
        const int m = m0 + i;
        if (m >= M)
            break;
        float out[16];
        vstore16(acc[i], 0, out);
        for (int j = 0; j < 16; j++) {
            const int n = n0 + j;
            if (n >= N)
                break;
            float v = alpha * out[j];
            if (has_c)
                v += beta * C[c_off + m * c_rs + n * c_cs];
            if (act == 1)
                v = fmax(v, 0.0f);
            Y[y_off + m * N + n] = v;
        }
    }
}
