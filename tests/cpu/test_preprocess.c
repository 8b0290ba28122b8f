/*
test_preprocess.c -- preprocessing steps and their inverse.

Bars: trilinear resampling of a linear ramp is exact wherever the sample lies inside the source
grid; a label map resampled to half its spacing and back keeps every label (per-label Dice >=
0.99; synthetic and the real BTCV ct_small label map); normalisation statistics; the foreground
of a BraTS case is "different from the minimum", not "nonzero"; bounding boxes; the whole
pipeline on an LPS volume and its inverse returns a label map on the source grid, and a float map
that is a function of world position comes back as the same function (the affines are exact);
the settings JSON that travels with a model's weights reads back as the settings written, bit
for bit, and a damaged one is refused naming the field.
*/
#include "test.h"
#include "preprocess.h"
#include "cli.h"
#include "check.h"
#include "rng.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *data_root(void)
{
    return access("../shared/data/brats2013-6/dataset.json", R_OK) == 0 ? "../shared/data" : "/work/shared/data";
}

static size_t nvox(const int d[3]) { return (size_t)d[0] * d[1] * d[2]; }

// Dice of label l between a and b (n voxels); -1 when l is absent from both.
static double dice(const uint8_t *a, const uint8_t *b, size_t n, int l)
{
    size_t inter = 0, sa = 0, sb = 0;
    for (size_t i = 0; i < n; i++) {
        sa += a[i] == l; sb += b[i] == l; inter += a[i] == l && b[i] == l;
    }
    return sa + sb ? 2.0 * inter / (double)(sa + sb) : -1;
}

static double min_dice(const uint8_t *a, const uint8_t *b, size_t n, int *nlab)
{
    double worst = 1;
    *nlab = 0;
    for (int l = 1; l < 256; l++) {
        double d = dice(a, b, n, l);
        if (d < 0) continue;
        (*nlab)++;
        if (d < worst) worst = d;
    }
    return worst;
}

// ---- resampling ----------------------------------------------------------------------------

static void test_ramp(void)
{
    const int in[3] = {7, 9, 11};
    const int outs[3][3] = {{14, 18, 22}, {4, 5, 6}, {10, 5, 16}};
    size_t n = nvox(in);
    float *x = xmalloc(n * sizeof(float));
    for (int a = 0; a < in[0]; a++)
        for (int b = 0; b < in[1]; b++)
            for (int c = 0; c < in[2]; c++) x[((size_t)a * in[1] + b) * in[2] + c] = 2.0f * a + 3.0f * b - 1.5f * c + 5;
    for (int t = 0; t < 3; t++) {
        const int *od = outs[t];
        float *y = xmalloc(nvox(od) * sizeof(float));
        preprocess_resample_linear(y, od, x, 1, in, -1);
        double worst = 0;
        size_t checked = 0;
        for (int a = 0; a < od[0]; a++)
            for (int b = 0; b < od[1]; b++)
                for (int c = 0; c < od[2]; c++) {
                    double s[3] = {(a + 0.5) * in[0] / od[0] - 0.5, (b + 0.5) * in[1] / od[1] - 0.5, (c + 0.5) * in[2] / od[2] - 0.5};
                    int inside = 1;
                    for (int d = 0; d < 3; d++) inside &= s[d] >= 0 && s[d] <= in[d] - 1;
                    if (!inside) continue;
                    double want = 2 * s[0] + 3 * s[1] - 1.5 * s[2] + 5;
                    worst = fmax(worst, fabs(y[((size_t)a * od[1] + b) * od[2] + c] - want));
                    checked++;
                }
        EXPECT(worst < 1e-4 && checked > nvox(od) / 3, "ramp %dx%dx%d: worst %.3g over %zu voxels", od[0], od[1], od[2], worst, checked);
        free(y);
    }
    // Same size: identity, including the borders.
    float *y = xmalloc(n * sizeof(float));
    preprocess_resample_linear(y, in, x, 1, in, -1);
    EXPECT(memcmp(x, y, n * sizeof(float)) == 0, "same grid is the identity");
    free(y); free(x);
    EXPECT(preprocess_out_extent(122, 3.0, 1.5) == 244 && preprocess_out_extent(30, 3.0, 2.0) == 45 &&
           preprocess_out_extent(155, 1.0, 0) == 155 && preprocess_out_extent(3, 1.0, 100) == 1, "round(n*s/t)");
}

// The label resampler's rule spelled out the slow way, as nnU-Net's resize_segmentation does
// it: each label present, in ascending order, as a 0/1 float map through the trilinear resampler,
// written where it reaches 0.5.
static void labels_one_by_one(uint8_t *y, const int od[3], const uint8_t *x, const int d[3])
{
    float *m = xmalloc(nvox(d) * sizeof(float)), *r = xmalloc(nvox(od) * sizeof(float));
    memset(y, 0, nvox(od));
    for (int v = 0; v < 256; v++) {
        size_t hits = 0;
        for (size_t i = 0; i < nvox(d); i++) hits += (m[i] = x[i] == v) != 0;
        if (!hits) continue;
        preprocess_resample_linear(r, od, m, 1, d, -1);
        for (size_t i = 0; i < nvox(od); i++) if (r[i] >= 0.5f) y[i] = (uint8_t)v;
    }
    free(m); free(r);
}

// Round trip: label map to half its spacing and back; each way checked against the rule.
static double half_roundtrip(const uint8_t *l, const int d[3], int *nlab)
{
    int up[3] = {preprocess_out_extent(d[0], 1, 0.5), preprocess_out_extent(d[1], 1, 0.5), preprocess_out_extent(d[2], 1, 0.5)};
    uint8_t *u = xmalloc(nvox(up)), *back = xmalloc(nvox(d)), *ref = xmalloc(nvox(up));
    preprocess_resample_labels(u, up, l, d, -1);
    labels_one_by_one(ref, up, l, d);
    size_t diff = 0;
    for (size_t i = 0; i < nvox(up); i++) diff += u[i] != ref[i];
    preprocess_resample_labels(back, d, u, up, -1);
    labels_one_by_one(ref, d, u, up);
    for (size_t i = 0; i < nvox(d); i++) diff += back[i] != ref[i];
    EXPECT(diff == 0, "label resampler vs each label's 0/1 map: %zu voxels differ", diff);
    free(ref);
    double w = min_dice(l, back, nvox(d), nlab);
    free(u); free(back);
    return w;
}

// nnU-Net's separate z: which axis (the single coarsest, over 3x the finest, of the source grid,
// else of the target), and along it nearest neighbour -- slices 4 mm apart are copied, never
// blended -- while in-plane stays linear; labels the same way.
static void test_separate_z(void)
{
    const double iso[3] = {1, 1, 1}, thick[3] = {1, 1, 4}, fine[3] = {0.5, 0.5, 2.5}, two[3] = {1, 4, 4};
    EXPECT(preprocess_separate_axis(thick, iso) == 2 && preprocess_separate_axis(iso, fine) == 2 &&
           preprocess_separate_axis(iso, iso) == -1 && preprocess_separate_axis(two, iso) == -1 &&
           preprocess_separate_axis(iso, two) == -1, "separate axis: source first, then target; none on a tie");
    const int d[3] = {6, 5, 4}, od[3] = {12, 10, 8};
    float *x = xmalloc(nvox(d) * sizeof(float)), *y = xmalloc(nvox(od) * sizeof(float));
    for (int a = 0; a < d[0]; a++)
        for (int b = 0; b < d[1]; b++)
            for (int k = 0; k < d[2]; k++) x[((size_t)a * d[1] + b) * d[2] + k] = (float)(100 * k + a);
    preprocess_resample_linear(y, od, x, 1, d, 2);
    int bad = 0;
    for (int a = 0; a < od[0]; a++)
        for (int b = 0; b < od[1]; b++)
            for (int k = 0; k < od[2]; k++) {
                float v = y[((size_t)a * od[1] + b) * od[2] + k];
                double sa = fmin(fmax((a + 0.5) * d[0] / od[0] - 0.5, 0), d[0] - 1);       // linear in-plane
                int sk = (int)floor((k + 0.5) * d[2] / od[2] - 0.5 + 0.5);                   // nearest slice
                sk = sk < 0 ? 0 : sk > d[2] - 1 ? d[2] - 1 : sk;
                bad += fabs(v - (100 * sk + sa)) > 1e-4;
            }
    EXPECT(bad == 0, "separate z: slices copied from the nearest, in-plane linear (%d voxels off)", bad);
    uint8_t *l = xmalloc(nvox(d)), *lo = xmalloc(nvox(od));
    for (size_t i = 0; i < nvox(d); i++) l[i] = (uint8_t)(i % d[2] == 1);      // slice k = 1 only
    preprocess_resample_labels(lo, od, l, d, 2);
    size_t on_slice = 0, off = 0;
    for (size_t i = 0; i < nvox(od); i++) {
        int k = (int)(i % od[2]);
        on_slice += lo[i] && (k == 2 || k == 3);
        off += lo[i] && k != 2 && k != 3;
    }
    EXPECT(on_slice == 2 * (size_t)od[0] * od[1] && off == 0, "a one-slice label becomes exactly its two output slices "
           "(%zu on, %zu off)", on_slice, off);
    free(x); free(y); free(l); free(lo);
}

static void test_label_roundtrip(void)
{
    const int d[3] = {23, 20, 17};
    uint8_t *l = xcalloc(nvox(d), 1);
    rng_t r = rng_seed(7);
    for (int s = 0; s < 12; s++) {     // random balls of labels 1..6
        double cx = rng_uniform(&r) * d[0], cy = rng_uniform(&r) * d[1], cz = rng_uniform(&r) * d[2];
        double rad = 1 + 4 * rng_uniform(&r);
        for (int a = 0; a < d[0]; a++)
            for (int b = 0; b < d[1]; b++)
                for (int c = 0; c < d[2]; c++)
                    if ((a - cx) * (a - cx) + (b - cy) * (b - cy) + (c - cz) * (c - cz) <= rad * rad)
                        l[((size_t)a * d[1] + b) * d[2] + c] = (uint8_t)(1 + s % 6);
    }
    int nl;
    double w = half_roundtrip(l, d, &nl);
    EXPECT(w >= 0.99 && nl == 6, "synthetic half-spacing round trip: min Dice %.4f over %d labels", w, nl);
    printf("ok   synthetic labels: half spacing and back, min per-label Dice %.4f (%d labels)\n", w, nl);
    free(l);

    char path[1024], err[ERR_LEN];
    snprintf(path, sizeof path, "%s/abdomen-ct-btcv13/labelsTr/ct_small.nii.gz", data_root());
    volume_t v;
    int rc = nifti_read_volume(path, &v, err);
    EXPECT(rc == 0, "read %s: %s", path, err);
    if (rc) return;
    uint8_t *rl = xmalloc(volume_voxels(&v));
    for (size_t i = 0; i < volume_voxels(&v); i++) rl[i] = (uint8_t)v.data[i];
    w = half_roundtrip(rl, v.dim, &nl);
    EXPECT(w >= 0.99 && nl >= 10, "ct_small labels: min Dice %.4f over %d labels", w, nl);
    printf("ok   ct_small labels (3 mm -> 1.5 mm -> 3 mm): min per-label Dice %.4f (%d labels)\n", w, nl);
    free(rl);
    volume_free(&v);
}

// ---- normalisation, foreground, crop --------------------------------------------------------

// A one-channel volume of d0 x d1 x d2 voxels, its data allocated (not set).
static volume_t one_channel(int d0, int d1, int d2)
{
    volume_t v;
    memset(&v, 0, sizeof v);
    v.C = 1; v.dim[0] = d0; v.dim[1] = d1; v.dim[2] = d2;
    v.data = xmalloc(volume_voxels(&v) * sizeof(float));
    return v;
}

static void test_normalize(void)
{
    volume_t v = one_channel(4, 5, 6);
    size_t n = volume_voxels(&v);
    uint8_t *mask = xmalloc(n);
    rng_t r = rng_seed(3);
    for (size_t i = 0; i < n; i++) { mask[i] = i % 3 != 0; v.data[i] = mask[i] ? (float)(100 + 20 * rng_normal(&r)) : -7; }
    char err[ERR_LEN];
    EXPECT(preprocess_normalize_mr(&v, 0, mask, MR_NORM_ZSCORE_FG, 0, err) == 0, "mr zscore: %s", err);
    double s = 0, sq = 0, out = 0;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (mask[i]) { s += v.data[i]; sq += v.data[i] * v.data[i]; m++; }
        else out += fabs(v.data[i]);
    }
    EXPECT(fabs(s / m) < 1e-5 && fabs(sq / m - 1) < 1e-4 && out == 0, "fg mean %.2g var %.6f outside %.2g", s / m, sq / m, out);
    for (size_t i = 0; i < n; i++) v.data[i] = (float)i;
    EXPECT(preprocess_normalize_mr(&v, 0, mask, MR_NORM_ZSCORE_ALL, 0, err) == 0, "whole-volume zscore");
    s = sq = 0;
    for (size_t i = 0; i < n; i++) { s += v.data[i]; sq += v.data[i] * v.data[i]; }
    EXPECT(fabs(s / n) < 1e-5 && fabs(sq / n - 1) < 1e-4, "whole mean %.2g var %.6f", s / n, sq / n);
    for (size_t i = 0; i < n; i++) v.data[i] = 3;
    EXPECT(preprocess_normalize_mr(&v, 0, NULL, MR_NORM_ZSCORE_ALL, 0, err) < 0 && strstr(err, "constant"), "constant channel rejected");
    // segmenting a scan (constant_ok): set to 0, as MONAI's NormalizeIntensity, and said (1)
    int all0 = 1;
    EXPECT(preprocess_normalize_mr(&v, 0, NULL, MR_NORM_ZSCORE_ALL, 1, err) == 1, "constant channel with constant_ok: 1");
    for (size_t i = 0; i < volume_voxels(&v); i++) all0 &= v.data[i] == 0.0f;
    EXPECT(all0, "constant channel with constant_ok: every voxel 0");

    preprocess_cfg_t cfg;
    preprocess_cfg_default(&cfg);
    float hu[5] = {-1000, -175, 37.5f, 250, 3000};
    memcpy(v.data, hu, sizeof hu);
    EXPECT(preprocess_normalize_ct(&v, 0, &cfg, err) == 0, "ct window");
    EXPECT(v.data[0] == 0 && v.data[1] == 0 && fabsf(v.data[2] - 0.5f) < 1e-6 && v.data[3] == 1 && v.data[4] == 1,
           "window [-175, 250] -> [0, 1]: %g %g %g %g %g", v.data[0], v.data[1], v.data[2], v.data[3], v.data[4]);
    cfg.ct_norm = CT_NORM_ZSCORE; cfg.ct_mean = 50; cfg.ct_std = 25;
    memcpy(v.data, hu, sizeof hu);
    preprocess_normalize_ct(&v, 0, &cfg, err);
    EXPECT(fabsf(v.data[0] + 9) < 1e-5 && fabsf(v.data[2] + 0.5f) < 1e-5 && fabsf(v.data[4] - 8) < 1e-5, "ct zscore after clip");
    // nnU-Net channel names -> schemes (case-insensitive; anything else is a z-score), and the schemes
    EXPECT(modality_of_name("ct") == MODALITY_CT && modality_of_name("noNorm") == MODALITY_NONORM &&
           modality_of_name("rescale_to_0_1") == MODALITY_RESCALE01 && modality_of_name("RGB_to_0_1") == MODALITY_RGB01 &&
           modality_of_name("zscore") == MODALITY_MR && modality_of_name("FLAIR") == MODALITY_MR, "channel names");
    float raw[5] = {-20, 0, 30, 80, 180};
    memcpy(v.data, raw, sizeof raw);
    for (size_t i = 5; i < n; i++) v.data[i] = 30;
    EXPECT(preprocess_normalize_range(&v, 0, MODALITY_NONORM, err) == 0 && !memcmp(v.data, raw, sizeof raw), "noNorm keeps values");
    EXPECT(preprocess_normalize_range(&v, 0, MODALITY_RESCALE01, err) == 0 && v.data[0] == 0 && v.data[4] == 1 &&
           fabsf(v.data[2] - 0.25f) < 1e-6, "rescale_to_0_1: %g %g %g", v.data[0], v.data[2], v.data[4]);
    EXPECT(preprocess_normalize_range(&v, 0, MODALITY_RGB01, err) == 0 && fabsf(v.data[4] - 1.0f / 255) < 1e-9,
           "rgb_to_0_1 divides by 255: %g", v.data[4]);
    memcpy(v.data, raw, sizeof raw);
    EXPECT(preprocess_normalize_range(&v, 0, MODALITY_RGB01, err) < 0 && strstr(err, "[0, 255]"), "rgb_to_0_1 refuses -20: %s", err);
    // --norm ct-z:MEAN,STD clips nothing (it once kept the default [-175, 250] window);
    // ct-z:MEAN,STD,LO,HI clips to LO, HI (nnU-Net's percentiles)
    int force = -1;
    preprocess_cfg_default(&cfg);
    EXPECT(cli_norm("ct-z:50,25", &cfg, &force, err) == 0 && force == MODALITY_CT, "ct-z:50,25: %s", err);
    memcpy(v.data, hu, sizeof hu);
    preprocess_normalize_ct(&v, 0, &cfg, err);
    EXPECT(fabsf(v.data[0] + 42) < 1e-5 && fabsf(v.data[4] - 118) < 1e-5, "ct-z without a window: %g %g", v.data[0], v.data[4]);
    EXPECT(cli_norm("ct-z:50,25,-100,300", &cfg, &force, err) == 0, "ct-z with a window: %s", err);
    memcpy(v.data, hu, sizeof hu);
    preprocess_normalize_ct(&v, 0, &cfg, err);
    EXPECT(fabsf(v.data[0] + 6) < 1e-5 && fabsf(v.data[4] - 10) < 1e-5, "ct-z with a window: %g %g", v.data[0], v.data[4]);
    EXPECT(cli_norm("ct-z:50,25,300", &cfg, &force, err) < 0 && cli_norm("ct-z:50,25,9,1", &cfg, &force, err) < 0 &&
           cli_norm("ct-z:50,0", &cfg, &force, err) < 0, "bad ct-z values refused");
    free(v.data); free(mask);
}

static void test_bbox(void)
{
    const int d[3] = {10, 12, 9};
    uint8_t *m = xcalloc(nvox(d), 1);
    m[((size_t)2 * d[1] + 3) * d[2] + 4] = 1;
    m[((size_t)6 * d[1] + 10) * d[2] + 8] = 1;
    int lo[3], sz[3];
    const int zero[3] = {0, 0, 0}, mg[3] = {1, 2, 3};
    EXPECT(preprocess_foreground_bbox(m, d, zero, lo, sz) == 0 && lo[0] == 2 && lo[1] == 3 && lo[2] == 4 &&
           sz[0] == 5 && sz[1] == 8 && sz[2] == 5, "bbox %d,%d,%d + %d,%d,%d", lo[0], lo[1], lo[2], sz[0], sz[1], sz[2]);
    EXPECT(preprocess_foreground_bbox(m, d, mg, lo, sz) == 0 && lo[0] == 1 && lo[1] == 1 && lo[2] == 1 &&
           sz[0] == 7 && sz[1] == 11 && sz[2] == 8, "margin clamps to the volume");
    memset(m, 0, nvox(d));
    EXPECT(preprocess_foreground_bbox(m, d, zero, lo, sz) < 0, "empty mask has no box");
    free(m);
}

// The mask is a body, as nnU-Net's (scipy binary_fill_holes): background enclosed by foreground
// is filled, background 6-connected to the border is not. Two hollow cubes of 8^3 (value 1,
// background -2, the channel's minimum) with 6^3 cavities: A's cavity is closed (its shell's
// corner voxel (8,8,8) is background, but touches the cavity only diagonally); B's has a
// one-voxel tunnel through its face to the outside.
static void test_fill_holes(void)
{
    volume_t v = one_channel(10, 10, 20);
    size_t n = volume_voxels(&v);
#define AT(i, j, k) v.data[((size_t)(i) * 10 + (j)) * 20 + (k)]
    for (size_t p = 0; p < n; p++) v.data[p] = -2;
    for (int cube = 0; cube < 2; cube++)
        for (int i = 1; i <= 8; i++)
            for (int j = 1; j <= 8; j++)
                for (int k = 1; k <= 8; k++) {
                    int shell = i == 1 || i == 8 || j == 1 || j == 8 || k == 1 || k == 8;
                    AT(i, j, k + 9 * cube) = shell ? 1 : -2;
                }
    AT(8, 8, 8) = -2;               // A: background reached from outside, diagonal to the cavity
    AT(4, 4, 17) = -2;              // B: the tunnel from its cavity through the face k = 17
    modality_t mod = MODALITY_MR;
    preprocess_cfg_t cfg;
    preprocess_cfg_default(&cfg);
    uint8_t *mask = xmalloc(n);
    size_t fg = preprocess_foreground_mask(mask, &v, &mod, &cfg);
    EXPECT(fg == 511 + 295, "foreground %zu voxels, want A 512 - 1 + B 512 - 216 - 1 = 806", fg);
    EXPECT(mask[(4 * 10 + 4) * 20 + 4] && mask[(7 * 10 + 7) * 20 + 7], "A's closed cavity is filled");
    EXPECT(!mask[(8 * 10 + 8) * 20 + 8], "A's corner voxel, open to the outside, stays background");
    EXPECT(!mask[(4 * 10 + 4) * 20 + 13] && !mask[(4 * 10 + 4) * 20 + 17], "B's cavity and tunnel stay background");
#undef AT
    free(mask);
    free(v.data);
}

static void test_brats_foreground(void)
{
    char root[1024], err[ERR_LEN];
    snprintf(root, sizeof root, "%s/brats2013-6", data_root());
    dataset_t ds;
    if (dataset_open(root, &ds, err) < 0) { EXPECT(0, "%s", err); return; }
    case_t c;
    int rc = dataset_load_case(&ds, dataset_find(&ds, "BRATS_pat0006"), &c, err);
    EXPECT(rc == 0, "load brats: %s", err);
    if (rc) { dataset_free(&ds); return; }
    size_t n = volume_voxels(&c.image), nonzero = 0, fg;
    preprocess_cfg_t cfg;
    preprocess_cfg_default(&cfg);
    uint8_t *mask = xmalloc(n);
    fg = preprocess_foreground_mask(mask, &c.image, c.modality, &cfg);
    float mn = c.image.data[0];
    for (size_t i = 0; i < n; i++) { nonzero += c.image.data[i] != 0; if (c.image.data[i] < mn) mn = c.image.data[i]; }
    int lo[3], sz[3];
    rc = preprocess_foreground_bbox(mask, c.image.dim, cfg.margin, lo, sz);
    printf("ok   brats pat0006: min %.3f, foreground %.1f%%, nonzero %.1f%%, box %dx%dx%d\n", mn,
           100.0 * fg / n, 100.0 * nonzero / n, sz[0], sz[1], sz[2]);
    EXPECT(mn < -1 && fg > n / 20 && fg < n / 3 && nonzero > n * 9 / 10, "background is the minimum, not zero");
    EXPECT(rc == 0 && sz[0] < 200 && sz[1] < 220 && sz[2] < 155, "crop box smaller than the volume");
    int inside = 1;         // every label voxel lies in the body mask's box
    for (int a = 0; a < c.image.dim[0]; a++)
        for (int b = 0; b < c.image.dim[1]; b++)
            for (int k = 0; k < c.image.dim[2]; k++)
                if (c.label[((size_t)a * c.image.dim[1] + b) * c.image.dim[2] + k] &&
                    (a < lo[0] || a >= lo[0] + sz[0] || b < lo[1] || b >= lo[1] + sz[1] || k < lo[2] || k >= lo[2] + sz[2])) inside = 0;
    EXPECT(inside, "tumour labels inside the foreground box");
    cfg.fg_mode = FG_THRESHOLD; cfg.fg_threshold = 1e9;
    EXPECT(preprocess_foreground_mask(mask, &c.image, c.modality, &cfg) == 0, "override: threshold above everything");
    free(mask);
    case_free(&c);
    dataset_free(&ds);
}

// ---- the whole pipeline and its inverse ------------------------------------------------------

static double world_fn(const double a[4][4], double i, double j, double k)
{
    double x = a[0][0] * i + a[0][1] * j + a[0][2] * k + a[0][3];
    double y = a[1][0] * i + a[1][1] * j + a[1][2] * k + a[1][3];
    double z = a[2][0] * i + a[2][1] * j + a[2][2] * k + a[2][3];
    return 0.5 * x - 0.25 * y + 0.125 * z + 3;
}

static void test_pipeline_inverse(void)
{
    case_t c;
    memset(&c, 0, sizeof c);
    snprintf(c.id, sizeof c.id, "lps");
    volume_t *v = &c.image;
    v->C = 1; v->dim[0] = 20; v->dim[1] = 16; v->dim[2] = 12;
    double sp[3] = {2, 1.5, 3};
    v->affine[0][0] = -sp[0]; v->affine[1][1] = -sp[1]; v->affine[2][2] = sp[2];   // LPS
    v->affine[0][3] = 40; v->affine[1][3] = 20; v->affine[2][3] = -10; v->affine[3][3] = 1;
    for (int d = 0; d < 3; d++) v->spacing[d] = sp[d];
    size_t n = volume_voxels(v);
    v->data = xmalloc(n * sizeof(float));
    c.label = xcalloc(n, 1);
    rng_t r = rng_seed(11);
    for (int a = 0; a < 20; a++)
        for (int b = 0; b < 16; b++)
            for (int k = 0; k < 12; k++) {
                size_t i = ((size_t)a * 16 + b) * 12 + k;
                int body = a >= 3 && a < 17 && b >= 2 && b < 13 && k >= 1 && k < 10;
                v->data[i] = body ? (float)(200 + 30 * rng_normal(&r)) : 0;
                if (body && a >= 5 && a < 12 && b >= 4 && b < 9) c.label[i] = (uint8_t)(1 + (k > 5));
            }
    c.modality[0] = MODALITY_MR;
    uint8_t *src_label = xmalloc(n);
    memcpy(src_label, c.label, n);
    double src_aff[4][4];
    memcpy(src_aff, v->affine, sizeof src_aff);

    preprocess_cfg_t cfg;
    preprocess_cfg_default(&cfg);
    cfg.target_spacing[0] = 1; cfg.target_spacing[1] = 0.75; cfg.target_spacing[2] = 1.5;
    preprocess_record_t rec;
    char err[ERR_LEN];
    int rc = preprocess_case(&c, &cfg, &rec, err);
    EXPECT(rc == 0, "preprocess: %s", err);
    if (rc) return;
    EXPECT(rec.reoriented && v->affine[0][0] > 0 && v->affine[1][1] > 0 && v->affine[2][2] > 0, "RAS after preprocessing");
    EXPECT(rec.crop_dim[0] == 14 && rec.crop_dim[1] == 11 && rec.crop_dim[2] == 9, "cropped to the body %dx%dx%d",
           rec.crop_dim[0], rec.crop_dim[1], rec.crop_dim[2]);
    EXPECT(v->dim[0] == 28 && v->dim[1] == 22 && v->dim[2] == 18 && fabs(v->spacing[1] - 0.75) < 1e-12, "half spacing %dx%dx%d",
           v->dim[0], v->dim[1], v->dim[2]);

    uint8_t *back = xmalloc(n);
    rc = preprocess_invert_labels(back, c.label, &rec, err);
    EXPECT(rc == 0 && memcmp(back, src_label, n) == 0, "labels back on the source grid exactly: %s", rc ? err : "");
    // A float map that is a function of world position must come back as the same function.
    size_t on = volume_voxels(v);
    float *pred = xmalloc(2 * on * sizeof(float)), *fb = xmalloc(2 * n * sizeof(float));
    for (int a = 0; a < v->dim[0]; a++)
        for (int b = 0; b < v->dim[1]; b++)
            for (int k = 0; k < v->dim[2]; k++) {
                size_t i = ((size_t)a * v->dim[1] + b) * v->dim[2] + k;
                pred[i] = (float)world_fn(v->affine, a, b, k);
                pred[on + i] = 1;
            }
    float fill[2] = {-100, 0};
    rc = preprocess_invert_float(fb, pred, 2, fill, &rec, err);
    EXPECT(rc == 0, "invert float: %s", err);
    double worst = 0;
    int fill_ok = 1;
    for (int a = 0; a < 20; a++)
        for (int b = 0; b < 16; b++)
            for (int k = 0; k < 12; k++) {
                size_t i = ((size_t)a * 16 + b) * 12 + k;
                int box = a >= 3 && a < 17 && b >= 2 && b < 13 && k >= 1 && k < 10;   // the body
                if (box) worst = fmax(worst, fabs(fb[i] - world_fn(src_aff, a, b, k)));
                else fill_ok &= fb[i] == -100 && fb[n + i] == 0;
            }
    printf("ok   float map of world position after inverse: worst error %.2e\n", worst);
    EXPECT(worst < 1e-3, "float inverse keeps world positions: worst %.3g", worst);
    EXPECT(fill_ok, "outside the crop: fill values");
    free(pred); free(fb); free(back); free(src_label);
    case_free(&c);

    // A constant MR image and an all-air CT have no body: "blank image", not a crash; segmenting
    // a scan (blank_ok) takes it whole, its MR channel set to 0.
    for (int m = 0; m < 4; m++) {
        case_t e;
        memset(&e, 0, sizeof e);
        snprintf(e.id, sizeof e.id, "blank");
        e.image.C = 1; e.image.dim[0] = 5; e.image.dim[1] = 4; e.image.dim[2] = 3;
        for (int d = 0; d < 4; d++) e.image.affine[d][d] = 1;
        e.image.data = xmalloc(60 * sizeof(float));
        for (int i = 0; i < 60; i++) e.image.data[i] = m % 2 ? -1000.0f + (float)(i % 5) : 17.0f;
        e.modality[0] = m % 2 ? MODALITY_CT : MODALITY_MR;
        preprocess_cfg_t bc = cfg;
        bc.blank_ok = m >= 2;
        rc = preprocess_case(&e, &bc, &rec, err);
        if (m < 2)
            EXPECT(rc < 0 && strstr(err, "blank: blank image: no foreground"), "blank image (%s): %s", m % 2 ? "CT" : "MR", err);
        else
            EXPECT(rc == 0 && rec.crop_dim[0] * rec.crop_dim[1] * rec.crop_dim[2] == 60 && (m % 2 || e.image.data[7] == 0.0f),
                   "blank image with blank_ok (%s): taken whole: %s", m % 2 ? "CT" : "MR", rc ? err : "");
        case_free(&e);
    }
}

static void test_real_ct(void)
{
    char root[1024], err[ERR_LEN];
    snprintf(root, sizeof root, "%s/abdomen-ct-btcv13", data_root());
    dataset_t ds;
    if (dataset_open(root, &ds, err) < 0) { EXPECT(0, "%s", err); return; }
    case_t c;
    int rc = dataset_load_case(&ds, dataset_find(&ds, "ct_small"), &c, err);
    EXPECT(rc == 0, "load ct_small: %s", err);
    if (rc) { dataset_free(&ds); return; }
    int sd[3];
    memcpy(sd, c.image.dim, sizeof sd);
    size_t sn = volume_voxels(&c.image);
    uint8_t *src = xmalloc(sn), *back = xmalloc(sn);
    memcpy(src, c.label, sn);
    preprocess_cfg_t cfg;
    preprocess_cfg_default(&cfg);
    cfg.target_spacing[0] = cfg.target_spacing[1] = 1.5; cfg.target_spacing[2] = 2.0;   // MONAI BTCV
    preprocess_record_t rec;
    rc = preprocess_case(&c, &cfg, &rec, err);
    EXPECT(rc == 0, "preprocess ct_small: %s", err);
    if (rc == 0) {
        float lo = 1e9f, hi = -1e9f;
        for (size_t i = 0; i < (size_t)c.image.C * volume_voxels(&c.image); i++) { lo = fminf(lo, c.image.data[i]); hi = fmaxf(hi, c.image.data[i]); }
        printf("ok   ct_small %dx%dx%d -> crop %dx%dx%d -> %dx%dx%d, intensities [%g, %g]\n", sd[0], sd[1], sd[2],
               rec.crop_dim[0], rec.crop_dim[1], rec.crop_dim[2], rec.out_dim[0], rec.out_dim[1], rec.out_dim[2], lo, hi);
        EXPECT(lo >= 0 && hi <= 1 && rec.out_dim[0] == 2 * rec.crop_dim[0] && rec.out_dim[2] == (int)lround(rec.crop_dim[2] * 1.5),
               "window-scaled and resampled");
        rc = preprocess_invert_labels(back, c.label, &rec, err);
        int nl;
        double w = rc == 0 ? min_dice(src, back, sn, &nl) : 0;
        EXPECT(rc == 0 && w >= 0.99, "ct_small labels through the pipeline and back: min Dice %.4f (%s)", w, rc ? err : "");
    }
    free(src); free(back);
    case_free(&c);
    dataset_free(&ds);
}

static void test_settings(void)
{
    preprocess_cfg_t c, r;
    preprocess_cfg_default(&c);
    c.target_spacing[0] = 0.7999999999999999; c.target_spacing[1] = 1.5; c.target_spacing[2] = 0;
    c.fg_mode = FG_THRESHOLD; c.fg_threshold = -123.25; c.crop = 0;
    c.margin[0] = 1; c.margin[1] = 2; c.margin[2] = 3;
    c.ct_norm = CT_NORM_ZSCORE; c.ct_lo = -1000; c.ct_hi = 1e-3; c.ct_mean = 40.1; c.ct_std = 1.0 / 3;
    c.ct_b_min = -1; c.ct_b_max = 1; c.mr_norm = MR_NORM_ZSCORE_ALL; c.reorient = 0;
    const modality_t mod[3] = { MODALITY_CT, MODALITY_MR, MODALITY_CT };
    modality_t got[CASE_MAX_CHANNELS];
    int C = 0;
    char err[ERR_LEN];
    char *text = preprocess_settings_json(&c, mod, 3);
    EXPECT(preprocess_settings_parse(text, &r, got, &C, err) == 0, "parse: %s (%s)", err, text);
    r.allow_f16 = c.allow_f16;                  // not part of the settings (a cache detail)
    EXPECT(preprocess_cfg_hash(&r) == preprocess_cfg_hash(&c) && !memcmp(r.target_spacing, c.target_spacing, sizeof c.target_spacing) &&
           r.ct_std == c.ct_std && r.fg_threshold == c.fg_threshold, "settings read back bit for bit: %s", text);
    EXPECT(C == 3 && got[0] == MODALITY_CT && got[1] == MODALITY_MR && got[2] == MODALITY_CT, "modalities: %d", C);
    free(text);
    // nnU-Net's other channel schemes survive the settings (the evaluator applies them as trained)
    const modality_t mod2[4] = { MODALITY_NONORM, MODALITY_RESCALE01, MODALITY_RGB01, MODALITY_MR };
    text = preprocess_settings_json(&c, mod2, 4);
    EXPECT(preprocess_settings_parse(text, &r, got, &C, err) == 0 && C == 4 && !memcmp(got, mod2, sizeof mod2),
           "nnU-Net schemes read back: %s (%s)", err, text);
    free(text);
    static const struct { const char *text, *field; } bad[] = {
        { "{", "not JSON" },
        { "{\"version\":2}", "version" },
        { "{\"version\":1,\"modality\":[\"PET\"],\"reorient\":1,\"spacing\":[0,0,0],"
          "\"foreground\":{\"mode\":\"auto\",\"threshold\":-500},\"crop\":1,\"margin\":[0,0,0],"
          "\"ct\":{\"norm\":\"window\",\"window\":[-175,250],\"range\":[0,1],\"zscore\":[0,1]},"
          "\"mr\":{\"norm\":\"zscore-fg\"}}", "modality" },
        { "{\"version\":1,\"modality\":[\"MR\"],\"reorient\":1,\"spacing\":[1,1],"
          "\"foreground\":{\"mode\":\"auto\",\"threshold\":-500},\"crop\":1,\"margin\":[0,0,0],"
          "\"ct\":{\"norm\":\"window\",\"window\":[-175,250],\"range\":[0,1],\"zscore\":[0,1]},"
          "\"mr\":{\"norm\":\"zscore-fg\"}}", "spacing" },
        { "{\"version\":1,\"modality\":[\"MR\"],\"reorient\":1,\"spacing\":[1,1,1],"
          "\"foreground\":{\"mode\":\"auto\",\"threshold\":-500},\"crop\":1,\"margin\":[0,0,0],"
          "\"ct\":{\"norm\":\"window\",\"window\":[250,-175],\"range\":[0,1],\"zscore\":[0,1]},"
          "\"mr\":{\"norm\":\"zscore-fg\"}}", "ct" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        EXPECT(preprocess_settings_parse(bad[i].text, &r, got, &C, err) == -1 && strstr(err, bad[i].field),
               "damaged settings %zu refused naming '%s': %s", i, bad[i].field, err);
}

int main(void)
{
    test_settings();
    test_ramp();
    test_label_roundtrip();
    test_separate_z();
    test_normalize();
    test_bbox();
    test_fill_holes();
    test_pipeline_inverse();
    test_brats_foreground();
    test_real_ct();
    return test_summary();
}
