/*
metrics_hd95.c -- HD95 in millimetres (metrics.h gives the definition, which follows MONAI's
compute_hausdorff_distance): surface voxels by 6-neighbour erosion, an exact spacing-weighted
Euclidean distance transform of the other mask's surface, and numpy's linear percentile.

The distance transform is Felzenszwalb & Huttenlocher, "Distance Transforms of Sampled
Functions" (2012): the squared distance is separable, so three 1-D lower-envelope-of-parabolas
passes (one per axis, positions scaled by that axis's spacing) give it exactly in O(voxels).
Both masks are first cropped to the bounding box of their union: every surface voxel lies in it,
and outside it both masks are empty, so the crop changes no distance and saves most of the work.
*/
#include "metrics.h"
#include "check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

// 1-D squared distance transform of f (n samples `stride` apart, positions q * h mm) in place.
// v, z, g: scratch of n, n + 1 and n elements.
static void edt_line(double *f, size_t stride, int n, double h, int *v, double *z, double *g)
{
    for (int q = 0; q < n; q++) g[q] = f[(size_t)q * stride];
    int k = -1;
    for (int q = 0; q < n; q++) {
        if (isinf(g[q])) continue;                      // no parabola rooted here
        double xq = q * h, s = 0;
        while (k >= 0) {
            double xv = v[k] * h;
            s = ((g[q] + xq * xq) - (g[v[k]] + xv * xv)) / (2 * (xq - xv));
            if (s <= z[k]) k--;
            else break;
        }
        if (k < 0) { k = 0; z[0] = -INFINITY; }
        else { k++; z[k] = s; }
        v[k] = q;
        z[k + 1] = INFINITY;
    }
    if (k < 0) {                                        // nothing finite on this line
        for (int q = 0; q < n; q++) f[(size_t)q * stride] = INFINITY;
        return;
    }
    int j = 0;
    for (int q = 0; q < n; q++) {
        double x = q * h;
        while (z[j + 1] < x) j++;
        double dx = x - v[j] * h;
        f[(size_t)q * stride] = dx * dx + g[v[j]];
    }
}

// One pass along `axis` over every line of the (d0, d1, d2) volume.
static void edt_pass(double *out, const int dim[3], int axis, double h)
{
    size_t st[3] = { (size_t)dim[1] * dim[2], (size_t)dim[2], 1 };
    int a1 = axis == 0 ? 1 : 0, a2 = axis == 2 ? 1 : 2;    // the two other axes
    int n = dim[axis];
    long lines = (long)dim[a1] * dim[a2];
    #pragma omp parallel
    {
        int *v = xmalloc((size_t)n * sizeof(int));
        double *z = xmalloc((size_t)(n + 1) * sizeof(double)), *g = xmalloc((size_t)n * sizeof(double));
        #pragma omp for schedule(static)
        for (long L = 0; L < lines; L++) {
            size_t i1 = (size_t)(L / dim[a2]), i2 = (size_t)(L % dim[a2]);
            edt_line(out + i1 * st[a1] + i2 * st[a2], st[axis], n, h, v, z, g);
        }
        free(v); free(z); free(g);
    }
}

void metrics_edt_sq(double *out, const uint8_t *feature, const int dim[3], const double spacing[3])
{
    size_t n = (size_t)dim[0] * dim[1] * dim[2];
    for (size_t i = 0; i < n; i++) out[i] = feature[i] ? 0.0 : INFINITY;
    for (int axis = 0; axis < 3; axis++) edt_pass(out, dim, axis, spacing[axis]);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double metrics_percentile(double *x, size_t n, double p)
{
    ASSERT(n >= 1 && p >= 0 && p <= 100);
    qsort(x, n, sizeof *x, cmp_double);
    double rank = p / 100.0 * (double)(n - 1);
    size_t lo = (size_t)floor(rank);
    if (lo >= n - 1) return x[n - 1];
    double t = rank - (double)lo;
    return x[lo] + t * (x[lo + 1] - x[lo]);
}

// Surface of mask m inside a box of extents d: set voxels with a 6-neighbour unset or outside.
// Along a flat axis (the whole image one voxel thick: a 2D image read as (X, Y, 1)) there is no
// neighbour, so a 2D image's surface is its 4-neighbour contour, as MONAI's erosion of the 2D
// array gives -- not every pixel.
static void surface(uint8_t *s, const uint8_t *m, const int d[3], const int flat[3])
{
    size_t s0 = (size_t)d[1] * d[2], s1 = (size_t)d[2];
    for (int i = 0; i < d[0]; i++)
        for (int j = 0; j < d[1]; j++)
            for (int k = 0; k < d[2]; k++) {
                size_t p = i * s0 + j * s1 + k;
                int edge = (!flat[0] && (i == 0 || i == d[0] - 1)) || (!flat[1] && (j == 0 || j == d[1] - 1)) ||
                           (!flat[2] && (k == 0 || k == d[2] - 1));
                s[p] = m[p] && (edge || (!flat[0] && (!m[p - s0] || !m[p + s0])) ||
                                (!flat[1] && (!m[p - s1] || !m[p + s1])) || (!flat[2] && (!m[p - 1] || !m[p + 1])));
            }
}

// P95 of the distances from the surface voxels of sa to the nearest of sb. dist: scratch (n).
static double directed_p95(const uint8_t *sa, const uint8_t *sb, const int d[3], const double sp[3],
                           double *edt, double *dist)
{
    size_t n = (size_t)d[0] * d[1] * d[2], m = 0;
    metrics_edt_sq(edt, sb, d, sp);
    for (size_t i = 0; i < n; i++)
        if (sa[i]) dist[m++] = sqrt(edt[i]);
    ASSERT(m > 0);                                      // a non-empty mask has a surface
    return metrics_percentile(dist, m, 95.0);
}

double metrics_hd95(const uint8_t *a, const uint8_t *b, const int dim[3], const double spacing[3])
{
    int lo[3] = { dim[0], dim[1], dim[2] }, hi[3] = { -1, -1, -1 };
    int any_a = 0, any_b = 0;
    for (int i = 0; i < dim[0]; i++)
        for (int j = 0; j < dim[1]; j++)
            for (int k = 0; k < dim[2]; k++) {
                size_t p = ((size_t)i * dim[1] + j) * dim[2] + k;
                if (!a[p] && !b[p]) continue;
                any_a |= a[p] != 0;
                any_b |= b[p] != 0;
                int c[3] = { i, j, k };
                for (int x = 0; x < 3; x++) {
                    if (c[x] < lo[x]) lo[x] = c[x];
                    if (c[x] > hi[x]) hi[x] = c[x];
                }
            }
    if (!any_a || !any_b) return NAN;

    int d[3] = { hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1 };
    size_t n = (size_t)d[0] * d[1] * d[2];
    uint8_t *ca = xmalloc(n), *cb = xmalloc(n), *sa = xmalloc(n), *sb = xmalloc(n);
    for (int i = 0; i < d[0]; i++)
        for (int j = 0; j < d[1]; j++) {
            size_t src = ((size_t)(i + lo[0]) * dim[1] + (j + lo[1])) * dim[2] + lo[2];
            size_t dst = ((size_t)i * d[1] + j) * d[2];
            for (int k = 0; k < d[2]; k++) {
                ca[dst + k] = a[src + k] != 0;
                cb[dst + k] = b[src + k] != 0;
            }
        }
    const int flat[3] = { dim[0] == 1, dim[1] == 1, dim[2] == 1 };
    surface(sa, ca, d, flat);
    surface(sb, cb, d, flat);
    double *edt = xmalloc(n * sizeof(double)), *dist = xmalloc(n * sizeof(double));
    double ab = directed_p95(sa, sb, d, spacing, edt, dist);
    double ba = directed_p95(sb, sa, d, spacing, edt, dist);
    free(ca); free(cb); free(sa); free(sb); free(edt); free(dist);
    return ab > ba ? ab : ba;
}

void metrics_hd95_classes(double *hd, const uint8_t *pred, const uint8_t *ref, const int dim[3],
                          const double spacing[3], int first, int K)
{
    size_t n = (size_t)dim[0] * dim[1] * dim[2];
    uint8_t *mp = xmalloc(n), *mr = xmalloc(n);
    for (int c = first; c < K; c++) {
        for (size_t i = 0; i < n; i++) {
            mp[i] = pred[i] == c;
            mr[i] = ref[i] == c;
        }
        hd[c] = metrics_hd95(mp, mr, dim, spacing);
    }
    free(mp); free(mr);
}
