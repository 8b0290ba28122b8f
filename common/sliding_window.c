/*
sliding_window.c -- MONAI-style sliding-window inference (see sliding_window.h for the rules).
Padding is virtual: windows are cut from the zero-padded volume by index arithmetic, and only
the voxels inside the original volume are accumulated, which equals MONAI's pad -> accumulate ->
divide -> crop because accumulation and division are per voxel.
*/
#include "sliding_window.h"
#include "check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void sw_cfg_default(sw_cfg_t *c)
{
    c->roi[0] = c->roi[1] = c->roi[2] = 96;
    c->overlap = 0.5;
    c->blend = SW_BLEND_GAUSSIAN;
    c->sigma_scale = 0.125;
    c->batch = 1;
    c->mirror = 0;
}

void sw_importance_map(float *w, const int roi[3], sw_blend_t blend, double sigma_scale)
{
    size_t n = (size_t)roi[0] * roi[1] * roi[2];
    if (blend == SW_BLEND_CONSTANT) {
        for (size_t i = 0; i < n; i++) w[i] = 1.0f;
        return;
    }
    // MONAI compute_importance_map: per axis exp(-x^2 / (2 sigma^2)) at x = -(r-1)/2 .. (r-1)/2
    // in float32, outer product, then clamp below at max(min value, 1e-3).
    float *g[3];
    for (int a = 0; a < 3; a++) {
        g[a] = xmalloc(sizeof(float) * roi[a]);
        float sig = (float)(roi[a] * sigma_scale);
        for (int i = 0; i < roi[a]; i++) {
            float x = -(roi[a] - 1) / 2.0f + (float)i;
            g[a][i] = expf(x * x / (-2.0f * sig * sig));
        }
    }
    float mn = INFINITY;
    for (int i = 0; i < roi[0]; i++)
        for (int j = 0; j < roi[1]; j++) {
            float gij = g[0][i] * g[1][j];
            float *row = w + ((size_t)i * roi[1] + j) * roi[2];
            for (int k = 0; k < roi[2]; k++) {
                row[k] = gij * g[2][k];
                if (row[k] < mn) mn = row[k];
            }
        }
    float floor_w = mn > 1e-3f ? mn : 1e-3f;
    for (size_t i = 0; i < n; i++)
        if (w[i] < floor_w) w[i] = floor_w;
    for (int a = 0; a < 3; a++) free(g[a]);
}

int sw_axis_starts(int size, int roi, double overlap, int *starts)
{
    ASSERT(size >= roi && roi > 0);
    int interval = roi;
    if (size != roi) {
        interval = (int)(roi * (1.0 - overlap));
        if (interval < 1) interval = 1;
    }
    // the first k with k*interval + roi >= size ends the scan (MONAI dense_patch_slices)
    int n = 0;
    for (;; n++) {
        int s = n * interval;
        if (s + roi > size) s = size - roi;
        if (starts) starts[n] = s;
        if (n * interval + roi >= size) break;
    }
    return n + 1;
}

// Threads pay off only on windows of at least 32^3 voxels (tests use tiny ones).
#define SW_OMP_MIN 32768

// Geometry shared by the copy and accumulate loops of one run.
typedef struct {
    int dim[3], roi[3], pad_lo[3];
    int n[3];                   // windows per axis
    int *starts[3];             // window starts in padded coordinates
} sw_grid_t;

// Start (padded coordinates) of window t; windows run with the last axis fastest.
static void window_start(const sw_grid_t *g, int t, int st[3])
{
    st[2] = g->starts[2][t % g->n[2]];
    st[1] = g->starts[1][(t / g->n[2]) % g->n[1]];
    st[0] = g->starts[0][t / (g->n[2] * g->n[1])];
}

// Copy window t of x (C, dim) into xw (C, roi), zero where it falls into the padding.
static void cut_window(float *xw, const float *x, int C, const sw_grid_t *g, const int s[3])
{
    const int *r = g->roi, *dim = g->dim;
    size_t vol = (size_t)dim[0] * dim[1] * dim[2], wvol = (size_t)r[0] * r[1] * r[2];
    for (int c = 0; c < C; c++) {
        #pragma omp parallel for schedule(static) if (wvol >= SW_OMP_MIN)
        for (int i = 0; i < r[0]; i++) {
            int si = s[0] + i - g->pad_lo[0];
            for (int j = 0; j < r[1]; j++) {
                int sj = s[1] + j - g->pad_lo[1];
                float *dst = xw + c * wvol + ((size_t)i * r[1] + j) * r[2];
                if (si < 0 || si >= dim[0] || sj < 0 || sj >= dim[1]) {
                    memset(dst, 0, sizeof(float) * r[2]);
                    continue;
                }
                const float *src = x + c * vol + ((size_t)si * dim[1] + sj) * dim[2];
                for (int k = 0; k < r[2]; k++) {
                    int sk = s[2] + k - g->pad_lo[2];
                    dst[k] = (sk >= 0 && sk < dim[2]) ? src[sk] : 0.0f;
                }
            }
        }
    }
}

// y (K, dim) += w * yw (K, roi) and acc (dim) += w over the window's voxels inside the volume.
static void add_window(float *y, float *acc, const float *yw, const float *w, int K,
                       const sw_grid_t *g, const int s[3])
{
    const int *r = g->roi, *dim = g->dim;
    size_t vol = (size_t)dim[0] * dim[1] * dim[2], wvol = (size_t)r[0] * r[1] * r[2];
    #pragma omp parallel for schedule(static) if (wvol >= SW_OMP_MIN)
    for (int i = 0; i < r[0]; i++) {
        int si = s[0] + i - g->pad_lo[0];
        if (si < 0 || si >= dim[0]) continue;
        for (int j = 0; j < r[1]; j++) {
            int sj = s[1] + j - g->pad_lo[1];
            if (sj < 0 || sj >= dim[1]) continue;
            size_t wo = ((size_t)i * r[1] + j) * r[2], vo = ((size_t)si * dim[1] + sj) * dim[2];
            for (int k = 0; k < r[2]; k++) {
                int sk = s[2] + k - g->pad_lo[2];
                if (sk < 0 || sk >= dim[2]) continue;
                float wk = w[wo + k];
                acc[vo + sk] += wk;
                for (int c = 0; c < K; c++) y[c * vol + vo + sk] += wk * yw[c * wvol + wo + k];
            }
        }
    }
}

// dst = src (nvol volumes of extent r) reversed along the axes of mask (bit a: axis a). Its own
// inverse.
static void flip_windows(float *dst, const float *src, size_t nvol, const int r[3], int mask)
{
    size_t wvol = (size_t)r[0] * r[1] * r[2];
    #pragma omp parallel for schedule(static) if (wvol >= SW_OMP_MIN)
    for (size_t v = 0; v < nvol * r[0]; v++) {
        int i = (int)(v % r[0]), fi = mask & 1 ? r[0] - 1 - i : i;
        const float *s = src + v / r[0] * wvol;
        float *d = dst + v / r[0] * wvol;
        for (int j = 0; j < r[1]; j++) {
            int fj = mask & 2 ? r[1] - 1 - j : j;
            const float *srow = s + ((size_t)i * r[1] + j) * r[2];
            float *drow = d + ((size_t)fi * r[1] + fj) * r[2];
            if (mask & 4) for (int k = 0; k < r[2]; k++) drow[r[2] - 1 - k] = srow[k];
            else memcpy(drow, srow, sizeof(float) * r[2]);
        }
    }
}

// yb (n, K, roi) = the mean of net over xb and its 7 mirrorings, each output flipped back; the
// order of nnU-Net's sum: the plain output, then axes (0), (1), (2), (0,1), (0,2), (1,2), (0,1,2).
static int net_mirrored(float *yb, float *xb, int n, int C, int K, const int roi[3], float *xf, float *yf,
                        sw_net_fn net, void *ctx, char *err)
{
    static const int masks[7] = { 1, 2, 4, 3, 5, 6, 7 };
    size_t wvol = (size_t)roi[0] * roi[1] * roi[2], ny = (size_t)n * K * wvol;
    if (net(ctx, yb, xb, n, err)) return -1;
    for (int m = 0; m < 7; m++) {
        flip_windows(xf, xb, (size_t)n * C, roi, masks[m]);
        if (net(ctx, yf, xf, n, err)) return -1;
        flip_windows(xf, yf, (size_t)n * K, roi, masks[m]);     // xf holds max(C, K) channels
        for (size_t i = 0; i < ny; i++) yb[i] += xf[i];
    }
    for (size_t i = 0; i < ny; i++) yb[i] /= 8.0f;
    return 0;
}

int sw_infer(float *y, int K, const float *x, int C, const int dim[3], const sw_cfg_t *cfg,
             sw_net_fn net, void *ctx, char *err)
{
    if (K < 1 || C < 1 || cfg->batch < 1 || !(cfg->overlap >= 0 && cfg->overlap < 1) ||
        !(cfg->sigma_scale > 0))
        return set_err(err, "sliding window: bad settings (K %d, C %d, batch %d, overlap %g, sigma %g)",
                       K, C, cfg->batch, cfg->overlap, cfg->sigma_scale);
    sw_grid_t g;
    int total = 1;
    for (int a = 0; a < 3; a++) {
        if (dim[a] < 1 || cfg->roi[a] < 1) return set_err(err, "sliding window: empty volume or window");
        g.dim[a] = dim[a];
        g.roi[a] = cfg->roi[a];
        int pad = cfg->roi[a] > dim[a] ? cfg->roi[a] - dim[a] : 0;
        g.pad_lo[a] = pad / 2;
        int size = dim[a] + pad;
        g.n[a] = sw_axis_starts(size, g.roi[a], cfg->overlap, NULL);
        g.starts[a] = xmalloc(sizeof(int) * g.n[a]);
        sw_axis_starts(size, g.roi[a], cfg->overlap, g.starts[a]);
        total *= g.n[a];
    }
    size_t vol = (size_t)dim[0] * dim[1] * dim[2], wvol = (size_t)g.roi[0] * g.roi[1] * g.roi[2];
    float *w = xmalloc(sizeof(float) * wvol);
    sw_importance_map(w, g.roi, cfg->blend, cfg->sigma_scale);
    float *acc = xcalloc(vol, sizeof(float));
    float *xb = xmalloc(sizeof(float) * wvol * C * cfg->batch);
    float *yb = xmalloc(sizeof(float) * wvol * K * cfg->batch);
    // mirroring: a flipped input and an output, and the output flipped back (in the first)
    float *xf = cfg->mirror ? xmalloc(sizeof(float) * wvol * (C > K ? C : K) * cfg->batch) : NULL;
    float *yf = cfg->mirror ? xmalloc(sizeof(float) * wvol * K * cfg->batch) : NULL;
    memset(y, 0, sizeof(float) * vol * K);
    int rc = 0;
    for (int t0 = 0; t0 < total && rc == 0; t0 += cfg->batch) {
        int nb = total - t0 < cfg->batch ? total - t0 : cfg->batch;
        for (int b = 0; b < nb; b++) {
            int st[3];
            window_start(&g, t0 + b, st);
            cut_window(xb + (size_t)b * C * wvol, x, C, &g, st);
        }
        if (cfg->mirror ? net_mirrored(yb, xb, nb, C, K, g.roi, xf, yf, net, ctx, err) : net(ctx, yb, xb, nb, err)) {
            rc = -1;
            break;
        }
        for (int b = 0; b < nb; b++) {
            int st[3];
            window_start(&g, t0 + b, st);
            add_window(y, acc, yb + (size_t)b * K * wvol, w, K, &g, st);
        }
    }
    if (rc == 0) {
        #pragma omp parallel for schedule(static) if (vol >= SW_OMP_MIN)
        for (size_t i = 0; i < vol; i++) {
            // every voxel is covered by at least one window, and every weight is >= 1e-3
            for (int c = 0; c < K; c++) y[c * vol + i] /= acc[i];
        }
    }
    free(xb); free(yb); free(xf); free(yf); free(acc); free(w);
    for (int a = 0; a < 3; a++) free(g.starts[a]);
    return rc;
}

void sw_argmax(unsigned char *labels, const float *logits, int K, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int best = 0;
        float bv = logits[i];
        for (int c = 1; c < K; c++)
            if (logits[c * n + i] > bv) { bv = logits[c * n + i]; best = c; }
        labels[i] = (unsigned char)best;
    }
}

void sw_threshold(unsigned char *masks, const float *logits, int R, size_t n)
{
    for (size_t i = 0; i < (size_t)R * n; i++) masks[i] = logits[i] > 0.0f;
}
