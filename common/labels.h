/*
labels.h -- the one label value with a meaning of its own inside the system.

nnU-Net v2 datasets may declare an "ignore" label (dataset.json "labels": {..., "ignore": V}, V
the largest value): voxels nobody annotated. On load (dataset_case.c) such voxels become
LABEL_IGNORE, whatever V the dataset used, so every later stage -- the wire, the augmenters'
crop sampling, the losses on both devices, the evaluator's scoring -- recognises them by one
value: no loss term, no gradient, no metric counts them, and no crop is centred on them.
Real classes are therefore 0..254.
*/
#ifndef SRM_LABELS_H
#define SRM_LABELS_H

#define LABEL_IGNORE 255
#define LABEL_MAX_CLASS 254     // the largest value a real class may have

// Whether two regions (label value sets, member[v] != 0) overlap without one holding the other:
// a label map cannot show such a pair (a voxel of B alone has no label that says so), so the
// trainer's and the evaluator's --regions refuse it; nested or disjoint ones are fine.
static inline int labels_regions_cross(const unsigned char a[256], const unsigned char b[256])
{
    int both = 0, a_only = 0, b_only = 0;
    for (int v = 0; v < 256; v++) {
        both |= a[v] && b[v];
        a_only |= a[v] && !b[v];
        b_only |= b[v] && !a[v];
    }
    return both && a_only && b_only;
}

#endif
