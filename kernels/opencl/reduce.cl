// Reductions: Softmax along one axis and GlobalAveragePool.

// Softmax over `len` elements spaced `inner` apart; one work-item per
// (outer, inner) pair. Subtracting the maximum keeps exp() from overflowing.
__kernel void softmax(__global const float* x, __global float* y,
                      const int outer, const int len, const int inner)
{
    const int i = get_global_id(0);
    if (i >= outer * inner)
        return;
    const int o = i / inner;
    const int in = i % inner;
    __global const float* xs = x + o * len * inner + in;
    __global float* ys = y + o * len * inner + in;
    float mx = -INFINITY;
    for (int k = 0; k < len; k++)
        mx = fmax(mx, xs[k * inner]);
    float sum = 0.0f;
    for (int k = 0; k < len; k++) {
        const float e = exp(xs[k * inner] - mx);
        ys[k * inner] = e;
        sum += e;
    }
    const float inv = 1.0f / sum;
    for (int k = 0; k < len; k++)
        ys[k * inner] *= inv;
}

// Mean over the spatial elements of each (n, c): one work-item per channel.
__kernel void global_average_pool(__global const float* x, __global float* y,
                                  const int channels, const int spatial)
{
    const int i = get_global_id(0);
    if (i >= channels)
        return;
    __global const float* xs = x + i * spatial;
    float sum = 0.0f;
    for (int k = 0; k < spatial; k++)
        sum += xs[k];
    y[i] = sum / (float)spatial;
}
