/*
orient.c -- axis codes of an affine and reorientation of a volume to RAS and back (orient.h).

Follows nibabel.orientations: io_orientation (polar decomposition, then a greedy choice of world
axis per voxel axis), apply_orientation (flip, then transpose) and inv_ornt_aff (the affine that
keeps each voxel's world coordinate). The polar factor of the 3x3 direction matrix is computed
with Newton's iteration X <- (X + X^-T) / 2, which converges to the same orthogonal matrix as
nibabel's SVD for any non-singular matrix.
*/
#include "orient.h"
#include "check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

// Inverse transpose of a 3x3 matrix; returns the determinant (0 when singular).
static double inv_transpose3(const double a[3][3], double out[3][3])
{
    double c[3][3];  // cofactors
    for (int r = 0; r < 3; r++)
        for (int k = 0; k < 3; k++) {
            int r1 = (r + 1) % 3, r2 = (r + 2) % 3, k1 = (k + 1) % 3, k2 = (k + 2) % 3;
            c[r][k] = a[r1][k1] * a[r2][k2] - a[r1][k2] * a[r2][k1];
        }
    double det = a[0][0] * c[0][0] + a[0][1] * c[0][1] + a[0][2] * c[0][2];
    if (det == 0 || !isfinite(det)) return 0;
    // inverse = adj / det = cofactors^T / det, so inverse^T = cofactors / det
    for (int r = 0; r < 3; r++)
        for (int k = 0; k < 3; k++) out[r][k] = c[r][k] / det;
    return det;
}

int orient_of_affine(const double affine[4][4], ornt_t *o, char *err)
{
    double x[3][3];
    for (int col = 0; col < 3; col++) {
        double n = 0;
        for (int r = 0; r < 3; r++) n += affine[r][col] * affine[r][col];
        n = sqrt(n);
        if (!(n > 0) || !isfinite(n))
            return set_err(err, "affine column %d is zero or not finite", col);
        for (int r = 0; r < 3; r++) x[r][col] = affine[r][col] / n;  // unit columns, as nibabel
    }
    // polar decomposition: the closest orthogonal matrix to x
    for (int it = 0; it < 100; it++) {
        double xit[3][3], delta = 0;
        double det = inv_transpose3(x, xit);
        if (fabs(det) < 1e-12) return set_err(err, "affine is singular (columns are parallel)");
        for (int r = 0; r < 3; r++)
            for (int k = 0; k < 3; k++) {
                double nx = 0.5 * (x[r][k] + xit[r][k]);
                delta = fmax(delta, fabs(nx - x[r][k]));
                x[r][k] = nx;
            }
        if (delta < 1e-15) break;
    }
    for (int in_ax = 0; in_ax < 3; in_ax++) {
        int best = -1;
        double bestv = 0;
        for (int r = 0; r < 3; r++)
            if (fabs(x[r][in_ax]) > bestv) { bestv = fabs(x[r][in_ax]); best = r; }
        if (best < 0 || bestv <= 1e-8) return set_err(err, "affine has no direction for axis %d", in_ax);
        o->axis[in_ax] = best;
        o->flip[in_ax] = x[best][in_ax] < 0 ? -1 : 1;
        for (int k = 0; k < 3; k++) x[best][k] = 0;  // that world axis is taken
    }
    return 0;
}

int orient_axcodes(const double affine[4][4], char codes[4], char *err)
{
    static const char pos[3] = {'R', 'A', 'S'}, neg[3] = {'L', 'P', 'I'};
    ornt_t o;
    strcpy(codes, "???");
    if (orient_of_affine(affine, &o, err)) return -1;
    for (int d = 0; d < 3; d++) codes[d] = o.flip[d] > 0 ? pos[o.axis[d]] : neg[o.axis[d]];
    return 0;
}

// dst = src @ T where T maps a dst voxel index to the src voxel index for the move
// "src axis s goes to dst axis perm[s], reversed when flip[s] < 0".
static void moved_affine(double dst[4][4], const double src[4][4], const int dim[3],
                         const int perm[3], const int flip[3])
{
    double t[4][4] = {{0}};
    for (int s = 0; s < 3; s++) {
        t[s][perm[s]] = flip[s];
        t[s][3] = flip[s] < 0 ? dim[s] - 1 : 0;
    }
    t[3][3] = 1;
    double out[4][4];
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
            double acc = 0;
            for (int k = 0; k < 4; k++) acc += src[r][k] * t[k][c];
            out[r][c] = acc;
        }
    memcpy(dst, out, sizeof out);
}

static int valid_move(const int perm[3], const int flip[3])
{
    int seen = 0;
    for (int s = 0; s < 3; s++) {
        if (perm[s] < 0 || perm[s] > 2 || (flip[s] != 1 && flip[s] != -1)) return 0;
        seen |= 1 << perm[s];
    }
    return seen == 7;
}

void orient_permute_data(float *dst, int dst_dim[3], const float *src, int C, const int dim[3],
                         const int perm[3], const int flip[3])
{
    for (int s = 0; s < 3; s++) dst_dim[perm[s]] = dim[s];
    size_t dstride[3] = {(size_t)dst_dim[1] * dst_dim[2], (size_t)dst_dim[2], 1};
    // per source axis: where index 0 lands and how far one step moves in dst
    ptrdiff_t step[3], start[3];
    for (int s = 0; s < 3; s++) {
        ptrdiff_t st = (ptrdiff_t)dstride[perm[s]];
        step[s] = flip[s] < 0 ? -st : st;
        start[s] = flip[s] < 0 ? (ptrdiff_t)(dim[s] - 1) * st : 0;
    }
    size_t n = (size_t)dim[0] * dim[1] * dim[2];
    for (int c = 0; c < C; c++) {
        const float *in = src + (size_t)c * n;
        float *out = dst + (size_t)c * n;
        for (int i = 0; i < dim[0]; i++)
            for (int j = 0; j < dim[1]; j++) {
                ptrdiff_t o = start[0] + i * step[0] + start[1] + j * step[1] + start[2];
                for (int k = 0; k < dim[2]; k++, o += step[2]) out[o] = *in++;
            }
    }
}

// Apply a move to the whole volume (data, dim, spacing, affine).
static int move_volume(volume_t *v, const int perm[3], const int flip[3], char *err)
{
    if (!valid_move(perm, flip)) return set_err(err, "invalid axis permutation");
    int identity = 1;
    for (int s = 0; s < 3; s++) identity &= perm[s] == s && flip[s] == 1;
    if (identity) return 0;
    size_t n = (size_t)v->C * volume_voxels(v);
    float *nd = xmalloc(n * sizeof(float));
    int ndim[3];
    orient_permute_data(nd, ndim, v->data, v->C, v->dim, perm, flip);
    double nsp[3];
    for (int s = 0; s < 3; s++) nsp[perm[s]] = v->spacing[s];
    moved_affine(v->affine, v->affine, v->dim, perm, flip);
    free(v->data);
    v->data = nd;
    memcpy(v->dim, ndim, sizeof ndim);
    memcpy(v->spacing, nsp, sizeof nsp);
    return 0;
}

int orient_ras_affine(const double affine[4][4], const int dim[3], double ras[4][4], char *err)
{
    ornt_t o;
    if (orient_of_affine(affine, &o, err)) return -1;
    moved_affine(ras, affine, dim, o.axis, o.flip);
    return 0;
}

int orient_to_ras(volume_t *v, ornt_t *from, char *err)
{
    ornt_t o;
    if (orient_of_affine(v->affine, &o, err)) return -1;
    if (move_volume(v, o.axis, o.flip, err)) return -1;
    if (from) *from = o;
    return 0;
}

int orient_from_ras(volume_t *v, const ornt_t *to, char *err)
{
    if (!valid_move(to->axis, to->flip)) return set_err(err, "invalid source orientation");
    // RAS axis to->axis[d] goes back to source axis d, reversed by the same flip
    int perm[3], flip[3];
    for (int d = 0; d < 3; d++) {
        perm[to->axis[d]] = d;
        flip[to->axis[d]] = to->flip[d];
    }
    return move_volume(v, perm, flip, err);
}
