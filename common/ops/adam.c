/*
adam.c -- one Adam / AdamW step over a contiguous parameter buffer, on the CPU.

Exactly torch.optim.Adam (amsgrad=False, maximize=False): weight decay added to the gradient
(g += wd * p, on every parameter, architecture.md §8), then
  m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
  p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
With c.decoupled it is torch.optim.AdamW instead: p *= 1 - lr * wd first, and g is left alone.
Arithmetic per element in double; m and v are stored in `real`. Twin: gpu/adam.cu.
*/
#include "real.h"
#include "check.h"
#include <math.h>

// p, m, v, g: (n). step is 1-based.
void OP(adam_update)(real *p, real *m, real *v, const real *g, size_t n, adam_cfg_t c, long step)
{
    ASSERT(step >= 1);
    const double lr = c.lr, b1 = c.beta1, b2 = c.beta2, eps = c.eps, wd = c.weight_decay;
    const double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
    const double step_size = lr / bc1, bc2_sqrt = sqrt(bc2);
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        double pi = p[i], gi = g[i];
        if (c.decoupled) pi *= 1.0 - lr * wd;
        else gi += wd * pi;
        double mi = b1 * m[i] + (1.0 - b1) * gi;
        double vi = b2 * v[i] + (1.0 - b2) * gi * gi;
        pi -= step_size * mi / (sqrt(vi) / bc2_sqrt + eps);
        m[i] = (real)mi;
        v[i] = (real)vi;
        p[i] = (real)pi;
    }
}
