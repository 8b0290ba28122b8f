/*
components.h -- connected components of a label map, for the postprocessing nnU-Net and MONAI
offer: keep only the largest component of a class (nnU-Net's remove_all_but_largest_component,
MONAI's KeepLargestConnectedComponent with independent labels), the rest set to background.
Connectivity is full (26 neighbours in 3D), as skimage.measure.label's and MONAI's default;
between equally large components the one whose first voxel comes first in storage order (i, j,
k with k fastest, numpy's C order) stays, as nnU-Net's max over label numbers does.
*/
#ifndef SRM_COMPONENTS_H
#define SRM_COMPONENTS_H
#include <stdint.h>

// For every class v with apply[v] != 0 (v > 0), keep its largest 26-connected component in lab
// (dim[0] x dim[1] x dim[2]) and set its other voxels to 0. Returns the voxels set to 0.
int64_t components_keep_largest(uint8_t *lab, const int dim[3], const uint8_t apply[256]);

#endif
