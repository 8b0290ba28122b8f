/*
preprocess_resample.c -- resampling of volumes between voxel grids along their own axes
(trilinear for images and float maps, each label linearly for label maps; nearest along a
thick-slice axis, as nnU-Net's separate z), extent aligned as preprocess.h documents. It is not the network's up/down-sampling op (common/ops/), and it never rotates:
direction cosines stay in the affine, like nnU-Net's resampling in voxel space.
*/
#include "preprocess.h"
#include "check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int preprocess_out_extent(int n, double s, double t)
{
    if (t <= 0) return n;
    long m = lround((double)n * s / t);
    return m < 1 ? 1 : (int)m;
}

// Source coordinate of out voxel j when n source voxels become m.
static double src_coord(int j, int n, int m) { return (j + 0.5) * (double)n / m - 0.5; }

void preprocess_resampled_affine(double out[4][4], const double in[4][4], const int in_dim[3],
                                 const int out_dim[3])
{
    double T[4][4] = {{0}};
    for (int d = 0; d < 3; d++) {
        double r = (double)in_dim[d] / out_dim[d];
        T[d][d] = r;
        T[d][3] = 0.5 * r - 0.5;
    }
    T[3][3] = 1;
    double tmp[4][4];
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
            double acc = 0;
            for (int k = 0; k < 4; k++) acc += in[r][k] * T[k][c];
            tmp[r][c] = acc;
        }
    memcpy(out, tmp, sizeof tmp);
}

// Per-axis interpolation table: lower index, upper index and weight of the upper one.
typedef struct { int *i0, *i1; float *w; } axis_tab_t;

static axis_tab_t axis_table(int n, int m)
{
    axis_tab_t t = { xmalloc((size_t)m * sizeof(int)), xmalloc((size_t)m * sizeof(int)),
                     xmalloc((size_t)m * sizeof(float)) };
    for (int j = 0; j < m; j++) {
        double x = src_coord(j, n, m);
        if (x < 0) x = 0;                       // edge replication outside the source centres
        if (x > n - 1) x = n - 1;
        int a = (int)floor(x);
        if (a > n - 1) a = n - 1;
        t.i0[j] = a;
        t.i1[j] = a + 1 < n ? a + 1 : a;
        t.w[j] = (float)(x - a);
    }
    return t;
}

// The same table for nearest-neighbour sampling: one source index (ties go up: floor(x + 0.5)),
// weight 0.
static axis_tab_t axis_table_nearest(int n, int m)
{
    axis_tab_t t = axis_table(n, m);
    for (int j = 0; j < m; j++) {
        long i = lround(floor(src_coord(j, n, m) + 0.5));
        t.i0[j] = t.i1[j] = i < 0 ? 0 : i > n - 1 ? n - 1 : (int)i;
        t.w[j] = 0;
    }
    return t;
}

static axis_tab_t table(int d, int nearest_axis, int n, int m)
{
    return d == nearest_axis ? axis_table_nearest(n, m) : axis_table(n, m);
}

static void axis_free(axis_tab_t *t) { free(t->i0); free(t->i1); free(t->w); }

int preprocess_separate_axis(const double from[3], const double to[3])
{
    for (int pass = 0; pass < 2; pass++) {
        const double *s = pass ? to : from;
        double lo = fmin(s[0], fmin(s[1], s[2])), hi = fmax(s[0], fmax(s[1], s[2]));
        if (!(hi > PREPROCESS_ANISO * lo)) continue;
        int axis = -1, ties = 0;
        for (int d = 0; d < 3; d++)
            if (s[d] == hi) { axis = d; ties++; }
        return ties == 1 ? axis : -1;
    }
    return -1;
}

void preprocess_resample_linear(float *y, const int out_dim[3], const float *x, int C, const int in_dim[3],
                                int nearest_axis)
{
    axis_tab_t ta = table(0, nearest_axis, in_dim[0], out_dim[0]), tb = table(1, nearest_axis, in_dim[1], out_dim[1]);
    axis_tab_t tc = table(2, nearest_axis, in_dim[2], out_dim[2]);
    size_t in_n = (size_t)in_dim[0] * in_dim[1] * in_dim[2];
    size_t out_n = (size_t)out_dim[0] * out_dim[1] * out_dim[2];
    size_t sH = (size_t)in_dim[2], sD = (size_t)in_dim[1] * in_dim[2];
    for (int c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * in_n;
        float *yc = y + (size_t)c * out_n;
        #pragma omp parallel for schedule(static)
        for (int a = 0; a < out_dim[0]; a++) {
            const float *p0 = xc + ta.i0[a] * sD, *p1 = xc + ta.i1[a] * sD;
            double wa = ta.w[a];
            for (int b = 0; b < out_dim[1]; b++) {
                size_t r0 = tb.i0[b] * sH, r1 = tb.i1[b] * sH;
                double wb = tb.w[b];
                float *out = yc + ((size_t)a * out_dim[1] + b) * out_dim[2];
                for (int k = 0; k < out_dim[2]; k++) {
                    int k0 = tc.i0[k], k1 = tc.i1[k];
                    double wc = tc.w[k];
                    // double accumulation: a linear ramp comes back exact to float rounding
                    double v00 = p0[r0 + k0] + wc * (p0[r0 + k1] - p0[r0 + k0]);
                    double v01 = p0[r1 + k0] + wc * (p0[r1 + k1] - p0[r1 + k0]);
                    double v10 = p1[r0 + k0] + wc * (p1[r0 + k1] - p1[r0 + k0]);
                    double v11 = p1[r1 + k0] + wc * (p1[r1 + k1] - p1[r1 + k0]);
                    double v0 = v00 + wb * (v01 - v00), v1 = v10 + wb * (v11 - v10);
                    out[k] = (float)(v0 + wa * (v1 - v0));
                }
            }
        }
    }
    axis_free(&ta); axis_free(&tb); axis_free(&tc);
}

// One pass for every label at once: an output voxel's 8 source corners carry trilinear weights;
// each label present among them gets the sum of its corners' weights -- the value its own 0/1
// map would interpolate to -- and the voxel takes the highest label whose sum reaches 0.5, else
// 0 (nnU-Net's resize_segmentation: each label's map at order 1, >= 0.5, labels in ascending
// order, a later one overwriting).
void preprocess_resample_labels(uint8_t *y, const int out_dim[3], const uint8_t *x, const int in_dim[3],
                                int nearest_axis)
{
    axis_tab_t ta = table(0, nearest_axis, in_dim[0], out_dim[0]), tb = table(1, nearest_axis, in_dim[1], out_dim[1]);
    axis_tab_t tc = table(2, nearest_axis, in_dim[2], out_dim[2]);
    size_t sH = (size_t)in_dim[2], sD = (size_t)in_dim[1] * in_dim[2];
    #pragma omp parallel for schedule(static)
    for (int a = 0; a < out_dim[0]; a++) {
        const size_t ia[2] = { ta.i0[a] * sD, ta.i1[a] * sD };
        const double wa[2] = { 1 - (double)ta.w[a], ta.w[a] };
        for (int b = 0; b < out_dim[1]; b++) {
            const size_t ib[2] = { tb.i0[b] * sH, tb.i1[b] * sH };
            const double wb[2] = { 1 - (double)tb.w[b], tb.w[b] };
            uint8_t *out = y + ((size_t)a * out_dim[1] + b) * out_dim[2];
            for (int k = 0; k < out_dim[2]; k++) {
                const size_t ic[2] = { (size_t)tc.i0[k], (size_t)tc.i1[k] };
                const double wc[2] = { 1 - (double)tc.w[k], tc.w[k] };
                uint8_t lab[8];
                double sum[8];
                int n = 0;
                for (int c = 0; c < 8; c++) {
                    uint8_t v = x[ia[c >> 2] + ib[(c >> 1) & 1] + ic[c & 1]];
                    double w = wa[c >> 2] * wb[(c >> 1) & 1] * wc[c & 1];
                    int i = 0;
                    while (i < n && lab[i] != v) i++;
                    if (i == n) { lab[n] = v; sum[n++] = 0; }
                    sum[i] += w;
                }
                uint8_t best = 0;
                for (int i = 0; i < n; i++)
                    if (sum[i] >= 0.5 && lab[i] > best) best = lab[i];
                out[k] = best;
            }
        }
    }
    axis_free(&ta); axis_free(&tb); axis_free(&tc);
}
