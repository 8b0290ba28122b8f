/*
augment_internal.h -- functions shared between the augment_*.c files and nothing else.
The public interface is augment.h.
*/
#ifndef SRM_AUGMENT_INTERNAL_H
#define SRM_AUGMENT_INTERNAL_H
#include "augment.h"

// 1 when A is a signed permutation and s0 an integer point: si, axis[j], sign[j] describe it.
int aug_is_gather(const double A[3][3], const double s0[3], int si[3], int axis[3], int sign[3]);
// One resampling pass: output p reads source s0 + A p; trilinear image, nearest labels; outside
// the volume the channel's pad value and label 0. img (C, P), lab (P) or NULL.
void aug_resample(float *img, uint8_t *lab, const aug_volume_t *v, const int P[3],
                  const double A[3][3], const double s0[3], float mul, float add);

#endif
