/*
metrics_eval.c -- score a predicted label map against a reference with common/metrics.h, for the
cross-check against scipy/numpy (tests/cpu/test_metrics_scipy.py).
  metrics_eval PRED.nii[.gz] REF.nii[.gz] K
Both files must have the same dims; the reference's spacing is used. Prints one JSON object:
{"dice": [K values], "hd95": [K values, index 0 = null], "spacing": [3]}; undefined -> null.
*/
#include "metrics.h"
#include "volume.h"
#include "check.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t *labels_of(const volume_t *v, const char *path)
{
    size_t n = volume_voxels(v);
    if (v->C != 1) DIE("%s: %d channels, expected a label map", path, v->C);
    uint8_t *l = xmalloc(n);
    for (size_t i = 0; i < n; i++) {
        float x = v->data[i];
        if (!(x >= 0 && x <= 255 && x == floorf(x))) DIE("%s: voxel %zu = %g is not a label", path, i, x);
        l[i] = (uint8_t)x;
    }
    return l;
}

static void print_list(const char *key, const double *v, int n, int last)
{
    printf("\"%s\": [", key);
    for (int i = 0; i < n; i++) {
        if (isnan(v[i])) printf("%snull", i ? ", " : "");
        else printf("%s%.17g", i ? ", " : "", v[i]);
    }
    printf("]%s", last ? "" : ", ");
}

int main(int argc, char **argv)
{
    log_set_name("metrics_eval");
    if (argc != 4) DIE("usage: metrics_eval PRED REF K");
    int K = atoi(argv[3]);
    if (K < 1 || K > METRICS_MAX_CLASSES) DIE("K must be 1..%d", METRICS_MAX_CLASSES);
    char err[ERR_LEN];
    volume_t p, r;
    if (nifti_read_volume(argv[1], &p, err) || nifti_read_volume(argv[2], &r, err)) DIE("%s", err);
    if (memcmp(p.dim, r.dim, sizeof p.dim)) DIE("%s and %s: different dims", argv[1], argv[2]);
    uint8_t *lp = labels_of(&p, argv[1]), *lr = labels_of(&r, argv[2]);
    double *dice = xmalloc((size_t)K * sizeof(double)), *hd = xmalloc((size_t)K * sizeof(double));
    metrics_dice(dice, lp, lr, volume_voxels(&r), K);
    hd[0] = NAN;
    metrics_hd95_classes(hd, lp, lr, r.dim, r.spacing, 1, K);
    printf("{");
    print_list("dice", dice, K, 0);
    print_list("hd95", hd, K, 0);
    print_list("spacing", r.spacing, 3, 1);
    printf("}\n");
    free(lp); free(lr); free(dice); free(hd);
    volume_free(&p);
    volume_free(&r);
    return 0;
}
