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
    const int Db = D / 2, Hb = H / 2, Wb = W / 2, C8 = 8 * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const int ch = (int)(i % C8), q = ch / C, c = ch - q * C;
        size_t t = i / C8;
        const int bx = (int)(t % Wb); t /= Wb;
        const int by = (int)(t % Hb); t /= Hb;
        const int bz = (int)(t % Db);
        const size_t n = t / Db;
        const int z = 2 * bz + (q >> 2), y = 2 * by + ((q >> 1) & 1), xx = 2 * bx + (q & 1);
        xb[i] = x[(((n * D + z) * H + y) * W + xx) * C + c];
    }
}

// dw (K, 5, 5, 5, C) f32 += dwb (K, 3, 3, 3, 8 C) read at j = t / 2, q = t % 2 per axis; one
// thread per dw element
template <typename Tw>
__global__ void fold_kernel(float *dw, const Tw *dwb, int C, size_t total)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const int c = (int)(i % C);
        size_t r = i / C;
        const int tx = (int)(r % 5); r /= 5;
        const int ty = (int)(r % 5); r /= 5;
        const int tz = (int)(r % 5);
        const size_t k = r / 5;
        const int q = 4 * (tz & 1) + 2 * (ty & 1) + (tx & 1);
        const size_t src = (((k * 3 + (tz >> 1)) * 3 + (ty >> 1)) * 3 + (tx >> 1)) * 8 * C +
                           (size_t)q * C + c;
        dw[i] += to_f(dwb[src]);
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
    ACT_DISPATCH(g->act, T, fold_kernel<T><<<grid_for(g, total, BLOCK), BLOCK, 0, g->stream>>>(
                                dw, (const T *)dwb, C, total));
    KERNEL_CHECK();
}
