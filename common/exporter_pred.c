/*
exporter_pred.c -- a predicted volume -> RUN/predictions/<case_id>.nii.gz on the source grid.

The message is a `volume` (docs/protocol.md) with `kind: "prediction"`, its `case_id` (becomes
the file name: any bytes but '/' and control characters, not starting with '.' -- ids come from
the dataset's file names, which nnU-Net and MONAI take whatever they hold: spaces, '#', UTF-8),
the source image's `affine` (voxel
(i, j, k, 1) -> world, row-major 4x4) and optional `spacing`, and exactly one of
  labels (D, H, W) u8          -> uint8 NIfTI (a label map)
  image  (C, D, H, W) f32/f16  -> float32 NIfTI, C > 1 on the 4th axis (e.g. logits; finite only)
The file is written by nifti_write_volume (temporary name, fsync, rename).
*/
#include "exporter_internal.h"
#include "check.h"
#include "volume.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int case_id_ok(const char *s)
{
    if (!*s || *s == '.') return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p == '/' || *p < 0x20 || *p == 0x7f) return 0;
    return 1;
}

// Geometry fields into v (dims come from the arrays).
static int read_geometry(const wire_msg_t *m, volume_t *v, const char *id, char *err)
{
    double a[16], sp[3];
    if (wire_get_f64v(m, "affine", a, 16, 1, err) < 0) return -1;
    if (a[12] != 0 || a[13] != 0 || a[14] != 0 || a[15] != 1)
        return set_err(err, "prediction %s: affine's last row is not 0 0 0 1", id);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) v->affine[r][c] = a[4 * r + c];
    for (int c = 0; c < 3; c++)                          // voxel size: the column norms
        v->spacing[c] = sqrt(a[c] * a[c] + a[4 + c] * a[4 + c] + a[8 + c] * a[8 + c]);
    int rc = wire_get_f64v(m, "spacing", sp, 3, 0, err);
    if (rc < 0) return -1;
    if (rc == 0) memcpy(v->spacing, sp, sizeof sp);
    for (int c = 0; c < 3; c++)
        if (!(v->spacing[c] > 0)) return set_err(err, "prediction %s: spacing[%d] = %g is not positive", id, c, v->spacing[c]);
    return 0;
}

static int dims_ok(const int64_t *s, int n, int64_t hi)
{
    for (int i = 0; i < n; i++)
        if (s[i] < 1 || s[i] > hi) return 0;
    return 1;
}

int exporter_prediction(exporter_t *ex, const wire_msg_t *m, char case_id[WIRE_ID_LEN], char *err)
{
    char kind[WIRE_NAME_LEN];
    case_id[0] = 0;
    if (wire_get_str(m, "kind", kind, sizeof kind, 1, err) < 0) return -1;
    if (strcmp(kind, "prediction")) return set_err(err, "volume of kind '%s': the exporter takes only kind 'prediction'", kind);
    char id[WIRE_ID_LEN];
    if (wire_get_str(m, "case_id", id, sizeof id, 1, err) < 0) return -1;
    if (!case_id_ok(id)) return set_err(err, "prediction: case_id '%s' is not a file name (no '/', control character or leading '.')", id);
    snprintf(case_id, WIRE_ID_LEN, "%s", id);

    const wire_array_t *lab, *img;
    if (wire_need_array(m, "labels", WIRE_DT(WIRE_U8), 3, 0, &lab, err) < 0 ||
        wire_need_array(m, "image", WIRE_DT(WIRE_F32) | WIRE_DT(WIRE_F16), 4, 0, &img, err) < 0) return -1;
    if (!lab == !img) return set_err(err, "prediction %s: needs exactly one of 'labels' (u8 [D,H,W]) or 'image' (f32/f16 [C,D,H,W])", id);
    const int64_t *sh = lab ? lab->shape : img->shape + 1;
    if (!dims_ok(sh, 3, VOLUME_MAX_DIM) || (img && !dims_ok(img->shape, 1, VOLUME_MAX_CHANNELS)))
        return set_err(err, "prediction %s: shape outside [1, %d] per axis (channels [1, %d])", id, VOLUME_MAX_DIM, VOLUME_MAX_CHANNELS);
    if (img) {
        int64_t bad = wire_first_nonfinite(img);
        if (bad >= 0) return set_err(err, "prediction %s: non-finite value at element %lld", id, (long long)bad);
    }

    volume_t v;
    memset(&v, 0, sizeof v);
    if (read_geometry(m, &v, id, err)) return -1;
    v.C = img ? (int)img->shape[0] : 1;
    for (int i = 0; i < 3; i++) v.dim[i] = (int)sh[i];
    size_t n = (size_t)v.C * volume_voxels(&v);
    v.data = xmalloc(n * sizeof(float));
    if (lab) for (size_t i = 0; i < n; i++) v.data[i] = ((const uint8_t *)lab->data)[i];
    else if (img->dtype == WIRE_F32) memcpy(v.data, img->data, n * sizeof(float));
    else for (size_t i = 0; i < n; i++) v.data[i] = wire_half_to_float(((const uint16_t *)img->data)[i]);

    char path[EXPORTER_PATH + WIRE_ID_LEN + 16];
    snprintf(path, sizeof path, "%s/%s.nii.gz", ex->pred_dir, id);
    int rc = nifti_write_volume(path, &v, lab ? 2 : 16, err);
    if (!rc) rc = fs_fsync_dir(ex->pred_dir, err);
    free(v.data);
    if (rc) return -2;
    ex->n_pred++;
    return 0;
}
