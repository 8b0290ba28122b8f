/*
test.h -- the project's small test framework (after Redis's testhelp.h and llm.c's checks).

Every test binary's main() ends with `return test_summary();`, which prints the line
"N passed, N failed" and returns non-zero when anything failed. tests/run.sh adds the counts of
all binaries and scripts into the final line of `make test`.

Comparisons use the norm criterion of the issues: ||a - b|| <= rtol * ||b|| + atol (2-norms,
accumulated in double), which handles exactly-zero references.
*/
#ifndef SRM_TEST_H
#define SRM_TEST_H
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include "rng.h"

extern int tests_passed, tests_failed;

#define EXPECT(cond, ...)                                                       \
    do {                                                                        \
        if (cond) { tests_passed++; break; }                                    \
        tests_failed++;                                                         \
        printf("FAIL %s:%d: %s -- ", __FILE__, __LINE__, #cond);                \
        printf(__VA_ARGS__);                                                    \
        printf("\n");                                                           \
        fflush(stdout);                                                         \
    } while (0)

int test_summary(void);

// ||got - want|| <= rtol*||want|| + atol over n floats. Prints label, both norms and the worst
// element on failure (and with SRM_TEST_VERBOSE=1 always). Returns 1 when close.
int tensor_close(const char *label, const float *got, const float *want, size_t n,
                 double rtol, double atol);
int tensor_close_d(const char *label, const double *got, const double *want, size_t n,
                   double rtol, double atol);

// Central finite differences in double precision.
// f(ctx, x) returns the scalar loss at x (n doubles). grad_analytic[n] is the analytic gradient.
// Probes every element when n <= max_probe, else max_probe elements chosen from seed.
// Returns 1 when ||num - ana|| <= rtol*||num|| + atol over the probed elements.
typedef double (*scalar_fn)(void *ctx, const double *x);
int gradcheck(const char *label, scalar_fn f, void *ctx, double *x, size_t n,
              const double *grad_analytic, double eps, double rtol, double atol,
              size_t max_probe, unsigned long long seed);

// n values uniform in [lo, hi), rounded to float so float and double runs see identical inputs
// (malloc'd, the caller frees).
double *test_uniform(rng_t *r, size_t n, double lo, double hi);
float *test_to_float(const double *v, size_t n);                  // malloc'd float copy
double test_dot(const double *a, const double *b, size_t n);

// bf16 on the host, as the GPU rounds it: float -> bf16 to nearest even (NaN stays NaN), and back.
uint16_t test_f2bf(float f);
float test_bf2f(uint16_t h);

// Make a fresh temp directory (mkdtemp under $TMPDIR or /tmp); returns a static-lifetime string.
const char *test_tmpdir(const char *tag);

#endif
