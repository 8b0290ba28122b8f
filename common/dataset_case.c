/*
dataset_case.c -- load one case of a dataset into memory and check it.

All image files of the case are read (nifti_io.c) and stacked into one (C, D, H, W) volume; the
label map is checked against the image grid and the declared classes and converted to uint8,
the declared "ignore" value becoming LABEL_IGNORE (labels.h).
Every failure is one line naming the file and the problem. Preprocessing is preprocess.c.
*/
#include "dataset.h"
#include "check.h"
#include "labels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

// 2: the affines agree (|a - b| <= ATOL + RTOL |a|); 1: they agree but for an origin off by less
// than half the finest voxel (a file rewritten by another tool: nnU-Net warns and trains on the
// arrays; so does this); 0: they differ.
static int affine_close(const double a[4][4], const double b[4][4])
{
    double finest = INFINITY, off = 0;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++)
            if (fabs(a[r][c] - b[r][c]) > CASE_AFFINE_ATOL + CASE_AFFINE_RTOL * fabs(a[r][c])) return 0;
    for (int c = 0; c < 3; c++)
        finest = fmin(finest, sqrt(a[0][c] * a[0][c] + a[1][c] * a[1][c] + a[2][c] * a[2][c]));
    int exact = 1;
    for (int r = 0; r < 3; r++) {
        exact &= fabs(a[r][3] - b[r][3]) <= CASE_AFFINE_ATOL + CASE_AFFINE_RTOL * fabs(a[r][3]);
        off += (a[r][3] - b[r][3]) * (a[r][3] - b[r][3]);
    }
    return exact ? 2 : sqrt(off) < 0.5 * finest ? 1 : 0;
}

static int check_finite(const char *path, const volume_t *v, char *err)
{
    size_t vox = volume_voxels(v), n = (size_t)v->C * vox;
    char at[80];
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v->data[i]))
            return set_err(err, "%s: NaN/Inf voxel at %s of channel %zu", path, volume_ijk(v->dim, i % vox, at), i / vox);
    return 0;
}

// Append the channels of v to c->image (first file: take v over).
static int stack(case_t *c, volume_t *v, const char *path, const char *first, char *err)
{
    if (c->image.data == NULL) { c->image = *v; memset(v, 0, sizeof *v); return 0; }
    if (memcmp(v->dim, c->image.dim, sizeof v->dim))
        return set_err(err, "%s: dims %dx%dx%d differ from %s (%dx%dx%d)", path, v->dim[0], v->dim[1],
                       v->dim[2], first, c->image.dim[0], c->image.dim[1], c->image.dim[2]);
    int close = affine_close(c->image.affine, v->affine);
    if (!close) return set_err(err, "%s: affine differs from %s (geometry mismatch)", path, first);
    if (close == 1) log_msg('W', "%s: origin differs from %s's by under half a voxel; taken as the same grid", path, first);
    if (c->image.C + v->C > CASE_MAX_CHANNELS)
        return set_err(err, "%s: more than %d channels in the case", path, CASE_MAX_CHANNELS);
    size_t nv = volume_voxels(v);
    c->image.data = xrealloc(c->image.data, (size_t)(c->image.C + v->C) * nv * sizeof(float));
    memcpy(c->image.data + (size_t)c->image.C * nv, v->data, (size_t)v->C * nv * sizeof(float));
    c->image.C += v->C;
    return 0;
}

int dataset_label_declared(const dataset_t *ds, int v)
{
    if (ds->n_labels == 0) return v >= 0 && v <= LABEL_MAX_CLASS;
    for (int i = 0; i < ds->n_labels; i++)
        for (int j = 0; j < ds->labels[i].n_values; j++)
            if (ds->labels[i].values[j] == v) return 1;
    return 0;
}

int dataset_label_bytes(const dataset_t *ds, const char *path, const volume_t *l, const int dim[3],
                        const double affine[4][4], const char *image, uint8_t **out, char *err)
{
    *out = NULL;
    if (l->C != 1) return set_err(err, "%s: label map has %d channels (need 1)", path, l->C);
    if (memcmp(l->dim, dim, sizeof l->dim))
        return set_err(err, "%s: label dims %dx%dx%d differ from image %s (%dx%dx%d)", path, l->dim[0],
                       l->dim[1], l->dim[2], image, dim[0], dim[1], dim[2]);
    int close = affine_close(affine, l->affine);
    if (!close) return set_err(err, "%s: label affine differs from image %s (geometry mismatch)", path, image);
    if (close == 1) log_msg('W', "%s: label origin differs from image %s's by under half a voxel; taken as the same grid", path, image);
    size_t n = volume_voxels(l);
    uint8_t *b = xmalloc(n ? n : 1);
    int rc = 0;
    char at[80];
    for (size_t i = 0; i < n && rc == 0; i++) {
        float x = l->data[i], r = rintf(x);
        if (!isfinite(x)) rc = set_err(err, "%s: NaN/Inf label at %s", path, volume_ijk(l->dim, i, at));
        // Real data stores labels as floats holding integers; allow float rounding only.
        else if (fabsf(x - r) > 1e-4f) rc = set_err(err, "%s: non-integer label %g at %s", path, x, volume_ijk(l->dim, i, at));
        else if (ds->ignore_label >= 0 && (int)r == ds->ignore_label) b[i] = LABEL_IGNORE;
        else if (dataset_label_declared(ds, (int)r)) b[i] = (uint8_t)r;
        else if (!ds->n_labels)
            rc = set_err(err, "%s: label value %g at %s outside [0, %d] (a dataset.json can declare %d as \"ignore\")",
                         path, r, volume_ijk(l->dim, i, at), LABEL_MAX_CLASS, LABEL_IGNORE);
        else
            rc = set_err(err, "%s: label value %g at %s outside the declared classes (%d declared, max %d)",
                         path, r, volume_ijk(l->dim, i, at), ds->n_labels, ds->num_classes - 1);
    }
    if (rc) free(b);
    else *out = b;
    return rc;
}

static int load_label(const dataset_t *ds, const char *path, case_t *c, const char *first, char *err)
{
    volume_t l;
    if (nifti_read_volume(path, &l, err) < 0) return -1;
    int rc = dataset_label_bytes(ds, path, &l, c->image.dim, c->image.affine, first, &c->label, err);
    volume_free(&l);
    return rc;
}

int case_read_images(case_t *c, const char *const *paths, int n, char *err)
{
    volume_free(&c->image);
    for (int k = 0; k < n; k++) {
        volume_t v;
        if (nifti_read_volume(paths[k], &v, err) < 0) { volume_free(&c->image); return -1; }
        int rc = check_finite(paths[k], &v, err);
        if (rc == 0) rc = stack(c, &v, paths[k], paths[0], err);
        volume_free(&v);
        if (rc < 0) { volume_free(&c->image); return -1; }
    }
    return 0;
}

int dataset_load_case(const dataset_t *ds, int i, case_t *c, char *err)
{
    memset(c, 0, sizeof *c);
    if (i < 0 || i >= ds->n_cases) return set_err(err, "%s: case index %d out of range", ds->dir, i);
    const dataset_case_t *dc = &ds->cases[i];
    snprintf(c->id, sizeof c->id, "%s", dc->id);
    if (dc->n_images < 1 || !dc->images[0]) return set_err(err, "%s: case %s has no image file", ds->dir, dc->id);
    for (int k = 0; k < dc->n_images; k++)
        if (!dc->images[k]) return set_err(err, "%s: case %s: channel %d has no file", ds->dir, dc->id, k);
    if (case_read_images(c, (const char *const *)dc->images, dc->n_images, err)) return -1;
    if (c->image.C != ds->n_channels) {
        set_err(err, "%s: %d channels but the dataset declares %d", dc->images[0], c->image.C, ds->n_channels);
        case_free(c);
        return -1;
    }
    for (int k = 0; k < c->image.C; k++) c->modality[k] = ds->modality[k];
    if (dc->label && load_label(ds, dc->label, c, dc->images[0], err) < 0) { case_free(c); return -1; }
    return 0;
}

void case_free(case_t *c)
{
    volume_free(&c->image);
    free(c->label);
    c->label = NULL;
}
