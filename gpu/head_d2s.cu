/*
head_d2s.cu -- the head, ConvTranspose3d(Cin -> K, kernel 2, stride 2), as one GEMM over the
input's voxels and a depth-to-space copy. With kernel = stride every output voxel
(2z + a, 2y + b, 2x + c) has exactly one input voxel (z, y, x) and one tap sub = 4a + 2b + c, so
  Yb (N V, 8 K) = X (N V, Cin) W_lin^T,  W_lin (8 K, Cin): W_lin[sub K + co][ci] = W[ci][sub][co]
  y[n, 2z + a, 2y + b, 2x + c, co] = Yb[n, v, sub K + co] + bias[co]
and the backward is the same GEMM's (dYb = the block form of dy; dX = dYb W_lin, dW_lin =
dYb^T X, folded back into W's layout). Why: cuDNN ran this layer as a strided data gradient at
0.22 ms forward + 0.20 ms input gradient + 0.19 ms weight gradient of a 128^3 step on an H100
(0.42 + 0.38 + 0.36 at batch 2) for ~1.4 G multiply-adds each -- a memory-bound GEMM's work
(gpu/PERF_NOTES.md v32). The copies move whole runs of K values (no sums: deterministic).
Layouts: W (Cin, 2, 2, 2, K), the GPU's transposed-conv weight; y (N, 2D, 2H, 2W, K).
*/
#include "gpu_internal.h"

#define BLOCK 256

// One block per output row (n, Z, Y) of y, its threads over the row's 2W K elements: the
// writes (d2s) or reads (s2d) of y are whole coalesced rows, the Yb side is runs of 2K values
// (the taps sub, sub + 1 of output voxels 2x, 2x + 1). Index math in 32 bits, one division by
// K per element. (The first version, one thread per element with 64-bit index math, and the
// second, one thread per (voxel, tap) copying K values with 2-byte accesses 2K apart across
// the warp, took 0.21 and 0.33 ms for the forward at 128^3 on an H100.)
// Yb offset of element e (= X K + co) of output row (n, Z, Y)
__device__ __forceinline__ size_t d2s_src(unsigned row, unsigned e, int D, int H, int W, int K)
{
    const unsigned Y = row % (2 * H), t = row / (2 * H), Z = t % (2 * D), n = t / (2 * D);
    const unsigned X = e / K, co = e - X * K, sub = 4 * (Z & 1) + 2 * (Y & 1) + (X & 1);
    const size_t v = (((size_t)n * D + (Z >> 1)) * H + (Y >> 1)) * W + (X >> 1);
    return v * 8 * K + sub * K + co;
}

// y = depth_to_space(Yb) + bias. (D, H, W): the input's extents.
template <typename T>
__global__ void d2s_kernel(T *y, const T *yb, const float *bias, int D, int H, int W, int K)
{
    const unsigned row = blockIdx.x, len = 2 * W * K;
    T *dst = y + (size_t)row * len;
    for (unsigned e = threadIdx.x; e < len; e += blockDim.x)
        dst[e] = from_f<T>(to_f(yb[d2s_src(row, e, D, H, W, K)]) + (bias ? bias[e % K] : 0.0f));
}

// Yb = the block form of dy.
template <typename T>
__global__ void s2d_kernel(T *yb, const T *dy, int D, int H, int W, int K)
{
    const unsigned row = blockIdx.x, len = 2 * W * K;
    const T *src = dy + (size_t)row * len;
    for (unsigned e = threadIdx.x; e < len; e += blockDim.x) yb[d2s_src(row, e, D, H, W, K)] = src[e];
}

// W_lin from W; one thread per W_lin element
template <typename T>
__global__ void lin_weight_kernel(T *wl, const T *w, int Cin, int K, size_t total)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const int ci = (int)(i % Cin), col = (int)(i / Cin);     // col = sub K + co
        wl[i] = w[(size_t)ci * 8 * K + col];
    }
}

// dw += the fold of dw_lin (f32); one thread per dw element
__global__ void lin_grad_fold_kernel(float *dw, const float *dwl, int Cin, int K, size_t total)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const int col = (int)(i % (8 * K)), ci = (int)(i / (8 * K));
        dw[i] += dwl[(size_t)col * Cin + ci];
    }
}

static void check_head(const conv3d_shape_t *s)
{
    for (int a = 0; a < 3; a++)
        ASSERT(s->k[a] == 2 && s->stride[a] == 2 && s->pad[a] == 0 && s->outpad[a] == 0);
}

// output rows (n, Z, Y) of the batch: d2s / s2d blocks
static unsigned out_rows(const conv3d_shape_t *s)
{
    const size_t r = (size_t)s->N * 4 * s->in[0] * s->in[1];
    ASSERT(r < (1u << 31) && (size_t)s->N * 8 * s->in[0] * s->in[1] * s->in[2] < (1ull << 31));
    return (unsigned)r;
}

static linear_shape_t lin_shape(const conv3d_shape_t *s)
{
    linear_shape_t l = { .N = s->N, .Cin = s->Cin, .Cout = 8 * s->Cout,
                         .L = (size_t)s->in[0] * s->in[1] * s->in[2], .x_nstride = 0, .y_nstride = 0 };
    return l;
}

void head_d2s_weight_gpu(gpu_ctx_t *g, void *wl, const void *w, conv3d_shape_t s)
{
    check_head(&s);
    const size_t total = (size_t)8 * s.Cout * s.Cin;
    ACT_DISPATCH(g->act, T, lin_weight_kernel<T><<<grid_for(g, total, BLOCK), BLOCK, 0, g->stream>>>(
                                (T *)wl, (const T *)w, s.Cin, s.Cout, total));
    KERNEL_CHECK();
}

void head_d2s_forward_gpu(gpu_ctx_t *g, void *y, void *yb, const void *x, const void *wl,
                          const float *b, conv3d_shape_t s)
{
    check_head(&s);
    linear_forward_gpu(g, yb, x, wl, NULL, lin_shape(&s));
    ACT_DISPATCH(g->act, T, d2s_kernel<T><<<out_rows(&s), BLOCK, 0, g->stream>>>(
                                (T *)y, (const T *)yb, b, s.in[0], s.in[1], s.in[2], s.Cout));
    KERNEL_CHECK();
}

void head_d2s_backward_gpu(gpu_ctx_t *g, void *dx, float *dw, float *dwl, float *db, void *dyb,
                           const void *dy, const void *x, const void *wl, conv3d_shape_t s)
{
    check_head(&s);
    ACT_DISPATCH(g->act, T, s2d_kernel<T><<<out_rows(&s), BLOCK, 0, g->stream>>>(
                                (T *)dyb, (const T *)dy, s.in[0], s.in[1], s.in[2], s.Cout));
    KERNEL_CHECK();
    if (dw) gpu_memset(g, dwl, 0, (size_t)8 * s.Cout * s.Cin * sizeof(float));
    linear_backward_gpu(g, dx, dw ? dwl : NULL, NULL, dyb, x, wl, lin_shape(&s));
    if (dw) {
        const size_t nw = (size_t)8 * s.Cout * s.Cin;
        lin_grad_fold_kernel<<<grid_for(g, nw, BLOCK), BLOCK, 0, g->stream>>>(dw, dwl, s.Cin, s.Cout, nw);
        KERNEL_CHECK();
    }
    if (db) bias_grad_gpu(g, db, dy, (size_t)s.N * 8 * s.in[0] * s.in[1] * s.in[2], s.Cout);
}
