/*
model_init.c -- initial parameters from a seed (architecture.md §5.3), into a float buffer laid
out by the model's table. Rules by tensor (PyTorch defaults unless Mamba overrides them):
  Conv/Linear weight and bias  U(+-1/sqrt(fan_in)) (kaiming_uniform a=sqrt(5) and the bias rule),
                               fan_in = weight.size(1) * prod(kernel); for ConvTranspose3d that is
                               C_out * k^3 (proj5, out)
  LayerNorm / GroupNorm        weight 1, bias 0
  Mamba dt_proj.weight         U(+-dt_rank^-1/2)
  Mamba dt_proj.bias           softplus^-1(dt), dt = exp(U[0,1) (ln 0.1 - ln 0.001) + ln 0.001) >= 1e-4
  Mamba A_log[e, n]            ln(n + 1);   D = 1
Each tensor draws from its own stream rng_derive(seed, FNV-1a hash of its name, 0), so the values
of one tensor do not depend on which other tensors the variant has.
*/
#include "model.h"
#include "rng.h"
#include "check.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// fan_in of the weight that goes with this tensor (the tensor itself, or prefix.weight for a bias)
static double fan_in(const model_t *m, const param_t *p)
{
    const param_t *w = p;
    if (ends_with(p->name, ".bias")) {
        char n[PARAM_NAME_MAX + 8];
        size_t len = strlen(p->name) - strlen("bias");
        snprintf(n, sizeof n, "%.*sweight", (int)len, p->name);
        w = param_table_find(&m->table, n);
        ASSERT(w != NULL && w->ndim >= 2);
    }
    double f = w->shape[1];                 // Conv: C_in; ConvTranspose: C_out; Linear: in
    for (int a = 2; a < w->ndim; a++) f *= w->shape[a];
    return f;
}

static void init_tensor(const model_t *m, const param_t *p, float *x, rng_t *r)
{
    const char *n = p->name;
    if (strstr(n, ".norm") && p->ndim == 1) {               // LayerNorm / GroupNorm affine
        float v = ends_with(n, ".weight") ? 1.0f : 0.0f;
        for (size_t i = 0; i < p->numel; i++) x[i] = v;
    } else if (strstr(n, ".A") && ends_with(n, "_log")) {   // A_log, A_b_log, A_s_log: (E, 16)
        for (int e = 0; e < p->shape[0]; e++)
            for (int s = 0; s < p->shape[1]; s++) x[(size_t)e * p->shape[1] + s] = (float)log(s + 1.0);
    } else if (strstr(n, ".mamba.D")) {                     // D, D_b, D_s
        for (size_t i = 0; i < p->numel; i++) x[i] = 1.0f;
    } else if (strstr(n, ".dt_proj") && ends_with(n, ".weight")) {
        float b = (float)(1.0 / sqrt((double)p->shape[1]));
        rng_fill_uniform(r, x, p->numel, -b, b);
    } else if (strstr(n, ".dt_proj") && ends_with(n, ".bias")) {
        const double lo = log(0.001), hi = log(0.1);
        for (size_t i = 0; i < p->numel; i++) {
            double dt = exp(rng_uniform(r) * (hi - lo) + lo);
            if (dt < 1e-4) dt = 1e-4;
            x[i] = (float)(dt + log(-expm1(-dt)));          // inverse of softplus
        }
    } else {                                                 // conv / linear weight or bias
        float b = (float)(1.0 / sqrt(fan_in(m, p)));
        rng_fill_uniform(r, x, p->numel, -b, b);
    }
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;        // FNV-1a 64
    for (; *s; s++) { h ^= (unsigned char)*s; h *= 1099511628211ull; }
    return h;
}

void model_init_params(const model_t *m, float *params, uint64_t seed)
{
    for (int i = 0; i < m->table.count; i++) {
        const param_t *p = &m->table.items[i];
        rng_t r = rng_derive(seed, name_hash(p->name), 0);
        init_tensor(m, p, params + p->offset, &r);
    }
}
