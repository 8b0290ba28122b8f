/*
act.c -- elementwise activations on the CPU: ReLU, GELU (exact erf form), SiLU, softplus
(threshold 20), the residual add, and the per-channel bias gradient of the convs and linears.
Each value is computed in double and stored as `real`. Formulas follow the PyTorch docs of
nn.ReLU / nn.GELU(approximate='none') / nn.SiLU / nn.Softplus(beta=1, threshold=20). Backward
accumulates into dx (ops.h). Twin: gpu/elementwise.cu.
*/
#include "real.h"
#include <math.h>

#define PAR_MIN_WORK 200000.0       // elements under which an op stays on one thread

// ----------------------------------------------------------------------------
// ReLU; the derivative at exactly 0 is taken as 0 (PyTorch's threshold_backward does the same)

void OP(relu_forward)(real *y, const real *x, size_t n)
{
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : (real)0;
}

void OP(relu_backward)(real *dx, const real *dy, const real *x, size_t n)
{
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        if (x[i] > 0) dx[i] += dy[i];
}

// ----------------------------------------------------------------------------
// GELU(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2));  GELU'(x) = Phi(x) + x * phi(x)

#define INV_SQRT2 0.70710678118654752440
#define INV_SQRT_2PI 0.39894228040143267794

void OP(gelu_forward)(real *y, const real *x, size_t n)
{
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        y[i] = (real)(0.5 * v * (1.0 + erf(v * INV_SQRT2)));
    }
}

void OP(gelu_backward)(real *dx, const real *dy, const real *x, size_t n)
{
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        double cdf = 0.5 * (1.0 + erf(v * INV_SQRT2)), pdf = INV_SQRT_2PI * exp(-0.5 * v * v);
        dx[i] = (real)((double)dx[i] + dy[i] * (cdf + v * pdf));
    }
}

// ----------------------------------------------------------------------------
// SiLU(x) = x * sigmoid(x);  SiLU'(x) = s (1 + x (1 - s))

// sigmoid without overflow for large |v|
static double sigmoid(double v)
{
    if (v >= 0) return 1.0 / (1.0 + exp(-v));
    double e = exp(v);
    return e / (1.0 + e);
}

void OP(silu_forward)(real *y, const real *x, size_t n)
{
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        y[i] = (real)(v * sigmoid(v));
    }
}

void OP(silu_backward)(real *dx, const real *dy, const real *x, size_t n)
{
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        double v = x[i], s = sigmoid(v);
        dx[i] = (real)((double)dx[i] + dy[i] * s * (1.0 + v * (1.0 - s)));
    }
}

// ----------------------------------------------------------------------------
// softplus(x) = log(1 + e^x), but x itself above 20: matches PyTorch and mamba's dt path,
// and avoids exp overflow. The derivative is sigmoid(x) below the threshold and 1 above it.

#define SOFTPLUS_THRESHOLD 20.0

void OP(softplus_forward)(real *y, const real *x, size_t n)
{
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        y[i] = v > SOFTPLUS_THRESHOLD ? x[i] : (real)log1p(exp(v));
    }
}

void OP(softplus_backward)(real *dx, const real *dy, const real *x, size_t n)
{
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        double d = v > SOFTPLUS_THRESHOLD ? 1.0 : sigmoid(v);
        dx[i] = (real)((double)dx[i] + dy[i] * d);
    }
}

// ----------------------------------------------------------------------------
// residual add; y may alias a or b

void OP(add_forward)(real *y, const real *a, const real *b, size_t n)
{
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

// ----------------------------------------------------------------------------
// bias gradient: db[c] += sum over n and the S positions of dy (N, C, S), in double, sample n
// at dy + n nstride (nstride 0: C S)

void OP(bias_backward)(real *db, const real *dy, int N, int C, size_t S, size_t nstride)
{
    const size_t ns = nstride ? nstride : (size_t)C * S;
    #pragma omp parallel for schedule(static) if((double)N * C * S >= PAR_MIN_WORK)
    for (int c = 0; c < C; c++) {
        double sum = 0;
        for (int n = 0; n < N; n++) {
            const real *d = dy + n * ns + (size_t)c * S;
            for (size_t i = 0; i < S; i++) sum += d[i];
        }
        db[c] = (real)((double)db[c] + sum);
    }
}
