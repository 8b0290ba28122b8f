/*
causal_conv1d.c -- Mamba's depthwise causal 1D convolution along the token axis, forward and
backward. Channel e has its own K taps (K <= 4 in Mamba) and bias; the sequence has zero history:

  y[n,e,t] = b[e] + sum_{i<K} w[e,i] * x[n,e,t-K+1+i]      (x[.., t<0] = 0)

This equals PyTorch Conv1d(groups=E, padding=K-1) truncated to the first L outputs. No
activation here (the Mamba layer applies SiLU). Built twice, see ops.h.
*/
#include "real.h"
#include "check.h"
// Below this many inner-loop steps a loop runs on one thread: waking a team costs more than
// the work, and far more on a loaded machine.
#define PAR_MIN_WORK 200000.0

// y, x: (N, E, L)   w: (E, K)   b: (E) or NULL
void OP(causal_conv1d_forward)(real *y, const real *x, const real *w, const real *b,
                               int N, int E, size_t L, int K)
{
    #pragma omp parallel for schedule(static) if((double)N * E * L * K >= PAR_MIN_WORK)
    for (long ne = 0; ne < (long)N * E; ne++) {
        const int e = (int)(ne % E);
        const real *xr = x + (size_t)ne * L, *we = w + (size_t)e * K;
        real *yr = y + (size_t)ne * L;
        for (size_t t = 0; t < L; t++) {
            double acc = b ? (double)b[e] : 0.0;
            for (int i = 0; i < K; i++) {
                // tap i reads x[t - (K-1-i)]; taps before the sequence start read zero
                size_t back = (size_t)(K - 1 - i);
                if (t >= back) acc += (double)we[i] * xr[t - back];
            }
            yr[t] = (real)acc;
        }
    }
}

// Accumulates: dx[t-K+1+i] += w[i] dy[t], dw[e,i] += sum dy[t] x[t-K+1+i], db[e] += sum dy.
void OP(causal_conv1d_backward)(real *dx, real *dw, real *db, const real *dy, const real *x,
                                const real *w, int N, int E, size_t L, int K)
{
    ASSERT(K >= 1 && K <= 4);   // sw[] below holds at most 4 taps
    // Parallel over channels only: dw[e] and db[e] are summed over the batch by one thread.
    #pragma omp parallel for schedule(static) if((double)N * E * L * K >= PAR_MIN_WORK)
    for (int e = 0; e < E; e++) {
        const real *we = w + (size_t)e * K;
        double sw[4] = {0, 0, 0, 0}, sb = 0;
        for (int n = 0; n < N; n++) {
            const size_t off = ((size_t)n * E + e) * L;
            const real *dyr = dy + off, *xr = x + off;
            for (size_t t = 0; t < L; t++) {
                sb += dyr[t];
                for (int i = 0; i < K; i++) {
                    size_t back = (size_t)(K - 1 - i);
                    if (t >= back) sw[i] += (double)dyr[t] * xr[t - back];
                }
            }
            if (dx) {
                // gather form: dx[s] = sum_i w[i] * dy[s + K-1-i]
                real *dxr = dx + off;
                for (size_t s = 0; s < L; s++) {
                    double acc = 0;
                    for (int i = 0; i < K; i++) {
                        size_t t = s + (size_t)(K - 1 - i);
                        if (t < L) acc += (double)we[i] * dyr[t];
                    }
                    dxr[s] += (real)acc;
                }
            }
        }
        if (dw) for (int i = 0; i < K; i++) dw[(size_t)e * K + i] += (real)sw[i];
        if (db) db[e] += (real)sb;
    }
}
