/*
layernorm.c -- LayerNorm over the channel axis of a channels-first (N, C, L) tensor: every token
(n, l) is normalised over its C channels (biased variance), then scaled by gamma and shifted by
beta. Mamba layers use it on (N, C, D*H*W) activations without a transpose.

Tokens are handled in blocks of LN_BLK so the channel loop reads memory contiguously (channel c
of a token lies L elements after channel c-1). Statistics are accumulated in double; mean and
rstd = 1/sqrt(var + eps) are forward outputs saved for backward. Built twice, see ops.h.
*/
#include "real.h"
#include <math.h>
#include <string.h>

#define LN_BLK 256
// Below this many inner-loop steps a loop runs on one thread: waking a team costs more than
// the work, and far more on a loaded machine.
#define PAR_MIN_WORK 200000.0

// y, x: (N, C, L)   gamma, beta: (C)   mean, rstd: (N*L)
void OP(layernorm_forward)(real *y, real *mean, real *rstd, const real *x,
                           const real *gamma, const real *beta, int N, int C, size_t L, double eps)
{
    const long nblk = (long)((L + LN_BLK - 1) / LN_BLK);
    #pragma omp parallel for schedule(static) if((double)N * C * L >= PAR_MIN_WORK)
    for (long job = 0; job < (long)N * nblk; job++) {
        const int n = (int)(job / nblk);
        const size_t l0 = (size_t)(job % nblk) * LN_BLK;
        const size_t nl = L - l0 < LN_BLK ? L - l0 : LN_BLK;
        const real *xb = x + (size_t)n * C * L + l0;
        real *yb = y + (size_t)n * C * L + l0;
        double mu[LN_BLK], var[LN_BLK];
        memset(mu, 0, sizeof mu);
        memset(var, 0, sizeof var);
        for (int c = 0; c < C; c++)
            for (size_t l = 0; l < nl; l++) mu[l] += xb[(size_t)c * L + l];
        for (size_t l = 0; l < nl; l++) mu[l] /= C;
        // two-pass variance: no cancellation for tokens with a large mean
        for (int c = 0; c < C; c++)
            for (size_t l = 0; l < nl; l++) {
                double d = xb[(size_t)c * L + l] - mu[l];
                var[l] += d * d;
            }
        for (size_t l = 0; l < nl; l++) {
            var[l] = 1.0 / sqrt(var[l] / C + eps);     // now rstd
            mean[(size_t)n * L + l0 + l] = (real)mu[l];
            rstd[(size_t)n * L + l0 + l] = (real)var[l];
        }
        for (int c = 0; c < C; c++) {
            const double g = gamma[c], bt = beta[c];
            for (size_t l = 0; l < nl; l++)
                yb[(size_t)c * L + l] = (real)((xb[(size_t)c * L + l] - mu[l]) * var[l] * g + bt);
        }
    }
}

// Accumulates. With xh = (x - mean)*rstd and g = dy*gamma:
//   dx += rstd * (g - mean_c(g) - xh * mean_c(g * xh)),  dgamma += sum dy*xh,  dbeta += sum dy
void OP(layernorm_backward)(real *dx, real *dgamma, real *dbeta, const real *dy, const real *x,
                            const real *mean, const real *rstd, const real *gamma,
                            int N, int C, size_t L)
{
    const long nblk = (long)((L + LN_BLK - 1) / LN_BLK);
    if (dx) {
        #pragma omp parallel for schedule(static) if((double)N * C * L >= PAR_MIN_WORK)
        for (long job = 0; job < (long)N * nblk; job++) {
            const int n = (int)(job / nblk);
            const size_t l0 = (size_t)(job % nblk) * LN_BLK;
            const size_t nl = L - l0 < LN_BLK ? L - l0 : LN_BLK;
            const size_t base = (size_t)n * C * L + l0;
            const real *mu = mean + (size_t)n * L + l0, *rs = rstd + (size_t)n * L + l0;
            double mg[LN_BLK], mgx[LN_BLK];
            memset(mg, 0, sizeof mg);
            memset(mgx, 0, sizeof mgx);
            for (int c = 0; c < C; c++)
                for (size_t l = 0; l < nl; l++) {
                    size_t i = base + (size_t)c * L + l;
                    double g = (double)dy[i] * gamma[c];
                    double xh = ((double)x[i] - mu[l]) * rs[l];
                    mg[l] += g;
                    mgx[l] += g * xh;
                }
            for (size_t l = 0; l < nl; l++) { mg[l] /= C; mgx[l] /= C; }
            for (int c = 0; c < C; c++)
                for (size_t l = 0; l < nl; l++) {
                    size_t i = base + (size_t)c * L + l;
                    double g = (double)dy[i] * gamma[c];
                    double xh = ((double)x[i] - mu[l]) * rs[l];
                    dx[i] += (real)(rs[l] * (g - mg[l] - xh * mgx[l]));
                }
        }
    }
    if (dgamma || dbeta) {
        // one channel per job: fixed summation order, no shared accumulators
        #pragma omp parallel for schedule(static) if((double)N * C * L >= PAR_MIN_WORK)
        for (int c = 0; c < C; c++) {
            double sg = 0, sb = 0;
            for (int n = 0; n < N; n++)
                for (size_t l = 0; l < L; l++) {
                    size_t i = ((size_t)n * C + c) * L + l;
                    double xh = ((double)x[i] - mean[(size_t)n * L + l]) * rstd[(size_t)n * L + l];
                    sg += (double)dy[i] * xh;
                    sb += dy[i];
                }
            if (dgamma) dgamma[c] += (real)sg;
            if (dbeta) dbeta[c] += (real)sb;
        }
    }
}
