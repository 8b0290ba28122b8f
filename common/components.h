/*
components.h -- connected components of a label map, for the postprocessing MONAI and nnU-Net
offer: keep only the largest component of each chosen label, the rest set to background --
MONAI's KeepLargestConnectedComponent with independent labels (each label on its own; nnU-Net's
remove_all_but_largest_component per label, without its step that treats the foreground as one).
Connectivity is full (26 neighbours in 3D), as skimage.measure.label's and MONAI's default;
between equally large components the one whose first voxel comes first in storage order (i, j,
k with k fastest, numpy's C order) stays, as MONAI's argmax over the counts picks it (nnU-Net
keeps every component of the largest size: equal sizes are rare in a segmentation).
*/
#ifndef SRM_COMPONENTS_H
#define SRM_COMPONENTS_H
#include <stdint.h>

// For every class v with apply[v] != 0 (v > 0), keep its largest 26-connected component in lab
// (dim[0] x dim[1] x dim[2]) and set its other voxels to 0. Returns the voxels set to 0.
int64_t components_keep_largest(uint8_t *lab, const int dim[3], const uint8_t apply[256]);

#endif
