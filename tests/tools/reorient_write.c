/*
reorient_write.c -- test helper: read a NIfTI file, reorient it to RAS, write it (float32).

  reorient_write IN OUT          OUT holds the RAS-canonical array and its affine
  reorient_write IN OUT --back   to RAS and back to the source orientation before writing
                                 (the path a prediction takes to the source grid)
Used by tests/cpu/test_orient_roundtrip.py, which checks the result with nibabel.
*/
#include "check.h"
#include "orient.h"
#include "volume.h"
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "--back") != 0)) {
        fprintf(stderr, "usage: reorient_write IN.nii[.gz] OUT.nii[.gz] [--back]\n");
        return 2;
    }
    char err[ERR_LEN];
    volume_t v;
    ornt_t src;
    if (nifti_read_volume(argv[1], &v, err) < 0) {
        fprintf(stderr, "E: reorient_write: %s\n", err);
        return 1;
    }
    if (orient_to_ras(&v, &src, err) < 0 || (argc == 4 && orient_from_ras(&v, &src, err) < 0) ||
        nifti_write_volume(argv[2], &v, 16, err) < 0) {
        fprintf(stderr, "E: reorient_write: %s: %s\n", argv[1], err);
        volume_free(&v);
        return 1;
    }
    volume_free(&v);
    return 0;
}
