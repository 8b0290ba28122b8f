/*
upsample.cu -- trilinear x2 upsampling, align_corners = False (MONAI non-trainable UpSample),
channels-last. Twin of common/ops/upsample.c: per axis, output o reads src = (o + 0.5)/2 - 0.5
clamped below at 0, from i0 = floor(src) and i1 = min(i0 + 1, n - 1) with weights 1 - f, f.
The backward is a gather, not a scatter: each input sample sums the (at most 4 per axis) outputs
whose taps touch it, so it is deterministic without atomics.
*/
#include "gpu_internal.h"

#define BLOCK 256

__device__ __forceinline__ void tap(int o, int n, int *i0, int *i1, float *f)
{
    float src = (o + 0.5f) * 0.5f - 0.5f;       // exact in fp32: a multiple of 1/4
    if (src < 0.0f) src = 0.0f;
    *i0 = (int)src;
    *i1 = *i0 < n - 1 ? *i0 + 1 : *i0;
    *f = src - (float)*i0;
}

// weight with which output o (of 2n) reads input j along one axis
__device__ __forceinline__ float tap_weight(int o, int n, int j)
{
    int i0, i1;
    float f;
    tap(o, n, &i0, &i1, &f);
    return (i0 == j ? 1.0f - f : 0.0f) + (i1 == j ? f : 0.0f);
}

// Threads over (voxel, vector of VEC channels): VEC = 16 bytes of channels where C and the
// pointers allow, else 1. A block row is one (n, d, h) line of the voxels a kernel writes
// (grid.y strides over the lines), its threads (w, channel vector) -- the index math is per
// line and per VEC channels, not 64-bit divisions per element as in the first version (level 0,
// 48 channels: forward 146 us, backward 207 us under ncu, for ~25 MB of output).
template <typename T, int VEC>
__global__ void upsample_fwd_kernel(T *y, const T *x, int C, int D, int H, int W, size_t lines)
{
    const int OD = 2 * D, OH = 2 * H, OW = 2 * W, CV = C / VEC;
    const int it = blockIdx.x * blockDim.x + threadIdx.x;
    if (it >= OW * CV) return;
    const int ow = it / CV, c = it % CV * VEC;
    int w0, w1;
    float fw;
    tap(ow, W, &w0, &w1, &fw);
    for (size_t line = blockIdx.y; line < lines; line += gridDim.y) {
        const int oh = (int)(line % OH), od = (int)(line / OH % OD);
        const size_t n = line / ((size_t)OH * OD);
        int d0, d1, h0, h1;
        float fd, fh;
        tap(od, D, &d0, &d1, &fd);
        tap(oh, H, &h0, &h1, &fh);
        const T *xn = x + n * D * H * W * C + c;
        float v[8][VEC];                            // taps (d, h, w) in the order d0h0w0, d0h0w1, ...
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const int a = k & 4 ? d1 : d0, b = k & 2 ? h1 : h0, e = k & 1 ? w1 : w0;
            ld_vec<T, VEC>(xn + (((size_t)a * H + b) * W + e) * C, v[k]);
        }
        float o[VEC];
        // same nesting as the CPU twin (d outer, then h, then w)
#pragma unroll
        for (int i = 0; i < VEC; i++)
            o[i] = (1 - fd) * ((1 - fh) * ((1 - fw) * v[0][i] + fw * v[1][i]) +
                              fh * ((1 - fw) * v[2][i] + fw * v[3][i])) +
                   fd * ((1 - fh) * ((1 - fw) * v[4][i] + fw * v[5][i]) +
                         fh * ((1 - fw) * v[6][i] + fw * v[7][i]));
        st_vec<T, VEC>(y + ((line * OW) + ow) * C + c, o);
    }
}

// the outputs 2j - 1 .. 2j + 2 along one axis are the only ones whose taps can reach input j:
// their first index and the 4 weights (0 outside the axis or where no tap reaches j)
__device__ __forceinline__ int gather_taps(int j, int n, float (&wt)[4])
{
    const int o0 = 2 * j - 1;
#pragma unroll
    for (int q = 0; q < 4; q++) {
        const int o = o0 + q;
        wt[q] = o >= 0 && o < 2 * n ? tap_weight(o, n, j) : 0.0f;
    }
    return o0;
}

template <typename T, int VEC>
__global__ void upsample_bwd_kernel(T *dx, const T *dy, int C, int D, int H, int W, size_t lines)
{
    const int OD = 2 * D, OH = 2 * H, OW = 2 * W, CV = C / VEC;
    const int it = blockIdx.x * blockDim.x + threadIdx.x;
    if (it >= W * CV) return;
    const int jw = it / CV, c = it % CV * VEC;
    float ww[4];
    const int ow0 = gather_taps(jw, W, ww);
    for (size_t line = blockIdx.y; line < lines; line += gridDim.y) {
        const int jh = (int)(line % H), jd = (int)(line / H % D);
        const size_t n = line / ((size_t)H * D);
        float wd[4], wh[4];
        const int od0 = gather_taps(jd, D, wd), oh0 = gather_taps(jh, H, wh);
        const T *dyn = dy + n * OD * OH * OW * C + c;
        float acc[VEC];
#pragma unroll
        for (int i = 0; i < VEC; i++) acc[i] = 0.0f;
        // od, then oh, then ow ascending, zero weights skipped (a fixed order)
        for (int a = 0; a < 4; a++) {
            if (wd[a] == 0.0f) continue;
            for (int b = 0; b < 4; b++) {
                if (wh[b] == 0.0f) continue;
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    if (ww[e] == 0.0f) continue;
                    float v[VEC];
                    ld_vec<T, VEC>(dyn + (((size_t)(od0 + a) * OH + oh0 + b) * OW + ow0 + e) * C, v);
                    const float wgt = wd[a] * wh[b] * ww[e];
#pragma unroll
                    for (int i = 0; i < VEC; i++) acc[i] += wgt * v[i];
                }
            }
        }
        T *p = dx + ((line * W) + jw) * C + c;
        float o[VEC];
        ld_vec<T, VEC>(p, o);
#pragma unroll
        for (int i = 0; i < VEC; i++) o[i] += acc[i];
        st_vec<T, VEC>(p, o);
    }
}

// grid for `lines` block rows of `items` (w, channel vector) threads each
static dim3 up_grid(size_t lines, int items)
{
    const size_t gy = lines < 65535 ? lines : 65535;
    return dim3((unsigned)CEIL_DIV(items, BLOCK), (unsigned)gy);
}

#define UP_DISPATCH(vec, T, K, ...)                                       \
    do {                                                                  \
        if ((vec) == 1) K<T, 1> __VA_ARGS__;                              \
        else K<T, 16 / (int)sizeof(T)> __VA_ARGS__;                       \
    } while (0)

void upsample_trilinear2x_forward_gpu(gpu_ctx_t *g, void *y, const void *x, int N, int C,
                                      const int in[3])
{
    ASSERT(N > 0 && C > 0 && in[0] > 0 && in[1] > 0 && in[2] > 0);
    const int vec = vec16_width(gpu_dtype_size(g->act), C, { y, x });
    const size_t lines = (size_t)N * 2 * in[0] * 2 * in[1];
    const dim3 grid = up_grid(lines, 2 * in[2] * (C / vec));
    ACT_DISPATCH(g->act, T, UP_DISPATCH(vec, T, upsample_fwd_kernel, <<<grid, BLOCK, 0, g->stream>>>(
                                (T *)y, (const T *)x, C, in[0], in[1], in[2], lines)));
    KERNEL_CHECK();
}

void upsample_trilinear2x_backward_gpu(gpu_ctx_t *g, void *dx, const void *dy, int N, int C,
                                       const int in[3])
{
    ASSERT(N > 0 && C > 0 && in[0] > 0 && in[1] > 0 && in[2] > 0);
    if (!dx) return;
    const int vec = vec16_width(gpu_dtype_size(g->act), C, { dx, dy });
    const size_t lines = (size_t)N * in[0] * in[1];
    const dim3 grid = up_grid(lines, in[2] * (C / vec));
    ACT_DISPATCH(g->act, T, UP_DISPATCH(vec, T, upsample_bwd_kernel, <<<grid, BLOCK, 0, g->stream>>>(
                                (T *)dx, (const T *)dy, C, in[0], in[1], in[2], lines)));
    KERNEL_CHECK();
}
