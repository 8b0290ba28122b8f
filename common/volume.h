/*
volume.h -- a medical image in memory, and its NIfTI reading and writing (nifti_io.c).

Axis convention (architecture.md): spatial axes are the NIfTI voxel axes i, j, k in that order,
k fastest in memory; channels (the NIfTI 4th axis) come first. So data is (C, D, H, W) with
D = dim i, H = dim j, W = dim k, exactly as nibabel's get_fdata() of shape (X, Y, Z[, C]) is fed
to PyTorch/MONAI as (C, X, Y, Z). libnifti stores i fastest; the reader transposes once and the
writer transposes back.

Intensities are the scaled values (scl_slope * stored + scl_inter when slope != 0), as float.
*/
#ifndef SRM_VOLUME_H
#define SRM_VOLUME_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    int C;                  // channels (1 for a 3D image)
    int dim[3];             // extents along i, j, k
    float *data;            // (C, dim[0], dim[1], dim[2]), k fastest; owned
    double affine[4][4];    // voxel (i, j, k, 1) -> world (x, y, z, 1), RAS+ mm, as nibabel img.affine
                            // (times 1000 / 0.001 for a header in metres / microns, as ITK reads it)
    double spacing[3];      // voxel size along i, j, k in mm (norms of the affine's columns)
    int datatype;           // NIfTI datatype code of the source file
    int nifti_version;      // 1 or 2
    int xform_source;       // 2 = sform, 1 = qform, 0 = pixdim only (which the affine came from)
    double pixdim[3];       // header pixdim[1..3] as nibabel header.get_zooms()[:3] gives them (|p|, 0 -> 1)
    int xyz_units;          // the header's spatial unit code (0 unknown, 1 m, 2 mm, 3 micron); 0 when made here
    int ndim;               // 2 for a 2D image (header dim[0] = 2, one slice), else 3 (0 when made here: 3);
                            // the writer keeps a 2D one-channel volume 2D
} volume_t;

static inline size_t volume_voxels(const volume_t *v)
{
    return (size_t)v->dim[0] * v->dim[1] * v->dim[2];
}

// Voxel f of a volume of extents dim (k fastest) as "(i, j, k)", the NIfTI / nibabel index, for
// messages (a flat index reads differently in C and in Fortran order).
static inline const char *volume_ijk(const int dim[3], size_t f, char buf[80])
{
    snprintf(buf, 80, "(%zu, %zu, %zu)", f / dim[2] / dim[1], f / dim[2] % dim[1], f % dim[2]);
    return buf;
}

// Read a .nii or .nii.gz file (NIfTI-1 or NIfTI-2) into v. Returns 0, or -1 with err filled
// ("<path>: <problem>") for a missing file, truncated/corrupt gzip, inconsistent header, zero or
// negative spacing, unsupported datatype, NaN/Inf voxels, absurd dimensions.
// Datatypes read: (u)int8, (u)int16, (u)int32, (u)int64, float32, float64, either byte order.
// The affine is nibabel's img.affine (sform if its code is 1..5, else qform, else pixdim with x
// flipped and the centre at the origin); scl_slope/scl_inter are applied as nibabel does.
int nifti_read_volume(const char *path, volume_t *v, char *err);
// The channel count (the 4th axis; 1 for a 3D image) from the header alone. 0, or -1 + err.
int nifti_read_channels(const char *path, int *C, char *err);

// Write v as NIfTI-1 (.nii or .nii.gz by the name) carrying v->affine as sform (code 1) and its
// closest rigid transform as qform (code 1); pixdim = v->spacing; units mm (as ITK writes).
// datatype: NIfTI code to store: 2 uint8 (labels), 256 int8, 4 int16, 512 uint16, 8 int32
// (integers are rounded; a value that does not fit is an error), 16 float32, 64 float64.
// The file is written to a temporary name beside it, fsync'ed and renamed. Returns 0 or -1 + err.
int nifti_write_volume(const char *path, const volume_t *v, int datatype, char *err);

void volume_free(volume_t *v);

// Name of a NIfTI datatype code as numpy spells it ("uint8", "int16", "float32", ...), or
// "unknown". Every name returned for a supported code is one nifti_read_volume accepts.
const char *volume_datatype_name(int datatype);

// Limits the reader enforces before it allocates anything (a lying header gets an error).
#define VOLUME_MAX_DIM      4096            // per spatial axis
#define VOLUME_MAX_CHANNELS 1024
#define VOLUME_MAX_VALUES   (1LL << 30)     // C * voxels: 4 GiB of float

#endif
