/* test_smoke.c -- the framework itself: rng determinism, tensor_close, gradcheck on x^3. */
#include "test.h"
#include "rng.h"
#include "ops.h"
#include <math.h>

static double cube_sum(void *ctx, const double *x) { (void)ctx; return x[0]*x[0]*x[0] + 2*x[1]; }

int main(void)
{
    rng_t a = rng_seed(42), b = rng_seed(42);
    int same = 1;
    for (int i = 0; i < 100; i++) same &= rng_u64(&a) == rng_u64(&b);
    EXPECT(same, "same seed, same stream");
    rng_t c = rng_derive(1, 2, 3), d = rng_derive(1, 2, 4);
    EXPECT(rng_u64(&c) != rng_u64(&d), "derived streams differ");

    float x[3] = {1, 2, 3}, y[3] = {1, 2, 3.001f};
    EXPECT(tensor_close("close", x, y, 3, 1e-3, 0), "1e-3 relative");
    EXPECT(!tensor_close("far", x, y, 3, 1e-6, 0), "must fail at 1e-6");

    double p[2] = {1.5, -0.5}, g[2] = {3 * 1.5 * 1.5, 2};
    EXPECT(gradcheck("cube", cube_sum, NULL, p, 2, g, 1e-5, 1e-7, 1e-9, 10, 1), "analytic = numeric");
    g[0] += 0.01;
    EXPECT(!gradcheck("cube-wrong", cube_sum, NULL, p, 2, g, 1e-5, 1e-7, 1e-9, 10, 1), "detects error");

    EXPECT(tom_index(TOM_SLICE, 1, 8, 4) == 2 && tom_index(TOM_SLICE, 4, 8, 4) == 1, "slice order");
    EXPECT(tom_index(TOM_REVERSE, 0, 8, 4) == 7, "reverse order");
    return test_summary();
}
