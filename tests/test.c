/* test.c -- see test.h. */
#define _GNU_SOURCE
#include "test.h"
#include "rng.h"
#include "check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int tests_passed, tests_failed;

int test_summary(void)
{
    printf("%d passed, %d failed\n", tests_passed, tests_failed);
    fflush(stdout);
    return tests_failed ? 1 : 0;
}

static int verbose(void)
{
    const char *v = getenv("SRM_TEST_VERBOSE");
    return v && *v && *v != '0';
}

#define CLOSE_BODY(T)                                                                   \
    double num = 0, den = 0, worst = -1;                                                \
    size_t wi = 0;                                                                      \
    int nonfinite = 0;                                                                  \
    for (size_t i = 0; i < n; i++) {                                                    \
        double a = (double)got[i], b = (double)want[i];                                 \
        if (!isfinite(a) || !isfinite(b)) { if (!nonfinite) wi = i; nonfinite++; continue; } \
        double d = a - b;                                                               \
        num += d * d; den += b * b;                                                     \
        if (fabs(d) > worst) { worst = fabs(d); wi = i; }                               \
    }                                                                                   \
    num = sqrt(num); den = sqrt(den);                                                   \
    int ok = !nonfinite && num <= rtol * den + atol;                                    \
    if (!ok || verbose())                                                               \
        printf("%s %s: n=%zu |a-b|=%.3e |b|=%.3e rel=%.3e worst[%zu] got=%.8g want=%.8g%s\n", \
               ok ? "ok  " : "FAIL", label, n, num, den, den > 0 ? num / den : num, wi, \
               n ? (double)got[wi] : 0.0, n ? (double)want[wi] : 0.0,                   \
               nonfinite ? " (non-finite values)" : "");                                \
    return ok;

int tensor_close(const char *label, const float *got, const float *want, size_t n,
                 double rtol, double atol) { CLOSE_BODY(float) }

int tensor_close_d(const char *label, const double *got, const double *want, size_t n,
                   double rtol, double atol) { CLOSE_BODY(double) }

int gradcheck(const char *label, scalar_fn f, void *ctx, double *x, size_t n,
              const double *grad_analytic, double eps, double rtol, double atol,
              size_t max_probe, unsigned long long seed)
{
    size_t m = n <= max_probe ? n : max_probe;
    double *num = xmalloc(m * sizeof *num), *ana = xmalloc(m * sizeof *ana);
    rng_t r = rng_seed(seed);
    for (size_t p = 0; p < m; p++) {
        size_t i = (n <= max_probe) ? p : (size_t)rng_below(&r, n);
        double keep = x[i];
        x[i] = keep + eps; double up = f(ctx, x);
        x[i] = keep - eps; double dn = f(ctx, x);
        x[i] = keep;
        num[p] = (up - dn) / (2 * eps);
        ana[p] = grad_analytic[i];
    }
    int ok = tensor_close_d(label, ana, num, m, rtol, atol);
    free(num); free(ana);
    return ok;
}

const char *test_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *path = xmalloc(4096);
    snprintf(path, 4096, "%s/srm-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    if (!mkdtemp(path)) DIE("mkdtemp %s failed", path);
    return path;
}

double *test_uniform(rng_t *r, size_t n, double lo, double hi)
{
    double *v = xmalloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = (float)(lo + (hi - lo) * rng_uniform(r));
    return v;
}

float *test_to_float(const double *v, size_t n)
{
    float *f = xmalloc(n * sizeof *f);
    for (size_t i = 0; i < n; i++) f[i] = (float)v[i];
    return f;
}

double test_dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

uint16_t test_f2bf(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float test_bf2f(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
