/*
preprocess_plan.c -- the target spacing nnU-Net would plan for a dataset (its ExperimentPlanner's
determine_fullres_target_spacing), for `--spacing auto`.

Over the labelled non-test cases (those the intensity fingerprint reads too): each case's voxel
spacing after reorientation to RAS -- the grid this system resamples -- and its shape after
nnU-Net's crop_to_nonzero (the box of the voxels non-zero in any channel, holes filled: its
"shapes_after_crop"; not this system's own foreground, which crops CT's air too). The target is the median spacing
per axis (numpy's percentile 50, linear). Thick-slice data gets one exception, so that it is not
resampled to the median's few slices: when the coarsest axis of that median is over 3x the
largest other spacing AND its median extent is under a third of the smallest other extent,
that axis takes the 10th percentile of its spacings instead -- raised just above the largest
other spacing (+1e-5) when it would fall below it.
*/
#include "preprocess.h"
#include "check.h"
#include "metrics.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

// One case's RAS spacing and nonzero-cropped shape. 0, or -1 with err (the case is skipped).
static int case_geometry(const dataset_t *ds, int i, const preprocess_cfg_t *cfg, double sp[3], double shape[3],
                         char *err)
{
    case_t c;
    if (dataset_load_case(ds, i, &c, err)) return -1;
    ornt_t o;
    char e[ERR_LEN];
    int rc = cfg->reorient ? preprocess_reorient(&c.image, c.label, &o, e) : 0;
    if (rc < 0) {
        set_err(err, "%s: %s", c.id, e);
    } else {
        volume_t *v = &c.image;
        size_t n = volume_voxels(v);
        int lo[3] = {0, 0, 0}, size[3];
        const int none[3] = {0, 0, 0};
        memcpy(size, v->dim, sizeof size);
        uint8_t *mask = xcalloc(n, 1);
        for (int ch = 0; ch < v->C; ch++)
            for (size_t k = 0; k < n; k++) mask[k] |= v->data[(size_t)ch * n + k] != 0;
        preprocess_fill_holes(mask, v->dim);
        if (preprocess_foreground_bbox(mask, v->dim, none, lo, size) < 0) memcpy(size, v->dim, sizeof size);
        free(mask);
        for (int d = 0; d < 3; d++) {
            sp[d] = v->spacing[d];                      // the column norms, carried by the reorientation
            shape[d] = size[d];
        }
    }
    case_free(&c);
    return rc < 0 ? -1 : 0;
}

int preprocess_plan_spacing(const dataset_t *ds, const preprocess_cfg_t *cfg, spacing_plan_t *p, char *err)
{
    memset(p, 0, sizeof *p);
    p->aniso_axis = -1;
    double *sp[3], *sh[3];
    for (int d = 0; d < 3; d++) {
        sp[d] = xmalloc((size_t)(ds->n_cases ? ds->n_cases : 1) * sizeof(double));
        sh[d] = xmalloc((size_t)(ds->n_cases ? ds->n_cases : 1) * sizeof(double));
    }
    for (int i = 0; i < ds->n_cases; i++) {
        if (!ds->cases[i].label || !strcmp(ds->cases[i].split, "test")) continue;
        double s[3], z[3];
        char e[ERR_LEN];
        if (case_geometry(ds, i, cfg, s, z, e)) {       // the loader skips such a case too
            if (!p->skipped++) snprintf(p->first_problem, sizeof p->first_problem, "%s", e);
            continue;
        }
        for (int d = 0; d < 3; d++) { sp[d][p->cases] = s[d]; sh[d][p->cases] = z[d]; }
        p->cases++;
    }
    int rc = 0;
    if (!p->cases) {
        rc = set_err(err, "%s: no labelled training case to plan a spacing from%s%s", ds->dir,
                     p->skipped ? "; first unusable case: " : "", p->skipped ? p->first_problem : "");
    } else {
        for (int d = 0; d < 3; d++) {
            p->median_shape[d] = metrics_percentile(sh[d], (size_t)p->cases, 50);
            p->target[d] = p->median_spacing[d] = metrics_percentile(sp[d], (size_t)p->cases, 50);
        }
        int worst = 0;
        for (int d = 1; d < 3; d++) if (p->target[d] > p->target[worst]) worst = d;
        double max_other = 0, min_other_size = INFINITY;
        for (int d = 0; d < 3; d++)
            if (d != worst) {
                max_other = fmax(max_other, p->target[d]);
                min_other_size = fmin(min_other_size, p->median_shape[d]);
            }
        if (p->target[worst] > PREPROCESS_ANISO * max_other && p->median_shape[worst] * PREPROCESS_ANISO < min_other_size) {
            double t = metrics_percentile(sp[worst], (size_t)p->cases, 10);
            if (t < max_other) t = fmax(max_other, t) + 1e-5;
            p->target[worst] = t;
            p->aniso_axis = worst;
        }
    }
    for (int d = 0; d < 3; d++) { free(sp[d]); free(sh[d]); }
    return rc;
}
