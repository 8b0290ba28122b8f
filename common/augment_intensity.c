/*
augment_intensity.c -- per-channel intensity steps of the nnU-Net set, with batchgenerators'
formulas (augment_gamma, augment_contrast with preserve_range, augment_gaussian_noise) and
nnU-Net's two-sided draw of factors around 1. Statistics are accumulated in double.
*/
#include "augment.h"
#include <math.h>

double augment_draw_around_one(rng_t *r, const double range[2])
{
    // batchgenerators: if rand < 0.5 and lo < 1: U(lo, 1) else U(max(lo, 1), hi)
    if (rng_uniform(r) < 0.5 && range[0] < 1) return range[0] + (1 - range[0]) * rng_uniform(r);
    double lo = range[0] > 1 ? range[0] : 1;
    return lo + (range[1] - lo) * rng_uniform(r);
}

static void mean_std(const float *x, size_t n, double *mean, double *sd)
{
    double s = 0, ss = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    double m = s / (double)n;
    for (size_t i = 0; i < n; i++) { double d = x[i] - m; ss += d * d; }
    *mean = m;
    *sd = sqrt(ss / (double)n);
}

static void min_max(const float *x, size_t n, float *lo, float *hi)
{
    float a = x[0], b = x[0];
    for (size_t i = 1; i < n; i++) { a = x[i] < a ? x[i] : a; b = x[i] > b ? x[i] : b; }
    *lo = a;
    *hi = b;
}

void augment_gamma(float *x, size_t n, double gamma, int invert)
{
    if (n == 0) return;
    float sgn = invert ? -1.0f : 1.0f;
    if (invert) for (size_t i = 0; i < n; i++) x[i] = -x[i];
    double mean, sd;
    mean_std(x, n, &mean, &sd);
    float lo, hi;
    min_max(x, n, &lo, &hi);
    double range = (double)hi - lo;
    for (size_t i = 0; i < n; i++) x[i] = (float)(pow((x[i] - lo) / (range + 1e-7), gamma) * range + lo);
    double m2, sd2;                                 // retain_stats: back to the old mean and sd
    mean_std(x, n, &m2, &sd2);
    double k = sd / (sd2 + 1e-8);
    for (size_t i = 0; i < n; i++) x[i] = sgn * (float)((x[i] - m2) * k + mean);
}

void augment_contrast(float *x, size_t n, double factor)
{
    if (n == 0) return;
    double mean, sd;
    mean_std(x, n, &mean, &sd);
    float lo, hi;
    min_max(x, n, &lo, &hi);
    for (size_t i = 0; i < n; i++) {
        float v = (float)((x[i] - mean) * factor + mean);
        x[i] = v < lo ? lo : v > hi ? hi : v;
    }
}

void augment_add_noise(float *x, size_t n, double sigma, rng_t *r)
{
    // Box-Muller, both outputs used: half the log/sqrt calls of rng_normal
    size_t i = 0;
    for (; i + 1 < n; i += 2) {
        double u1 = rng_uniform(r), u2 = rng_uniform(r);
        if (u1 < 1e-300) u1 = 1e-300;
        double rad = sigma * sqrt(-2.0 * log(u1)), t = 2.0 * M_PI * u2;
        x[i] += (float)(rad * cos(t));
        x[i + 1] += (float)(rad * sin(t));
    }
    if (i < n) x[i] += (float)(sigma * rng_normal(r));
}
