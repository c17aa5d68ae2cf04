// MaxPool and AveragePool over one, two or three spatial dimensions; lower
// ranks are run as three with unit dimensions in front. p holds, for the
// three spatial dimensions in order: input size, output size, kernel size,
// stride, dilation, padding at the start, padding at the end (7 x 3 ints).

#define POOL_MAX 0
#define POOL_AVG_EXCLUDE_PAD 1
#define POOL_AVG_INCLUDE_PAD 2

__kernel void pool(__global const float* x, __global float* y, const int mode,
                   const int n, __global const int* p)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    int in[3], out[3], k[3], s[3], d[3], pb[3], pe[3];
    for (int a = 0; a < 3; a++) {
        in[a] = p[7 * a];
        out[a] = p[7 * a + 1];
        k[a] = p[7 * a + 2];
        s[a] = p[7 * a + 3];
        d[a] = p[7 * a + 4];
        pb[a] = p[7 * a + 5];
        pe[a] = p[7 * a + 6];
    }
    int rem = i;
    const int o2 = rem % out[2]; rem /= out[2];
    const int o1 = rem % out[1]; rem /= out[1];
    const int o0 = rem % out[0]; rem /= out[0];
    const int nc = rem;
    __global const float* xs = x + nc * in[0] * in[1] * in[2];

    float best = -INFINITY;
    float sum = 0.0f;
    int counted = 0;
    for (int k0 = 0; k0 < k[0]; k0++) {
        const int i0 = o0 * s[0] - pb[0] + k0 * d[0];
        const int pad0 = i0 >= -pb[0] && i0 < in[0] + pe[0];
        const int real0 = i0 >= 0 && i0 < in[0];
        for (int k1 = 0; k1 < k[1]; k1++) {
            const int i1 = o1 * s[1] - pb[1] + k1 * d[1];
            const int pad1 = i1 >= -pb[1] && i1 < in[1] + pe[1];
            const int real1 = i1 >= 0 && i1 < in[1];
            for (int k2 = 0; k2 < k[2]; k2++) {
                const int i2 = o2 * s[2] - pb[2] + k2 * d[2];
                const int pad2 = i2 >= -pb[2] && i2 < in[2] + pe[2];
                const int real2 = i2 >= 0 && i2 < in[2];
                if (real0 && real1 && real2) {
                    const float v = xs[(i0 * in[1] + i1) * in[2] + i2];
                    best = fmax(best, v);
                    sum += v;
                    if (mode != POOL_AVG_INCLUDE_PAD)
                        counted++;
                }
                if (mode == POOL_AVG_INCLUDE_PAD && pad0 && pad1 && pad2)
                    counted++;
            }
        }
    }
    y[i] = mode == POOL_MAX ? best : (counted > 0 ? sum / (float)counted : 0.0f);
}
