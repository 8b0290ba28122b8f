/*
augment_resample.c -- the one resampling pass of the nnU-Net spatial transform (rotation and
scaling, plus any flip/rot90 folded into the same matrix): output voxel p reads the source
position s = s0 + A p, trilinear for the image (batchgenerators order 1) and nearest for the
labels (batchgenerators v1's order 0; nnU-Net v2 interpolates each label linearly and takes the
largest, which nearest approximates without mixing labels), constant pad outside the volume
(image: the channel's pad value, labels: 0),
as batchgenerators' border_mode "constant". Voxel-space: spacing is ignored, as in nnU-Net's
isotropic case.
*/
#include "augment_internal.h"
#include <math.h>

// Corner weight helper: value of voxel (i, j, k) of channel x, or pad outside.
static inline float at(const float *x, const int dim[3], int i, int j, int k, float pad)
{
    if (i < 0 || j < 0 || k < 0 || i >= dim[0] || j >= dim[1] || k >= dim[2]) return pad;
    return x[((size_t)i * dim[1] + j) * dim[2] + k];
}

void aug_resample(float *img, uint8_t *lab, const aug_volume_t *v, const int P[3],
                  const double A[3][3], const double s0[3], float mul, float add)
{
    const int *dim = v->dim;
    const size_t pn = (size_t)P[0] * P[1] * P[2], vn = (size_t)dim[0] * dim[1] * dim[2];
    const size_t sD = (size_t)dim[1] * dim[2], sH = (size_t)dim[2];
    for (int z = 0; z < P[0]; z++)
        for (int y = 0; y < P[1]; y++) {
            double s[3];
            for (int i = 0; i < 3; i++) s[i] = s0[i] + A[i][0] * z + A[i][1] * y;
            size_t orow = ((size_t)z * P[1] + y) * P[2];
            for (int x = 0; x < P[2]; x++, s[0] += A[0][2], s[1] += A[1][2], s[2] += A[2][2]) {
                size_t o = orow + x;
                if (lab) {
                    int i = (int)floor(s[0] + 0.5), j = (int)floor(s[1] + 0.5), k = (int)floor(s[2] + 0.5);
                    int in = i >= 0 && j >= 0 && k >= 0 && i < dim[0] && j < dim[1] && k < dim[2];
                    lab[o] = in ? v->labels[i * sD + j * sH + k] : 0;
                }
                double fi = floor(s[0]), fj = floor(s[1]), fk = floor(s[2]);
                // far outside (|s| huge) every corner is pad: skip the casts
                if (fi < -1 || fj < -1 || fk < -1 || fi >= dim[0] || fj >= dim[1] || fk >= dim[2]) {
                    for (int c = 0; c < v->C; c++) img[c * pn + o] = v->pad[c] * mul + add;
                    continue;
                }
                int i = (int)fi, j = (int)fj, k = (int)fk;
                double wa = s[0] - fi, wb = s[1] - fj, wc = s[2] - fk;
                int inside = i >= 0 && j >= 0 && k >= 0 && i + 1 < dim[0] && j + 1 < dim[1] && k + 1 < dim[2];
                for (int c = 0; c < v->C; c++) {
                    const float *xc = v->image + c * vn;
                    double c000, c001, c010, c011, c100, c101, c110, c111;
                    if (inside) {
                        const float *p = xc + i * sD + j * sH + k;
                        c000 = p[0]; c001 = p[1]; c010 = p[sH]; c011 = p[sH + 1];
                        c100 = p[sD]; c101 = p[sD + 1]; c110 = p[sD + sH]; c111 = p[sD + sH + 1];
                    } else {
                        float pd = v->pad[c];
                        c000 = at(xc, dim, i, j, k, pd);         c001 = at(xc, dim, i, j, k + 1, pd);
                        c010 = at(xc, dim, i, j + 1, k, pd);     c011 = at(xc, dim, i, j + 1, k + 1, pd);
                        c100 = at(xc, dim, i + 1, j, k, pd);     c101 = at(xc, dim, i + 1, j, k + 1, pd);
                        c110 = at(xc, dim, i + 1, j + 1, k, pd); c111 = at(xc, dim, i + 1, j + 1, k + 1, pd);
                    }
                    double v00 = c000 + wc * (c001 - c000), v01 = c010 + wc * (c011 - c010);
                    double v10 = c100 + wc * (c101 - c100), v11 = c110 + wc * (c111 - c110);
                    double v0 = v00 + wb * (v01 - v00), v1 = v10 + wb * (v11 - v10);
                    img[c * pn + o] = (float)(v0 + wa * (v1 - v0)) * mul + add;
                }
            }
        }
}
