/*
test_ops_norm_act.c -- InstanceNorm, GroupNorm (common/ops/norm.c) and the elementwise
activations ReLU, GELU, SiLU, softplus, add (common/ops/act.c) on the CPU: every gradient against
central finite differences in double with a random upstream gradient and odd sizes, the
accumulation rule, float vs double, and values known in closed form (a hand-normalised vector,
GroupNorm with G = C equal to InstanceNorm, values recorded from PyTorch, activation values and slopes at fixed points,
softplus(30) == 30 and its threshold).
*/
#include "test.h"
#include "rng.h"
#include "check.h"
#include "ops.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

// ----------------------------------------------------------------------------
// norms

typedef struct {
    int N, C, G;                                // G = 0: InstanceNorm
    size_t S;
    double *x, *gamma, *beta, *g, *y, *mean, *rstd;
} norm_t;

static void norm_fwd(norm_t *c)
{
    if (c->G) groupnorm_forward_cpu_f64(c->y, c->mean, c->rstd, c->x, c->gamma, c->beta,
                                        c->N, c->C, c->G, c->S, 1e-5);
    else instancenorm_forward_cpu_f64(c->y, c->mean, c->rstd, c->x, c->N, c->C, c->S, 1e-5);
}
static double norm_loss(void *ctx, const double *unused)
{
    (void)unused;
    norm_t *c = ctx;
    norm_fwd(c);
    return test_dot(c->g, c->y, (size_t)c->N * c->C * c->S);
}

// Variance of x (about 1.3) is far above eps, so eps does not dominate the FD.
static void norm_case(const char *name, int N, int C, int G, size_t S, unsigned long long seed)
{
    char lab[128];
    size_t n = (size_t)N * C * S, ns = (size_t)N * (G ? G : C);
    rng_t r = rng_seed(seed);
    norm_t c = { .N = N, .C = C, .G = G, .S = S };
    c.x = test_uniform(&r, n, -1.5, 2.5);
    c.g = test_uniform(&r, n, -1, 1);
    c.gamma = test_uniform(&r, C, 0.5, 1.5);
    c.beta = test_uniform(&r, C, -0.5, 0.5);
    c.y = xmalloc(n * sizeof *c.y); c.mean = xmalloc(ns * sizeof *c.mean); c.rstd = xmalloc(ns * sizeof *c.rstd);
    norm_fwd(&c);
    double *dx = xcalloc(n, sizeof *dx), *dgam = xcalloc(C, sizeof *dgam), *dbet = xcalloc(C, sizeof *dbet);
    if (G) groupnorm_backward_cpu_f64(dx, dgam, dbet, c.g, c.x, c.mean, c.rstd, c.gamma, N, C, G, S);
    else instancenorm_backward_cpu_f64(dx, c.g, c.x, c.mean, c.rstd, N, C, S);

    snprintf(lab, sizeof lab, "%s dx", name);
    EXPECT(gradcheck(lab, norm_loss, &c, c.x, n, dx, 1e-5, 1e-6, 1e-9, 300, seed + 1), "%s", lab);
    if (G) {
        snprintf(lab, sizeof lab, "%s dgamma", name);
        EXPECT(gradcheck(lab, norm_loss, &c, c.gamma, C, dgam, 1e-5, 1e-6, 1e-9, 300, seed + 2), "%s", lab);
        snprintf(lab, sizeof lab, "%s dbeta", name);
        EXPECT(gradcheck(lab, norm_loss, &c, c.beta, C, dbet, 1e-5, 1e-6, 1e-9, 300, seed + 3), "%s", lab);
    }

    // accumulation: a second call into the same dx doubles it
    double *dx2 = xmalloc(n * sizeof *dx2);
    memcpy(dx2, dx, n * sizeof *dx2);
    norm_fwd(&c);
    if (G) groupnorm_backward_cpu_f64(dx2, NULL, NULL, c.g, c.x, c.mean, c.rstd, c.gamma, N, C, G, S);
    else instancenorm_backward_cpu_f64(dx2, c.g, c.x, c.mean, c.rstd, N, C, S);
    int acc = 1;
    for (size_t i = 0; i < n; i++) acc &= fabs(dx2[i] - 2 * dx[i]) <= 1e-12 * (1 + fabs(dx[i]));
    EXPECT(acc, "%s: backward accumulates", name);

    // float vs double
    float *xf = test_to_float(c.x, n), *gf = test_to_float(c.g, n), *gamf = test_to_float(c.gamma, C), *betf = test_to_float(c.beta, C);
    float *yf = xmalloc(n * 4), *mf = xmalloc(ns * 4), *rf = xmalloc(ns * 4);
    float *dxf = xcalloc(n, 4), *dgf = xcalloc(C, 4), *dbf = xcalloc(C, 4);
    if (G) {
        groupnorm_forward_cpu(yf, mf, rf, xf, gamf, betf, N, C, G, S, 1e-5);
        groupnorm_backward_cpu(dxf, dgf, dbf, gf, xf, mf, rf, gamf, N, C, G, S);
    } else {
        instancenorm_forward_cpu(yf, mf, rf, xf, N, C, S, 1e-5);
        instancenorm_backward_cpu(dxf, gf, xf, mf, rf, N, C, S);
    }
    float *yw = test_to_float(c.y, n), *dxw = test_to_float(dx, n), *dgw = test_to_float(dgam, C), *dbw = test_to_float(dbet, C);
    int fok = tensor_close("f32 y", yf, yw, n, 1e-5, 1e-7) &&
              tensor_close("f32 dx", dxf, dxw, n, 1e-5, 1e-7) &&
              (!G || (tensor_close("f32 dgamma", dgf, dgw, C, 1e-5, 1e-7) &&
                      tensor_close("f32 dbeta", dbf, dbw, C, 1e-5, 1e-7)));
    EXPECT(fok, "%s: float matches double", name);

    free(xf); free(gf); free(gamf); free(betf); free(yf); free(mf); free(rf);
    free(dxf); free(dgf); free(dbf); free(yw); free(dxw); free(dgw); free(dbw);
    free(dx); free(dx2); free(dgam); free(dbet);
    free(c.x); free(c.g); free(c.gamma); free(c.beta); free(c.y); free(c.mean); free(c.rstd);
}

static void norm_known(void)
{
    // x = 1..4: mean 2.5, biased variance 1.25
    double x[4] = { 1, 2, 3, 4 }, y[4], m, rs;
    instancenorm_forward_cpu_f64(y, &m, &rs, x, 1, 1, 4, 1e-5);
    int ok = m == 2.5 && fabs(rs - 1 / sqrt(1.25 + 1e-5)) < 1e-15;
    for (int i = 0; i < 4; i++) ok &= fabs(y[i] - (x[i] - 2.5) / sqrt(1.25 + 1e-5)) < 1e-15;
    EXPECT(ok, "instancenorm of 1..4 by hand (mean %g rstd %.17g)", m, rs);

    // constant input: zero output, no NaN (eps keeps rstd finite)
    double k[6] = { 3, 3, 3, 3, 3, 3 }, ky[6];
    instancenorm_forward_cpu_f64(ky, &m, &rs, k, 1, 1, 6, 1e-5);
    EXPECT(ky[0] == 0 && ky[5] == 0 && isfinite(rs), "constant input normalises to 0");

    // GroupNorm with G = C and gamma = 1, beta = 0 is InstanceNorm
    const int N = 2, C = 4;
    const size_t S = 3 * 5 * 7;
    rng_t r = rng_seed(9);
    double *v = test_uniform(&r, (size_t)N * C * S, -2, 3), *a = xmalloc(N * C * S * 8), *b = xmalloc(N * C * S * 8);
    double gam[4] = { 1, 1, 1, 1 }, bet[4] = { 0, 0, 0, 0 }, mm[8], rr[8], m2[8], r2[8];
    instancenorm_forward_cpu_f64(a, mm, rr, v, N, C, S, 1e-5);
    groupnorm_forward_cpu_f64(b, m2, r2, v, gam, bet, N, C, C, S, 1e-5);
    EXPECT(tensor_close_d("GN(G=C) = IN", b, a, (size_t)N * C * S, 1e-14, 0), "GroupNorm(G=C) equals InstanceNorm");

    // every (n, c) of the InstanceNorm output has mean 0 and (biased) variance 1 - eps-ish
    int stats = 1;
    for (int q = 0; q < N * C; q++) {
        double s1 = 0, s2 = 0;
        for (size_t i = 0; i < S; i++) { s1 += a[q * S + i]; s2 += a[q * S + i] * a[q * S + i]; }
        stats &= fabs(s1 / S) < 1e-12 && fabs(s2 / S - 1) < 1e-4;
    }
    EXPECT(stats, "instancenorm output has zero mean and unit variance");
    free(v); free(a); free(b);
}

// PyTorch 1.13 F.group_norm(x, 3, gamma, beta, 1e-5) on (2, 6, 5, 7, 1) and F.instance_norm(x,
// eps=1e-5) on (2, 3, 5, 7, 3), float64, x_i = 2 sin(0.37 i + 0.1) + 0.5, gamma_c = 0.8 + 0.1 c,
// beta_c = 0.5 cos(0.23 c), upstream g_j = cos(0.13 j); recorded probe(t, a) = sum_j t_j cos(a j)
// of y (a = 0.13) and of each gradient (a = 0.07).
static double probe(const double *t, size_t n, double a)
{
    double s = 0;
    for (size_t j = 0; j < n; j++) s += t[j] * cos(a * j);
    return s;
}

static void norm_torch(void)
{
    for (int gn = 0; gn < 2; gn++) {
        const int N = 2, C = gn ? 6 : 3, G = 3;
        const size_t S = gn ? 35 : 105, n = (size_t)N * C * S;
        double *x = xmalloc(n * 8), *y = xmalloc(n * 8), *g = xmalloc(n * 8), *dx = xcalloc(n, 8);
        double gam[6], bet[6], dgam[6] = { 0 }, dbet[6] = { 0 }, mean[6], rstd[6];
        for (size_t i = 0; i < n; i++) { x[i] = 2 * sin(0.37 * i + 0.1) + 0.5; g[i] = cos(0.13 * i); }
        for (int c = 0; c < C; c++) { gam[c] = 0.8 + 0.1 * c; bet[c] = 0.5 * cos(0.23 * c); }
        double got[4], want[4];
        if (gn) {
            groupnorm_forward_cpu_f64(y, mean, rstd, x, gam, bet, N, C, G, S, 1e-5);
            groupnorm_backward_cpu_f64(dx, dgam, dbet, g, x, mean, rstd, gam, N, C, G, S);
            double w[4] = { -4.333740463564372, 1.3579984815861779, 2.871734968754498, -6.514213015395693 };
            memcpy(want, w, sizeof w);
        } else {
            instancenorm_forward_cpu_f64(y, mean, rstd, x, N, C, S, 1e-5);
            instancenorm_backward_cpu_f64(dx, g, x, mean, rstd, N, C, S);
            double w[4] = { 0.33101113190325543, -1.2347305911334852, 0, 0 };
            memcpy(want, w, sizeof w);
        }
        got[0] = probe(y, n, 0.13); got[1] = probe(dx, n, 0.07);
        got[2] = gn ? probe(dgam, C, 0.07) : 0; got[3] = gn ? probe(dbet, C, 0.07) : 0;
        int ok = 1;
        for (int q = 0; q < 4; q++) ok &= fabs(got[q] - want[q]) <= 1e-12 * (1 + fabs(want[q]));
        EXPECT(ok, "%s matches PyTorch: %.15g %.15g %.15g %.15g", gn ? "groupnorm" : "instancenorm",
               got[0], got[1], got[2], got[3]);
        free(x); free(y); free(g); free(dx);
    }
}

// ----------------------------------------------------------------------------
// activations

typedef enum { RELU, GELU, SILU, SOFTPLUS } act_t;
static const char *act_name[] = { "relu", "gelu", "silu", "softplus" };

static void act_fwd_d(act_t a, double *y, const double *x, size_t n)
{
    switch (a) {
    case RELU: relu_forward_cpu_f64(y, x, n); break;
    case GELU: gelu_forward_cpu_f64(y, x, n); break;
    case SILU: silu_forward_cpu_f64(y, x, n); break;
    case SOFTPLUS: softplus_forward_cpu_f64(y, x, n); break;
    }
}
static void act_bwd_d(act_t a, double *dx, const double *dy, const double *x, size_t n)
{
    switch (a) {
    case RELU: relu_backward_cpu_f64(dx, dy, x, n); break;
    case GELU: gelu_backward_cpu_f64(dx, dy, x, n); break;
    case SILU: silu_backward_cpu_f64(dx, dy, x, n); break;
    case SOFTPLUS: softplus_backward_cpu_f64(dx, dy, x, n); break;
    }
}
static void act_fwd_f(act_t a, float *y, const float *x, size_t n)
{
    switch (a) {
    case RELU: relu_forward_cpu(y, x, n); break;
    case GELU: gelu_forward_cpu(y, x, n); break;
    case SILU: silu_forward_cpu(y, x, n); break;
    case SOFTPLUS: softplus_forward_cpu(y, x, n); break;
    }
}
static void act_bwd_f(act_t a, float *dx, const float *dy, const float *x, size_t n)
{
    switch (a) {
    case RELU: relu_backward_cpu(dx, dy, x, n); break;
    case GELU: gelu_backward_cpu(dx, dy, x, n); break;
    case SILU: silu_backward_cpu(dx, dy, x, n); break;
    case SOFTPLUS: softplus_backward_cpu(dx, dy, x, n); break;
    }
}

typedef struct { act_t a; size_t n; double *x, *g, *y; } act_ctx_t;
static double act_loss(void *ctx, const double *unused)
{
    (void)unused;
    act_ctx_t *c = ctx;
    act_fwd_d(c->a, c->y, c->x, c->n);
    return test_dot(c->g, c->y, c->n);
}

static void act_case(act_t a, unsigned long long seed)
{
    char lab[64];
    const size_t n = 301;
    rng_t r = rng_seed(seed);
    act_ctx_t c = { .a = a, .n = n };
    // softplus over [-30, 30] crosses its threshold; keep FD probes off the kinks (0 for ReLU, 20)
    c.x = test_uniform(&r, n, a == SOFTPLUS ? -30 : -6, a == SOFTPLUS ? 30 : 6);
    for (size_t i = 0; i < n; i++) {
        if (a == RELU && fabs(c.x[i]) < 1e-3) c.x[i] = 0.5;
        if (a == SOFTPLUS && fabs(c.x[i] - 20) < 1e-3) c.x[i] = 19.5;
    }
    c.g = test_uniform(&r, n, -1, 1);
    c.y = xmalloc(n * sizeof *c.y);
    double *dx = xcalloc(n, sizeof *dx);
    act_bwd_d(a, dx, c.g, c.x, n);
    snprintf(lab, sizeof lab, "%s dx", act_name[a]);
    EXPECT(gradcheck(lab, act_loss, &c, c.x, n, dx, 1e-6, 1e-7, 1e-10, n, seed + 1), "%s", lab);

    double *dx2 = xmalloc(n * sizeof *dx2);
    memcpy(dx2, dx, n * sizeof *dx2);
    act_bwd_d(a, dx2, c.g, c.x, n);
    int acc = 1;
    for (size_t i = 0; i < n; i++) acc &= fabs(dx2[i] - 2 * dx[i]) <= 1e-14 * (1 + fabs(dx[i]));
    EXPECT(acc, "%s: backward accumulates", act_name[a]);

    float *xf = test_to_float(c.x, n), *gf = test_to_float(c.g, n), *yf = xmalloc(n * 4), *dxf = xcalloc(n, 4);
    act_fwd_f(a, yf, xf, n);
    act_bwd_f(a, dxf, gf, xf, n);
    act_fwd_d(a, c.y, c.x, n);
    float *yw = test_to_float(c.y, n), *dxw = test_to_float(dx, n);
    EXPECT(tensor_close("f32 y", yf, yw, n, 1e-6, 1e-7) && tensor_close("f32 dx", dxf, dxw, n, 1e-6, 1e-7),
           "%s: float matches double", act_name[a]);
    free(xf); free(gf); free(yf); free(dxf); free(yw); free(dxw);
    free(dx); free(dx2); free(c.x); free(c.g); free(c.y);
}

// value and slope of activation a at x, in double
static void act_at(act_t a, double x, double *y, double *d)
{
    double one = 1;
    *d = 0;
    act_fwd_d(a, y, &x, 1);
    act_bwd_d(a, d, &one, &x, 1);
}

static void act_known(void)
{
    // reference values: Phi(1) = 0.8413447460685429, sigmoid(1) = 0.7310585786300049
    struct { act_t a; double x, y, d; } k[] = {
        { RELU, -1, 0, 0 }, { RELU, 2, 2, 1 }, { RELU, 0, 0, 0 },
        { GELU, 0, 0, 0.5 }, { GELU, 1, 0.8413447460685429, 0.8413447460685429 + 0.24197072451914337 },
        { GELU, -1, -0.15865525393145707, 0.15865525393145707 - 0.24197072451914337 },
        { SILU, 0, 0, 0.5 }, { SILU, 1, 0.7310585786300049, 0.7310585786300049 * (1 + 0.2689414213699951) },
        { SILU, -1, -0.2689414213699951, 0.2689414213699951 * (1 - 0.7310585786300049) },
        { SOFTPLUS, 0, 0.6931471805599453, 0.5 }, { SOFTPLUS, 30, 30, 1 },
        { SOFTPLUS, 20, 20.000000002061153, 0.9999999979388463 },   // 20 itself is below the threshold
        { SOFTPLUS, 20.5, 20.5, 1 }, { SOFTPLUS, -30, 9.357622968839737e-14, 9.3576229688393e-14 },
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        double y, d;
        act_at(k[i].a, k[i].x, &y, &d);
        EXPECT(fabs(y - k[i].y) <= 1e-14 * fabs(k[i].y) && fabs(d - k[i].d) <= 1e-14 * fabs(k[i].d),
               "%s(%g) = %.17g slope %.17g, want %.17g slope %.17g", act_name[k[i].a], k[i].x, y, d, k[i].y, k[i].d);
    }
    float x30 = 30, y30, x25 = 25.25f, y25;
    softplus_forward_cpu(&y30, &x30, 1);
    softplus_forward_cpu(&y25, &x25, 1);
    EXPECT(y30 == 30.0f && y25 == 25.25f, "float softplus returns x itself above 20");

    // add, including in place
    double a[3] = { 1, -2, 0.5 }, b[3] = { 3, 4, -0.25 }, s[3];
    add_forward_cpu_f64(s, a, b, 3);
    add_forward_cpu_f64(a, a, b, 3);
    EXPECT(s[0] == 4 && s[1] == 2 && s[2] == 0.25 && !memcmp(a, s, sizeof s), "add_forward, in place too");
}

int main(void)
{
    norm_case("instancenorm 2x3 5x7x3", 2, 3, 0, 5 * 7 * 3, 10);
    norm_case("instancenorm 1x2 odd 3x1x5", 1, 2, 0, 15, 11);
    norm_case("groupnorm C6 G3 5x7x1", 2, 6, 3, 35, 12);
    norm_case("groupnorm C4 G1 3x3x3", 1, 4, 1, 27, 13);
    norm_case("groupnorm C8 G8 2x3x1", 2, 8, 8, 6, 14);
    norm_known();
    norm_torch();
    for (int a = RELU; a <= SOFTPLUS; a++) act_case((act_t)a, 20 + a);
    act_known();
    return test_summary();
}
