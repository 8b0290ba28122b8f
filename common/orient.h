/*
orient.h -- voxel-axis orientation of an affine, and reorientation of a volume to RAS and back.

An "ornt" describes, for each voxel axis i, j, k, which world axis it runs along (0 = x, 1 = y,
2 = z) and in which direction (+1 = towards R/A/S, -1 = towards L/P/I). It is the same thing as
nibabel.orientations.io_orientation(affine): the shears and zooms are removed (polar
decomposition), then voxel axes 0, 1, 2 in turn take the not-yet-used world axis their column
points along most strongly, so oblique affines get the closest axis-aligned orientation.

Reorienting to RAS (nibabel's as_closest_canonical, MONAI Orientationd(axcodes="RAS")) permutes
and flips the data axes so that voxel axis 0 runs along +x, 1 along +y, 2 along +z, and changes the
affine so that every voxel keeps its world coordinate: new_affine = affine @ T where T maps new
voxel indices to old ones. Nothing is resampled; oblique rotations stay in the affine.
*/
#ifndef SRM_ORIENT_H
#define SRM_ORIENT_H
#include "volume.h"

typedef struct {
    int axis[3];    // world axis (0 = x/R, 1 = y/A, 2 = z/S) that voxel axis d runs along
    int flip[3];    // +1 when voxel axis d increases towards R/A/S, -1 towards L/P/I
} ornt_t;

// Orientation of the 3x3 part of an affine (nibabel io_orientation, tol = default). Returns 0,
// or -1 with err when a column is zero/non-finite (a degenerate affine).
int orient_of_affine(const double affine[4][4], ornt_t *o, char *err);

// Axis codes (nibabel aff2axcodes) of an affine: three letters plus NUL, e.g. "LPS", "RAS".
// Returns 0, or -1 with err for a degenerate affine (codes set to "???").
int orient_axcodes(const double affine[4][4], char codes[4], char *err);

// The affine of the same data after reorientation to RAS, without touching voxels
// (nibabel as_closest_canonical(img).affine). dim: extents i, j, k of the source volume.
// Returns 0 or -1 with err.
int orient_ras_affine(const double affine[4][4], const int dim[3], double ras[4][4], char *err);

// Reorient v in place to RAS: permutes/flips data (all channels), dim, spacing and affine.
// If `from` is not NULL it receives the source orientation, to undo the change later with
// orient_from_ras. Returns 0 or -1 with err (degenerate affine); v is unchanged on error.
int orient_to_ras(volume_t *v, ornt_t *from, char *err);

// Undo orient_to_ras: bring a RAS-canonical volume v (e.g. a prediction on the RAS grid) back
// to the voxel axes described by `to` (the ornt that orient_to_ras returned). data, dim, spacing
// and affine are updated in place, so writing v gives a file on the source grid.
// Returns 0 or -1 with err.
int orient_from_ras(volume_t *v, const ornt_t *to, char *err);

// Low level: apply "voxel axis d of src goes to axis perm[d] of dst, flipped when flip[d] < 0"
// to a (C, dim) k-fastest array. dst must hold C*dim[0]*dim[1]*dim[2] floats and not alias src.
// dst_dim receives the new extents.
void orient_permute_data(float *dst, int dst_dim[3], const float *src, int C, const int dim[3],
                         const int perm[3], const int flip[3]);

#endif
