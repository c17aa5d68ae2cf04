// Convolution as im2col + GEMM: im2col lays out, for each image and group,
// the input values each output pixel's window covers as a (C/group*KH*KW) x
// (OH*OW) matrix, which the tiled GEMM multiplies by the group's weights,
// writing NCHW output directly. Global size: the matrix's row count.
__kernel void im2col(__global const float* x, __global float* col,
                     const int C, const int H, const int W,
                     const int KH, const int KW,
                     const int sh, const int sw, const int ph, const int pw,
                     const int dh, const int dw,
                     const int OH, const int OW, const int group, const int rows)
{
    // One work-item per matrix row (image, group, channel, ky, kx): the
    // index arithmetic is done once per row, and the row is written in order.
    const int r = get_global_id(0);
    if (r >= rows)
        return;
    const int cg = C / group;
    const int kd = cg * KH * KW;
    const int k = r % kd;
    const int ng = r / kd;
    const int c = k / (KH * KW);
    const int ky = (k / KW) % KH;
    const int kx = k % KW;
    const int img = ng / group;
    const int g = ng % group;
    __global const float* xc = x + (img * C + g * cg + c) * H * W;
    __global float* out = col + r * OH * OW;
    for (int oy = 0; oy < OH; oy++) {
        const int iy = oy * sh - ph + ky * dh;
        const int inside = iy >= 0 && iy < H;
        for (int ox = 0; ox < OW; ox++) {
            const int ix = ox * sw - pw + kx * dw;
            out[oy * OW + ox] = (inside && ix >= 0 && ix < W) ? xc[iy * W + ix] : 0.0f;
        }
    }
}

// Direct 2-D convolution (NCHW input, MCHW/group weights) with stride, padding,
// dilation and groups, plus the optional bias and a fused ReLU. Each work-item
// computes one output pixel for CONV_CO consecutive output channels, so every
// input value it loads is used CONV_CO times. Global size: (OH*OW, ceil(M/CONV_CO), N).
// Used for depthwise convolutions, where each group is a single channel and
// im2col + GEMM would multiply 1-row matrices.

#define CONV_CO 4

__kernel void conv2d(__global const float* x, __global const float* w,
                     __global const float* bias, const int has_bias,
                     __global float* y,
                     const int C, const int H, const int W,
                     const int M, const int OH, const int OW,
                     const int KH, const int KW,
                     const int sh, const int sw, const int ph, const int pw,
                     const int dh, const int dw, const int group, const int act)
{
    const int p = get_global_id(0);
    const int mb = get_global_id(1) * CONV_CO;
    const int n = get_global_id(2);
    if (p >= OH * OW)
        return;
    const int oy = p / OW;
    const int ox = p % OW;
    const int cg = C / group;
    const int mg = M / group;

    float acc[CONV_CO];
    for (int j = 0; j < CONV_CO; j++) {
        const int m = mb + j;
        acc[j] = (has_bias && m < M) ? bias[m] : 0.0f;
    }
    // The channels of one work-item may straddle a group boundary when
    // M/group is not a multiple of CONV_CO: each run of channels in one group
    // reads that group's input channels.
    int j = 0;
    while (j < CONV_CO && mb + j < M) {
        const int g = (mb + j) / mg;
        int last = j + 1;
        while (last < CONV_CO && mb + last < M && (mb + last) / mg == g)
            last++;
        for (int c = 0; c < cg; c++) {
            __global const float* xc = x + ((n * C + g * cg + c) * H) * W;
            for (int ky = 0; ky < KH; ky++) {
                const int iy = oy * sh - ph + ky * dh;
                if (iy < 0 || iy >= H)
                    continue;
                for (int kx = 0; kx < KW; kx++) {
                    const int ix = ox * sw - pw + kx * dw;
                    if (ix < 0 || ix >= W)
                        continue;
                    const float v = xc[iy * W + ix];
                    for (int t = j; t < last; t++)
                        acc[t] = fma(v, w[(((mb + t) * cg + c) * KH + ky) * KW + kx], acc[t]);
                }
            }
        }
        j = last;
    }
    for (int j = 0; j < CONV_CO; j++) {
        const int m = mb + j;
        if (m >= M)
            break;
        float v = acc[j];
        if (act == 1)
            v = fmax(v, 0.0f);
        y[((n * M + m) * OH + oy) * OW + ox] = v;
    }
}
