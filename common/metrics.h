/*
metrics.h -- segmentation scores as system.md ("Metrics: definitions") defines them: per-class
Dice of one case, its mean over foreground classes, region-based Dice for BraTS-style regions
(sets of label values), the region -> label conversion rule, and HD95 in millimetres.

"Undefined" is NaN throughout (JSON null, msgpack nil on the wire): a class absent from both the
reference and the prediction has no Dice; HD95 is undefined when either mask is empty (MONAI
gives nan or inf there; we report null and leave it out of means).
Volumes are (D, H, W) label maps, W fastest (volume.h's axis convention); spacing in mm per axis.
*/
#ifndef SRM_METRICS_H
#define SRM_METRICS_H
#include <stddef.h>
#include <stdint.h>

#define METRICS_MAX_CLASSES 256
#define METRICS_MAX_REGION_LABELS 16

// ---- Dice ------------------------------------------------------------------------------------
// dice[c] for c = 0..K-1 over n voxels: 2|P_c ∩ R_c| / (|P_c| + |R_c|); NaN when both are empty,
// 0 when only one is. Labels >= K are counted in no class. dice: (K) doubles.
void metrics_dice(double *dice, const uint8_t *pred, const uint8_t *ref, size_t n, int K);

// Mean of dice[first..K) over the defined (non-NaN) entries; NaN when none is defined.
// *n_undefined (may be NULL) receives how many were left out. first = 1 skips the background.
double metrics_mean_defined(const double *dice, int first, int K, int *n_undefined);

// ---- regions (BraTS) -------------------------------------------------------------------------
// A region is a set of label values and the label it turns back into. BraTS: whole tumour
// {1,2,4} -> 2, tumour core {1,4} -> 1, enhancing {4} -> 4, listed outer to inner.
typedef struct {
    int nlabels;
    uint8_t labels[METRICS_MAX_REGION_LABELS];
    uint8_t out_label;
} metrics_region_t;

// Parse "1,2,4:2" (labels, then ':' and the output label) into r. 0, or -1 with err (ERR_LEN).
int metrics_region_parse(metrics_region_t *r, const char *text, char *err);

// mask[i] = 1 when labels[i] belongs to r, else 0. mask: (n).
void metrics_region_mask(uint8_t *mask, const uint8_t *labels, size_t n, const metrics_region_t *r);

// dice[j] over regions j = 0..nr-1 of two label maps (same rules as metrics_dice). dice: (nr).
void metrics_region_dice(double *dice, const uint8_t *pred, const uint8_t *ref, size_t n,
                         const metrics_region_t *regions, int nr);

// Region masks -> labels: labels[i] = out_label of the LAST region (outer to inner) whose mask
// is set at i, or 0 when none is. With the BraTS list this is "enhancing -> 4, core minus
// enhancing -> 1, whole minus core -> 2". masks: (nr, n) 0/1 bytes, region-major. labels: (n).
void metrics_regions_to_labels(uint8_t *labels, const uint8_t *masks, size_t n,
                               const metrics_region_t *regions, int nr);

// ---- HD95 ------------------------------------------------------------------------------------
// Hausdorff distance, 95th percentile, in mm between binary masks a and b (nonzero = inside),
// as MONAI compute_hausdorff_distance(percentile=95, directed=False): surface voxels are mask
// voxels with a 6-neighbour outside the mask (the volume border counts as outside); d(A->B) are
// the exact Euclidean distances (spacing-weighted) from each surface voxel of A to the nearest
// surface voxel of B; HD95 = max(P95(d(A->B)), P95(d(B->A))) with numpy.percentile's linear
// interpolation. NaN when a or b is empty. a, b: (dim[0], dim[1], dim[2]), last axis fastest.
double metrics_hd95(const uint8_t *a, const uint8_t *b, const int dim[3], const double spacing[3]);

// HD95 of class c = first..K-1 between two label maps into hd[c] (hd[0..first) untouched).
void metrics_hd95_classes(double *hd, const uint8_t *pred, const uint8_t *ref, const int dim[3],
                          const double spacing[3], int first, int K);

// numpy.percentile(x, p) with linear interpolation of n >= 1 values; sorts x in place.
double metrics_percentile(double *x, size_t n, double p);

// Squared Euclidean distance (mm^2) from every voxel to the nearest voxel where feature != 0,
// exact (Felzenszwalb & Huttenlocher's separable transform, each axis weighted by its spacing).
// INFINITY everywhere when there is no feature voxel. out: (dim[0], dim[1], dim[2]).
void metrics_edt_sq(double *out, const uint8_t *feature, const int dim[3], const double spacing[3]);

#endif
