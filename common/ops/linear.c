/*
linear.c -- linear map over the channel axis (a 1x1x1 convolution), forward and backward.

  y[n, o, l] = sum_i w[o, i] * x[n, i, l] + b[o]

x and y may be channel slices of larger tensors: s.x_nstride / s.y_nstride give the distance
between batch items (0 = dense). Mamba uses this for x_dbl[:, :R] -> delta. Token blocks of
LIN_BLK keep a row of accumulators in cache while the channel loop walks memory contiguously.
Accumulators are acc_t: double in the double build, float in the float build for the sums over
channels (as PyTorch's float32 matmul; twice the SIMD width); the weight gradient's sums over
all tokens add float partials of LIN_BLK tokens in double. Built twice, see ops.h.
*/
#include "real.h"
#include <string.h>

#define LIN_BLK 256  // tokens per accumulator block (a 1-2 KiB row)

#ifdef SRM_REAL_DOUBLE
typedef double acc_t;
#else
typedef float acc_t;
#endif
// Below this many inner-loop steps a loop runs on one thread: waking a team costs more than
// the work, and far more on a loaded machine.
#define PAR_MIN_WORK 200000.0

static size_t x_stride(linear_shape_t s) { return s.x_nstride ? s.x_nstride : (size_t)s.Cin * s.L; }
static size_t y_stride(linear_shape_t s) { return s.y_nstride ? s.y_nstride : (size_t)s.Cout * s.L; }

// y: (N, Cout, L) with batch stride y_nstride   x: (N, Cin, L) with batch stride x_nstride
// w: (Cout, Cin)   b: (Cout) or NULL
void OP(linear_forward)(real *y, const real *x, const real *w, const real *b, linear_shape_t s)
{
    const size_t xs = x_stride(s), ys = y_stride(s), L = s.L;
    const long nblk = (long)((L + LIN_BLK - 1) / LIN_BLK);
    const long jobs = (long)s.N * s.Cout * nblk;
    #pragma omp parallel for schedule(static) if((double)s.N * s.Cout * s.Cin * L >= PAR_MIN_WORK)
    for (long job = 0; job < jobs; job++) {
        const int n = (int)(job / ((long)s.Cout * nblk));
        const int o = (int)(job / nblk % s.Cout);
        const size_t l0 = (size_t)(job % nblk) * LIN_BLK;
        const size_t nl = L - l0 < LIN_BLK ? L - l0 : LIN_BLK;
        acc_t acc[LIN_BLK];
        const acc_t bias = b ? (acc_t)b[o] : 0;
        for (size_t l = 0; l < nl; l++) acc[l] = bias;
        for (int i = 0; i < s.Cin; i++) {
            const acc_t wi = w[(size_t)o * s.Cin + i];
            const real *xr = x + n * xs + (size_t)i * L + l0;
            for (size_t l = 0; l < nl; l++) acc[l] += wi * xr[l];
        }
        real *yr = y + n * ys + (size_t)o * L + l0;
        for (size_t l = 0; l < nl; l++) yr[l] = (real)acc[l];
    }
}

// Accumulates: dx += w^T dy, dw += dy x^T, db += sum_{n,l} dy. dx uses x's stride, dy y's.
void OP(linear_backward)(real *dx, real *dw, real *db,
                         const real *dy, const real *x, const real *w, linear_shape_t s)
{
    const size_t xs = x_stride(s), ys = y_stride(s), L = s.L;
    if (dx) {
        const long nblk = (long)((L + LIN_BLK - 1) / LIN_BLK);
        const long jobs = (long)s.N * s.Cin * nblk;
        #pragma omp parallel for schedule(static) if((double)s.N * s.Cout * s.Cin * L >= PAR_MIN_WORK)
        for (long job = 0; job < jobs; job++) {
            const int n = (int)(job / ((long)s.Cin * nblk));
            const int i = (int)(job / nblk % s.Cin);
            const size_t l0 = (size_t)(job % nblk) * LIN_BLK;
            const size_t nl = L - l0 < LIN_BLK ? L - l0 : LIN_BLK;
            acc_t acc[LIN_BLK];
            memset(acc, 0, sizeof acc);
            for (int o = 0; o < s.Cout; o++) {
                const acc_t wo = w[(size_t)o * s.Cin + i];
                const real *dyr = dy + n * ys + (size_t)o * L + l0;
                for (size_t l = 0; l < nl; l++) acc[l] += wo * dyr[l];
            }
            real *dxr = dx + n * xs + (size_t)i * L + l0;
            for (size_t l = 0; l < nl; l++) dxr[l] = (real)((double)dxr[l] + acc[l]);
        }
    }
    if (dw) {
        // One (o, i) pair per job: each dw element is owned by one thread, so the sum order is
        // fixed (n, then l) whatever the thread count.
        const long jobs = (long)s.Cout * s.Cin;
        #pragma omp parallel for schedule(static) if((double)s.N * s.Cout * s.Cin * L >= PAR_MIN_WORK)
        for (long job = 0; job < jobs; job++) {
            const int o = (int)(job / s.Cin), i = (int)(job % s.Cin);
            double acc = 0;
            for (int n = 0; n < s.N; n++) {
                const real *dyr = dy + n * ys + (size_t)o * L;
                const real *xr = x + n * xs + (size_t)i * L;
                for (size_t l0 = 0; l0 < L; l0 += LIN_BLK) {
                    const size_t l1 = L - l0 < LIN_BLK ? L : l0 + LIN_BLK;
                    acc_t p = 0;    // simd reduction: a fixed order, set at compile time
                    #pragma omp simd reduction(+ : p)
                    for (size_t l = l0; l < l1; l++) p += (acc_t)dyr[l] * xr[l];
                    acc += p;
                }
            }
            dw[job] += (real)acc;
        }
    }
    if (db) OP(bias_backward)(db, dy, s.N, s.Cout, L, ys);
}
