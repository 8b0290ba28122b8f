/*
conv_wgrad_blocks.cu -- the weight gradient of a k5 s2 p2 convolution (the CMMB's conv5 and,
as the same cuDNN problem, its transposed conv5) over the input's 2x2x2 blocks. Per axis,
dW[t] = sum_z dy[z] x[2z - 2 + t] for t = 0..4, and with xb[Z] the block Z of x (8 C channels:
channel q C + c holds x[2Z + q] of channel c, q = 4 qz + 2 qy + qx), x[2z - 2 + t] =
xb[z - 1 + j][q] for t = 2j + q: dW is the weight gradient of a k3 s1 p1 convolution of xb
(8 C -> K channels, the same dy), read at j = t / 2, q = t % 2 (j = 2, q = 1 is t = 5: unused).
Needs the input's extents to be exactly twice the output's. conv_cudnn.cu decides where this
runs (small outputs, where cuDNN's k5 s2 weight-gradient plans are slow) and holds the buffers.
*/
#include "gpu_internal.h"

#define BLOCK 256

// xb (N, D/2, H/2, W/2, 8 C) from x (N, D, H, W, C); one thread per xb element
template <typename T>
__global__ void blocks_kernel(T *xb, const T *x, int C, int D, int H, int W, size_t total)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const s2d_src s = s2d_source(i, C, D / 2, H / 2, W / 2, 0);
        xb[i] = x[(((s.n * D + s.z) * H + s.y) * W + s.x) * C + s.c];
    }
}

void wgrad_blocks_input_gpu(gpu_ctx_t *g, void *xb, const void *x, int N, int C, const int big[3])
{
    const size_t total = (size_t)N * C * big[0] * big[1] * big[2];
    ACT_DISPATCH(g->act, T, blocks_kernel<T><<<grid_for(g, total, BLOCK), BLOCK, 0, g->stream>>>(
                                (T *)xb, (const T *)x, C, big[0], big[1], big[2], total));
    KERNEL_CHECK();
}

void wgrad_blocks_fold_gpu(gpu_ctx_t *g, float *dw, const void *dwb, int K, int C)
{
    const size_t total = (size_t)K * 125 * C;
    // t = 2 j + q
    ACT_DISPATCH(g->act, T, (blocks_fold_kernel<T, 5, 3, 0><<<grid_for(g, total, BLOCK), BLOCK, 0,
                                                              g->stream>>>(dw, (const T *)dwb, C, total)));
    KERNEL_CHECK();
}
