/*
preprocess_foreground.c -- the label-independent foreground ("body") mask, its bounding box,
and cropping a case to it (system.md "Foreground"; MONAI CropForegroundd with a select_fn,
nnU-Net crop_to_nonzero with the background taken as each channel's minimum, not zero). As
nnU-Net's create_nonzero_mask, the mask is a body: background enclosed by it (air in the bowel,
a signal void inside the head) is filled in, so a z-score over it keeps such voxels dark instead
of setting them to the mean.
*/
#include "preprocess.h"
#include "check.h"
#include <stdlib.h>
#include <string.h>

// A ring of voxel indices for the breadth-first search below, grown when full.
typedef struct { size_t *v, cap, head, tail; } ring_t;

// Mark background voxel p (mask 0) as reached from the border (2) and queue it.
static void visit(ring_t *r, uint8_t *mask, size_t p)
{
    if (mask[p]) return;
    mask[p] = 2;
    if (r->tail - r->head == r->cap) {
        size_t *g = xmalloc(2 * r->cap * sizeof *g);
        for (size_t i = 0; i < r->cap; i++) g[i] = r->v[(r->head + i) % r->cap];
        free(r->v);
        r->v = g;
        r->head = 0;
        r->tail = r->cap;
        r->cap *= 2;
    }
    r->v[r->tail++ % r->cap] = p;
}

// Background voxels not 6-connected to the volume's border become foreground (scipy's
// binary_fill_holes with its default structure, as nnU-Net calls it): a search from every
// background voxel of the border marks the outside; the background left unmarked is holes.
void preprocess_fill_holes(uint8_t *mask, const int d[3])
{
    const size_t n = (size_t)d[0] * d[1] * d[2], plane = (size_t)d[1] * d[2];
    ring_t r = { .v = xmalloc(1024 * sizeof(size_t)), .cap = 1024 };
    for (int i = 0; i < d[0]; i++)
        for (int j = 0; j < d[1]; j++) {
            int inner = i > 0 && i < d[0] - 1 && j > 0 && j < d[1] - 1;
            for (int k = 0; k < d[2]; k += inner && k == 0 && d[2] > 1 ? d[2] - 1 : 1)
                visit(&r, mask, (size_t)i * plane + (size_t)j * d[2] + k);
        }
    while (r.head < r.tail) {
        size_t p = r.v[r.head++ % r.cap];
        int k = (int)(p % d[2]), j = (int)(p / d[2] % d[1]), i = (int)(p / plane);
        if (i > 0) visit(&r, mask, p - plane);
        if (i < d[0] - 1) visit(&r, mask, p + plane);
        if (j > 0) visit(&r, mask, p - d[2]);
        if (j < d[1] - 1) visit(&r, mask, p + d[2]);
        if (k > 0) visit(&r, mask, p - 1);
        if (k < d[2] - 1) visit(&r, mask, p + 1);
    }
    free(r.v);
    for (size_t i = 0; i < n; i++) mask[i] = mask[i] != 2;
}

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
    preprocess_fill_holes(mask, img->dim);
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
