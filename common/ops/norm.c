/*
norm.c -- InstanceNorm (no affine) and GroupNorm (affine) over channels-first volumes, CPU.

Both normalise a contiguous block of values (one (n, c) for InstanceNorm, one (n, group) of C/G
channels for GroupNorm) with the biased variance and eps inside the square root, as PyTorch's
InstanceNorm3d / GroupNorm do. Statistics are computed in double with two passes (mean, then
centred sum of squares) and saved for the backward. LayerNorm lives elsewhere (layernorm.c).
Twin: gpu/norm.cu.
*/
#include "real.h"
#include "check.h"
#include <math.h>

// ----------------------------------------------------------------------------
// shared: normalise / back-propagate through one contiguous block of n values

static void block_stats(const real *x, size_t n, double eps, double *mean, double *rstd)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    double m = s / (double)n, q = 0;
    for (size_t i = 0; i < n; i++) { double d = x[i] - m; q += d * d; }
    *mean = m;
    *rstd = 1.0 / sqrt(q / (double)n + eps);
}

// With xhat = (x - mean) * rstd and upstream gradient dxhat over the block:
// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))   (architecture.md §8)
// Returns the two block means so that a caller can apply them channel by channel.
static void block_grad_means(const real *dy, const real *x, const real *gamma, size_t S, int C0,
                             int nc, double mean, double rstd, double *m1, double *m2)
{
    double a = 0, b = 0;
    for (int c = 0; c < nc; c++) {
        double g = gamma ? (double)gamma[C0 + c] : 1.0;
        const real *dyc = dy + (size_t)c * S, *xc = x + (size_t)c * S;
        for (size_t i = 0; i < S; i++) {
            double dxh = dyc[i] * g, xh = (xc[i] - mean) * rstd;
            a += dxh;
            b += dxh * xh;
        }
    }
    double n = (double)nc * (double)S;
    *m1 = a / n;
    *m2 = b / n;
}

// ----------------------------------------------------------------------------
// InstanceNorm

// y, x: (N, C, S)   mean, rstd: (N*C)
void OP(instancenorm_forward)(real *y, real *mean, real *rstd, const real *x,
                              int N, int C, size_t S, double eps)
{
    ASSERT(N > 0 && C > 0 && S > 0 && eps >= 0);
    #pragma omp parallel for schedule(dynamic, 1)
    for (long nc = 0; nc < (long)N * C; nc++) {
        const real *xp = x + (size_t)nc * S;
        real *yp = y + (size_t)nc * S;
        double m, r;
        block_stats(xp, S, eps, &m, &r);
        for (size_t i = 0; i < S; i++) yp[i] = (real)((xp[i] - m) * r);
        mean[nc] = (real)m;
        rstd[nc] = (real)r;
    }
}

// dx, dy, x: (N, C, S)   mean, rstd: (N*C) from the forward. Accumulates into dx.
void OP(instancenorm_backward)(real *dx, const real *dy, const real *x,
                               const real *mean, const real *rstd, int N, int C, size_t S)
{
    ASSERT(N > 0 && C > 0 && S > 0);
    if (!dx) return;
    #pragma omp parallel for schedule(dynamic, 1)
    for (long nc = 0; nc < (long)N * C; nc++) {
        const real *dyp = dy + (size_t)nc * S, *xp = x + (size_t)nc * S;
        real *dxp = dx + (size_t)nc * S;
        double m = mean[nc], r = rstd[nc], m1, m2;
        block_grad_means(dyp, xp, NULL, S, 0, 1, m, r, &m1, &m2);
        for (size_t i = 0; i < S; i++) {
            double xh = (xp[i] - m) * r;
            dxp[i] = (real)((double)dxp[i] + r * (dyp[i] - m1 - xh * m2));
        }
    }
}

// ----------------------------------------------------------------------------
// GroupNorm: channels [g*C/G, (g+1)*C/G) form group g; y = xhat * gamma[c] + beta[c]

// y, x: (N, C, S)   gamma, beta: (C)   mean, rstd: (N*G)
void OP(groupnorm_forward)(real *y, real *mean, real *rstd, const real *x,
                           const real *gamma, const real *beta, int N, int C, int G, size_t S,
                           double eps)
{
    ASSERT(N > 0 && C > 0 && G > 0 && C % G == 0 && S > 0 && eps >= 0);
    const int cg = C / G;
    const size_t bs = (size_t)cg * S;               // a group is contiguous in NCS layout
    #pragma omp parallel for schedule(dynamic, 1)
    for (long ng = 0; ng < (long)N * G; ng++) {
        const real *xp = x + (size_t)ng * bs;
        real *yp = y + (size_t)ng * bs;
        int c0 = (int)(ng % G) * cg;
        double m, r;
        block_stats(xp, bs, eps, &m, &r);
        for (int c = 0; c < cg; c++) {
            double g = gamma[c0 + c], b = beta[c0 + c];
            for (size_t i = 0; i < S; i++) {
                size_t j = (size_t)c * S + i;
                yp[j] = (real)((xp[j] - m) * r * g + b);
            }
        }
        mean[ng] = (real)m;
        rstd[ng] = (real)r;
    }
}

// dx, dy, x: (N, C, S)   dgamma, dbeta, gamma: (C)   mean, rstd: (N*G). Accumulates.
void OP(groupnorm_backward)(real *dx, real *dgamma, real *dbeta, const real *dy, const real *x,
                            const real *mean, const real *rstd, const real *gamma,
                            int N, int C, int G, size_t S)
{
    ASSERT(N > 0 && C > 0 && G > 0 && C % G == 0 && S > 0);
    const int cg = C / G;
    const size_t bs = (size_t)cg * S;
    if (dgamma || dbeta) {
        // one task per channel, batch summed inside it: no cross-thread reduction
        #pragma omp parallel for schedule(dynamic, 1)
        for (int c = 0; c < C; c++) {
            double sg = 0, sb = 0;
            for (int n = 0; n < N; n++) {
                size_t ng = (size_t)n * G + c / cg;
                double m = mean[ng], r = rstd[ng];
                const real *dyc = dy + ((size_t)n * C + c) * S, *xc = x + ((size_t)n * C + c) * S;
                for (size_t i = 0; i < S; i++) {
                    sb += dyc[i];
                    sg += dyc[i] * ((xc[i] - m) * r);
                }
            }
            if (dgamma) dgamma[c] = (real)((double)dgamma[c] + sg);
            if (dbeta) dbeta[c] = (real)((double)dbeta[c] + sb);
        }
    }
    if (!dx) return;
    #pragma omp parallel for schedule(dynamic, 1)
    for (long ng = 0; ng < (long)N * G; ng++) {
        const real *dyp = dy + (size_t)ng * bs, *xp = x + (size_t)ng * bs;
        real *dxp = dx + (size_t)ng * bs;
        int c0 = (int)(ng % G) * cg;
        double m = mean[ng], r = rstd[ng], m1, m2;
        block_grad_means(dyp, xp, gamma, S, c0, cg, m, r, &m1, &m2);
        for (int c = 0; c < cg; c++) {
            double g = gamma[c0 + c];
            for (size_t i = 0; i < S; i++) {
                size_t j = (size_t)c * S + i;
                double xh = (xp[j] - m) * r;
                dxp[j] = (real)((double)dxp[j] + r * (dyp[j] * g - m1 - xh * m2));
            }
        }
    }
}
