/*
augment_crop.c -- label-balanced crop centres (MONAI RandCropByPosNegLabeld: a centre is drawn
uniformly from the foreground indices with probability pos/(pos+neg), else from the background
ones; ignored voxels are neither, and a volume with nothing else gets a uniform centre), the crop box, and the exact gather that cuts a patch when the sampling matrix is a signed
permutation (flips, rot90): each output row is one run along one source axis, copied with
memcpy (or a fused multiply-add when intensity scale/shift is on), reversed for a flip, strided
for a rotation that brings another axis into the row. Anything else goes to augment_resample.c.
*/
#include "augment.h"
#include "augment_internal.h"
#include "check.h"
#include <math.h>
#include <string.h>

void augment_pick_centre(rng_t *r, const aug_volume_t *v, double pos_ratio, int class_balanced, int centre[3],
                         int *positive)
{
    int pos = rng_uniform(r) < pos_ratio;
    if (v->n_fg == 0) pos = 0;                      // MONAI warns and falls back the same way
    if (v->n_bg == 0) pos = 1;
    uint32_t idx;
    size_t hw = (size_t)v->dim[1] * v->dim[2];
    if (v->n_fg == 0 && v->n_bg == 0) {             // every voxel ignored
        idx = (uint32_t)rng_below(r, (uint64_t)hw * v->dim[0]);
        pos = 0;
    } else if (pos && class_balanced) {
        int c = v->cls_present[rng_below(r, (uint64_t)v->n_cls)];
        idx = v->fg[v->cls_start[c] + rng_below(r, v->cls_start[c + 1] - v->cls_start[c])];
    } else {
        idx = pos ? v->fg[rng_below(r, v->n_fg)] : v->bg[rng_below(r, v->n_bg)];
    }
    centre[0] = (int)(idx / hw);
    centre[1] = (int)(idx / v->dim[2] % v->dim[1]);
    centre[2] = (int)(idx % v->dim[2]);
    *positive = pos;
}

void augment_origin(const int centre[3], const int dim[3], const int patch[3], int origin[3])
{
    for (int d = 0; d < 3; d++) {
        int o = centre[d] - patch[d] / 2;           // centre at index P/2 of the patch
        int a = dim[d] - patch[d] < 0 ? dim[d] - patch[d] : 0;   // smaller volume: it stays inside
        int b = dim[d] - patch[d] > 0 ? dim[d] - patch[d] : 0;
        origin[d] = o < a ? a : o > b ? b : o;
    }
}

// A is a signed permutation and the source position of voxel 0 an integer: exact gather.
int aug_is_gather(const double A[3][3], const double s0[3], int si[3], int axis[3], int sign[3])
{
    for (int j = 0; j < 3; j++) {                   // column j: where output axis j goes
        int nz = 0;
        for (int i = 0; i < 3; i++) {
            if (A[i][j] == 0) continue;
            if (fabs(A[i][j]) != 1) return 0;
            axis[j] = i;
            sign[j] = A[i][j] > 0 ? 1 : -1;
            nz++;
        }
        if (nz != 1) return 0;
    }
    if (axis[0] == axis[1] || axis[0] == axis[2] || axis[1] == axis[2]) return 0;
    for (int i = 0; i < 3; i++) {
        double r = floor(s0[i] + 0.5);
        if (fabs(s0[i] - r) > 1e-9 || fabs(r) > 1e8) return 0;
        si[i] = (int)r;
    }
    return 1;
}

// One output row of n voxels: dst[x] for x in [x0, x1) reads src[(x - x0) * step] (src = the
// source voxel of x0), pad elsewhere.
static void row_f32(float *dst, const float *src, long step, int n, int x0, int x1, float pad, float mul, float add)
{
    float pv = pad * mul + add;
    int m = x1 - x0;
    float *d = dst + x0;
    for (int x = 0; x < x0; x++) dst[x] = pv;
    if (step == 1 && mul == 1.0f && add == 0.0f) {
        memcpy(d, src, (size_t)m * sizeof(float));
    } else if (step == 1) {
        for (int x = 0; x < m; x++) d[x] = src[x] * mul + add;
    } else if (step == -1) {
        for (int x = 0; x < m; x++) d[x] = src[-x] * mul + add;
    } else {
        for (int x = 0; x < m; x++) d[x] = src[(long)x * step] * mul + add;
    }
    for (int x = x1; x < n; x++) dst[x] = pv;
}

static void row_u8(uint8_t *dst, const uint8_t *src, long step, int n, int x0, int x1)
{
    int m = x1 - x0;
    if (x0 > 0) memset(dst, 0, (size_t)x0);
    if (step == 1) memcpy(dst + x0, src, (size_t)m);
    else for (int x = 0; x < m; x++) dst[x0 + x] = src[(long)x * step];
    if (x1 < n) memset(dst + x1, 0, (size_t)(n - x1));
}

// Gather: output (z, y, x) reads source s = si + z*e0 + y*e1 + x*e2, e_j = sign[j] * unit(axis[j]).
static void gather(float *img, uint8_t *lab, const aug_volume_t *v, const int P[3], const int si[3],
                   const int axis[3], const int sign[3], float mul, float add)
{
    const long stride[3] = { (long)v->dim[1] * v->dim[2], v->dim[2], 1 };
    const size_t pn = (size_t)P[0] * P[1] * P[2], vn = (size_t)v->dim[0] * v->dim[1] * v->dim[2];
    const int ax = axis[2], sx = sign[2];
    const long step = sx * stride[ax];
    for (int z = 0; z < P[0]; z++)
        for (int y = 0; y < P[1]; y++) {
            int s[3] = { si[0], si[1], si[2] };
            s[axis[0]] += sign[0] * z;
            s[axis[1]] += sign[1] * y;
            int inside = 1;
            for (int i = 0; i < 3; i++)
                if (i != ax && (s[i] < 0 || s[i] >= v->dim[i])) inside = 0;
            // x range with 0 <= s[ax] + sx*x < dim[ax]
            int x0, x1;
            if (sx > 0) { x0 = -s[ax]; x1 = v->dim[ax] - s[ax]; }
            else { x0 = s[ax] - v->dim[ax] + 1; x1 = s[ax] + 1; }
            x0 = x0 < 0 ? 0 : x0;
            x1 = x1 > P[2] ? P[2] : x1;
            if (!inside || x1 < x0) x0 = x1 = 0;
            // offset of the source voxel of x0 (inside the volume whenever x1 > x0)
            long base = 0;
            if (x1 > x0) {
                s[ax] += sx * x0;
                base = (long)s[0] * stride[0] + (long)s[1] * stride[1] + (long)s[2] * stride[2];
            }
            size_t orow = ((size_t)z * P[1] + y) * P[2];
            for (int c = 0; c < v->C; c++)
                row_f32(img + c * pn + orow, v->image + c * vn + base, step, P[2], x0, x1, v->pad[c], mul, add);
            if (lab) row_u8(lab + orow, v->labels + base, step, P[2], x0, x1);
        }
}

int augment_extract(float *img, uint8_t *lab, const aug_volume_t *v, const int P[3],
                    const double A[3][3], const double bc[3], float mul, float add, int force_linear)
{
    double s0[3];                                   // source position of output voxel (0, 0, 0)
    for (int i = 0; i < 3; i++) {
        s0[i] = bc[i];
        for (int j = 0; j < 3; j++) s0[i] -= A[i][j] * (P[j] - 1) * 0.5;
    }
    int si[3], axis[3], sign[3];
    if (!force_linear && aug_is_gather(A, s0, si, axis, sign)) {
        gather(img, lab, v, P, si, axis, sign, mul, add);
        return 0;
    }
    aug_resample(img, lab, v, P, A, s0, mul, add);
    return 1;
}
