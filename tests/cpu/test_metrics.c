/*
test_metrics.c -- Dice rules, region Dice and the region -> label round trip, numpy's percentile
convention, the exact distance transform and HD95, each against a brute-force or hand-worked
reference (metrics.h has the definitions). HD95's reference lists surface voxels and takes the
O(n^2) minimum over pairs with anisotropic spacing, on random blobby masks of odd sizes.
*/
#include "metrics.h"
#include "check.h"
#include "rng.h"
#include "test.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- references --------------------------------------------------------------------------------

static int is_surface(const uint8_t *m, const int d[3], int i, int j, int k)
{
    if (!m[((size_t)i * d[1] + j) * d[2] + k]) return 0;
    static const int nb[6][3] = { { 1, 0, 0 }, { -1, 0, 0 }, { 0, 1, 0 }, { 0, -1, 0 }, { 0, 0, 1 }, { 0, 0, -1 } };
    for (int q = 0; q < 6; q++) {
        int a = i + nb[q][0], b = j + nb[q][1], c = k + nb[q][2];
        if (a < 0 || b < 0 || c < 0 || a >= d[0] || b >= d[1] || c >= d[2]) return 1;
        if (!m[((size_t)a * d[1] + b) * d[2] + c]) return 1;
    }
    return 0;
}

// Surface voxel coordinates in mm; returns the count.
static int surface_points(double (*pts)[3], const uint8_t *m, const int d[3], const double sp[3])
{
    int n = 0;
    for (int i = 0; i < d[0]; i++) for (int j = 0; j < d[1]; j++) for (int k = 0; k < d[2]; k++)
        if (is_surface(m, d, i, j, k)) {
            pts[n][0] = i * sp[0]; pts[n][1] = j * sp[1]; pts[n][2] = k * sp[2];
            n++;
        }
    return n;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// numpy.percentile(x, 95), method "linear": x[floor(r)] interpolated, r = 0.95 (n - 1).
static double p95_ref(double *x, int n)
{
    qsort(x, (size_t)n, sizeof *x, cmp_d);
    double r = 0.95 * (n - 1);
    int lo = (int)r;
    return lo + 1 < n ? x[lo] + (r - lo) * (x[lo + 1] - x[lo]) : x[n - 1];
}

static double directed_ref(double (*a)[3], int na, double (*b)[3], int nb)
{
    double *d = xmalloc((size_t)na * sizeof(double));
    for (int i = 0; i < na; i++) {
        double best = INFINITY;
        for (int j = 0; j < nb; j++) {
            double dx = a[i][0] - b[j][0], dy = a[i][1] - b[j][1], dz = a[i][2] - b[j][2];
            double q = dx * dx + dy * dy + dz * dz;
            if (q < best) best = q;
        }
        d[i] = sqrt(best);
    }
    double p = p95_ref(d, na);
    free(d);
    return p;
}

static double hd95_ref(const uint8_t *a, const uint8_t *b, const int d[3], const double sp[3])
{
    size_t n = (size_t)d[0] * d[1] * d[2];
    double (*pa)[3] = xmalloc(n * sizeof *pa), (*pb)[3] = xmalloc(n * sizeof *pb);
    int na = surface_points(pa, a, d, sp), nb = surface_points(pb, b, d, sp);
    double r = NAN;
    if (na && nb) {
        double x = directed_ref(pa, na, pb, nb), y = directed_ref(pb, nb, pa, na);
        r = x > y ? x : y;
    }
    free(pa); free(pb);
    return r;
}

// A blobby random mask: a few random ellipsoids plus salt noise, so surfaces are irregular.
static void random_mask(uint8_t *m, const int d[3], rng_t *r, int blobs, float salt)
{
    size_t n = (size_t)d[0] * d[1] * d[2];
    memset(m, 0, n);
    for (int b = 0; b < blobs; b++) {
        float c[3], rad[3];
        for (int x = 0; x < 3; x++) {
            c[x] = rng_uniform(r) * d[x];
            rad[x] = 1.0f + rng_uniform(r) * d[x] / 3.0f;
        }
        for (int i = 0; i < d[0]; i++) for (int j = 0; j < d[1]; j++) for (int k = 0; k < d[2]; k++) {
            float u = (i - c[0]) / rad[0], v = (j - c[1]) / rad[1], w = (k - c[2]) / rad[2];
            if (u * u + v * v + w * w <= 1) m[((size_t)i * d[1] + j) * d[2] + k] = 1;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (rng_uniform(r) < salt) m[i] ^= 1;
}

// ---- tests -------------------------------------------------------------------------------------

static void test_percentile(void)
{
    double x[4] = { 4, 1, 3, 2 };           // numpy.percentile([1,2,3,4], 95) = 3 + 0.85 = 3.85
    EXPECT(fabs(metrics_percentile(x, 4, 95) - 3.85) < 1e-12, "got %g", metrics_percentile(x, 4, 95));
    double y[1] = { 7 };
    EXPECT(metrics_percentile(y, 1, 95) == 7, "single value");
    double z[21];
    for (int i = 0; i < 21; i++) z[i] = 20 - i;  // rank 0.95 * 20 = 19 exactly
    EXPECT(metrics_percentile(z, 21, 95) == 19, "exact rank: %g", metrics_percentile(z, 21, 95));
}

static void test_edt(void)
{
    rng_t r = rng_seed(11);
    const int d[3] = { 7, 9, 6 };
    const double sp[3] = { 0.8, 1.7, 2.9 };
    size_t n = 7 * 9 * 6;
    uint8_t f[7 * 9 * 6];
    double out[7 * 9 * 6], ref[7 * 9 * 6];
    for (int trial = 0; trial < 5; trial++) {
        for (size_t i = 0; i < n; i++) f[i] = rng_uniform(&r) < 0.03f * (trial + 1);
        f[(size_t)trial * 17] = 1;                         // at least one feature voxel
        metrics_edt_sq(out, f, d, sp);
        for (int i = 0; i < d[0]; i++) for (int j = 0; j < d[1]; j++) for (int k = 0; k < d[2]; k++) {
            double best = INFINITY;
            for (int a = 0; a < d[0]; a++) for (int b = 0; b < d[1]; b++) for (int c = 0; c < d[2]; c++)
                if (f[((size_t)a * d[1] + b) * d[2] + c]) {
                    double x = (i - a) * sp[0], y = (j - b) * sp[1], z = (k - c) * sp[2];
                    if (x * x + y * y + z * z < best) best = x * x + y * y + z * z;
                }
            ref[((size_t)i * d[1] + j) * d[2] + k] = best;
        }
        EXPECT(tensor_close_d("edt", out, ref, n, 1e-12, 1e-12), "trial %d", trial);
    }
    memset(f, 0, n);
    metrics_edt_sq(out, f, d, sp);
    int all_inf = 1;
    for (size_t i = 0; i < n; i++) all_inf &= isinf(out[i]) && out[i] > 0;
    EXPECT(all_inf, "no feature voxel: every distance is +inf");
}

static void test_hd95_random(void)
{
    rng_t r = rng_seed(2024);
    static const int dims[4][3] = { { 9, 11, 13 }, { 16, 7, 10 }, { 5, 14, 12 }, { 12, 12, 12 } };
    static const double sps[4][3] = { { 0.7, 1.3, 2.5 }, { 3.0, 0.9, 0.9 }, { 1, 1, 1 }, { 0.5, 0.5, 4.0 } };
    int bad = 0, trials = 0;
    for (int t = 0; t < 24; t++) {
        const int *d = dims[t % 4];
        const double *sp = sps[(t / 4) % 4];
        size_t n = (size_t)d[0] * d[1] * d[2];
        uint8_t *a = xmalloc(n), *b = xmalloc(n);
        random_mask(a, d, &r, 1 + t % 3, t % 2 ? 0.02f : 0.0f);
        random_mask(b, d, &r, 1 + (t / 3) % 3, t % 3 ? 0.0f : 0.03f);
        double got = metrics_hd95(a, b, d, sp), want = hd95_ref(a, b, d, sp);
        trials++;
        if (!(isnan(got) && isnan(want)) && !(fabs(got - want) <= 1e-9 * (1 + want))) {
            bad++;
            printf("hd95 trial %d (%dx%dx%d): got %.12g want %.12g\n", t, d[0], d[1], d[2], got, want);
        }
        free(a); free(b);
    }
    EXPECT(bad == 0, "%d of %d random HD95 cases differ from the brute force", bad, trials);
}

static void test_hd95_cases(void)
{
    const int d[3] = { 6, 8, 10 };
    const double sp[3] = { 2.0, 1.0, 0.5 };
    uint8_t a[6 * 8 * 10] = { 0 }, b[6 * 8 * 10] = { 0 };
    EXPECT(isnan(metrics_hd95(a, b, d, sp)), "both empty -> NaN");
    a[(1 * 8 + 2) * 10 + 3] = 1;
    EXPECT(isnan(metrics_hd95(a, b, d, sp)), "one empty -> NaN");
    b[(4 * 8 + 6) * 10 + 3] = 1;                        // 3 voxels along D (6 mm), 4 along H (4 mm)
    double want = sqrt(36.0 + 16.0);
    EXPECT(fabs(metrics_hd95(a, b, d, sp) - want) < 1e-12, "two voxels: got %g want %g",
           metrics_hd95(a, b, d, sp), want);
    memset(a, 1, sizeof a);                             // the whole volume: its border is its surface
    EXPECT(metrics_hd95(a, a, d, sp) == 0, "identical masks -> 0");
    memset(b, 0, sizeof b);
    b[(0 * 8 + 0) * 10 + 0] = 1;
    // from b's one voxel every surface voxel of a counts: P95 over a's surface, the far corner dominates
    EXPECT(fabs(metrics_hd95(a, b, d, sp) - hd95_ref(a, b, d, sp)) < 1e-9, "full vs corner");

    uint8_t pred[6 * 8 * 10] = { 0 }, ref[6 * 8 * 10] = { 0 };
    pred[5] = 1; ref[5] = 1; pred[100] = 2; ref[200] = 2;
    double hd[3] = { -1, -1, -1 };
    metrics_hd95_classes(hd, pred, ref, d, sp, 1, 3);
    EXPECT(hd[0] == -1 && hd[1] == 0, "class 1 identical: %g", hd[1]);
    uint8_t m1[6 * 8 * 10] = { 0 }, m2[6 * 8 * 10] = { 0 };
    m1[100] = 1; m2[200] = 1;
    EXPECT(hd[2] == metrics_hd95(m1, m2, d, sp), "class 2 = its masks' HD95");
}

static void test_dice(void)
{
    //            voxel: 0  1  2  3  4  5  6  7
    uint8_t pred[8] = { 0, 1, 1, 1, 2, 0, 3, 0 };
    uint8_t ref[8]  = { 0, 1, 1, 0, 0, 0, 0, 0 };
    double dice[5];
    metrics_dice(dice, pred, ref, 8, 5);
    EXPECT(fabs(dice[1] - 0.8) < 1e-12, "class 1: 2*2/(3+2) = 0.8, got %g", dice[1]);
    EXPECT(dice[2] == 0, "absent from the reference but predicted -> 0, got %g", dice[2]);
    EXPECT(dice[3] == 0, "class 3 too, got %g", dice[3]);
    EXPECT(isnan(dice[4]), "absent from both -> undefined");
    EXPECT(fabs(dice[0] - 2.0 * 3 / (3 + 6)) < 1e-12, "background %g", dice[0]);
    int undef = -1;
    double mean = metrics_mean_defined(dice, 1, 5, &undef);
    EXPECT(fabs(mean - 0.8 / 3) < 1e-12 && undef == 1, "mean over defined fg: %g (%d undefined)", mean, undef);
    double none[3] = { 0.5, NAN, NAN };
    EXPECT(isnan(metrics_mean_defined(none, 1, 3, &undef)) && undef == 2, "all undefined -> NaN");
    uint8_t p2[4] = { 0, 0, 2, 2 }, r2[4] = { 0, 0, 2, 2 };
    metrics_dice(dice, p2, r2, 4, 3);
    EXPECT(dice[2] == 1 && isnan(dice[1]), "perfect class 2, class 1 absent");
    uint8_t p3[4] = { 0, 0, 0, 0 }, r3[4] = { 0, 1, 0, 0 };
    metrics_dice(dice, p3, r3, 4, 2);
    EXPECT(dice[1] == 0, "in the reference but not predicted -> 0");
}

static void test_regions(void)
{
    char err[ERR_LEN];
    metrics_region_t reg[3];
    EXPECT(metrics_region_parse(&reg[0], "1,2,4:2", err) == 0, "%s", err);
    EXPECT(metrics_region_parse(&reg[1], "1,4:1", err) == 0, "%s", err);
    EXPECT(metrics_region_parse(&reg[2], "4:4", err) == 0, "%s", err);
    EXPECT(reg[0].nlabels == 3 && reg[0].labels[2] == 4 && reg[0].out_label == 2, "parsed whole tumour");
    metrics_region_t bad;
    EXPECT(metrics_region_parse(&bad, "1,2", err) == -1, "missing ':'");
    EXPECT(metrics_region_parse(&bad, ":3", err) == -1, "no labels");
    EXPECT(metrics_region_parse(&bad, "1,x:3", err) == -1, "not a number");
    EXPECT(metrics_region_parse(&bad, "1,300:3", err) == -1 && strstr(err, "1,300:3"), "out of range: %s", err);

    // Round trip: labels {0,1,2,4} -> 3 region masks -> labels is the identity.
    rng_t r = rng_seed(7);
    enum { N = 4000 };
    static const uint8_t vals[4] = { 0, 1, 2, 4 };
    uint8_t *lab = xmalloc(N), *masks = xmalloc(3 * N), *back = xmalloc(N);
    for (int i = 0; i < N; i++) lab[i] = vals[rng_uniform(&r) < 0.25f ? 0 : (int)(rng_uniform(&r) * 4) & 3];
    for (int j = 0; j < 3; j++) metrics_region_mask(masks + (size_t)j * N, lab, N, &reg[j]);
    metrics_regions_to_labels(back, masks, N, reg, 3);
    EXPECT(memcmp(lab, back, N) == 0, "region round trip changed labels");
    // The rule itself on hand-made masks: ET -> 4, TC - ET -> 1, WT - TC -> 2, nothing -> 0.
    uint8_t hm[3 * 4] = { 1, 1, 1, 0,   1, 1, 0, 0,   1, 0, 0, 0 }, out[4];
    metrics_regions_to_labels(out, hm, 4, reg, 3);
    EXPECT(out[0] == 4 && out[1] == 1 && out[2] == 2 && out[3] == 0, "rule: %d %d %d %d", out[0], out[1], out[2], out[3]);

    // Region Dice equals the Dice of the region masks.
    uint8_t *pred = xmalloc(N);
    for (int i = 0; i < N; i++) pred[i] = rng_uniform(&r) < 0.8f ? lab[i] : vals[(int)(rng_uniform(&r) * 4) & 3];
    double rd[3];
    metrics_region_dice(rd, pred, lab, N, reg, 3);
    uint8_t *pm = xmalloc(N);
    for (int j = 0; j < 3; j++) {
        metrics_region_mask(pm, pred, N, &reg[j]);
        double d2[2];
        metrics_dice(d2, pm, masks + (size_t)j * N, N, 2);
        EXPECT(fabs(rd[j] - d2[1]) < 1e-12, "region %d: %g vs %g", j, rd[j], d2[1]);
    }
    uint8_t z[4] = { 0, 0, 0, 0 };
    metrics_region_dice(rd, z, z, 4, reg, 3);
    EXPECT(isnan(rd[0]) && isnan(rd[2]), "empty regions are undefined");
    free(lab); free(masks); free(back); free(pred); free(pm);
}

int main(void)
{
    test_percentile();
    test_edt();
    test_hd95_cases();
    test_hd95_random();
    test_dice();
    test_regions();
    return test_summary();
}
