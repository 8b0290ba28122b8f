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

template <typename T>
__global__ void upsample_fwd_kernel(T *y, const T *x, int C, int D, int H, int W, size_t total)
{
    const int OD = 2 * D, OH = 2 * H, OW = 2 * W;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / C;
        int c = (int)(i % C);
        int ow = (int)(t % OW); t /= OW;
        int oh = (int)(t % OH); t /= OH;
        int od = (int)(t % OD);
        size_t n = t / OD;
        int d0, d1, h0, h1, w0, w1;
        float fd, fh, fw;
        tap(od, D, &d0, &d1, &fd);
        tap(oh, H, &h0, &h1, &fh);
        tap(ow, W, &w0, &w1, &fw);
        const T *xn = x + n * D * H * W * C + c;
#define X(a, b, e) to_f(xn[(((size_t)(a) * H + (b)) * W + (e)) * C])
        // same nesting as the CPU twin (d outer, then h, then w)
        float v = (1 - fd) * ((1 - fh) * ((1 - fw) * X(d0, h0, w0) + fw * X(d0, h0, w1)) +
                              fh * ((1 - fw) * X(d0, h1, w0) + fw * X(d0, h1, w1))) +
                  fd * ((1 - fh) * ((1 - fw) * X(d1, h0, w0) + fw * X(d1, h0, w1)) +
                        fh * ((1 - fw) * X(d1, h1, w0) + fw * X(d1, h1, w1)));
#undef X
        y[i] = from_f<T>(v);
    }
}

template <typename T>
__global__ void upsample_bwd_kernel(T *dx, const T *dy, int C, int D, int H, int W, size_t total)
{
    const int OD = 2 * D, OH = 2 * H, OW = 2 * W;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / C;
        int c = (int)(i % C);
        int jw = (int)(t % W); t /= W;
        int jh = (int)(t % H); t /= H;
        int jd = (int)(t % D);
        size_t n = t / D;
        const T *dyn = dy + n * OD * OH * OW * C + c;
        float acc = 0.0f;
        // outputs 2j-1 .. 2j+2 are the only ones whose taps can reach input j
        for (int od = max(2 * jd - 1, 0); od <= min(2 * jd + 2, OD - 1); od++) {
            float wd = tap_weight(od, D, jd);
            if (wd == 0.0f) continue;
            for (int oh = max(2 * jh - 1, 0); oh <= min(2 * jh + 2, OH - 1); oh++) {
                float wh = tap_weight(oh, H, jh);
                if (wh == 0.0f) continue;
                for (int ow = max(2 * jw - 1, 0); ow <= min(2 * jw + 2, OW - 1); ow++) {
                    float ww = tap_weight(ow, W, jw);
                    if (ww == 0.0f) continue;
                    acc += wd * wh * ww * to_f(dyn[(((size_t)od * OH + oh) * OW + ow) * C]);
                }
            }
        }
        dx[i] = from_f<T>(to_f(dx[i]) + acc);
    }
}

void upsample_trilinear2x_forward_gpu(gpu_ctx_t *g, void *y, const void *x, int N, int C,
                                      const int in[3])
{
    ASSERT(N > 0 && C > 0 && in[0] > 0 && in[1] > 0 && in[2] > 0);
    size_t total = (size_t)N * C * 8 * in[0] * in[1] * in[2];
    ACT_DISPATCH(g->act, T, upsample_fwd_kernel<T><<<grid_for(g, total, BLOCK), BLOCK, 0, g->stream>>>(
                                (T *)y, (const T *)x, C, in[0], in[1], in[2], total));
    KERNEL_CHECK();
}

void upsample_trilinear2x_backward_gpu(gpu_ctx_t *g, void *dx, const void *dy, int N, int C,
                                       const int in[3])
{
    ASSERT(N > 0 && C > 0 && in[0] > 0 && in[1] > 0 && in[2] > 0);
    if (!dx) return;
    size_t total = (size_t)N * C * in[0] * in[1] * in[2];
    ACT_DISPATCH(g->act, T, upsample_bwd_kernel<T><<<grid_for(g, total, BLOCK), BLOCK, 0, g->stream>>>(
                                (T *)dx, (const T *)dy, C, in[0], in[1], in[2], total));
    KERNEL_CHECK();
}
