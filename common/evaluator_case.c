/*
evaluator_case.c -- one case: sliding-window logits on the preprocessed grid, brought back to
the source grid (preprocess_invert_float: resampling, crop and orientation undone) and only then
turned into labels (argmax, or sigmoid > 0.5 per region and the region -> label rule), as
nnU-Net resamples probabilities rather than labels; then, when asked, only the largest connected
component of the chosen labels stays (nnU-Net's and MONAI's postprocessing). Voxels outside the foreground crop box get
a fixed "background" vote: logits (1, 0, ..., 0) for softmax classes, -1 for every region.
Scoring follows system.md: per class (or region) Dice on the source grid, null when absent
from both, mean over the defined foreground entries; HD95 in mm with the source spacing.
Reference voxels labelled LABEL_IGNORE (labels.h) count in no class, region or surface, as in
nnU-Net's evaluation with an ignore label: the prediction there is left out too.
*/
#include "evaluator.h"
#include "check.h"
#include "components.h"
#include "labels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EVAL_FILL_LOGIT 20.0f       // --logits outside the crop box: +20 background, -20 the rest

void eval_affine_spacing(const double a[4][4], double spacing[3])
{
    for (int c = 0; c < 3; c++) spacing[c] = sqrt(a[0][c] * a[0][c] + a[1][c] * a[1][c] + a[2][c] * a[2][c]);
}

int eval_segment(eval_model_t *const *ems, int nm, const sw_cfg_t *sw, const eval_labels_t *lab, const uint8_t *keep,
                 const float *x, const preprocess_record_t *rec, uint8_t *labels, float *logits, char *err)
{
    const model_cfg_t *mc = eval_model_cfg(ems[0]);
    int K = mc->classes;
    if (lab->nregions && lab->nregions != K)
        return set_err(err, "%d regions but the model has %d outputs", lab->nregions, K);
    size_t on = (size_t)rec->out_dim[0] * rec->out_dim[1] * rec->out_dim[2];
    size_t sn = (size_t)rec->src_dim[0] * rec->src_dim[1] * rec->src_dim[2];
    if ((on > sn ? on : sn) * K > (size_t)VOLUME_MAX_VALUES)
        return set_err(err, "%zu voxels x %d classes exceed the %lld values a volume may hold", on > sn ? on : sn, K,
                       (long long)VOLUME_MAX_VALUES);
    float *pre = xmalloc(on * K * sizeof(float)), *more = nm > 1 ? xmalloc(on * K * sizeof(float)) : NULL;
    for (int m = 0; m < nm; m++) {                  // nnU-Net: the models' logits summed, then / n
        if (sw_infer(m ? more : pre, K, x, mc->in_channels, rec->out_dim, sw, eval_model_net, ems[m], err)) {
            free(pre);
            free(more);
            return -1;
        }
        if (m) for (size_t i = 0; i < on * K; i++) pre[i] += more[i];
    }
    if (nm > 1) for (size_t i = 0; i < on * K; i++) pre[i] /= (float)nm;
    free(more);
    // Outside the foreground crop box: certain background, as nnU-Net's probabilities there
    // (background 1, regions 0): softmax background 1 - (K-1) e^-40, sigmoid e^-20 = 2e-9
    float *fill = xmalloc(K * sizeof(float));
    for (int k = 0; k < K; k++) fill[k] = lab->nregions ? -EVAL_FILL_LOGIT : (k == 0 ? EVAL_FILL_LOGIT : -EVAL_FILL_LOGIT);
    float *src = logits ? logits : xmalloc(sn * K * sizeof(float));
    int rc = preprocess_invert_float(src, pre, K, fill, rec, err);
    free(pre);
    free(fill);
    if (rc == 0 && !lab->nregions) {
        sw_argmax(labels, src, K, sn);
    } else if (rc == 0) {
        uint8_t *masks = xmalloc(sn * K);
        sw_threshold(masks, src, K, sn);
        metrics_regions_to_labels(labels, masks, sn, lab->regions, lab->nregions);
        free(masks);
    }
    if (src != logits) free(src);
    if (rc == 0 && keep) components_keep_largest(labels, rec->src_dim, keep);
    return rc;
}

int64_t eval_ref_unscorable(const uint8_t *ref, size_t n, int K, const eval_labels_t *lab, int ignore_ok)
{
    // held[v]: label v has a place in the scoring: a class of the model; with regions any label,
    // one in no region being background for every region (nnU-Net's rule, and the training's)
    uint8_t held[256] = { 0 };
    for (int v = 0; v < (lab->nregions ? LABEL_IGNORE : K) && v < LABEL_IGNORE; v++) held[v] = 1;
    held[0] = 1;
    held[LABEL_IGNORE] = (uint8_t)ignore_ok;
    for (size_t i = 0; i < n; i++)
        if (!held[ref[i]]) return (int64_t)i;
    return -1;
}

// pred with the reference's ignored voxels ignored too (every metric leaves LABEL_IGNORE out: it
// is >= K and in no region); NULL when the reference ignores nothing.
static uint8_t *pred_masked(const uint8_t *pred, const uint8_t *ref, size_t n)
{
    size_t i = 0;
    while (i < n && ref[i] != LABEL_IGNORE) i++;
    if (i == n) return NULL;
    uint8_t *m = xmalloc(n);
    for (i = 0; i < n; i++) m[i] = ref[i] == LABEL_IGNORE ? LABEL_IGNORE : pred[i];
    return m;
}

void eval_score(eval_result_t *r, const uint8_t *pred, const uint8_t *ref, const int dim[3],
                const double spacing[3], int K, const eval_labels_t *lab, int hd95)
{
    size_t n = (size_t)dim[0] * dim[1] * dim[2];
    uint8_t *masked = pred_masked(pred, ref, n);
    if (masked) pred = masked;
    double all[METRICS_MAX_CLASSES];
    if (lab->nregions) {
        r->nfg = lab->nregions;
        metrics_region_dice(r->dice, pred, ref, n, lab->regions, lab->nregions);
    } else {
        r->nfg = K - 1;
        metrics_dice(all, pred, ref, n, K);
        memcpy(r->dice, all + 1, sizeof(double) * r->nfg);
    }
    r->mean_dice = metrics_mean_defined(r->dice, 0, r->nfg, NULL);
    for (int j = 0; j < r->nfg; j++) r->hd95[j] = NAN;
    if (hd95 && !lab->nregions) {
        metrics_hd95_classes(all, pred, ref, dim, spacing, 1, K);
        memcpy(r->hd95, all + 1, sizeof(double) * r->nfg);
    } else if (hd95) {
        uint8_t *a = xmalloc(n), *b = xmalloc(n);
        for (int j = 0; j < lab->nregions; j++) {
            metrics_region_mask(a, pred, n, &lab->regions[j]);
            metrics_region_mask(b, ref, n, &lab->regions[j]);
            r->hd95[j] = metrics_hd95(a, b, dim, spacing);
        }
        free(a);
        free(b);
    }
    free(masked);
}
