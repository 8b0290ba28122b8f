/*
pad_crop.cu -- zero padding and cropping of channels-last volumes (ToM_A pads odd dims, the CMMB
output is cropped or padded to its input's shape). Twin of common/ops/pad_crop.c:
y[p] = x[p + off] where that lies inside x, else 0; backward dx[q] += dy[q - off] where q - off
lies inside y. Both are gathers (one thread per written element): deterministic, no atomics.
*/
#include "gpu_internal.h"

#define BLOCK 256

typedef struct { int in[3], out[3], off[3]; } pc_dims_t;

template <typename T>
__global__ void pad_crop_fwd_kernel(T *y, const T *x, int C, pc_dims_t d, size_t total)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / C;
        int c = (int)(i % C);
        int p2 = (int)(t % d.out[2]); t /= d.out[2];
        int p1 = (int)(t % d.out[1]); t /= d.out[1];
        int p0 = (int)(t % d.out[0]);
        size_t n = t / d.out[0];
        int q0 = p0 + d.off[0], q1 = p1 + d.off[1], q2 = p2 + d.off[2];
        float v = 0.0f;
        if (q0 >= 0 && q0 < d.in[0] && q1 >= 0 && q1 < d.in[1] && q2 >= 0 && q2 < d.in[2])
            v = to_f(x[(((n * d.in[0] + q0) * d.in[1] + q1) * d.in[2] + q2) * C + c]);
        y[i] = from_f<T>(v);
    }
}

template <typename T>
__global__ void pad_crop_bwd_kernel(T *dx, const T *dy, int C, pc_dims_t d, size_t total)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / C;
        int c = (int)(i % C);
        int q2 = (int)(t % d.in[2]); t /= d.in[2];
        int q1 = (int)(t % d.in[1]); t /= d.in[1];
        int q0 = (int)(t % d.in[0]);
        size_t n = t / d.in[0];
        int p0 = q0 - d.off[0], p1 = q1 - d.off[1], p2 = q2 - d.off[2];
        if (p0 >= 0 && p0 < d.out[0] && p1 >= 0 && p1 < d.out[1] && p2 >= 0 && p2 < d.out[2])
            dx[i] = from_f<T>(to_f(dx[i]) +
                              to_f(dy[(((n * d.out[0] + p0) * d.out[1] + p1) * d.out[2] + p2) * C + c]));
    }
}

static pc_dims_t dims(const int in[3], const int out[3], const int off[3])
{
    pc_dims_t d;
    for (int i = 0; i < 3; i++) {
        ASSERT(in[i] > 0 && out[i] > 0);
        d.in[i] = in[i]; d.out[i] = out[i]; d.off[i] = off[i];
    }
    return d;
}

void pad_crop3d_forward_gpu(gpu_ctx_t *g, void *y, const void *x, int N, int C, const int in[3],
                            const int out[3], const int off[3])
{
    pc_dims_t d = dims(in, out, off);
    size_t total = (size_t)N * C * out[0] * out[1] * out[2];
    if (!total) return;
    ACT_DISPATCH(g->act, T, pad_crop_fwd_kernel<T><<<grid_for(g, total, BLOCK), BLOCK, 0, g->stream>>>(
                                (T *)y, (const T *)x, C, d, total));
    KERNEL_CHECK();
}

void pad_crop3d_backward_gpu(gpu_ctx_t *g, void *dx, const void *dy, int N, int C,
                             const int in[3], const int out[3], const int off[3])
{
    if (!dx) return;
    pc_dims_t d = dims(in, out, off);
    size_t total = (size_t)N * C * in[0] * in[1] * in[2];
    if (!total) return;
    ACT_DISPATCH(g->act, T, pad_crop_bwd_kernel<T><<<grid_for(g, total, BLOCK), BLOCK, 0, g->stream>>>(
                                (T *)dx, (const T *)dy, C, d, total));
    KERNEL_CHECK();
}
