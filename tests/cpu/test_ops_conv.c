/*
test_ops_conv.c -- 3D convolution and transposed convolution on the CPU (common/ops/conv3d.c,
conv_transpose3d.c): forward against a naive reference written here, every gradient against
central finite differences in double (random upstream gradient, odd sizes, strides, padding,
the model's stem/CMMB/head shapes), accumulation and NULL-gradient rules, float vs double,
thread-count independence, values recorded from PyTorch, a delta kernel, the conv/convT adjoint
identity, and a timing of the 64^3 x 16->16 k3 conv (printed, not asserted).
*/
#include "test.h"
#include "rng.h"
#include "check.h"
#include "ops.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

// ----------------------------------------------------------------------------
// helpers

// uniform in [-1, 1), rounded to float so float and double runs see identical inputs
static double *rand_vec(rng_t *r, size_t n)
{
    double *v = xmalloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = (float)(2.0 * rng_uniform(r) - 1.0);
    return v;
}
static float *to_f(const double *v, size_t n)
{
    float *f = xmalloc((n ? n : 1) * sizeof *f);
    for (size_t i = 0; i < n; i++) f[i] = (float)v[i];
    return f;
}
static double dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
static size_t vol(const int d[3]) { return (size_t)d[0] * d[1] * d[2]; }

static conv3d_shape_t shape(int N, int Cin, int Cout, int d, int h, int w, int k, int st, int p,
                            int op)
{
    int in[3] = { d, h, w };
    conv3d_shape_t s = conv3d_shape(N, Cin, Cout, in, k, st, p);
    for (int a = 0; a < 3; a++) s.outpad[a] = op;
    return s;
}

static void out_dims(const conv3d_shape_t *s, int tr, int out[3])
{
    if (tr) conv_transpose3d_out_dims(s, out);
    else conv3d_out_dims(s, out);
}

// Naive references straight from the definitions, with a bounds check on every tap.
static void ref_conv(double *y, const double *x, const double *w, const double *b,
                     const conv3d_shape_t *s)
{
    int o[3];
    conv3d_out_dims(s, o);
    for (int n = 0; n < s->N; n++) for (int co = 0; co < s->Cout; co++)
    for (int od = 0; od < o[0]; od++) for (int oh = 0; oh < o[1]; oh++) for (int ow = 0; ow < o[2]; ow++) {
        double acc = b ? b[co] : 0;
        for (int ci = 0; ci < s->Cin; ci++)
        for (int a = 0; a < s->k[0]; a++) for (int c = 0; c < s->k[1]; c++) for (int e = 0; e < s->k[2]; e++) {
            int id = od * s->stride[0] - s->pad[0] + a, ih = oh * s->stride[1] - s->pad[1] + c,
                iw = ow * s->stride[2] - s->pad[2] + e;
            if (id < 0 || ih < 0 || iw < 0 || id >= s->in[0] || ih >= s->in[1] || iw >= s->in[2]) continue;
            acc += w[((((size_t)co * s->Cin + ci) * s->k[0] + a) * s->k[1] + c) * s->k[2] + e] *
                   x[(((size_t)n * s->Cin + ci) * s->in[0] + id) * s->in[1] * s->in[2] + (size_t)ih * s->in[2] + iw];
        }
        y[(((size_t)n * s->Cout + co) * o[0] + od) * o[1] * o[2] + (size_t)oh * o[2] + ow] = acc;
    }
}

static void ref_convT(double *y, const double *x, const double *w, const double *b,
                      const conv3d_shape_t *s)
{
    int o[3];
    conv_transpose3d_out_dims(s, o);
    size_t osz = vol(o);
    for (int n = 0; n < s->N; n++) for (int co = 0; co < s->Cout; co++)
        for (size_t i = 0; i < osz; i++) y[((size_t)n * s->Cout + co) * osz + i] = b ? b[co] : 0;
    for (int n = 0; n < s->N; n++) for (int ci = 0; ci < s->Cin; ci++)
    for (int id = 0; id < s->in[0]; id++) for (int ih = 0; ih < s->in[1]; ih++) for (int iw = 0; iw < s->in[2]; iw++) {
        double xv = x[(((size_t)n * s->Cin + ci) * s->in[0] + id) * s->in[1] * s->in[2] + (size_t)ih * s->in[2] + iw];
        for (int co = 0; co < s->Cout; co++)
        for (int a = 0; a < s->k[0]; a++) for (int c = 0; c < s->k[1]; c++) for (int e = 0; e < s->k[2]; e++) {
            int od = id * s->stride[0] - s->pad[0] + a, oh = ih * s->stride[1] - s->pad[1] + c,
                ow = iw * s->stride[2] - s->pad[2] + e;
            if (od < 0 || oh < 0 || ow < 0 || od >= o[0] || oh >= o[1] || ow >= o[2]) continue;
            y[(((size_t)n * s->Cout + co) * o[0] + od) * o[1] * o[2] + (size_t)oh * o[2] + ow] +=
                w[((((size_t)ci * s->Cout + co) * s->k[0] + a) * s->k[1] + c) * s->k[2] + e] * xv;
        }
    }
}

// ----------------------------------------------------------------------------
// one gradient-check case

typedef struct {
    conv3d_shape_t s;
    int tr;                                     // 1 = transposed convolution
    double *x, *w, *b, *g, *y;                  // b may be NULL
    size_t nx, nw, ny;
} case_t;

static void fwd_d(case_t *c)
{
    if (c->tr) conv_transpose3d_forward_cpu_f64(c->y, c->x, c->w, c->b, c->s);
    else conv3d_forward_cpu_f64(c->y, c->x, c->w, c->b, c->s);
}
static void bwd_d(case_t *c, double *dx, double *dw, double *db)
{
    if (c->tr) conv_transpose3d_backward_cpu_f64(dx, dw, db, c->g, c->x, c->w, c->s);
    else conv3d_backward_cpu_f64(dx, dw, db, c->g, c->x, c->w, c->s);
}

// loss = sum(g * y): its gradient with respect to y is the random upstream gradient g
static double case_loss(void *ctx, const double *unused)
{
    (void)unused;
    case_t *c = ctx;
    fwd_d(c);
    return dot(c->g, c->y, c->ny);
}

static void run_case(const char *name, conv3d_shape_t s, int tr, int bias, unsigned long long seed)
{
    char lab[160];
    case_t c = { .s = s, .tr = tr };
    int out[3];
    out_dims(&s, tr, out);
    c.nx = (size_t)s.N * s.Cin * vol(s.in);
    c.nw = (size_t)s.Cout * s.Cin * vol(s.k);
    c.ny = (size_t)s.N * s.Cout * vol(out);
    rng_t r = rng_seed(seed);
    c.x = rand_vec(&r, c.nx); c.w = rand_vec(&r, c.nw); c.g = rand_vec(&r, c.ny);
    c.b = bias ? rand_vec(&r, s.Cout) : NULL;
    c.y = xmalloc(c.ny * sizeof *c.y);

    // forward against the naive reference
    double *yref = xmalloc(c.ny * sizeof *yref);
    if (tr) ref_convT(yref, c.x, c.w, c.b, &s); else ref_conv(yref, c.x, c.w, c.b, &s);
    fwd_d(&c);
    snprintf(lab, sizeof lab, "%s forward vs naive", name);
    EXPECT(tensor_close_d(lab, c.y, yref, c.ny, 1e-12, 1e-14), "%s", lab);

    // analytic gradients, then finite differences on every input, weight and bias element
    double *dx = xcalloc(c.nx, sizeof *dx), *dw = xcalloc(c.nw, sizeof *dw);
    double *db = xcalloc(s.Cout, sizeof *db);
    bwd_d(&c, dx, dw, bias ? db : NULL);
    // loss is linear in each argument, so central differences are exact up to rounding
    snprintf(lab, sizeof lab, "%s dx", name);
    EXPECT(gradcheck(lab, case_loss, &c, c.x, c.nx, dx, 1e-3, 1e-7, 1e-10, 400, seed + 1), "%s", lab);
    snprintf(lab, sizeof lab, "%s dw", name);
    EXPECT(gradcheck(lab, case_loss, &c, c.w, c.nw, dw, 1e-3, 1e-7, 1e-10, 400, seed + 2), "%s", lab);
    if (bias) {
        snprintf(lab, sizeof lab, "%s db", name);
        EXPECT(gradcheck(lab, case_loss, &c, c.b, s.Cout, db, 1e-3, 1e-7, 1e-10, 400, seed + 3), "%s", lab);
    }

    // backward accumulates: a second call doubles; NULL gradients are skipped
    double *dx2 = xmalloc(c.nx * sizeof *dx2), *dw2 = xcalloc(c.nw, sizeof *dw2);
    memcpy(dx2, dx, c.nx * sizeof *dx2);
    bwd_d(&c, dx2, NULL, NULL);
    bwd_d(&c, NULL, dw2, NULL);
    int acc_ok = 1;
    for (size_t i = 0; i < c.nx; i++) acc_ok &= fabs(dx2[i] - 2 * dx[i]) <= 1e-12 * (1 + fabs(dx[i]));
    for (size_t i = 0; i < c.nw; i++) acc_ok &= fabs(dw2[i] - dw[i]) <= 1e-12 * (1 + fabs(dw[i]));
    EXPECT(acc_ok, "%s: backward accumulates and honours NULL gradients", name);

    // float against double on the same (float-representable) inputs
    float *xf = to_f(c.x, c.nx), *wf = to_f(c.w, c.nw), *gf = to_f(c.g, c.ny);
    float *bf = bias ? to_f(c.b, s.Cout) : NULL, *yf = xmalloc(c.ny * sizeof *yf);
    float *dxf = xcalloc(c.nx, sizeof *dxf), *dwf = xcalloc(c.nw, sizeof *dwf);
    float *dbf = xcalloc(s.Cout, sizeof *dbf);
    if (tr) {
        conv_transpose3d_forward_cpu(yf, xf, wf, bf, s);
        conv_transpose3d_backward_cpu(dxf, dwf, bias ? dbf : NULL, gf, xf, wf, s);
    } else {
        conv3d_forward_cpu(yf, xf, wf, bf, s);
        conv3d_backward_cpu(dxf, dwf, bias ? dbf : NULL, gf, xf, wf, s);
    }
    fwd_d(&c);
    float *yw = to_f(c.y, c.ny), *dxw = to_f(dx, c.nx), *dww = to_f(dw, c.nw), *dbw = to_f(db, s.Cout);
    int fok = tensor_close("f32 y", yf, yw, c.ny, 1e-5, 1e-7) &&
              tensor_close("f32 dx", dxf, dxw, c.nx, 1e-5, 1e-7) &&
              tensor_close("f32 dw", dwf, dww, c.nw, 1e-5, 1e-7) &&
              (!bias || tensor_close("f32 db", dbf, dbw, s.Cout, 1e-5, 1e-7));
    EXPECT(fok, "%s: float matches double", name);

    free(xf); free(wf); free(gf); free(bf); free(yf); free(dxf); free(dwf); free(dbf);
    free(yw); free(dxw); free(dww); free(dbw);
    free(dx2); free(dw2); free(dx); free(dw); free(db); free(yref);
    free(c.x); free(c.w); free(c.b); free(c.g); free(c.y);
}

// ----------------------------------------------------------------------------
// known values

// A kernel with a single 1 at tap (a, c, e) on the channel diagonal copies x shifted by
// (a - pad, c - pad, e - pad), with zeros where the shift leaves the volume.
static void test_delta_kernel(void)
{
    const int C = 2, D = 5, H = 4, W = 6, a = 2, c = 0, e = 1;
    conv3d_shape_t s = shape(1, C, C, D, H, W, 3, 1, 1, 0);
    rng_t r = rng_seed(7);
    double *x = rand_vec(&r, (size_t)C * D * H * W), *y = xmalloc((size_t)C * D * H * W * sizeof *y);
    double *w = xcalloc((size_t)C * C * 27, sizeof *w);
    for (int ch = 0; ch < C; ch++) w[((size_t)ch * C + ch) * 27 + (a * 3 + c) * 3 + e] = 1;
    conv3d_forward_cpu_f64(y, x, w, NULL, s);
    int ok = 1;
    for (int ch = 0; ch < C; ch++) for (int d = 0; d < D; d++) for (int h = 0; h < H; h++) for (int q = 0; q < W; q++) {
        int sd = d + a - 1, sh = h + c - 1, sq = q + e - 1;
        double want = (sd < 0 || sh < 0 || sq < 0 || sd >= D || sh >= H || sq >= W) ? 0 :
                      x[(((size_t)ch * D + sd) * H + sh) * W + sq];
        ok &= y[(((size_t)ch * D + d) * H + h) * W + q] == want;
    }
    EXPECT(ok, "delta kernel gives an exact shifted copy");
    free(x); free(y); free(w);
}

// <conv(x), u> == <x, convT(u)> when convT uses conv's weight memory and maps conv's output
// size back to its input size (outpad = the remainder conv's floor division dropped).
static void test_adjoint(int D, int H, int W, int k, int st, int p)
{
    const int Cin = 3, Cout = 2;
    conv3d_shape_t s = shape(2, Cin, Cout, D, H, W, k, st, p, 0);
    int o[3];
    conv3d_out_dims(&s, o);
    conv3d_shape_t t = shape(2, Cout, Cin, o[0], o[1], o[2], k, st, p, 0);
    for (int a = 0; a < 3; a++) t.outpad[a] = (s.in[a] + 2 * p - k) % st;
    int back[3];
    conv_transpose3d_out_dims(&t, back);
    EXPECT(back[0] == D && back[1] == H && back[2] == W, "convT restores the input size");
    size_t nx = (size_t)2 * Cin * D * H * W, ny = (size_t)2 * Cout * vol(o);
    rng_t r = rng_seed(11);
    double *x = rand_vec(&r, nx), *u = rand_vec(&r, ny), *w = rand_vec(&r, (size_t)Cin * Cout * k * k * k);
    double *y = xmalloc(ny * sizeof *y), *z = xmalloc(nx * sizeof *z);
    conv3d_forward_cpu_f64(y, x, w, NULL, s);
    conv_transpose3d_forward_cpu_f64(z, u, w, NULL, t);
    double lhs = dot(y, u, ny), rhs = dot(x, z, nx);
    EXPECT(fabs(lhs - rhs) <= 1e-12 * (fabs(lhs) + 1), "<conv x, u> = %.15g, <x, convT u> = %.15g "
           "(%dx%dx%d k%d s%d p%d)", lhs, rhs, D, H, W, k, st, p);
    free(x); free(u); free(w); free(y); free(z);
}

// The same result bit for bit with 1 and 2 threads (forward and both backward paths).
static void test_thread_independence(void)
{
    conv3d_shape_t s = shape(2, 3, 4, 9, 7, 10, 3, 2, 1, 0);
    int o[3];
    conv3d_out_dims(&s, o);
    size_t nx = (size_t)2 * 3 * vol(s.in), nw = (size_t)4 * 3 * 27, ny = (size_t)2 * 4 * vol(o);
    rng_t r = rng_seed(5);
    float *x = xmalloc(nx * 4), *w = xmalloc(nw * 4), *g = xmalloc(ny * 4);
    rng_fill_uniform(&r, x, nx, -1, 1); rng_fill_uniform(&r, w, nw, -1, 1); rng_fill_uniform(&r, g, ny, -1, 1);
    float *y[2], *dx[2], *dw[2];
    int keep = omp_get_max_threads();
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t + 1);
        y[t] = xmalloc(ny * 4); dx[t] = xcalloc(nx, 4); dw[t] = xcalloc(nw, 4);
        conv3d_forward_cpu(y[t], x, w, NULL, s);
        conv3d_backward_cpu(dx[t], dw[t], NULL, g, x, w, s);
    }
    omp_set_num_threads(keep);
    EXPECT(!memcmp(y[0], y[1], ny * 4) && !memcmp(dx[0], dx[1], nx * 4) && !memcmp(dw[0], dw[1], nw * 4),
           "conv results independent of the thread count");
    for (int t = 0; t < 2; t++) { free(y[t]); free(dx[t]); free(dw[t]); }
    free(x); free(w); free(g);
}

// ----------------------------------------------------------------------------
// independent oracle: PyTorch 1.13 F.conv3d / F.conv_transpose3d in float64 on inputs given by
// formulas (x_i = sin(0.37 i + 0.1), w_i = 0.5 cos(0.23 i), b_i = 0.1 i - 0.2), upstream
// gradient g_j = cos(0.13 j). Recorded: probe(y, 0.13), probe(dx, 0.07), probe(dw, 0.07), sum db
// where probe(t, a) = sum_j t_j cos(a j) -- position-sensitive, so a shifted or transposed
// result cannot match. (Script: x.requires_grad_(); (y * g).sum().backward().)

static double probe(const double *t, size_t n, double a)
{
    double s = 0;
    for (size_t j = 0; j < n; j++) s += t[j] * cos(a * j);
    return s;
}

static void test_torch_values(void)
{
    static const struct {
        const char *name;
        int N, Cin, Cout, in[3], k, st, p, op, tr;
        double want[4];
        int out[3];
    } t[] = {
        { "stem k7 s2 p3", 1,2,3, {9,8,7}, 7,2,3,0, 0, { 10.971981836628771, -50.92414802066973, -21.551550333314395, -1.634163891013098 }, {5, 4, 4} },
        { "cmmb k5 s2 p2", 2,2,3, {7,6,5}, 5,2,2,0, 0, { 5.954132940391583, -8.184946787234654, -21.689590226546798, 2.4739802208705584 }, {4, 3, 3} },
        { "down k2 s2", 1,3,2, {6,4,5}, 2,2,0,0, 0, { -1.3934866647225697, -1.0358864695885357, 1.123254096295803, 1.1657339043727237 }, {3, 2, 2} },
        { "k3 p1", 1,2,2, {5,7,3}, 3,1,1,0, 0, { -35.71682880179563, 90.7297573951612, -6.075181838702418, 7.135955167312664 }, {5, 7, 3} },
        { "convT k5 s2 p2 op1", 1,2,3, {3,4,5}, 5,2,2,1, 1, { -27.206021493557554, 1.5788423718011126, -52.331650968700224, -7.028234311994995 }, {6, 8, 10} },
        { "convT head k2 s2", 2,3,2, {3,2,3}, 2,2,0,0, 1, { -0.012809707312363056, -4.881947314305856, -0.5031945606428112, -3.739273583163245 }, {6, 4, 6} },
    };
    for (size_t c = 0; c < sizeof t / sizeof t[0]; c++) {
        conv3d_shape_t s = shape(t[c].N, t[c].Cin, t[c].Cout, t[c].in[0], t[c].in[1], t[c].in[2],
                                 t[c].k, t[c].st, t[c].p, t[c].op);
        int o[3];
        out_dims(&s, t[c].tr, o);
        size_t nx = (size_t)s.N * s.Cin * vol(s.in), nw = (size_t)s.Cin * s.Cout * vol(s.k),
               ny = (size_t)s.N * s.Cout * vol(o);
        double *x = xmalloc(nx * 8), *w = xmalloc(nw * 8), *b = xmalloc(s.Cout * 8), *g = xmalloc(ny * 8);
        double *y = xmalloc(ny * 8), *dx = xcalloc(nx, 8), *dw = xcalloc(nw, 8), *db = xcalloc(s.Cout, 8);
        for (size_t i = 0; i < nx; i++) x[i] = sin(0.37 * i + 0.1);
        for (size_t i = 0; i < nw; i++) w[i] = 0.5 * cos(0.23 * i);
        for (int i = 0; i < s.Cout; i++) b[i] = 0.1 * i - 0.2;
        for (size_t j = 0; j < ny; j++) g[j] = cos(0.13 * j);
        if (t[c].tr) {
            conv_transpose3d_forward_cpu_f64(y, x, w, b, s);
            conv_transpose3d_backward_cpu_f64(dx, dw, db, g, x, w, s);
        } else {
            conv3d_forward_cpu_f64(y, x, w, b, s);
            conv3d_backward_cpu_f64(dx, dw, db, g, x, w, s);
        }
        double got[4] = { probe(y, ny, 0.13), probe(dx, nx, 0.07), probe(dw, nw, 0.07), 0 };
        for (int i = 0; i < s.Cout; i++) got[3] += db[i];
        int ok = o[0] == t[c].out[0] && o[1] == t[c].out[1] && o[2] == t[c].out[2];
        for (int q = 0; q < 4; q++) ok &= fabs(got[q] - t[c].want[q]) <= 1e-12 * (1 + fabs(t[c].want[q]));
        EXPECT(ok, "%s matches PyTorch: y %.15g/%.15g dx %.15g/%.15g dw %.15g/%.15g db %.15g/%.15g",
               t[c].name, got[0], t[c].want[0], got[1], t[c].want[1], got[2], t[c].want[2], got[3], t[c].want[3]);
        free(x); free(w); free(b); free(g); free(y); free(dx); free(dw); free(db);
    }
}

// The CPU trainer's bottleneck: 64^3, 16 -> 16 channels, k3 p1, float. Printed, not asserted.
static void time_conv64(void)
{
    conv3d_shape_t s = shape(1, 16, 16, 64, 64, 64, 3, 1, 1, 0);
    size_t n = (size_t)16 * 64 * 64 * 64, nw = (size_t)16 * 16 * 27;
    rng_t r = rng_seed(3);
    float *x = xmalloc(n * 4), *y = xmalloc(n * 4), *w = xmalloc(nw * 4), *b = xmalloc(16 * 4);
    float *dx = xcalloc(n, 4), *dw = xcalloc(nw, 4);
    rng_fill_uniform(&r, x, n, -1, 1); rng_fill_uniform(&r, w, nw, -0.2f, 0.2f);
    rng_fill_uniform(&r, b, 16, -0.2f, 0.2f);
    conv3d_forward_cpu(y, x, w, b, s);              // warm-up (page faults)
    double t0 = omp_get_wtime();
    conv3d_forward_cpu(y, x, w, b, s);
    double t1 = omp_get_wtime();
    conv3d_backward_cpu(dx, NULL, NULL, y, x, w, s);
    double t2 = omp_get_wtime();
    conv3d_backward_cpu(NULL, dw, NULL, y, x, w, s);
    double t3 = omp_get_wtime();
    double gmac = (double)n * 16 * 27 / 1e9;
    printf("I: conv3d 64^3 16->16 k3 float, %d threads: forward %.1f ms (%.2f GMAC/s), "
           "backward-data %.1f ms, backward-weight %.1f ms\n", omp_get_max_threads(),
           (t1 - t0) * 1e3, gmac / (t1 - t0), (t2 - t1) * 1e3, (t3 - t2) * 1e3);
    EXPECT(isfinite(y[12345]) && isfinite(dx[777]) && isfinite(dw[5]), "timed conv produced finite values");
    free(x); free(y); free(w); free(b); free(dx); free(dw);
}

int main(void)
{
    // name, shape (N, Cin, Cout, D, H, W, k, stride, pad, outpad), transposed, bias, seed
    run_case("k3 s1 p1 5x7x3", shape(2, 2, 3, 5, 7, 3, 3, 1, 1, 0), 0, 1, 100);
    run_case("k3 s2 p1 odd 7x5x9", shape(1, 2, 3, 7, 5, 9, 3, 2, 1, 0), 0, 0, 101);
    run_case("k3 s1 p2 4x3x5", shape(1, 2, 2, 4, 3, 5, 3, 1, 2, 0), 0, 1, 102);
    run_case("stem k7 s2 p3 9x8x7", shape(1, 1, 2, 9, 8, 7, 7, 2, 3, 0), 0, 1, 103);
    run_case("cmmb k5 s2 p2 7x6x5", shape(1, 2, 2, 7, 6, 5, 5, 2, 2, 0), 0, 0, 104);
    run_case("down k2 s2 p0 6x4x5", shape(2, 2, 3, 6, 4, 5, 2, 2, 0, 0), 0, 1, 105);
    run_case("k1 s1 p0 3x5x2", shape(1, 3, 2, 3, 5, 2, 1, 1, 0, 0), 0, 1, 106);
    conv3d_shape_t an = shape(1, 2, 2, 5, 6, 7, 1, 1, 0, 0);   // per-axis k/stride/pad
    an.k[0] = 3; an.k[1] = 1; an.k[2] = 2;
    an.stride[0] = 1; an.stride[1] = 2; an.stride[2] = 3;
    an.pad[0] = 1; an.pad[1] = 0; an.pad[2] = 1;
    run_case("anisotropic k3x1x2 s1x2x3", an, 0, 1, 107);

    run_case("convT cmmb k5 s2 p2 op1 3x4x5", shape(1, 2, 3, 3, 4, 5, 5, 2, 2, 1), 1, 1, 200);
    run_case("convT head k2 s2 3x2x3", shape(2, 3, 2, 3, 2, 3, 2, 2, 0, 0), 1, 1, 201);
    run_case("convT k3 s1 p1 4x3x5", shape(1, 2, 2, 4, 3, 5, 3, 1, 1, 0), 1, 0, 202);
    run_case("convT k3 s2 p1 op0 3x5x2", shape(1, 2, 3, 3, 5, 2, 3, 2, 1, 0), 1, 1, 203);
    an.outpad[1] = 1; an.outpad[2] = 2;
    run_case("convT anisotropic", an, 1, 1, 204);

    test_delta_kernel();
    test_adjoint(5, 7, 3, 3, 1, 1);
    test_adjoint(7, 6, 9, 3, 2, 1);
    test_adjoint(9, 8, 7, 5, 2, 2);
    test_adjoint(6, 5, 7, 2, 2, 0);
    test_torch_values();
    test_thread_independence();
    time_conv64();
    return test_summary();
}
