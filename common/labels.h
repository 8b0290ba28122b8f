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

#endif
