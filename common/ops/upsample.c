/*
upsample.c -- trilinear x2 upsampling, align_corners = False, on the CPU: exactly PyTorch's
nn.Upsample(scale_factor=2, mode="trilinear") (MONAI "nontrainable" UpSample, architecture.md
§4.4). Per axis, output o reads source coordinate src = (o + 0.5)/2 - 0.5 clamped below at 0,
from i0 = floor(src) and i1 = min(i0 + 1, n - 1) with weights 1 - f, f (f = src - i0).
The backward scatters the same weights. Twin: gpu/upsample.cu.
*/
#include "real.h"
#include "check.h"
#include <stdlib.h>
#include <string.h>

// One axis of n input samples -> 2n outputs: source indices and weights.
typedef struct { int i0, i1; double l0, l1; } tap_t;

static tap_t *axis_taps(int n)
{
    tap_t *t = xmalloc((size_t)2 * n * sizeof *t);
    for (int o = 0; o < 2 * n; o++) {
        double src = (o + 0.5) * 0.5 - 0.5;
        if (src < 0) src = 0;
        int i0 = (int)src;
        t[o].i0 = i0;
        t[o].i1 = i0 < n - 1 ? i0 + 1 : i0;
        t[o].l1 = src - i0;
        t[o].l0 = 1.0 - t[o].l1;
    }
    return t;
}

// y: (N, C, 2D, 2H, 2W)   x: (N, C, D, H, W)
void OP(upsample_trilinear2x_forward)(real *y, const real *x, int N, int C, const int in[3])
{
    ASSERT(N > 0 && C > 0 && in[0] > 0 && in[1] > 0 && in[2] > 0);
    const int D = in[0], H = in[1], W = in[2], OD = 2 * D, OH = 2 * H, OW = 2 * W;
    const size_t isz = (size_t)D * H * W, osz = (size_t)OD * OH * OW;
    tap_t *td = axis_taps(D), *th = axis_taps(H), *tw = axis_taps(W);
    #pragma omp parallel for schedule(static)
    for (long r = 0; r < (long)N * C * OD * OH; r++) {
        int oh = (int)(r % OH), od = (int)(r / OH % OD);
        size_t nc = (size_t)(r / ((long)OH * OD));
        const real *xc = x + nc * isz;
        const tap_t a = td[od], b = th[oh];
        const real *r00 = xc + ((size_t)a.i0 * H + b.i0) * W, *r01 = xc + ((size_t)a.i0 * H + b.i1) * W;
        const real *r10 = xc + ((size_t)a.i1 * H + b.i0) * W, *r11 = xc + ((size_t)a.i1 * H + b.i1) * W;
        real *yr = y + nc * osz + ((size_t)od * OH + oh) * OW;
        for (int ow = 0; ow < OW; ow++) {
            const tap_t c = tw[ow];
            // same nesting as PyTorch's upsample_trilinear3d kernel (d outer, then h, then w)
            double v = a.l0 * (b.l0 * (c.l0 * r00[c.i0] + c.l1 * r00[c.i1]) +
                               b.l1 * (c.l0 * r01[c.i0] + c.l1 * r01[c.i1])) +
                       a.l1 * (b.l0 * (c.l0 * r10[c.i0] + c.l1 * r10[c.i1]) +
                               b.l1 * (c.l0 * r11[c.i0] + c.l1 * r11[c.i1]));
            yr[ow] = (real)v;
        }
    }
    free(td); free(th); free(tw);
}

// dx: (N, C, D, H, W)   dy: (N, C, 2D, 2H, 2W). Accumulates into dx.
// One (n, c) volume per task, scattered into a private double buffer in a fixed order.
void OP(upsample_trilinear2x_backward)(real *dx, const real *dy, int N, int C, const int in[3])
{
    ASSERT(N > 0 && C > 0 && in[0] > 0 && in[1] > 0 && in[2] > 0);
    if (!dx) return;
    const int D = in[0], H = in[1], W = in[2], OD = 2 * D, OH = 2 * H, OW = 2 * W;
    const size_t isz = (size_t)D * H * W, osz = (size_t)OD * OH * OW;
    tap_t *td = axis_taps(D), *th = axis_taps(H), *tw = axis_taps(W);
    #pragma omp parallel
    {
        double *acc = xmalloc(isz * sizeof *acc);
        #pragma omp for schedule(dynamic, 1)
        for (long nc = 0; nc < (long)N * C; nc++) {
            memset(acc, 0, isz * sizeof *acc);
            const real *dyc = dy + (size_t)nc * osz;
            for (int od = 0; od < OD; od++)
            for (int oh = 0; oh < OH; oh++) {
                const tap_t a = td[od], b = th[oh];
                double *r00 = acc + ((size_t)a.i0 * H + b.i0) * W, *r01 = acc + ((size_t)a.i0 * H + b.i1) * W;
                double *r10 = acc + ((size_t)a.i1 * H + b.i0) * W, *r11 = acc + ((size_t)a.i1 * H + b.i1) * W;
                const double w00 = a.l0 * b.l0, w01 = a.l0 * b.l1, w10 = a.l1 * b.l0, w11 = a.l1 * b.l1;
                const real *dyr = dyc + ((size_t)od * OH + oh) * OW;
                for (int ow = 0; ow < OW; ow++) {
                    const tap_t c = tw[ow];
                    double g0 = c.l0 * dyr[ow], g1 = c.l1 * dyr[ow];
                    r00[c.i0] += w00 * g0; r00[c.i1] += w00 * g1;
                    r01[c.i0] += w01 * g0; r01[c.i1] += w01 * g1;
                    r10[c.i0] += w10 * g0; r10[c.i1] += w10 * g1;
                    r11[c.i0] += w11 * g0; r11[c.i1] += w11 * g1;
                }
            }
            real *dxc = dx + (size_t)nc * isz;
            for (size_t i = 0; i < isz; i++) dxc[i] = (real)((double)dxc[i] + acc[i]);
        }
        free(acc);
    }
    free(td); free(th); free(tw);
}
