/*
preprocess.c -- the preprocessing pipeline of one case (see preprocess.h for the steps and the
grid convention), its record, the settings hash the case cache keys on, and the inverse path
that puts a prediction back on the source image's grid. The steps themselves live in
preprocess_resample.c, preprocess_normalize.c and preprocess_foreground.c.
*/
#include "preprocess.h"
#include "check.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void preprocess_cfg_default(preprocess_cfg_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->reorient = 1;
    cfg->fg_mode = FG_AUTO;
    cfg->fg_threshold = -500;
    cfg->crop = 1;
    cfg->ct_norm = CT_NORM_WINDOW;
    cfg->ct_lo = -175;      // MONAI BTCV tutorial ScaleIntensityRanged(a_min=-175, a_max=250)
    cfg->ct_hi = 250;
    cfg->ct_b_min = 0;
    cfg->ct_b_max = 1;
    cfg->ct_std = 1;
    cfg->mr_norm = MR_NORM_ZSCORE_FG;
    cfg->allow_f16 = 1;
}

// "pp1" names the behaviour of the steps: bump it when a step changes its output, so that every
// cached case is rebuilt.
uint64_t preprocess_cfg_hash(const preprocess_cfg_t *c)
{
    char s[1024];
    int n = snprintf(s, sizeof s,
        "pp1 reorient=%d ts=%.17g,%.17g,%.17g fg=%d thr=%.17g crop=%d margin=%d,%d,%d ct=%d "
        "win=%.17g,%.17g b=%.17g,%.17g z=%.17g,%.17g mr=%d f16=%d",
        c->reorient, c->target_spacing[0], c->target_spacing[1], c->target_spacing[2], (int)c->fg_mode,
        c->fg_threshold, c->crop, c->margin[0], c->margin[1], c->margin[2], (int)c->ct_norm, c->ct_lo,
        c->ct_hi, c->ct_b_min, c->ct_b_max, c->ct_mean, c->ct_std, (int)c->mr_norm, c->allow_f16);
    uint64_t h = 1469598103934665603ull;      // FNV-1a 64
    for (int i = 0; i < n && i < (int)sizeof s; i++) { h ^= (uint8_t)s[i]; h *= 1099511628211ull; }
    return h;
}

// ---- step 1 ---------------------------------------------------------------------------------

static float *u8_to_f32(const uint8_t *x, size_t n)
{
    float *y = xmalloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}

int preprocess_reorient(volume_t *img, uint8_t *label, ornt_t *o, char *err)
{
    int src_dim[3];
    memcpy(src_dim, img->dim, sizeof src_dim);
    if (orient_to_ras(img, o, err) < 0) return -1;
    if (!label) return 0;
    // Labels take the same permutation/flip as the image (orient_to_ras's rule, on floats).
    size_t n = volume_voxels(img);
    float *lf = u8_to_f32(label, n), *out = xmalloc(n * sizeof(float));
    int dd[3];
    orient_permute_data(out, dd, lf, 1, src_dim, o->axis, o->flip);
    ASSERT(memcmp(dd, img->dim, sizeof dd) == 0);
    for (size_t i = 0; i < n; i++) label[i] = (uint8_t)out[i];
    free(lf); free(out);
    return 0;
}

// ---- the pipeline -----------------------------------------------------------------------------

static double col_norm(const double a[4][4], int c)
{
    return sqrt(a[0][c] * a[0][c] + a[1][c] * a[1][c] + a[2][c] * a[2][c]);
}

static int resample_case(case_t *c, const preprocess_cfg_t *cfg)
{
    int od[3];
    for (int d = 0; d < 3; d++)
        od[d] = preprocess_out_extent(c->image.dim[d], col_norm(c->image.affine, d), cfg->target_spacing[d]);
    if (memcmp(od, c->image.dim, sizeof od) == 0) return 0;     // identity mapping
    size_t on = (size_t)od[0] * od[1] * od[2];
    double from[3], to[3];
    for (int d = 0; d < 3; d++) {
        from[d] = col_norm(c->image.affine, d);
        to[d] = from[d] * c->image.dim[d] / od[d];
    }
    const int sep = preprocess_separate_axis(from, to);
    float *y = xmalloc((size_t)c->image.C * on * sizeof(float));
    preprocess_resample_linear(y, od, c->image.data, c->image.C, c->image.dim, sep);
    if (c->label) {
        uint8_t *l = xmalloc(on);
        preprocess_resample_labels(l, od, c->label, c->image.dim, sep);
        free(c->label);
        c->label = l;
    }
    preprocess_resampled_affine(c->image.affine, c->image.affine, c->image.dim, od);
    free(c->image.data);
    c->image.data = y;
    memcpy(c->image.dim, od, sizeof od);
    return 0;
}

int preprocess_case(case_t *c, const preprocess_cfg_t *cfg, preprocess_record_t *rec, char *err)
{
    preprocess_record_t r;
    memset(&r, 0, sizeof r);
    char e[ERR_LEN];
    volume_t *v = &c->image;
    memcpy(r.src_dim, v->dim, sizeof r.src_dim);
    memcpy(r.src_affine, v->affine, sizeof r.src_affine);
    if (cfg->reorient) {
        if (preprocess_reorient(v, c->label, &r.src_ornt, e) < 0) return set_err(err, "%s: %s", c->id, e);
        r.reoriented = 1;
    }
    memcpy(r.ras_dim, v->dim, sizeof r.ras_dim);
    memcpy(r.ras_affine, v->affine, sizeof r.ras_affine);

    uint8_t *mask = xmalloc(volume_voxels(v));
    if (preprocess_foreground_mask(mask, v, c->modality, cfg) == 0) {
        if (!cfg->blank_ok) {
            free(mask);
            return set_err(err, "%s: blank image: no foreground (every voxel at the minimum, or CT below the body "
                           "threshold)", c->id);
        }
        log_msg('W', "%s: blank image (no foreground): not cropped, its MR channels normalised to 0", c->id);
        memset(mask, 1, volume_voxels(v));
    }
    int lo[3] = {0, 0, 0}, size[3];
    memcpy(size, v->dim, sizeof size);
    if (cfg->crop) {
        ASSERT(preprocess_foreground_bbox(mask, v->dim, cfg->margin, lo, size) == 0);
        preprocess_crop(v, &c->label, &mask, lo, size);
    }
    memcpy(r.crop_lo, lo, sizeof lo);
    memcpy(r.crop_dim, size, sizeof size);

    for (int ch = 0; ch < v->C; ch++) {
        const modality_t m = c->modality[ch];
        int rc = m == MODALITY_CT ? preprocess_normalize_ct(v, ch, cfg, e)
               : m == MODALITY_MR ? preprocess_normalize_mr(v, ch, mask, cfg->mr_norm, cfg->blank_ok, e)
                                  : preprocess_normalize_range(v, ch, m, e);
        if (rc == 1) log_msg('W', "%s: channel %d is constant over its %s: normalised to 0", c->id, ch,
                             cfg->mr_norm == MR_NORM_ZSCORE_ALL ? "volume" : "foreground");
        if (rc < 0) { free(mask); return set_err(err, "%s: %s", c->id, e); }
    }
    free(mask);
    resample_case(c, cfg);
    memcpy(r.out_dim, v->dim, sizeof r.out_dim);
    memcpy(r.out_affine, v->affine, sizeof r.out_affine);
    for (int d = 0; d < 3; d++) v->spacing[d] = r.out_spacing[d] = col_norm(v->affine, d);
    if (rec) *rec = r;
    return 0;
}

// ---- the inverse ------------------------------------------------------------------------------

// x: (C, out_dim) -> (C, src_dim) via crop_dim and ras_dim; linear, or for floats that hold
// labels the label resampler (labels stay labels). Returns the new buffer or NULL + err.
static float *invert(const float *x, int C, int labels, const float *fill, const preprocess_record_t *r, char *err)
{
    const int *cd = r->crop_dim, *rd = r->ras_dim;
    size_t cn = (size_t)cd[0] * cd[1] * cd[2], rn = (size_t)rd[0] * rd[1] * rd[2];
    size_t on = (size_t)r->out_dim[0] * r->out_dim[1] * r->out_dim[2];
    float *crop = xmalloc((size_t)C * cn * sizeof(float));
    double from[3], to[3];                   // back from the preprocessed grid to the cropped one
    for (int d = 0; d < 3; d++) {
        from[d] = col_norm(r->out_affine, d);
        to[d] = col_norm(r->ras_affine, d);
    }
    const int sep = preprocess_separate_axis(from, to);
    if (labels) {                            // on uint8, channel by channel
        uint8_t *a = xmalloc(on), *b = xmalloc(cn);
        for (int c = 0; c < C; c++) {
            for (size_t i = 0; i < on; i++) a[i] = (uint8_t)x[(size_t)c * on + i];
            preprocess_resample_labels(b, cd, a, r->out_dim, sep);
            for (size_t i = 0; i < cn; i++) crop[(size_t)c * cn + i] = b[i];
        }
        free(a); free(b);
    } else {
        preprocess_resample_linear(crop, cd, x, C, r->out_dim, sep);
    }
    volume_t v;
    memset(&v, 0, sizeof v);
    v.C = C;
    memcpy(v.dim, rd, sizeof v.dim);
    memcpy(v.affine, r->ras_affine, sizeof v.affine);
    for (int d = 0; d < 3; d++) v.spacing[d] = col_norm(v.affine, d);
    v.data = xmalloc((size_t)C * rn * sizeof(float));
    for (int c = 0; c < C; c++) {
        float f = fill ? fill[c] : 0.0f, *dst = v.data + (size_t)c * rn;
        for (size_t i = 0; i < rn; i++) dst[i] = f;
        for (int a = 0; a < cd[0]; a++)
            for (int b = 0; b < cd[1]; b++)
                memcpy(dst + ((size_t)(a + r->crop_lo[0]) * rd[1] + b + r->crop_lo[1]) * rd[2] + r->crop_lo[2],
                       crop + (size_t)c * cn + ((size_t)a * cd[1] + b) * cd[2], (size_t)cd[2] * sizeof(float));
    }
    free(crop);
    if (r->reoriented && orient_from_ras(&v, &r->src_ornt, err) < 0) { free(v.data); return NULL; }
    if (memcmp(v.dim, r->src_dim, sizeof v.dim) != 0) {
        free(v.data);
        set_err(err, "inverse preprocessing gave %dx%dx%d, source grid is %dx%dx%d", v.dim[0], v.dim[1],
                v.dim[2], r->src_dim[0], r->src_dim[1], r->src_dim[2]);
        return NULL;
    }
    return v.data;
}

int preprocess_invert_labels(uint8_t *dst, const uint8_t *pred, const preprocess_record_t *rec, char *err)
{
    size_t on = (size_t)rec->out_dim[0] * rec->out_dim[1] * rec->out_dim[2];
    float *p = u8_to_f32(pred, on);
    float *y = invert(p, 1, 1, NULL, rec, err);
    free(p);
    if (!y) return -1;
    size_t sn = (size_t)rec->src_dim[0] * rec->src_dim[1] * rec->src_dim[2];
    for (size_t i = 0; i < sn; i++) dst[i] = (uint8_t)y[i];
    free(y);
    return 0;
}

int preprocess_invert_float(float *dst, const float *pred, int C, const float *fill,
                            const preprocess_record_t *rec, char *err)
{
    float *y = invert(pred, C, 0, fill, rec, err);
    if (!y) return -1;
    size_t sn = (size_t)rec->src_dim[0] * rec->src_dim[1] * rec->src_dim[2];
    memcpy(dst, y, (size_t)C * sn * sizeof(float));
    free(y);
    return 0;
}
