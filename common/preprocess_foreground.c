/*
preprocess_foreground.c -- the label-independent foreground ("body") mask, its bounding box,
and cropping a case to it (system.md "Foreground"; MONAI CropForegroundd with a select_fn,
nnU-Net crop_to_nonzero with the background taken as each channel's minimum, not zero).
*/
#include "preprocess.h"
#include "check.h"
#include <stdlib.h>
#include <string.h>

size_t preprocess_foreground_mask(uint8_t *mask, const volume_t *img, const modality_t *mod,
                                  const preprocess_cfg_t *cfg)
{
    size_t n = volume_voxels(img);
    memset(mask, cfg->fg_mode == FG_NONE ? 1 : 0, n);
    if (cfg->fg_mode == FG_NONE) return n;
    for (int c = 0; c < img->C; c++) {
        const float *x = img->data + (size_t)c * n;
        int by_min = cfg->fg_mode == FG_MIN || (cfg->fg_mode == FG_AUTO && mod[c] != MODALITY_CT);
        if (by_min) {
            // Background = this channel's minimum (brats2013-6 is z-scored: min ~ -3.6, not 0).
            float lo = x[0];
            for (size_t i = 1; i < n; i++) if (x[i] < lo) lo = x[i];
            for (size_t i = 0; i < n; i++) mask[i] |= x[i] != lo;
        } else {
            float t = (float)cfg->fg_threshold;
            for (size_t i = 0; i < n; i++) mask[i] |= x[i] > t;
        }
    }
    size_t count = 0;
    for (size_t i = 0; i < n; i++) count += mask[i];
    return count;
}

int preprocess_foreground_bbox(const uint8_t *mask, const int dim[3], const int margin[3],
                               int lo[3], int size[3])
{
    int mn[3] = {dim[0], dim[1], dim[2]}, mx[3] = {-1, -1, -1};
    for (int a = 0; a < dim[0]; a++)
        for (int b = 0; b < dim[1]; b++) {
            const uint8_t *row = mask + ((size_t)a * dim[1] + b) * dim[2];
            int first = -1, last = -1;
            for (int k = 0; k < dim[2]; k++)
                if (row[k]) { if (first < 0) first = k; last = k; }
            if (first < 0) continue;
            if (a < mn[0]) mn[0] = a;
            if (a > mx[0]) mx[0] = a;
            if (b < mn[1]) mn[1] = b;
            if (b > mx[1]) mx[1] = b;
            if (first < mn[2]) mn[2] = first;
            if (last > mx[2]) mx[2] = last;
        }
    if (mx[0] < 0) return -1;
    for (int d = 0; d < 3; d++) {
        int l = mn[d] - margin[d], h = mx[d] + margin[d];
        if (l < 0) l = 0;
        if (h > dim[d] - 1) h = dim[d] - 1;
        lo[d] = l;
        size[d] = h - l + 1;
    }
    return 0;
}

static uint8_t *crop_u8(const uint8_t *x, const int dim[3], const int lo[3], const int size[3])
{
    uint8_t *y = xmalloc((size_t)size[0] * size[1] * size[2]);
    for (int a = 0; a < size[0]; a++)
        for (int b = 0; b < size[1]; b++)
            memcpy(y + ((size_t)a * size[1] + b) * size[2],
                   x + ((size_t)(a + lo[0]) * dim[1] + b + lo[1]) * dim[2] + lo[2], (size_t)size[2]);
    return y;
}

void preprocess_crop(volume_t *img, uint8_t **label, uint8_t **mask, const int lo[3], const int size[3])
{
    const int *dim = img->dim;
    for (int d = 0; d < 3; d++) ASSERT(lo[d] >= 0 && size[d] >= 1 && lo[d] + size[d] <= dim[d]);
    size_t in_n = volume_voxels(img), out_n = (size_t)size[0] * size[1] * size[2];
    float *y = xmalloc((size_t)img->C * out_n * sizeof(float));
    for (int c = 0; c < img->C; c++)
        for (int a = 0; a < size[0]; a++)
            for (int b = 0; b < size[1]; b++)
                memcpy(y + (size_t)c * out_n + ((size_t)a * size[1] + b) * size[2],
                       img->data + (size_t)c * in_n + ((size_t)(a + lo[0]) * dim[1] + b + lo[1]) * dim[2] + lo[2],
                       (size_t)size[2] * sizeof(float));
    for (int p = 0; p < 2; p++) {
        uint8_t **m = p ? mask : label;
        if (m && *m) {
            uint8_t *t = crop_u8(*m, dim, lo, size);
            free(*m);
            *m = t;
        }
    }
    // Voxel (0,0,0) of the crop is voxel lo of the source: shift the translation.
    for (int r = 0; r < 3; r++)
        img->affine[r][3] += img->affine[r][0] * lo[0] + img->affine[r][1] * lo[1] + img->affine[r][2] * lo[2];
    free(img->data);
    img->data = y;
    memcpy(img->dim, size, sizeof img->dim);
}
