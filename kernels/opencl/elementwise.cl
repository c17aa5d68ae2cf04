// Element-wise kernels: the four arithmetic operators with ONNX (numpy)
// broadcasting, the activations, and inference-mode batch normalisation.

#define MAX_DIMS 8

// Binary operator codes, shared with the host (ops.rs).
#define OP_ADD 0
#define OP_SUB 1
#define OP_MUL 2
#define OP_DIV 3

inline float apply_binary(const int op, const float a, const float b)
{
    switch (op) {
    case OP_ADD: return a + b;
    case OP_SUB: return a - b;
    case OP_MUL: return a * b;
    default: return a / b;
    }
}

// Both operands have the output's shape: no index arithmetic.
__kernel void binary_same(__global const float* a, __global const float* b,
                          __global float* y, const int op, const int n)
{
    const int i = get_global_id(0);
    if (i < n)
        y[i] = apply_binary(op, a[i], b[i]);
}

// General broadcasting. shape holds, for each output dimension (at most
// MAX_DIMS, innermost last): the output size, then A's stride, then B's stride
// (0 where that operand is broadcast along the dimension).
__kernel void binary_broadcast(__global const float* a, __global const float* b,
                               __global float* y, const int op, const int n,
                               const int ndim, __global const int* shape)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    int rem = i;
    int ia = 0;
    int ib = 0;
    for (int d = ndim - 1; d >= 0; d--) {
        const int size = shape[3 * d];
        const int idx = rem % size;
        rem /= size;
        ia += idx * shape[3 * d + 1];
        ib += idx * shape[3 * d + 2];
    }
    y[i] = apply_binary(op, a[ia], b[ib]);
}

// Unary operator codes, shared with the host (ops.rs).
#define UN_RELU 0
#define UN_LEAKY_RELU 1
#define UN_SIGMOID 2
#define UN_TANH 3
#define UN_EXP 4
#define UN_LOG 5
#define UN_SQRT 6
#define UN_ERF 7

__kernel void unary(__global const float* x, __global float* y, const int op,
                    const float alpha, const int n)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    const float v = x[i];
    float r;
    switch (op) {
    case UN_RELU: r = fmax(v, 0.0f); break;
    case UN_LEAKY_RELU: r = v >= 0.0f ? v : alpha * v; break;
    case UN_SIGMOID:
        // Written so that neither branch overflows exp().
        r = v >= 0.0f ? 1.0f / (1.0f + exp(-v)) : exp(v) / (1.0f + exp(v));
        break;
    case UN_TANH: r = tanh(v); break;
    case UN_EXP: r = exp(v); break;
    case UN_LOG: r = log(v); break;
    case UN_SQRT: r = sqrt(v); break;
    default: r = erf(v); break;
    }
    y[i] = r;
}

// y = scale * (x - mean) / sqrt(var + epsilon) + bias, per channel of NC...
// data; inner is the number of elements per (n, c).
__kernel void batchnorm(__global const float* x, __global const float* scale,
                        __global const float* bias, __global const float* mean,
                        __global const float* var, __global float* y,
                        const float epsilon, const int channels, const int inner,
                        const int n)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    const int c = (i / inner) % channels;
    y[i] = scale[c] * (x[i] - mean[c]) / sqrt(var[c] + epsilon) + bias[c];
}
