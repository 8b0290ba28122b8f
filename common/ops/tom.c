/*
tom.c -- the Tri-oriented Mamba token orders (architecture.md §5.4) as gather/scatter copies.

  permute:   y[n, c, j]     = x[n, c, pi(j)]     original order -> scanned order
  unpermute: y[n, c, pi(j)] = x[n, c, j]         scanned order  -> original order

pi is tom_index() (common/op_shapes.c): identity, flip, or the inter-slice interleave
pi(j) = (j mod ns)*m + j/ns with m = L/ns. The loops below walk each order directly instead of
calling tom_index per element; test_ops_mamba.c checks them against tom_index. Built twice.
*/
#include "real.h"
#include "check.h"
#include <string.h>
// Below this many inner-loop steps a loop runs on one thread: waking a team costs more than
// the work, and far more on a loaded machine.
#define PAR_MIN_WORK 200000.0

// One (n, c) row. scatter = 0: y[j] = x[pi(j)]; scatter = 1: y[pi(j)] = x[j].
static void row_map(real *y, const real *x, size_t L, tom_order_t order, size_t ns, int scatter)
{
    switch (order) {
    case TOM_FORWARD:
        memcpy(y, x, L * sizeof *y);
        return;
    case TOM_REVERSE:                       // a flip is its own inverse
        for (size_t j = 0; j < L; j++) y[j] = x[L - 1 - j];
        return;
    case TOM_SLICE: {
        const size_t m = L / ns;
        // j = q*ns + p  <->  pi(j) = p*m + q
        for (size_t q = 0; q < m; q++)
            for (size_t p = 0; p < ns; p++) {
                if (scatter) y[p * m + q] = x[q * ns + p];
                else y[q * ns + p] = x[p * m + q];
            }
        return;
    }
    }
    ASSERT(0 && "unknown tom order");
}

static void map_all(real *y, const real *x, int N, int C, size_t L, tom_order_t order,
                    size_t nslices, int scatter)
{
    ASSERT(order != TOM_SLICE || (nslices > 0 && L % nslices == 0));
    ASSERT(y != x);
    #pragma omp parallel for schedule(static) if((double)N * C * L >= PAR_MIN_WORK)
    for (long nc = 0; nc < (long)N * C; nc++)
        row_map(y + (size_t)nc * L, x + (size_t)nc * L, L, order, nslices, scatter);
}

// x, y: (N, C, L), y must not alias x
void OP(tom_permute)(real *y, const real *x, int N, int C, size_t L, tom_order_t order,
                     size_t nslices)
{
    map_all(y, x, N, C, L, order, nslices, 0);
}

void OP(tom_unpermute)(real *y, const real *x, int N, int C, size_t L, tom_order_t order,
                       size_t nslices)
{
    map_all(y, x, N, C, L, order, nslices, 1);
}
