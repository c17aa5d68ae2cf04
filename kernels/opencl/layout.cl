// Kernels that move data without arithmetic: Transpose and Concat. Reshape,
// Flatten and Identity need no kernel: their output shares the input buffer.

// y[i] = x[permuted index]. dims holds, per output dimension (innermost
// last), the output size and the input stride of the dimension it came from.
__kernel void transpose(__global const float* x, __global float* y,
                        const int n, const int ndim, __global const int* dims)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    int rem = i;
    int src = 0;
    for (int d = ndim - 1; d >= 0; d--) {
        const int size = dims[2 * d];
        src += (rem % size) * dims[2 * d + 1];
        rem /= size;
    }
    y[i] = x[src];
}

// Copies one Concat input into its slot of the output. Viewing both as
// (outer, axis * inner): each of the outer rows of src (src_row elements)
// lands at offset dst_offset of a dst row of dst_row elements.
__kernel void concat_copy(__global const float* src, __global float* dst,
                          const int src_row, const int dst_row,
                          const int dst_offset, const int n)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    const int o = i / src_row;
    const int r = i % src_row;
    dst[o * dst_row + dst_offset + r] = src[i];
}
