/*
augment_volume.c -- a received volume made ready for cropping: the compact wire dtype expanded to
float once, the labels copied, and the foreground / background voxel indices computed ONCE per
volume (MONAI FgBgToIndicesd before RandCropByPosNegLabeld; computing them per crop is what made
MONAI's crop cost 20-115 ms, anchors.md §A3).
*/
#include "augment.h"
#include "case_cache.h"
#include "check.h"
#include "labels.h"
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

uint64_t aug_volume_key(const char *case_id, int64_t epoch)
{
    uint64_t h = 1469598103934665603ull;            // FNV-1a of the id, then the epoch mixed in
    for (const char *p = case_id; *p; p++) { h ^= (uint8_t)*p; h *= 1099511628211ull; }
    return h ^ ((uint64_t)epoch * 0x9E3779B97F4A7C15ull);
}

// float16 -> float32 through a table of all 65536 values: the per-voxel cost is one load.
static float f16_table[65536];
static pthread_once_t f16_once = PTHREAD_ONCE_INIT;
static void f16_table_init(void)
{
    for (uint32_t h = 0; h < 65536; h++) f16_table[h] = cache_f16_to_f32((uint16_t)h);
}

// Expand n values to float. Returns 0 when all are finite, else -1 (x * 0 is NaN exactly for
// Inf/NaN, so one sum checks them all without a branch per voxel).
static int expand(float *dst, const void *src, wire_dtype_t dt, size_t n)
{
    float acc = 0;
    if (dt == WIRE_F32) {
        memcpy(dst, src, n * sizeof(float));
        for (size_t i = 0; i < n; i++) acc += dst[i] * 0.0f;
        return isnan(acc) ? -1 : 0;
    }
    const uint8_t *b = src;
    if (dt == WIRE_I16) {
        for (size_t i = 0; i < n; i++) {
            int16_t h;
            memcpy(&h, b + 2 * i, 2);               // frames carry no alignment guarantee
            dst[i] = (float)h;
        }
        return 0;
    }
    pthread_once(&f16_once, f16_table_init);
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, b + 2 * i, 2);
        dst[i] = f16_table[h];
        acc += dst[i] * 0.0f;
    }
    return isnan(acc) ? -1 : 0;
}

// Grow *p to hold n items of size sz (contents not kept).
static void *reserve(void *p, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap && p) return p;
    free(p);
    *cap = n;
    return xmalloc((n ? n : 1) * sz);
}

int aug_volume_load(aug_volume_t *v, const char *case_id, int64_t epoch, int C, const int dim[3],
                    wire_dtype_t dt, const void *image, const uint8_t *labels,
                    const augment_cfg_t *cfg, char *err)
{
    v->case_id[0] = 0;
    v->C = 0;
    v->n_fg = v->n_bg = 0;
    v->next_sample = 0;
    v->uses = 0;
    if (C < 1 || C > AUG_MAX_CHANNELS) return set_err(err, "%s: %d channels (1..%d)", case_id, C, AUG_MAX_CHANNELS);
    if (dt != WIRE_F32 && dt != WIRE_F16 && dt != WIRE_I16) return set_err(err, "%s: image dtype %s", case_id, wire_dtype_name(dt));
    if (!labels) return set_err(err, "%s: no labels (a training volume needs them)", case_id);
    size_t n = (size_t)dim[0] * dim[1] * dim[2];
    if (n == 0 || n >= UINT32_MAX) return set_err(err, "%s: %zu voxels", case_id, n);
    v->image = reserve(v->image, &v->cap_image, (size_t)C * n, sizeof(float));
    if (expand(v->image, image, dt, (size_t)C * n)) return set_err(err, "%s: non-finite image values", case_id);
    v->labels = reserve(v->labels, &v->cap_vox, n, 1);
    memcpy(v->labels, labels, n);
    // foreground grouped by label value (a counting sort), each group in voxel order; ignored
    // voxels (LABEL_IGNORE) are in neither list, so no crop is centred on them
    size_t count[256] = { 0 }, at[256];
    for (size_t i = 0; i < n; i++) count[labels[i]]++;
    size_t nfg = n - count[0] - count[LABEL_IGNORE];
    v->fg = reserve(v->fg, &v->cap_fg, nfg, sizeof(uint32_t));
    v->bg = reserve(v->bg, &v->cap_bg, count[0], sizeof(uint32_t));
    v->n_cls = 0;
    v->cls_start[0] = v->cls_start[1] = 0;
    for (int c = 1; c < LABEL_IGNORE; c++) {
        at[c] = v->cls_start[c];
        v->cls_start[c + 1] = v->cls_start[c] + (uint32_t)count[c];
        if (count[c]) v->cls_present[v->n_cls++] = (uint8_t)c;
    }
    v->cls_start[LABEL_IGNORE + 1] = v->cls_start[LABEL_IGNORE];     // no group for ignored voxels
    size_t b = 0;
    for (size_t i = 0; i < n; i++) {
        if (labels[i] == LABEL_IGNORE) continue;
        if (labels[i]) v->fg[at[labels[i]]++] = (uint32_t)i;
        else v->bg[b++] = (uint32_t)i;
    }
    for (int c = 0; c < C; c++) {
        float m = cfg->pad_value;
        if (cfg->pad_min) {
            const float *x = v->image + (size_t)c * n;
            m = x[0];
            for (size_t i = 1; i < n; i++) m = x[i] < m ? x[i] : m;
        }
        v->pad[c] = m;
    }
    snprintf(v->case_id, sizeof v->case_id, "%s", case_id);
    v->epoch = epoch;
    v->key = aug_volume_key(case_id, epoch);
    v->C = C;
    memcpy(v->dim, dim, sizeof v->dim);
    v->spacing[0] = v->spacing[1] = v->spacing[2] = 1;     // the caller sets the volume's own
    v->n_fg = nfg;
    v->n_bg = count[0];
    return 0;
}

int aug_volume_init(aug_volume_t *v, const char *case_id, int64_t epoch, int C, const int dim[3],
                    wire_dtype_t dt, const void *image, const uint8_t *labels,
                    const augment_cfg_t *cfg, char *err)
{
    memset(v, 0, sizeof *v);
    if (aug_volume_load(v, case_id, epoch, C, dim, dt, image, labels, cfg, err) == 0) return 0;
    aug_volume_free(v);
    return -1;
}

void aug_volume_free(aug_volume_t *v)
{
    free(v->image);
    free(v->labels);
    free(v->fg);
    free(v->bg);
    memset(v, 0, sizeof *v);
}
