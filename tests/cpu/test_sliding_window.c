/*
test_sliding_window.c -- model-free checks of common/sliding_window.c against MONAI's rules:
an identity "network" gives back its input for every overlap, blend, batch and for volumes
smaller than / not multiples of the window; the Gaussian importance map follows MONAI's
formula (float32 1-D Gaussians, outer product, clamp at max(min, 1e-3)); window starts equal
MONAI's dense_patch_slices; batching windows changes nothing (bit-identical); a failing network
is reported; test-time mirroring (nnU-Net's) equals the mean of 8 plain runs whose network
flips its input and flips its output back, flipped here by plain index arithmetic.
*/
#include "sliding_window.h"
#include "rng.h"
#include "test.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct { int C, K, roi[3], calls; int fail_at; } net_ctx_t;

// y = x (C == K).
static int identity_net(void *p, float *y, const float *x, int n, char *err)
{
    net_ctx_t *c = p;
    (void)err;
    c->calls++;
    memcpy(y, x, sizeof(float) * n * c->C * c->roi[0] * c->roi[1] * c->roi[2]);
    return 0;
}

// A nonlinear net whose output depends on where the window was cut, and on its orientation
// along every axis, not separably: channel k of each voxel is tanh of (k + 1) * x plus the next
// voxel along W, H and D inside the window (0 at the window's end) weighted 0.5, 0.3 and 0.2.
static int mixing_net(void *p, float *y, const float *x, int n, char *err)
{
    net_ctx_t *c = p;
    if (c->fail_at >= 0 && c->calls == c->fail_at) { c->calls++; snprintf(err, 512, "net failed on purpose"); return -1; }
    c->calls++;
    int W = c->roi[2], H = c->roi[1], D = c->roi[0];
    size_t wv = (size_t)D * H * W;
    for (int b = 0; b < n; b++)
        for (int k = 0; k < c->K; k++)
            for (size_t i = 0; i < wv; i++) {
                const float *xb = x + (size_t)b * c->C * wv;
                float nw = (i % W) + 1 < (size_t)W ? xb[i + 1] : 0.0f;
                float nh = (i / W % H) + 1 < (size_t)H ? xb[i + W] : 0.0f;
                float nd = (i / W / H) + 1 < (size_t)D ? xb[i + (size_t)W * H] : 0.0f;
                y[((size_t)b * c->K + k) * wv + i] = tanhf((k + 1) * xb[i] + 0.5f * nw + 0.3f * nh + 0.2f * nd);
            }
    return 0;
}

static float *random_volume(int C, const int dim[3], uint64_t seed)
{
    size_t n = (size_t)C * dim[0] * dim[1] * dim[2];
    float *x = malloc(sizeof(float) * n);
    rng_t r = rng_seed(seed);
    for (size_t i = 0; i < n; i++) x[i] = (float)rng_normal(&r);
    return x;
}

static void test_identity(void)
{
    const int dims[][3] = { {40, 37, 23}, {16, 16, 16}, {10, 33, 17}, {50, 12, 70}, {5, 6, 7} };
    const int rois[][3] = { {16, 16, 16}, {32, 16, 16} };
    const double overlaps[] = { 0.0, 0.25, 0.5, 0.75 };
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
        for (size_t r = 0; r < 2; r++)
            for (size_t o = 0; o < 4; o++)
                for (int blend = 0; blend < 2; blend++) {
                    int C = 2, batch = (int)(1 + (d + o) % 3);
                    sw_cfg_t cfg;
                    sw_cfg_default(&cfg);
                    memcpy(cfg.roi, rois[r], sizeof cfg.roi);
                    cfg.overlap = overlaps[o];
                    cfg.blend = blend ? SW_BLEND_GAUSSIAN : SW_BLEND_CONSTANT;
                    cfg.batch = batch;
                    float *x = random_volume(C, dims[d], 100 + d);
                    size_t n = (size_t)C * dims[d][0] * dims[d][1] * dims[d][2];
                    float *y = malloc(sizeof(float) * n);
                    net_ctx_t ctx = { C, C, { rois[r][0], rois[r][1], rois[r][2] }, 0, -1 };
                    char err[512] = "";
                    int rc = sw_infer(y, C, x, C, dims[d], &cfg, identity_net, &ctx, err);
                    double worst = 0;
                    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)y[i] - x[i]));
                    EXPECT(rc == 0 && worst <= 2e-6 * 4,
                           "identity dims %dx%dx%d roi %dx%dx%d overlap %g blend %d batch %d: rc %d max err %g (%s)",
                           dims[d][0], dims[d][1], dims[d][2], rois[r][0], rois[r][1], rois[r][2],
                           overlaps[o], blend, batch, rc, worst, err);
                    free(x); free(y);
                }
}

static void test_gaussian_map(void)
{
    // MONAI: x = arange(-(r-1)/2, (r-1)/2 + 1); g = exp(x^2 / (-2 sigma^2)), sigma = 0.125 r.
    const int rois[][3] = { {16, 16, 16}, {32, 24, 8}, {7, 9, 5} };
    const double scales[] = { 0.125, 1.0 };
    for (size_t r = 0; r < 3; r++)
        for (size_t s = 0; s < 2; s++) {
            const int *roi = rois[r];
            size_t n = (size_t)roi[0] * roi[1] * roi[2];
            float *w = malloc(sizeof(float) * n);
            double *ref = malloc(sizeof(double) * n), mn = INFINITY;
            sw_importance_map(w, roi, SW_BLEND_GAUSSIAN, scales[s]);
            for (int i = 0; i < roi[0]; i++)
                for (int j = 0; j < roi[1]; j++)
                    for (int k = 0; k < roi[2]; k++) {
                        double v = 1;
                        int idx[3] = { i, j, k };
                        for (int a = 0; a < 3; a++) {
                            double x = idx[a] - (roi[a] - 1) / 2.0, sig = scales[s] * roi[a];
                            v *= exp(-x * x / (2 * sig * sig));
                        }
                        ref[((size_t)i * roi[1] + j) * roi[2] + k] = v;
                        mn = fmin(mn, v);
                    }
            double fl = fmax(mn, 1e-3), worst = 0;
            for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(w[i] - fmax(ref[i], fl)) / fmax(ref[i], fl));
            EXPECT(worst < 1e-5, "gaussian map roi %dx%dx%d scale %g: worst relative error %g",
                   roi[0], roi[1], roi[2], scales[s], worst);
            free(w); free(ref);
        }
    // Hand values: roi 16, sigma 2: voxel 7 (x = -0.5) -> exp(-1/32) per axis; corner clamped to 1e-3.
    int roi[3] = { 16, 16, 16 };
    float *w = malloc(sizeof(float) * 4096);
    sw_importance_map(w, roi, SW_BLEND_GAUSSIAN, 0.125);
    double centre = exp(-3.0 / 32);
    EXPECT(fabs(w[(7 * 16 + 7) * 16 + 7] - centre) < 1e-6, "centre weight %g, want %g", w[(7 * 16 + 7) * 16 + 7], centre);
    EXPECT(w[0] == 1e-3f, "corner weight %g, want 1e-3 (clamped)", w[0]);
    sw_importance_map(w, roi, SW_BLEND_CONSTANT, 0.125);
    int ones = 1;
    for (int i = 0; i < 4096; i++) ones &= w[i] == 1.0f;
    EXPECT(ones, "constant map is not all ones");
    free(w);
}

static void test_starts(void)
{
    int st[64];
    int n = sw_axis_starts(100, 32, 0.5, st);
    const int want[] = { 0, 16, 32, 48, 64, 68 };
    EXPECT(n == 6 && !memcmp(st, want, sizeof want), "size 100 roi 32 overlap 0.5: %d windows, last %d", n, st[n - 1]);
    n = sw_axis_starts(32, 32, 0.5, st);
    EXPECT(n == 1 && st[0] == 0, "size == roi: %d windows", n);
    n = sw_axis_starts(17, 16, 0.75, st);
    EXPECT(n == 2 && st[0] == 0 && st[1] == 1, "size 17 roi 16 overlap 0.75: %d windows (%d, %d)", n, st[0], st[1]);
    n = sw_axis_starts(96, 32, 0.0, st);
    EXPECT(n == 3 && st[1] == 32 && st[2] == 64, "overlap 0: %d windows", n);
    n = sw_axis_starts(40, 16, 0.99, st);   // interval int(0.16) = 0 -> 1
    EXPECT(n == 25 && st[24] == 24, "interval clamps to 1: %d windows", n);
}

static void test_batching(void)
{
    int dim[3] = { 37, 29, 41 }, C = 1, K = 3;
    float *x = random_volume(C, dim, 7);
    size_t n = (size_t)K * dim[0] * dim[1] * dim[2];
    float *ref = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    sw_cfg_t cfg;
    sw_cfg_default(&cfg);
    cfg.roi[0] = cfg.roi[1] = cfg.roi[2] = 16;
    char err[512] = "";
    net_ctx_t ctx = { C, K, { 16, 16, 16 }, 0, -1 };
    int rc = sw_infer(ref, K, x, C, dim, &cfg, mixing_net, &ctx, err);
    int windows = ctx.calls;
    EXPECT(rc == 0 && windows == 4 * 3 * 5, "batch 1: rc %d, %d calls (%s)", rc, windows, err);
    const int batches[] = { 2, 5, 48, 100 };
    for (int b = 0; b < 4; b++) {
        cfg.batch = batches[b];
        ctx.calls = 0;
        rc = sw_infer(y, K, x, C, dim, &cfg, mixing_net, &ctx, err);
        EXPECT(rc == 0 && !memcmp(y, ref, sizeof(float) * n) && ctx.calls == (windows + batches[b] - 1) / batches[b],
               "batch %d: rc %d, %d calls, output %s", batches[b], rc, ctx.calls,
               memcmp(y, ref, sizeof(float) * n) ? "differs" : "identical");
    }
    // The blend matters for a net whose output depends on the window: gaussian != constant.
    cfg.batch = 1;
    cfg.blend = SW_BLEND_CONSTANT;
    ctx.calls = 0;
    rc = sw_infer(y, K, x, C, dim, &cfg, mixing_net, &ctx, err);
    EXPECT(rc == 0 && memcmp(y, ref, sizeof(float) * n), "constant and gaussian blends agree on a window-dependent net");
    // A failing network makes the run fail with its message.
    ctx.calls = 0;
    ctx.fail_at = 3;
    err[0] = 0;
    rc = sw_infer(y, K, x, C, dim, &cfg, mixing_net, &ctx, err);
    EXPECT(rc == -1 && strstr(err, "on purpose"), "failing net: rc %d err '%s'", rc, err);
    cfg.overlap = 1.0;
    EXPECT(sw_infer(y, K, x, C, dim, &cfg, mixing_net, &ctx, err) == -1, "overlap 1 accepted");
    free(x); free(ref); free(y);
}

// The mixing net seen through mirroring mask (bit a: axis a of the window): flip the input,
// run it, flip the output back.
typedef struct { net_ctx_t inner; int mask; } flip_ctx_t;

static void flip_copy(float *dst, const float *src, size_t nvol, const int r[3], int mask)
{
    for (size_t v = 0; v < nvol; v++)
        for (int i = 0; i < r[0]; i++)
            for (int j = 0; j < r[1]; j++)
                for (int k = 0; k < r[2]; k++) {
                    int fi = mask & 1 ? r[0] - 1 - i : i, fj = mask & 2 ? r[1] - 1 - j : j, fk = mask & 4 ? r[2] - 1 - k : k;
                    dst[((v * r[0] + i) * r[1] + j) * r[2] + k] = src[((v * r[0] + fi) * r[1] + fj) * r[2] + fk];
                }
}

static int flipped_net(void *p, float *y, const float *x, int n, char *err)
{
    flip_ctx_t *f = p;
    size_t wv = (size_t)f->inner.roi[0] * f->inner.roi[1] * f->inner.roi[2];
    float *xf = malloc(sizeof(float) * wv * n * f->inner.C), *yf = malloc(sizeof(float) * wv * n * f->inner.K);
    flip_copy(xf, x, (size_t)n * f->inner.C, f->inner.roi, f->mask);
    int rc = mixing_net(&f->inner, yf, xf, n, err);
    flip_copy(y, yf, (size_t)n * f->inner.K, f->inner.roi, f->mask);
    free(xf);
    free(yf);
    return rc;
}

static void test_mirroring(void)
{
    int dim[3] = { 23, 40, 19 }, C = 2, K = 3;
    float *x = random_volume(C, dim, 11);
    size_t n = (size_t)K * dim[0] * dim[1] * dim[2];
    float *y = malloc(sizeof(float) * n), *one = malloc(sizeof(float) * n), *mean = calloc(n, sizeof(float));
    sw_cfg_t cfg;
    sw_cfg_default(&cfg);
    cfg.roi[0] = 16; cfg.roi[1] = 32; cfg.roi[2] = 8;       // each axis its own extent
    cfg.batch = 2;
    char err[512] = "";
    flip_ctx_t f = { { C, K, { 16, 32, 8 }, 0, -1 }, 0 };
    int rc = 0;
    for (int m = 0; m < 8 && !rc; m++) {
        f.mask = m;
        rc = sw_infer(one, K, x, C, dim, &cfg, flipped_net, &f, err);
        for (size_t i = 0; i < n; i++) mean[i] += one[i] / 8.0f;
    }
    int plain_calls = f.inner.calls / 8;
    net_ctx_t ctx = { C, K, { 16, 32, 8 }, 0, -1 };
    cfg.mirror = 1;
    rc |= sw_infer(y, K, x, C, dim, &cfg, mixing_net, &ctx, err);
    double worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(y[i] - mean[i]));
    EXPECT(rc == 0 && worst < 1e-5 && ctx.calls == 8 * plain_calls,
           "mirrored: the mean of the 8 flipped runs (largest difference %.2g, %d calls for %d windows' batches): %s",
           worst, ctx.calls, plain_calls, err);
    // the net is not mirror-equivariant, so mirroring changes its output
    cfg.mirror = 0;
    sw_infer(one, K, x, C, dim, &cfg, mixing_net, &ctx, err);
    worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(y[i] - one[i]));
    EXPECT(worst > 1e-2, "mirroring changes a non-equivariant net's output (by %.3g)", worst);
    // an equivariant one (the identity) comes back as it was
    float *id = malloc(sizeof(float) * (size_t)C * dim[0] * dim[1] * dim[2]);
    net_ctx_t ictx = { C, C, { 16, 32, 8 }, 0, -1 };
    cfg.mirror = 1;
    rc = sw_infer(id, C, x, C, dim, &cfg, identity_net, &ictx, err);
    worst = 0;
    for (size_t i = 0; i < (size_t)C * dim[0] * dim[1] * dim[2]; i++) worst = fmax(worst, fabs(id[i] - x[i]));
    EXPECT(rc == 0 && worst < 1e-5, "mirrored identity: the input back (largest difference %.2g)", worst);
    // a network failing in a mirrored pass fails the run with its message
    ctx.calls = 0;
    ctx.fail_at = 5;
    err[0] = 0;
    EXPECT(sw_infer(y, K, x, C, dim, &cfg, mixing_net, &ctx, err) == -1 && strstr(err, "on purpose"),
           "a mirrored pass failing: reported (%s)", err);
    free(x); free(y); free(one); free(mean); free(id);
}

static void test_postprocess(void)
{
    // logits (K=3, n=4): argmax per column, ties to the lower class.
    const float lg[12] = { 1, 0, 2, 5,   2, 0, 1, 5,   0, 3, 2, -1 };
    unsigned char lab[4], masks[12];
    sw_argmax(lab, lg, 3, 4);
    EXPECT(lab[0] == 1 && lab[1] == 2 && lab[2] == 0 && lab[3] == 0, "argmax %d %d %d %d", lab[0], lab[1], lab[2], lab[3]);
    sw_threshold(masks, lg, 3, 4);
    EXPECT(masks[0] == 1 && masks[1] == 0 && masks[11] == 0 && masks[9] == 1, "sigmoid > 0.5 threshold");
}

int main(void)
{
    test_starts();
    test_gaussian_map();
    test_identity();
    test_batching();
    test_mirroring();
    test_postprocess();
    return test_summary();
}
