/*
test_sliding_window.c -- model-free checks of common/sliding_window.c against MONAI's rules:
an identity "network" gives back its input for every overlap, blend, batch and for volumes
smaller than / not multiples of the window; the Gaussian importance map follows MONAI's
formula (float32 1-D Gaussians, outer product, clamp at max(min, 1e-3)); window starts equal
MONAI's dense_patch_slices; batching windows changes nothing (bit-identical); a failing network
is reported.
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

// A nonlinear net whose output depends on where the window was cut: channel k of each voxel
// is tanh((k + 1) * x) plus the next voxel along W inside the window (0 at the window's end).
static int mixing_net(void *p, float *y, const float *x, int n, char *err)
{
    net_ctx_t *c = p;
    if (c->fail_at >= 0 && c->calls == c->fail_at) { c->calls++; snprintf(err, 512, "net failed on purpose"); return -1; }
    c->calls++;
    int W = c->roi[2];
    size_t wv = (size_t)c->roi[0] * c->roi[1] * W;
    for (int b = 0; b < n; b++)
        for (int k = 0; k < c->K; k++)
            for (size_t i = 0; i < wv; i++) {
                const float *xb = x + (size_t)b * c->C * wv;
                float nxt = (i % W) + 1 < (size_t)W ? xb[i + 1] : 0.0f;
                y[((size_t)b * c->K + k) * wv + i] = tanhf((k + 1) * xb[i]) + 0.5f * nxt;
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
    test_postprocess();
    return test_summary();
}
