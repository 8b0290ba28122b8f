/*
nifti_compare.c -- test helper for hosts without nibabel (the GPU host): compare NIfTI volumes
as this system reads them, and write mirrored copies.
  nifti_compare A B [--mean-with C] [--flip AXES]   A against B (or (B + C) / 2; or B mirrored
                                      along AXES, e.g. 0,2: array axes i, j, k); same dims and
                                      channels. Prints {"max_abs", "max_ref", "differ", "values"}:
                                      the largest |difference|, the largest |reference value|,
                                      and how many values differ at all.
  nifti_compare --flip-write IN OUT AXES   IN mirrored along AXES, same affine, as float32.
*/
#include "check.h"
#include "volume.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int axes_mask(const char *s)
{
    int m = 0;
    for (const char *p = s; *p; p++) {
        if (*p >= '0' && *p <= '2') m |= 1 << (*p - '0');
        else if (*p != ',') DIE("axes '%s': give 0, 1, 2 separated by commas", s);
    }
    return m;
}

static void load(const char *path, volume_t *v)
{
    char err[ERR_LEN];
    if (nifti_read_volume(path, v, err)) DIE("%s", err);
}

// v mirrored in place along the axes of mask (bit a: axis a), every channel.
static void flip(volume_t *v, int mask)
{
    const int *d = v->dim;
    size_t n = volume_voxels(v);
    float *out = xmalloc(n * v->C * sizeof(float));
    for (int c = 0; c < v->C; c++)
        for (int i = 0; i < d[0]; i++)
            for (int j = 0; j < d[1]; j++)
                for (int k = 0; k < d[2]; k++) {
                    int fi = mask & 1 ? d[0] - 1 - i : i, fj = mask & 2 ? d[1] - 1 - j : j, fk = mask & 4 ? d[2] - 1 - k : k;
                    out[c * n + ((size_t)i * d[1] + j) * d[2] + k] = v->data[c * n + ((size_t)fi * d[1] + fj) * d[2] + fk];
                }
    free(v->data);
    v->data = out;
}

int main(int argc, char **argv)
{
    char err[ERR_LEN];
    volume_t a, b, c;
    if (argc == 5 && !strcmp(argv[1], "--flip-write")) {
        load(argv[2], &a);
        flip(&a, axes_mask(argv[4]));
        if (nifti_write_volume(argv[3], &a, 16, err)) DIE("%s", err);
        volume_free(&a);
        return 0;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: nifti_compare A B [--mean-with C] [--flip AXES] | --flip-write IN OUT AXES\n");
        return 2;
    }
    load(argv[1], &a);
    load(argv[2], &b);
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--mean-with") && i + 1 < argc) {
            load(argv[++i], &c);
            if (memcmp(c.dim, b.dim, sizeof b.dim) || c.C != b.C) DIE("%s: other dims or channels than %s", argv[i], argv[2]);
            for (size_t k = 0; k < volume_voxels(&b) * b.C; k++) b.data[k] = (b.data[k] + c.data[k]) / 2;
            volume_free(&c);
        } else if (!strcmp(argv[i], "--flip") && i + 1 < argc) {
            flip(&b, axes_mask(argv[++i]));
        } else {
            DIE("unknown argument %s", argv[i]);
        }
    }
    if (memcmp(a.dim, b.dim, sizeof a.dim) || a.C != b.C) DIE("%s and %s: other dims or channels", argv[1], argv[2]);
    double max_abs = 0, max_ref = 0;
    size_t differ = 0, n = volume_voxels(&a) * a.C;
    for (size_t k = 0; k < n; k++) {
        double d = fabs((double)a.data[k] - b.data[k]);
        max_abs = d > max_abs ? d : max_abs;
        max_ref = fabs(b.data[k]) > max_ref ? fabs(b.data[k]) : max_ref;
        differ += d > 0;
    }
    printf("{\"max_abs\": %.6g, \"max_ref\": %.6g, \"differ\": %zu, \"values\": %zu}\n", max_abs, max_ref, differ, n);
    volume_free(&a);
    volume_free(&b);
    return 0;
}
