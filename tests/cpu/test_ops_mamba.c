/*
test_ops_mamba.c -- the Mamba-side CPU ops: linear over channels, LayerNorm over channels, causal
depthwise conv1d, the selective scan and the ToM token orders.

For each op: forward against a naive loop (or known values), every backward against central
finite differences in double (loss = sum(g * y) with a random g, gradients pre-filled with random
values to check that backward accumulates), and the float build against the double build. The
scan is also checked against an independent implementation that materialises every state h[t],
on realistic ranges (A in [-1, -0.1], delta_raw in [-3, 0], B, C ~ N(0, 1)), with the softplus
threshold crossed, and on a sequence longer than two recompute chunks.
*/
#include "test.h"
#include "rng.h"
#include "check.h"
#include "ops.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FD_EPS 1e-5        // round-off of the loss dominates below this; truncation is ~eps^2
#define FD_RTOL 1e-5        // the bar is 1e-4; double FD is far better than that
#define FD_ATOL 1e-8        // exactly-zero gradients (e.g. the dt rows of x_dbl)
#define F32_RTOL 2e-5       // float build vs double build

static rng_t rng;

// ---- small helpers ---------------------------------------------------------------------------

static double *dnew(size_t n) { return xcalloc(n ? n : 1, sizeof(double)); }

// Random doubles rounded to float precision, so float and double builds see identical inputs.
static double *urand(size_t n, double lo, double hi)
{
    double *x = dnew(n);
    for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * rng_uniform(&rng));
    return x;
}
static double *nrand(size_t n, double std)
{
    double *x = dnew(n);
    for (size_t i = 0; i < n; i++) x[i] = (float)(std * rng_normal(&rng));
    return x;
}
static float *to_f(const double *x, size_t n)
{
    float *y = xmalloc((n ? n : 1) * sizeof *y);
    for (size_t i = 0; i < n; i++) y[i] = (float)x[i];
    return y;
}
static double dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

// A gradient buffer pre-filled with random values: backward must ADD to it. grad_take()
// subtracts the pre-fill so the result can be compared with finite differences.
typedef struct { double *g, *pre; size_t n; } grad_t;
static grad_t grad_new(size_t n)
{
    grad_t b = { dnew(n), dnew(n), n };
    for (size_t i = 0; i < n; i++) b.g[i] = b.pre[i] = rng_uniform(&rng) - 0.5;
    return b;
}
static double *grad_take(grad_t *b)
{
    for (size_t i = 0; i < b->n; i++) b->g[i] -= b->pre[i];
    free(b->pre);
    b->pre = NULL;
    return b->g;
}

// ---- linear ----------------------------------------------------------------------------------

typedef struct { linear_shape_t s; double *y, *x, *w, *b, *g; size_t ny; } lin_ctx;

static double lin_loss(void *p, const double *unused)
{
    (void)unused;
    lin_ctx *c = p;
    linear_forward_cpu_f64(c->y, c->x, c->w, c->b, c->s);
    return dot(c->g, c->y, c->ny);
}

static void test_linear(void)
{
    // x and y are channel slices of larger tensors (batch strides), like x_dbl[:, :R] in Mamba
    const int N = 2, Cin = 5, Cout = 7, xpad = 3, ypad = 2;
    const size_t L = 37 + 256;                      // crosses the 256-token accumulator block
    linear_shape_t s = { .N = N, .Cin = Cin, .Cout = Cout, .L = L,
                         .x_nstride = (Cin + xpad) * L, .y_nstride = (Cout + ypad) * L };
    const size_t nx = N * s.x_nstride, ny = N * s.y_nstride;
    lin_ctx c = { .s = s, .y = dnew(ny), .x = nrand(nx, 1), .w = urand(Cout * Cin, -0.5, 0.5),
                  .b = urand(Cout, -0.5, 0.5), .g = nrand(ny, 1), .ny = ny };
    for (size_t i = 0; i < ny; i++) c.y[i] = 12345;     // the gaps must stay untouched
    linear_forward_cpu_f64(c.y, c.x, c.w, c.b, s);
    double err = 0;
    int gaps_ok = 1;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < Cout + ypad; o++)
            for (size_t l = 0; l < L; l++) {
                double got = c.y[n * s.y_nstride + o * L + l];
                if (o >= Cout) { gaps_ok &= got == 12345; continue; }
                double want = c.b[o];
                for (int i = 0; i < Cin; i++) want += c.w[o * Cin + i] * c.x[n * s.x_nstride + i * L + l];
                err = fmax(err, fabs(got - want));
            }
    EXPECT(err < 1e-12, "linear forward vs naive: max err %g", err);
    EXPECT(gaps_ok, "linear forward writes only its channel slice");

    // the gaps of dy carry no gradient: zero them in g so the FD loss matches
    for (int n = 0; n < N; n++)
        memset(c.g + n * s.y_nstride + Cout * L, 0, ypad * L * sizeof(double));
    grad_t dx = grad_new(nx), dw = grad_new(Cout * Cin), db = grad_new(Cout);
    linear_backward_cpu_f64(dx.g, dw.g, db.g, c.g, c.x, c.w, s);
    double *gx = grad_take(&dx), *gw = grad_take(&dw), *gb = grad_take(&db);
    EXPECT(gradcheck("linear dx", lin_loss, &c, c.x, nx, gx, FD_EPS, FD_RTOL, FD_ATOL, 400, 1), "dx");
    EXPECT(gradcheck("linear dw", lin_loss, &c, c.w, Cout * Cin, gw, FD_EPS, FD_RTOL, FD_ATOL, 400, 2), "dw");
    EXPECT(gradcheck("linear db", lin_loss, &c, c.b, Cout, gb, FD_EPS, FD_RTOL, FD_ATOL, 400, 3), "db");

    // float build vs double build
    float *yf = to_f(c.y, ny), *xf = to_f(c.x, nx), *wf = to_f(c.w, Cout * Cin), *bf = to_f(c.b, Cout);
    float *gf = to_f(c.g, ny);
    float *dxf = xcalloc(nx, 4), *dwf = xcalloc(Cout * Cin, 4), *dbf = xcalloc(Cout, 4);
    linear_forward_cpu_f64(c.y, c.x, c.w, c.b, s);
    linear_forward_cpu(yf, xf, wf, bf, s);
    linear_backward_cpu(dxf, dwf, dbf, gf, xf, wf, s);
    float *yd = to_f(c.y, ny), *gxd = to_f(gx, nx), *gwd = to_f(gw, Cout * Cin), *gbd = to_f(gb, Cout);
    EXPECT(tensor_close("linear f32 y", yf, yd, ny, F32_RTOL, 0), "f32 forward");
    EXPECT(tensor_close("linear f32 dx", dxf, gxd, nx, F32_RTOL, 0), "f32 dx");
    EXPECT(tensor_close("linear f32 dw", dwf, gwd, Cout * Cin, F32_RTOL, 0), "f32 dw");
    EXPECT(tensor_close("linear f32 db", dbf, gbd, Cout, F32_RTOL, 0), "f32 db");
    free(yf); free(xf); free(wf); free(bf); free(gf); free(dxf); free(dwf); free(dbf);
    free(yd); free(gxd); free(gwd); free(gbd);
    free(c.y); free(c.x); free(c.w); free(c.b); free(c.g); free(gx); free(gw); free(gb);
}

// ---- LayerNorm -------------------------------------------------------------------------------

typedef struct { int N, C; size_t L; double *y, *mean, *rstd, *x, *gamma, *beta, *g; } ln_ctx;

static double ln_loss(void *p, const double *unused)
{
    (void)unused;
    ln_ctx *c = p;
    layernorm_forward_cpu_f64(c->y, c->mean, c->rstd, c->x, c->gamma, c->beta, c->N, c->C, c->L, 1e-5);
    return dot(c->g, c->y, (size_t)c->N * c->C * c->L);
}

static void test_layernorm(void)
{
    const int N = 2, C = 6;
    const size_t L = 301, n = N * C * L;
    ln_ctx c = { N, C, L, dnew(n), dnew(N * L), dnew(N * L), nrand(n, 2), urand(C, 0.5, 1.5),
                 urand(C, -0.5, 0.5), nrand(n, 1) };
    for (size_t i = 0; i < n; i++) c.x[i] = (float)(c.x[i] + 3.0);   // a non-zero mean
    ln_loss(&c, NULL);
    double err = 0;
    for (int b = 0; b < N; b++)
        for (size_t l = 0; l < L; l++) {
            double mu = 0, var = 0;
            for (int ch = 0; ch < C; ch++) mu += c.x[(b * C + ch) * L + l];
            mu /= C;
            for (int ch = 0; ch < C; ch++) var += pow(c.x[(b * C + ch) * L + l] - mu, 2);
            double rs = 1 / sqrt(var / C + 1e-5);
            err = fmax(err, fabs(c.mean[b * L + l] - mu) + fabs(c.rstd[b * L + l] - rs));
            for (int ch = 0; ch < C; ch++) {
                size_t i = (b * C + ch) * L + l;
                err = fmax(err, fabs(c.y[i] - ((c.x[i] - mu) * rs * c.gamma[ch] + c.beta[ch])));
            }
        }
    EXPECT(err < 1e-12, "layernorm forward vs naive: max err %g", err);

    grad_t dx = grad_new(n), dg = grad_new(C), db = grad_new(C);
    layernorm_backward_cpu_f64(dx.g, dg.g, db.g, c.g, c.x, c.mean, c.rstd, c.gamma, N, C, L);
    double *gx = grad_take(&dx), *gg = grad_take(&dg), *gb = grad_take(&db);
    EXPECT(gradcheck("layernorm dx", ln_loss, &c, c.x, n, gx, FD_EPS, FD_RTOL, FD_ATOL, 600, 4), "dx");
    EXPECT(gradcheck("layernorm dgamma", ln_loss, &c, c.gamma, C, gg, FD_EPS, FD_RTOL, FD_ATOL, 99, 5), "dgamma");
    EXPECT(gradcheck("layernorm dbeta", ln_loss, &c, c.beta, C, gb, FD_EPS, FD_RTOL, FD_ATOL, 99, 6), "dbeta");

    ln_loss(&c, NULL);
    float *yf = xcalloc(n, 4), *mf = xcalloc(N * L, 4), *rf = xcalloc(N * L, 4);
    float *xf = to_f(c.x, n), *gmf = to_f(c.gamma, C), *btf = to_f(c.beta, C), *gf = to_f(c.g, n);
    float *dxf = xcalloc(n, 4), *dgf = xcalloc(C, 4), *dbf = xcalloc(C, 4);
    layernorm_forward_cpu(yf, mf, rf, xf, gmf, btf, N, C, L, 1e-5);
    layernorm_backward_cpu(dxf, dgf, dbf, gf, xf, mf, rf, gmf, N, C, L);
    float *yd = to_f(c.y, n), *gxd = to_f(gx, n), *ggd = to_f(gg, C), *gbd = to_f(gb, C);
    EXPECT(tensor_close("layernorm f32 y", yf, yd, n, F32_RTOL, 0), "f32 forward");
    EXPECT(tensor_close("layernorm f32 dx", dxf, gxd, n, F32_RTOL, 0), "f32 dx");
    EXPECT(tensor_close("layernorm f32 dgamma", dgf, ggd, C, F32_RTOL, 0), "f32 dgamma");
    EXPECT(tensor_close("layernorm f32 dbeta", dbf, gbd, C, F32_RTOL, 0), "f32 dbeta");
    free(yf); free(mf); free(rf); free(xf); free(gmf); free(btf); free(gf); free(dxf); free(dgf);
    free(dbf); free(yd); free(gxd); free(ggd); free(gbd);
    free(c.y); free(c.mean); free(c.rstd); free(c.x); free(c.gamma); free(c.beta); free(c.g);
    free(gx); free(gg); free(gb);
}

// ---- causal conv1d ---------------------------------------------------------------------------

typedef struct { int N, E, K; size_t L; double *y, *x, *w, *b, *g; } cc_ctx;

static double cc_loss(void *p, const double *unused)
{
    (void)unused;
    cc_ctx *c = p;
    causal_conv1d_forward_cpu_f64(c->y, c->x, c->w, c->b, c->N, c->E, c->L, c->K);
    return dot(c->g, c->y, (size_t)c->N * c->E * c->L);
}

static void test_causal_conv1d(int K)
{
    const int N = 2, E = 5;
    const size_t L = 37, n = N * E * L;
    cc_ctx c = { N, E, K, L, dnew(n), nrand(n, 1), urand(E * K, -0.5, 0.5), urand(E, -0.5, 0.5),
                 nrand(n, 1) };
    char label[64];

    // known values: tap K-1 is the current token, tap 0 looks K-1 tokens back
    double *w1 = dnew(E * K), *y1 = dnew(n);
    for (int e = 0; e < E; e++) w1[e * K + K - 1] = 1;
    causal_conv1d_forward_cpu_f64(y1, c.x, w1, NULL, N, E, L, K);
    double err = 0;
    for (size_t i = 0; i < n; i++) err = fmax(err, fabs(y1[i] - c.x[i]));
    memset(w1, 0, E * K * sizeof *w1);
    for (int e = 0; e < E; e++) w1[e * K] = 1;
    causal_conv1d_forward_cpu_f64(y1, c.x, w1, c.b, N, E, L, K);
    for (int r = 0; r < N * E; r++)
        for (size_t t = 0; t < L; t++) {
            double want = c.b[r % E] + (t >= (size_t)K - 1 ? c.x[r * L + t - (K - 1)] : 0);
            err = fmax(err, fabs(y1[r * L + t] - want));
        }
    EXPECT(err == 0, "causal conv1d K=%d: identity tap and shift by K-1 with zero history (err %g)", K, err);
    free(w1); free(y1);

    grad_t dx = grad_new(n), dw = grad_new(E * K), db = grad_new(E);
    causal_conv1d_backward_cpu_f64(dx.g, dw.g, db.g, c.g, c.x, c.w, N, E, L, K);
    double *gx = grad_take(&dx), *gw = grad_take(&dw), *gb = grad_take(&db);
    snprintf(label, sizeof label, "conv1d K=%d dx", K);
    EXPECT(gradcheck(label, cc_loss, &c, c.x, n, gx, FD_EPS, FD_RTOL, FD_ATOL, 400, 7), "dx");
    snprintf(label, sizeof label, "conv1d K=%d dw", K);
    EXPECT(gradcheck(label, cc_loss, &c, c.w, E * K, gw, FD_EPS, FD_RTOL, FD_ATOL, 99, 8), "dw");
    snprintf(label, sizeof label, "conv1d K=%d db", K);
    EXPECT(gradcheck(label, cc_loss, &c, c.b, E, gb, FD_EPS, FD_RTOL, FD_ATOL, 99, 9), "db");

    cc_loss(&c, NULL);
    float *yf = xcalloc(n, 4), *xf = to_f(c.x, n), *wf = to_f(c.w, E * K), *bf = to_f(c.b, E);
    float *gf = to_f(c.g, n), *dxf = xcalloc(n, 4), *dwf = xcalloc(E * K, 4), *dbf = xcalloc(E, 4);
    causal_conv1d_forward_cpu(yf, xf, wf, bf, N, E, L, K);
    causal_conv1d_backward_cpu(dxf, dwf, dbf, gf, xf, wf, N, E, L, K);
    float *yd = to_f(c.y, n), *gxd = to_f(gx, n), *gwd = to_f(gw, E * K);
    EXPECT(tensor_close("conv1d f32 y", yf, yd, n, F32_RTOL, 0), "f32 forward");
    EXPECT(tensor_close("conv1d f32 dx", dxf, gxd, n, F32_RTOL, 0), "f32 dx");
    EXPECT(tensor_close("conv1d f32 dw", dwf, gwd, E * K, F32_RTOL, 0), "f32 dw");
    free(yf); free(xf); free(wf); free(bf); free(gf); free(dxf); free(dwf); free(dbf);
    free(yd); free(gxd); free(gwd);
    free(c.y); free(c.x); free(c.w); free(c.b); free(c.g); free(gx); free(gw); free(gb);
}

// ---- selective scan --------------------------------------------------------------------------

// Inputs laid out like the Mamba layer uses them: B and C are rows [R, R+NS) and [R+NS, R+2NS)
// of an x_dbl buffer (N, R+2NS, L), so their batch stride is (R+2NS)*L.
typedef struct {
    scan_shape_t s;
    int R, gate;
    double *y, *u, *delta, *A, *xdbl, *D, *z, *bias, *g;
} scan_ctx;

static size_t nel(const scan_ctx *c) { return (size_t)c->s.N * c->s.E * c->s.L; }
static double *Bp(const scan_ctx *c) { return c->xdbl + (size_t)c->R * c->s.L; }
static double *Cp(const scan_ctx *c) { return c->xdbl + ((size_t)c->R + c->s.NS) * c->s.L; }

static double scan_loss(void *p, const double *unused)
{
    (void)unused;
    scan_ctx *c = p;
    selective_scan_forward_cpu_f64(c->y, c->u, c->delta, c->A, Bp(c), Cp(c), c->D,
                                   c->gate ? c->z : NULL, c->bias, c->s);
    return dot(c->g, c->y, nel(c));
}

// An independent forward: softplus and the discretisation for all (n, e, t, s) first (as
// selective_scan_ref's einsums), every state h[t] materialised, time as the OUTER loop.
static void scan_naive(double *y, const scan_ctx *c)
{
    const int N = c->s.N, E = c->s.E, NS = c->s.NS;
    const size_t L = c->s.L, bcs = c->s.bc_nstride;
    const double *B = Bp(c), *C = Cp(c);
    double *dA = dnew((size_t)N * E * L * NS), *dBu = dnew((size_t)N * E * L * NS);
    double *h = dnew((size_t)N * E * L * NS);
#define IX(n, e, t, s) ((((size_t)(n) * E + (e)) * L + (t)) * NS + (s))
    for (int n = 0; n < N; n++)
        for (int e = 0; e < E; e++)
            for (size_t t = 0; t < L; t++) {
                double v = c->delta[((size_t)n * E + e) * L + t] + c->bias[e];
                double dt = v > 20 ? v : log(1 + exp(v));
                for (int s = 0; s < NS; s++) {
                    dA[IX(n, e, t, s)] = exp(dt * c->A[e * NS + s]);
                    dBu[IX(n, e, t, s)] = dt * B[n * bcs + s * L + t] * c->u[((size_t)n * E + e) * L + t];
                }
            }
    for (size_t t = 0; t < L; t++)
        for (int n = 0; n < N; n++)
            for (int e = 0; e < E; e++)
                for (int s = 0; s < NS; s++)
                    h[IX(n, e, t, s)] = dA[IX(n, e, t, s)] * (t ? h[IX(n, e, t - 1, s)] : 0.0)
                                        + dBu[IX(n, e, t, s)];
    for (int n = 0; n < N; n++)
        for (int e = 0; e < E; e++)
            for (size_t t = 0; t < L; t++) {
                size_t i = ((size_t)n * E + e) * L + t;
                double out = c->D[e] * c->u[i];
                for (int s = 0; s < NS; s++) out += C[n * bcs + s * L + t] * h[IX(n, e, t, s)];
                if (c->gate) out *= c->z[i] / (1 + exp(-c->z[i]));
                y[i] = out;
            }
#undef IX
    free(dA); free(dBu); free(h);
}

// Mamba's dt_proj bias init: softplus^-1 of a log-uniform dt in [1e-3, 1e-1] (§5.3).
static double *dt_bias_init(int E)
{
    double *b = dnew(E);
    for (int e = 0; e < E; e++) {
        double dt = exp(rng_uniform(&rng) * (log(0.1) - log(0.001)) + log(0.001));
        b[e] = (float)(dt + log(-expm1(-dt)));
    }
    return b;
}

// s4d = 1: A_log = ln(1..16) (A = -(1..16)); else A uniform in [-1, -0.1] through A_log.
static scan_ctx scan_make(int N, int E, size_t L, int gate, int s4d)
{
    const int NS = 16, R = 3;
    scan_ctx c = { .s = { .N = N, .E = E, .NS = NS, .L = L, .bc_nstride = (size_t)(R + 2 * NS) * L },
                   .R = R, .gate = gate };
    size_t n = (size_t)N * E * L;
    c.y = dnew(n);
    c.u = nrand(n, 1);
    c.delta = urand(n, -3, 0);
    c.A = dnew(E * NS);
    for (int i = 0; i < E * NS; i++)
        c.A[i] = s4d ? (float)-exp(log(i % NS + 1.0))
                     : (float)-exp(log(0.1) + rng_uniform(&rng) * (log(1.0) - log(0.1)));
    c.xdbl = nrand((size_t)N * (R + 2 * NS) * L, 1);
    c.D = urand(E, 0.5, 1.5);
    c.z = nrand(n, 1);
    c.bias = dt_bias_init(E);
    c.g = nrand(n, 1);
    return c;
}

static void scan_free(scan_ctx *c)
{
    free(c->y); free(c->u); free(c->delta); free(c->A); free(c->xdbl); free(c->D); free(c->z);
    free(c->bias); free(c->g);
}

// Forward vs the naive scan, all eight gradients vs finite differences, float vs double.
static void scan_check(const char *tag, scan_ctx *c, size_t probe)
{
    const int E = c->s.E, NS = c->s.NS;
    const size_t n = nel(c), nx = (size_t)c->s.N * (c->R + 2 * NS) * c->s.L;
    char lb[96];
    unsigned long long seed = 100;

    scan_loss(c, NULL);
    double *yn = dnew(n);
    scan_naive(yn, c);
    snprintf(lb, sizeof lb, "scan %s forward vs naive", tag);
    EXPECT(tensor_close_d(lb, c->y, yn, n, 1e-12, 0), "%s", lb);
    free(yn);

    grad_t du = grad_new(n), dd = grad_new(n), dA = grad_new(E * NS), dx = grad_new(nx);
    grad_t dD = grad_new(E), dz = grad_new(n), db = grad_new(E);
    selective_scan_backward_cpu_f64(du.g, dd.g, dA.g, dx.g + (size_t)c->R * c->s.L,
                                    dx.g + ((size_t)c->R + NS) * c->s.L, dD.g,
                                    c->gate ? dz.g : NULL, db.g, c->g, c->u, c->delta, c->A,
                                    Bp(c), Cp(c), c->D, c->gate ? c->z : NULL, c->bias, c->s);
    struct { const char *name; double *x, *grad; size_t n; } t[] = {
        { "du", c->u, grad_take(&du), n }, { "ddelta", c->delta, grad_take(&dd), n },
        { "dA", c->A, grad_take(&dA), (size_t)E * NS }, { "dB,dC (x_dbl)", c->xdbl, grad_take(&dx), nx },
        { "dD", c->D, grad_take(&dD), E }, { "ddelta_bias", c->bias, grad_take(&db), E },
        { "dz", c->z, grad_take(&dz), n },
    };
    const int nt = c->gate ? 7 : 6;
    for (int i = 0; i < nt; i++) {
        snprintf(lb, sizeof lb, "scan %s %s", tag, t[i].name);
        EXPECT(gradcheck(lb, scan_loss, c, t[i].x, t[i].n, t[i].grad, FD_EPS, FD_RTOL, FD_ATOL,
                         probe, seed++), "%s", lb);
    }
    if (!c->gate) {
        double m = 0;
        for (size_t i = 0; i < n; i++) m = fmax(m, fabs(t[6].grad[i]));
        EXPECT(m == 0, "scan %s: no gate, dz untouched", tag);
    }

    // float build vs double build, forward and every gradient
    scan_loss(c, NULL);
    float *uf = to_f(c->u, n), *df = to_f(c->delta, n), *Af = to_f(c->A, E * NS);
    float *xf = to_f(c->xdbl, nx), *Df = to_f(c->D, E), *zf = to_f(c->z, n), *bf = to_f(c->bias, E);
    float *gf = to_f(c->g, n), *yf = xcalloc(n, 4);
    const size_t BO = (size_t)c->R * c->s.L, CO = ((size_t)c->R + NS) * c->s.L;
    selective_scan_forward_cpu(yf, uf, df, Af, xf + BO, xf + CO, Df, c->gate ? zf : NULL, bf, c->s);
    float *gfl[7];
    size_t sz[7] = { n, n, (size_t)E * NS, nx, E, E, n };
    for (int i = 0; i < 7; i++) gfl[i] = xcalloc(sz[i], 4);
    selective_scan_backward_cpu(gfl[0], gfl[1], gfl[2], gfl[3] + BO, gfl[3] + CO, gfl[4],
                                c->gate ? gfl[6] : NULL, gfl[5], gf, uf, df, Af, xf + BO, xf + CO,
                                Df, c->gate ? zf : NULL, bf, c->s);
    float *yd = to_f(c->y, n);
    snprintf(lb, sizeof lb, "scan %s f32 y", tag);
    EXPECT(tensor_close(lb, yf, yd, n, F32_RTOL, 0), "%s", lb);
    free(yd);
    for (int i = 0; i < nt; i++) {
        float *want = to_f(t[i].grad, t[i].n);
        snprintf(lb, sizeof lb, "scan %s f32 %s", tag, t[i].name);
        // long sequences accumulate more float rounding in the adjoint recurrence
        EXPECT(tensor_close(lb, gfl[i], want, t[i].n, 1e-4, 0), "%s", lb);
        free(want);
    }
    for (int i = 0; i < 7; i++) { free(gfl[i]); free(t[i].grad); }
    free(uf); free(df); free(Af); free(xf); free(Df); free(zf); free(bf); free(gf); free(yf);
}

static void test_scan(void)
{
    // realistic ranges, odd L, E not a multiple of anything, gate on
    scan_ctx c = scan_make(2, 5, 37, 1, 0);
    scan_check("N2 E5 L37", &c, 300);
    scan_free(&c);

    c = scan_make(2, 3, 301, 0, 0);
    scan_check("N2 E3 L301 no-gate", &c, 150);
    scan_free(&c);

    // softplus threshold: some raw deltas push delta_raw + bias well past 20 (pass-through)
    c = scan_make(1, 3, 41, 1, 0);
    // (bias >= softplus^-1(1e-3) > -7, so every such v is in [23, 33], away from the kink)
    int crossed = 0;
    for (size_t i = 0; i < 3 * 41; i += 5) {
        c.delta[i] = 30 + (i % 3);
        crossed += c.delta[i] + c.bias[i / 41] > 20.5;
    }
    EXPECT(crossed == 25, "threshold case: %d of 25 marked tokens have v > 20", crossed);
    scan_check("threshold", &c, 200);
    scan_free(&c);

    // longer than two recompute chunks (2048 tokens): the carries and dh across chunk
    // boundaries; S4D A = -(1..16) as Mamba initialises it
    c = scan_make(1, 3, 2 * 2048 + 37, 1, 1);
    scan_check("multi-chunk L4133", &c, 40);
    scan_free(&c);

    // known values: B = 0 keeps every state at zero, so y = D*u*silu(z)
    c = scan_make(2, 4, 19, 1, 0);
    for (int nn = 0; nn < 2; nn++)
        memset(c.xdbl + nn * c.s.bc_nstride + (size_t)c.R * c.s.L, 0, (size_t)c.s.NS * c.s.L * sizeof(double));
    scan_loss(&c, NULL);
    double err = 0;
    for (size_t i = 0; i < nel(&c); i++) {
        int e = (int)(i / c.s.L % c.s.E);
        err = fmax(err, fabs(c.y[i] - c.D[e] * c.u[i] * c.z[i] / (1 + exp(-c.z[i]))));
    }
    EXPECT(err < 1e-15, "scan with B = 0 gives D*u*silu(z) (err %g)", err);
    scan_free(&c);
}

// ---- ToM token orders ------------------------------------------------------------------------

static void test_tom(void)
{
    const int N = 2, C = 3;
    const size_t L = 24, n = N * C * L;
    const size_t ns_list[] = { 1, 2, 4, 6, 24 };
    double *x = nrand(n, 1), *y = dnew(n), *back = dnew(n), *r = nrand(n, 1), *ur = dnew(n);
    for (int o = 0; o < 3; o++)
        for (size_t q = 0; q < sizeof ns_list / sizeof *ns_list; q++) {
            const size_t ns = ns_list[q];
            if (o != TOM_SLICE && q > 0) continue;
            tom_permute_cpu_f64(y, x, N, C, L, (tom_order_t)o, ns);
            int ok_idx = 1;
            for (int nc = 0; nc < N * C; nc++)
                for (size_t j = 0; j < L; j++)
                    ok_idx &= y[nc * L + j] == x[nc * L + tom_index((tom_order_t)o, j, L, ns)];
            EXPECT(ok_idx, "permute order %d ns %zu follows tom_index", o, ns);
            tom_unpermute_cpu_f64(back, y, N, C, L, (tom_order_t)o, ns);
            EXPECT(memcmp(back, x, n * sizeof *x) == 0, "unpermute(permute(x)) == x, order %d ns %zu", o, ns);
            // adjoint: <permute(x), r> == <x, unpermute(r)> (so each is the other's backward)
            tom_unpermute_cpu_f64(ur, r, N, C, L, (tom_order_t)o, ns);
            EXPECT(fabs(dot(y, r, n) - dot(x, ur, n)) < 1e-12, "permute/unpermute adjoint, order %d", o);
            float *xf = to_f(x, n), *yf = xcalloc(n, 4), *yd = to_f(y, n);
            tom_permute_cpu(yf, xf, N, C, L, (tom_order_t)o, ns);
            EXPECT(memcmp(yf, yd, n * 4) == 0, "f32 permute == f64 permute, order %d ns %zu", o, ns);
            free(xf); free(yf); free(yd);
        }
    // slice order with nslices = L (chunks of one token) and nslices = 1 are the identity
    for (size_t ns = 1; ns <= L; ns += L - 1) {
        tom_permute_cpu_f64(y, x, N, C, L, TOM_SLICE, ns);
        EXPECT(memcmp(y, x, n * sizeof *x) == 0, "slice order with nslices %zu is the identity", ns);
    }
    // hand-written: L = 8, 4 slices of m = 2: visit position 0 of every chunk, then position 1
    double a[8] = {0, 1, 2, 3, 4, 5, 6, 7}, b[8];
    const double want[8] = {0, 2, 4, 6, 1, 3, 5, 7}, flip[8] = {7, 6, 5, 4, 3, 2, 1, 0};
    tom_permute_cpu_f64(b, a, 1, 1, 8, TOM_SLICE, 4);
    EXPECT(memcmp(b, want, sizeof b) == 0, "slice order L=8 ns=4 is 0 2 4 6 1 3 5 7");
    tom_permute_cpu_f64(b, a, 1, 1, 8, TOM_REVERSE, 4);
    EXPECT(memcmp(b, flip, sizeof b) == 0, "reverse order flips");
    free(x); free(y); free(back); free(r); free(ur);
}

int main(void)
{
    rng = rng_seed(20240601);
    test_linear();
    test_layernorm();
    test_causal_conv1d(4);
    test_causal_conv1d(3);
    test_tom();
    test_scan();
    return test_summary();
}
