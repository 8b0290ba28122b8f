/*
test_ops_misc.c -- trilinear x2 upsampling, pad/crop, the losses and Adam on the CPU
(common/ops/upsample.c, pad_crop.c, loss.c, adam.c): gradients against central finite
differences in double (odd sizes, a size-1 axis, voxel counts spanning several reduction blocks),
accumulation, float vs double, thread-count independence of the loss sums, and known values:
upsampling of constants, of a linear ramp and of a delta; upsampling and CE against values
recorded from PyTorch; hand-placed pad/crop copies; Dice and CE of uniform, perfect and wrong
predictions by hand; Adam/AdamW steps by hand and as torch.optim.Adam/AdamW (torch 1.13,
float64) computed them.
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
// helpers (test_uniform, test_to_float, test_dot: tests/test.h)

static size_t vol(const int d[3]) { return (size_t)d[0] * d[1] * d[2]; }

// ----------------------------------------------------------------------------
// upsampling

typedef struct { int N, C, in[3]; double *x, *g, *y; } up_t;
static double up_loss(void *ctx, const double *unused)
{
    (void)unused;
    up_t *c = ctx;
    upsample_trilinear2x_forward_cpu_f64(c->y, c->x, c->N, c->C, c->in);
    return test_dot(c->g, c->y, (size_t)c->N * c->C * 8 * vol(c->in));
}

static void up_case(int N, int C, int D, int H, int W, unsigned long long seed)
{
    char lab[64];
    snprintf(lab, sizeof lab, "upsample %dx%dx%d dx", D, H, W);
    up_t c = { .N = N, .C = C, .in = { D, H, W } };
    size_t nx = (size_t)N * C * vol(c.in), ny = 8 * nx;
    rng_t r = rng_seed(seed);
    c.x = test_uniform(&r, nx, -1, 1); c.g = test_uniform(&r, ny, -1, 1); c.y = xmalloc(ny * 8);
    double *dx = xcalloc(nx, 8);
    upsample_trilinear2x_backward_cpu_f64(dx, c.g, N, C, c.in);
    EXPECT(gradcheck(lab, up_loss, &c, c.x, nx, dx, 1e-3, 1e-8, 1e-12, 400, seed + 1), "%s", lab);

    double *dx2 = xmalloc(nx * 8);
    memcpy(dx2, dx, nx * 8);
    upsample_trilinear2x_backward_cpu_f64(dx2, c.g, N, C, c.in);
    int acc = 1;
    for (size_t i = 0; i < nx; i++) acc &= fabs(dx2[i] - 2 * dx[i]) <= 1e-13 * (1 + fabs(dx[i]));
    EXPECT(acc, "upsample backward accumulates");

    float *xf = test_to_float(c.x, nx), *gf = test_to_float(c.g, ny), *yf = xmalloc(ny * 4), *dxf = xcalloc(nx, 4);
    upsample_trilinear2x_forward_cpu(yf, xf, N, C, c.in);
    upsample_trilinear2x_backward_cpu(dxf, gf, N, C, c.in);
    up_loss(&c, NULL);
    float *yw = test_to_float(c.y, ny), *dxw = test_to_float(dx, nx);
    EXPECT(tensor_close("f32 y", yf, yw, ny, 1e-6, 1e-8) && tensor_close("f32 dx", dxf, dxw, nx, 1e-6, 1e-8),
           "upsample float matches double");
    free(xf); free(gf); free(yf); free(dxf); free(yw); free(dxw);
    free(c.x); free(c.g); free(c.y); free(dx); free(dx2);
}

static void up_known(void)
{
    // a constant stays constant (odd sizes, size-1 axis)
    int in[3] = { 3, 1, 4 };
    double x[12], y[96];
    for (int i = 0; i < 12; i++) x[i] = 0.3;
    upsample_trilinear2x_forward_cpu_f64(y, x, 1, 1, in);
    int ok = 1;
    for (int i = 0; i < 96; i++) ok &= fabs(y[i] - 0.3) < 1e-16;
    EXPECT(ok, "upsampled constant is constant");

    // 2x2x2 ramp x = 4d + 2h + w. Per axis the outputs 0..3 sit at source coordinates
    // 0, 0.25, 0.75, 1 (0 and 1 by clamping), and trilinear reproduces a linear function.
    int in2[3] = { 2, 2, 2 };
    const double pos[4] = { 0, 0.25, 0.75, 1 };
    double r[8], ry[64];
    for (int i = 0; i < 8; i++) r[i] = i;
    upsample_trilinear2x_forward_cpu_f64(ry, r, 1, 1, in2);
    ok = 1;
    for (int a = 0; a < 4; a++) for (int b = 0; b < 4; b++) for (int c = 0; c < 4; c++)
        ok &= ry[(a * 4 + b) * 4 + c] == 4 * pos[a] + 2 * pos[b] + pos[c];
    EXPECT(ok && ry[(1 * 4 + 2) * 4 + 3] == 3.5, "upsampled 2x2x2 ramp matches hand values");

    // a delta at (0,0,0): the output is the product of the 1D weights 1, 0.75, 0.25, 0
    double dl[8] = { 1, 0, 0, 0, 0, 0, 0, 0 }, dy[64];
    const double wt[4] = { 1, 0.75, 0.25, 0 };
    upsample_trilinear2x_forward_cpu_f64(dy, dl, 1, 1, in2);
    ok = 1;
    for (int a = 0; a < 4; a++) for (int b = 0; b < 4; b++) for (int c = 0; c < 4; c++)
        ok &= dy[(a * 4 + b) * 4 + c] == wt[a] * wt[b] * wt[c];
    EXPECT(ok, "upsampled delta is the product of the 1D weights");
}

// PyTorch 1.13, float64: F.interpolate(x, scale_factor=2, mode="trilinear",
// align_corners=False) on (2, 3, 3, 1, 5), x_i = sin(0.37 i + 0.1), upstream g_j = cos(0.13 j);
// recorded probe(y, 0.13) and probe(dx, 0.07), probe(t, a) = sum_j t_j cos(a j).
static double probe(const double *t, size_t n, double a)
{
    double s = 0;
    for (size_t j = 0; j < n; j++) s += t[j] * cos(a * j);
    return s;
}

static void up_torch(void)
{
    const int in[3] = { 3, 1, 5 };
    const size_t nx = 2 * 3 * 15, ny = 8 * nx;
    double x[90], dx[90] = { 0 }, y[720], g[720];
    for (size_t i = 0; i < nx; i++) x[i] = sin(0.37 * i + 0.1);
    for (size_t j = 0; j < ny; j++) g[j] = cos(0.13 * j);
    upsample_trilinear2x_forward_cpu_f64(y, x, 2, 3, in);
    upsample_trilinear2x_backward_cpu_f64(dx, g, 2, 3, in);
    double py = probe(y, ny, 0.13), pdx = probe(dx, nx, 0.07);
    EXPECT(fabs(py - -2.430250216127111) < 1e-12 && fabs(pdx - -4.910911945875355) < 1e-12,
           "upsample matches PyTorch: %.15g %.15g", py, pdx);
}

// ----------------------------------------------------------------------------
// pad / crop

static void padcrop_known(void)
{
    int in[3] = { 1, 1, 4 }, out6[3] = { 1, 1, 6 }, out2[3] = { 1, 1, 2 };
    int padlo[3] = { 0, 0, -1 }, croplo[3] = { 0, 0, 2 };
    double x[4] = { 1, 2, 3, 4 }, y6[6], y2[2];
    pad_crop3d_forward_cpu_f64(y6, x, 1, 1, in, out6, padlo);
    pad_crop3d_forward_cpu_f64(y2, x, 1, 1, in, out2, croplo);
    const double w6[6] = { 0, 1, 2, 3, 4, 0 };
    EXPECT(!memcmp(y6, w6, sizeof w6) && y2[0] == 3 && y2[1] == 4, "pad [1,2,3,4] -> [0,1,2,3,4,0], crop -> [3,4]");
    double dx[4] = { 0, 0, 0, 0 }, g6[6] = { 10, 20, 30, 40, 50, 60 };
    pad_crop3d_backward_cpu_f64(dx, g6, 1, 1, in, out6, padlo);
    EXPECT(dx[0] == 20 && dx[1] == 30 && dx[2] == 40 && dx[3] == 50, "pad backward picks the interior");
}

// Mixed pad and crop on every axis: y = P x is linear, so check backward as its adjoint
// (<P x, u> = <x, P^T u>), against FD, and element by element against the definition.
static void padcrop_case(void)
{
    const int N = 2, C = 3, in[3] = { 3, 4, 5 }, out[3] = { 5, 3, 4 }, off[3] = { -1, 1, 0 };
    size_t nx = (size_t)N * C * vol(in), ny = (size_t)N * C * vol(out);
    rng_t r = rng_seed(31);
    double *x = test_uniform(&r, nx, -1, 1), *u = test_uniform(&r, ny, -1, 1), *y = xmalloc(ny * 8);
    double *dx = xcalloc(nx, 8);
    pad_crop3d_forward_cpu_f64(y, x, N, C, in, out, off);
    pad_crop3d_backward_cpu_f64(dx, u, N, C, in, out, off);
    int ok = 1;
    for (int q = 0; q < N * C; q++)
    for (int d = 0; d < out[0]; d++) for (int h = 0; h < out[1]; h++) for (int w = 0; w < out[2]; w++) {
        int sd = d + off[0], sh = h + off[1], sw = w + off[2];
        int inside = sd >= 0 && sh >= 0 && sw >= 0 && sd < in[0] && sh < in[1] && sw < in[2];
        double want = inside ? x[(((size_t)q * in[0] + sd) * in[1] + sh) * in[2] + sw] : 0;
        ok &= y[(((size_t)q * out[0] + d) * out[1] + h) * out[2] + w] == want;
    }
    EXPECT(ok, "pad/crop forward follows y[p] = x[p + off]");
    double lhs = test_dot(y, u, ny), rhs = test_dot(x, dx, nx);
    EXPECT(fabs(lhs - rhs) <= 1e-13 * (1 + fabs(lhs)), "pad/crop backward is the adjoint: %.15g vs %.15g", lhs, rhs);
    float *xf = test_to_float(x, nx), *yf = xmalloc(ny * 4), *yw = test_to_float(y, ny);
    pad_crop3d_forward_cpu(yf, xf, N, C, in, out, off);
    EXPECT(!memcmp(yf, yw, ny * 4), "pad/crop float copy equals double");
    free(x); free(u); free(y); free(dx); free(xf); free(yf); free(yw);
}

// ----------------------------------------------------------------------------
// losses

typedef enum { L_DICE_SOFTMAX, L_CE, L_DICE_SIGMOID } loss_kind_t;
typedef struct {
    loss_kind_t kind;
    int N, K;                                   // K = R for sigmoid Dice
    size_t S;
    dice_cfg_t cfg;
    const regions_t *reg;
    const uint8_t *lab;
    double *logits, scale;
} loss_t;

static double loss_fwd_d(const loss_t *c)
{
    switch (c->kind) {
    case L_DICE_SOFTMAX: return dice_softmax_forward_cpu_f64(c->logits, c->lab, c->N, c->K, c->S, c->cfg);
    case L_CE: return cross_entropy_forward_cpu_f64(c->logits, c->lab, c->N, c->K, c->S);
    case L_DICE_SIGMOID: return dice_sigmoid_forward_cpu_f64(c->logits, c->lab, c->N, c->S, c->reg, c->cfg);
    }
    return NAN;
}
static void loss_bwd_d(const loss_t *c, double *dl)
{
    switch (c->kind) {
    case L_DICE_SOFTMAX: dice_softmax_backward_cpu_f64(dl, c->logits, c->lab, c->N, c->K, c->S, c->cfg, c->scale); break;
    case L_CE: cross_entropy_backward_cpu_f64(dl, c->logits, c->lab, c->N, c->K, c->S, c->scale); break;
    case L_DICE_SIGMOID: dice_sigmoid_backward_cpu_f64(dl, c->logits, c->lab, c->N, c->S, c->reg, c->cfg, c->scale); break;
    }
}
static double loss_fwd_f(const loss_t *c, const float *lg)
{
    switch (c->kind) {
    case L_DICE_SOFTMAX: return dice_softmax_forward_cpu(lg, c->lab, c->N, c->K, c->S, c->cfg);
    case L_CE: return cross_entropy_forward_cpu(lg, c->lab, c->N, c->K, c->S);
    case L_DICE_SIGMOID: return dice_sigmoid_forward_cpu(lg, c->lab, c->N, c->S, c->reg, c->cfg);
    }
    return NAN;
}
static void loss_bwd_f(const loss_t *c, float *dl, const float *lg)
{
    switch (c->kind) {
    case L_DICE_SOFTMAX: dice_softmax_backward_cpu(dl, lg, c->lab, c->N, c->K, c->S, c->cfg, c->scale); break;
    case L_CE: cross_entropy_backward_cpu(dl, lg, c->lab, c->N, c->K, c->S, c->scale); break;
    case L_DICE_SIGMOID: dice_sigmoid_backward_cpu(dl, lg, c->lab, c->N, c->S, c->reg, c->cfg, c->scale); break;
    }
}
static double loss_scaled(void *ctx, const double *unused)
{
    (void)unused;
    loss_t *c = ctx;
    return c->scale * loss_fwd_d(c);
}

// BraTS regions over labels 0..4: WT {1,2,3,4}, TC {1,3,4}, ET {4}
static regions_t brats_regions(void)
{
    regions_t g;
    memset(&g, 0, sizeof g);
    g.R = 3;
    g.member[0][1] = g.member[0][2] = g.member[0][3] = g.member[0][4] = 1;
    g.member[1][1] = g.member[1][3] = g.member[1][4] = 1;
    g.member[2][4] = 1;
    return g;
}

// labels uniform in [0, nlab), except that class `absent` (if >= 0) never appears in image 0;
// then each voxel LABEL_IGNORE with probability p_ignore
static uint8_t *rand_labels(rng_t *r, int N, size_t S, int nlab, int absent, double p_ignore)
{
    uint8_t *l = xmalloc((size_t)N * S);
    for (size_t i = 0; i < (size_t)N * S; i++) {
        int v = (int)rng_below(r, nlab);
        if (i < S && v == absent) v = (v + 1) % nlab;
        l[i] = (uint8_t)v;
        if (p_ignore > 0 && rng_uniform(r) < p_ignore) l[i] = LABEL_IGNORE;
    }
    return l;
}

static void loss_case(const char *name, loss_kind_t kind, int N, int K, size_t S, dice_cfg_t cfg,
                      unsigned long long seed, double p_ignore)
{
    char lab[128];
    regions_t reg = brats_regions();
    rng_t r = rng_seed(seed);
    size_t n = (size_t)N * K * S;
    uint8_t *labels = rand_labels(&r, N, S, kind == L_DICE_SIGMOID ? 5 : K, K > 2 ? 2 : -1, p_ignore);
    loss_t c = { .kind = kind, .N = N, .K = K, .S = S, .cfg = cfg, .reg = &reg, .lab = labels,
                 .scale = 0.7 };
    c.logits = test_uniform(&r, n, -2, 2);
    double *dl = xcalloc(n, 8);
    loss_bwd_d(&c, dl);
    snprintf(lab, sizeof lab, "%s dlogits", name);
    EXPECT(gradcheck(lab, loss_scaled, &c, c.logits, n, dl, 1e-4, 1e-6, 1e-12, 250, seed + 1), "%s", lab);

    double *dl2 = xmalloc(n * 8);
    memcpy(dl2, dl, n * 8);
    loss_bwd_d(&c, dl2);
    int acc = 1;
    for (size_t i = 0; i < n; i++) acc &= fabs(dl2[i] - 2 * dl[i]) <= 1e-13 * (1e-6 + fabs(dl[i]));
    EXPECT(acc, "%s: backward accumulates", name);

    float *lf = test_to_float(c.logits, n), *dlf = xcalloc(n, 4), *dlw = test_to_float(dl, n);
    double lf_loss = loss_fwd_f(&c, lf), ld_loss = loss_fwd_d(&c);
    loss_bwd_f(&c, dlf, lf);
    EXPECT(fabs(lf_loss - ld_loss) <= 1e-6 * fabs(ld_loss) && tensor_close("f32 dlogits", dlf, dlw, n, 1e-5, 1e-12),
           "%s: float matches double (loss %.9g vs %.9g)", name, lf_loss, ld_loss);
    free(lf); free(dlf); free(dlw); free(dl); free(dl2); free(c.logits); free(labels);
}

static dice_cfg_t dcfg(int bg, int sq, double snr, double sdr)
{
    return (dice_cfg_t){ .include_background = bg, .squared_pred = sq, .smooth_nr = snr, .smooth_dr = sdr };
}

// Ignored voxels are as if absent: one image (N = 1) with a third of its voxels LABEL_IGNORE gives
// the loss of the same image with those voxels cut out, the same gradient at the others and none
// at them; a wholly ignored batch gives cross-entropy 0 and no gradient.
static void loss_ignore(const char *name, loss_kind_t kind, int K, dice_cfg_t cfg, unsigned long long seed)
{
    regions_t reg = brats_regions();
    rng_t r = rng_seed(seed);
    const size_t S = 90;
    uint8_t *labels = rand_labels(&r, 1, S, kind == L_DICE_SIGMOID ? 5 : K, -1, 0.35);
    loss_t c = { .kind = kind, .N = 1, .K = K, .S = S, .cfg = cfg, .reg = &reg, .lab = labels, .scale = 0.7 };
    c.logits = test_uniform(&r, (size_t)K * S, -2, 2);
    size_t m = 0;
    for (size_t v = 0; v < S; v++) m += labels[v] != LABEL_IGNORE;
    uint8_t *lab_cut = xmalloc(m);
    loss_t cut = c;
    cut.S = m;
    cut.lab = lab_cut;
    cut.logits = xmalloc((size_t)K * m * 8);
    for (size_t v = 0, j = 0; v < S; v++) {
        if (labels[v] == LABEL_IGNORE) continue;
        lab_cut[j] = labels[v];
        for (int k = 0; k < K; k++) cut.logits[(size_t)k * m + j] = c.logits[(size_t)k * S + v];
        j++;
    }
    double *dl = xcalloc((size_t)K * S, 8), *dl_cut = xcalloc((size_t)K * m, 8);
    loss_bwd_d(&c, dl);
    loss_bwd_d(&cut, dl_cut);
    double l = loss_fwd_d(&c), l_cut = loss_fwd_d(&cut);
    int same = 1, zero = 1;
    for (size_t v = 0, j = 0; v < S; v++) {
        const int kept = labels[v] != LABEL_IGNORE;
        for (int k = 0; k < K; k++) {
            if (!kept) zero &= dl[(size_t)k * S + v] == 0;
            else same &= fabs(dl[(size_t)k * S + v] - dl_cut[(size_t)k * m + j]) <= 1e-14;
        }
        j += kept;
    }
    EXPECT(m > 30 && m < 80 && fabs(l - l_cut) <= 1e-14 && same && zero,
           "%s: %zu of %zu voxels ignored: loss %.17g, cut out %.17g; same gradient %d, none at ignored %d", name,
           S - m, S, l, l_cut, same, zero);
    memset(labels, LABEL_IGNORE, S);
    memset(dl, 0, (size_t)K * S * 8);
    loss_bwd_d(&c, dl);
    int none = 1;
    for (size_t i = 0; i < (size_t)K * S; i++) none &= dl[i] == 0;
    double all = loss_fwd_d(&c);
    EXPECT(none && isfinite(all) && (kind != L_CE || all == 0), "%s: all ignored: loss %g, no gradient %d", name, all, none);
    free(labels); free(lab_cut); free(c.logits); free(cut.logits); free(dl); free(dl_cut);
}

static void loss_known(void)
{
    const double s = 1e-5;
    // K = 2, S = 3, zero logits (p = 0.5), labels {0, 0, 1}:
    //   class 0: I = 1,   P = 1.5, G = 2;  class 1: I = 0.5, P = 1.5, G = 1
    double z[6] = { 0, 0, 0, 0, 0, 0 };
    uint8_t l3[3] = { 0, 0, 1 };
    double t0 = 1 - (2 + s) / (3.5 + s), t1 = 1 - (1 + s) / (2.5 + s);
    double with_bg = dice_softmax_forward_cpu_f64(z, l3, 1, 2, 3, dcfg(1, 0, s, s));
    double no_bg = dice_softmax_forward_cpu_f64(z, l3, 1, 2, 3, dcfg(0, 0, s, s));
    double sq = dice_softmax_forward_cpu_f64(z, l3, 1, 2, 3, dcfg(1, 1, s, s));   // P = 0.75
    double sq_want = 0.5 * ((1 - (2 + s) / (2.75 + s)) + (1 - (1 + s) / (1.75 + s)));
    EXPECT(fabs(with_bg - 0.5 * (t0 + t1)) < 1e-15 && fabs(no_bg - t1) < 1e-15 && fabs(sq - sq_want) < 1e-15,
           "softmax Dice by hand: %.17g %.17g %.17g", with_bg, no_bg, sq);
    double ce = cross_entropy_forward_cpu_f64(z, l3, 1, 2, 3);
    EXPECT(fabs(ce - log(2.0)) < 1e-15, "CE of uniform prediction is log K: %.17g", ce);

    // sigmoid Dice, zero logits (p = 0.5), labels {0, 1, 2, 4}:
    //   WT g = 0111: I = 1.5, P = 2, G = 3;  TC g = 0101: I = 1, G = 2;  ET g = 0001: I = 0.5, G = 1
    regions_t reg = brats_regions();
    double z4[12] = { 0 };
    uint8_t l4[4] = { 0, 1, 2, 4 };
    double sg = dice_sigmoid_forward_cpu_f64(z4, l4, 1, 4, &reg, dcfg(1, 0, s, s));
    double sg_want = ((1 - (3 + s) / (5 + s)) + (1 - (2 + s) / (4 + s)) + (1 - (1 + s) / (3 + s))) / 3;
    EXPECT(fabs(sg - sg_want) < 1e-15, "sigmoid Dice by hand: %.17g want %.17g", sg, sg_want);

    // perfect and wrong predictions: every class present in every image
    const int N = 2, K = 4;
    const size_t S = 40;
    uint8_t lab[80], labr[80];
    for (int i = 0; i < 80; i++) { lab[i] = (uint8_t)(i % K); labr[i] = (uint8_t)((i * 7 + i / 3) % 5); }
    double *good = xmalloc(N * K * S * 8), *bad = xmalloc(N * K * S * 8);
    for (int n = 0; n < N; n++) for (int k = 0; k < K; k++) for (size_t v = 0; v < S; v++) {
        good[((size_t)n * K + k) * S + v] = lab[n * S + v] == k ? 30 : 0;
        bad[((size_t)n * K + k) * S + v] = lab[n * S + v] == (k + 1) % K ? 30 : 0;
    }
    double dg = dice_softmax_forward_cpu_f64(good, lab, N, K, S, dcfg(1, 0, s, s));
    double db = dice_softmax_forward_cpu_f64(bad, lab, N, K, S, dcfg(1, 0, s, s));
    double cg = cross_entropy_forward_cpu_f64(good, lab, N, K, S);
    EXPECT(dg >= 0 && dg < 1e-9 && db > 1 - 1e-6 && cg < 1e-11, "perfect Dice %.3g, wrong Dice %.9g, perfect CE %.3g", dg, db, cg);
    double *sgood = xmalloc(N * 3 * S * 8);
    for (int n = 0; n < N; n++) for (int q = 0; q < 3; q++) for (size_t v = 0; v < S; v++)
        sgood[((size_t)n * 3 + q) * S + v] = reg.member[q][labr[n * S + v]] ? 30 : -30;
    double sgd = dice_sigmoid_forward_cpu_f64(sgood, labr, N, S, &reg, dcfg(1, 0, s, s));
    EXPECT(sgd >= 0 && sgd < 1e-9, "perfect sigmoid Dice %.3g", sgd);
    free(good); free(bad); free(sgood);
}

// PyTorch 1.13 F.cross_entropy (mean) on logits (2, 4, 5, 7, 3) = 3 sin(0.37 i + 0.1),
// labels (i*7 + i/5) % 4 over the 210 voxels, float64: loss and probe(dlogits, 0.07).
static void ce_torch(void)
{
    const int N = 2, K = 4;
    const size_t S = 105, n = (size_t)N * K * S;
    double *lg = xmalloc(n * 8), *dl = xcalloc(n, 8);
    uint8_t lab[210];
    for (size_t i = 0; i < n; i++) lg[i] = 3 * sin(0.37 * i + 0.1);
    for (int i = 0; i < 210; i++) lab[i] = (uint8_t)((i * 7 + i / 5) % 4);
    double l = cross_entropy_forward_cpu_f64(lg, lab, N, K, S);
    cross_entropy_backward_cpu_f64(dl, lg, lab, N, K, S, 1.0);
    double p = probe(dl, n, 0.07);
    EXPECT(fabs(l - 2.797929240310287) < 1e-13 && fabs(p - -0.013086739680950355) < 1e-14,
           "cross-entropy matches PyTorch: %.15g %.15g", l, p);
    free(lg); free(dl);
}

// Loss sums run over fixed voxel blocks: same bits for 1 and 2 threads.
static void loss_threads(void)
{
    const int N = 2, K = 5;
    const size_t S = 10000;
    rng_t r = rng_seed(41);
    float *lg = xmalloc((size_t)N * K * S * 4);
    rng_fill_uniform(&r, lg, (size_t)N * K * S, -3, 3);
    uint8_t *lab = rand_labels(&r, N, S, K, -1, 0);
    double v[2][2];
    int keep = omp_get_max_threads();
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t + 1);
        v[t][0] = dice_softmax_forward_cpu(lg, lab, N, K, S, dcfg(1, 0, 1e-5, 1e-5));
        v[t][1] = cross_entropy_forward_cpu(lg, lab, N, K, S);
    }
    omp_set_num_threads(keep);
    EXPECT(v[0][0] == v[1][0] && v[0][1] == v[1][1], "loss values independent of the thread count");
    free(lg); free(lab);
}

// ----------------------------------------------------------------------------
// Adam

static void adam_known(void)
{
    // All settings exactly representable in float, so the float config equals torch's doubles.
    const adam_cfg_t base = { .lr = 0.125f, .beta1 = 0.875f, .beta2 = 0.9990234375f,
                              .eps = 0x1p-20f, .weight_decay = 0 };
    const double p0[4] = { 1.0, -0.5, 2.0, 0.0 };
    const double g1[4] = { 0.5, 0.1, -1.0, 0.0 }, g2[4] = { -0.25, 0.3, 0.5, 1e-3 };

    // by hand, step 1: m = (1-b1) g, v = (1-b2) g^2, so p -= lr * g / (|g| + eps)
    // step 2: m, v mix in the new g; bias corrections 1 - b^2
    {
        double p[4], m[4] = { 0 }, v[4] = { 0 }, hp[4];
        memcpy(p, p0, sizeof p);
        adam_update_cpu_f64(p, m, v, g1, 4, base, 1);
        int ok = 1;
        for (int i = 0; i < 4; i++) {
            hp[i] = p0[i] - 0.125 * g1[i] / (fabs(g1[i]) + 0x1p-20);
            ok &= fabs(p[i] - hp[i]) <= 1e-15;
        }
        EXPECT(ok, "Adam step 1 by hand: %.17g want %.17g", p[0], hp[0]);
        adam_update_cpu_f64(p, m, v, g2, 4, base, 2);
        ok = 1;
        for (int i = 0; i < 4; i++) {
            double mm = 0.875 * 0.125 * g1[i] + 0.125 * g2[i];
            double vv = 0.9990234375 * 0x1p-10 * g1[i] * g1[i] + 0x1p-10 * g2[i] * g2[i];
            double bc1 = 1 - 0.875 * 0.875, bc2 = 1 - 0.9990234375 * 0.9990234375;
            double want = hp[i] - 0.125 / bc1 * mm / (sqrt(vv) / sqrt(bc2) + 0x1p-20);
            ok &= fabs(p[i] - want) <= 1e-15 && fabs(m[i] - mm) <= 1e-17 && fabs(v[i] - vv) <= 1e-18;
        }
        EXPECT(ok, "Adam step 2 with bias correction by hand: %.17g", p[0]);
    }

    // torch.optim.Adam / AdamW, lr 0.125, betas (0.875, 0.9990234375), eps 2^-20, float64,
    // parameters after the two steps above (printed with repr)
    struct { int decoupled; float wd; double want[4]; } t[] = {
        { 0, 0, { 0.8433729026078921, -0.7405059253225674, 2.1566272547590755, -0.09413096020112836 } },
        { 0, 0.0625f, { 0.8279849396340204, -0.7371615864475922, 2.136596495066341, -0.09413096020112836 } },
        { 1, 0.0625f, { 0.8287854984015005, -0.7317473897138294, 2.124522763502897, -0.09413096020112836 } },
    };
    for (int k = 0; k < 3; k++) {
        adam_cfg_t c = base;
        c.decoupled = t[k].decoupled;
        c.weight_decay = t[k].wd;
        double p[4], m[4] = { 0 }, v[4] = { 0 };
        float pf[4], mf[4] = { 0 }, vf[4] = { 0 }, gf1[4], gf2[4], want_f[4];
        memcpy(p, p0, sizeof p);
        for (int i = 0; i < 4; i++) { pf[i] = (float)p0[i]; gf1[i] = (float)g1[i]; gf2[i] = (float)g2[i]; }
        adam_update_cpu_f64(p, m, v, g1, 4, c, 1);
        adam_update_cpu_f64(p, m, v, g2, 4, c, 2);
        adam_update_cpu(pf, mf, vf, gf1, 4, c, 1);
        adam_update_cpu(pf, mf, vf, gf2, 4, c, 2);
        for (int i = 0; i < 4; i++) want_f[i] = (float)t[k].want[i];
        EXPECT(tensor_close_d("adam vs torch", p, t[k].want, 4, 1e-14, 0) &&
               tensor_close("adam f32 vs torch", pf, want_f, 4, 1e-6, 0),
               "%s wd %g matches torch after 2 steps", t[k].decoupled ? "AdamW" : "Adam", t[k].wd);
    }
}

int main(void)
{
    up_case(2, 2, 3, 1, 5, 1);
    up_case(1, 3, 2, 3, 4, 2);
    up_known();
    up_torch();
    padcrop_known();
    padcrop_case();

    const double s = 1e-5;
    loss_case("dice softmax bg", L_DICE_SOFTMAX, 2, 4, 5 * 7 * 3, dcfg(1, 0, s, s), 50, 0);
    loss_case("dice softmax no-bg", L_DICE_SOFTMAX, 2, 4, 5 * 7 * 3, dcfg(0, 0, s, s), 51, 0);
    loss_case("dice softmax squared smooth1", L_DICE_SOFTMAX, 1, 3, 3 * 5 * 2, dcfg(1, 1, 1, 1), 52, 0);
    loss_case("dice softmax 3 blocks", L_DICE_SOFTMAX, 1, 3, 9001, dcfg(0, 0, s, s), 53, 0);
    loss_case("dice softmax K2", L_DICE_SOFTMAX, 2, 2, 7 * 3, dcfg(1, 0, s, s), 54, 0);
    loss_case("cross entropy", L_CE, 2, 4, 5 * 7 * 3, dcfg(1, 0, s, s), 55, 0);
    loss_case("cross entropy 3 blocks", L_CE, 1, 3, 9001, dcfg(1, 0, s, s), 56, 0);
    loss_case("dice sigmoid WT/TC/ET", L_DICE_SIGMOID, 2, 3, 5 * 7 * 3, dcfg(1, 0, s, s), 57, 0);
    loss_case("dice sigmoid squared 3 blocks", L_DICE_SIGMOID, 1, 3, 9001, dcfg(1, 1, s, s), 58, 0);
    loss_case("dice softmax no-bg, ignored voxels", L_DICE_SOFTMAX, 2, 4, 5 * 7 * 3, dcfg(0, 0, s, s), 59, 0.3);
    loss_case("cross entropy, ignored voxels", L_CE, 2, 4, 5 * 7 * 3, dcfg(1, 0, s, s), 60, 0.3);
    loss_case("dice sigmoid, ignored voxels", L_DICE_SIGMOID, 2, 3, 5 * 7 * 3, dcfg(1, 0, s, s), 61, 0.3);
    loss_ignore("dice softmax bg", L_DICE_SOFTMAX, 4, dcfg(1, 0, s, s), 62);
    loss_ignore("dice softmax no-bg squared", L_DICE_SOFTMAX, 3, dcfg(0, 1, s, s), 63);
    loss_ignore("cross entropy", L_CE, 4, dcfg(1, 0, s, s), 64);
    loss_ignore("dice sigmoid", L_DICE_SIGMOID, 3, dcfg(1, 0, s, s), 65);
    loss_known();
    ce_torch();
    loss_threads();

    adam_known();
    return test_summary();
}
