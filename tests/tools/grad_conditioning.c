/*
grad_conditioning.c -- how far the CPU reference's own gradients move under fp32-sized input
perturbations: the floor under any GPU-vs-CPU gradient comparison (tests/gpu/test_gpu_model.c).

  grad_conditioning VARIANT WIDTH D SEED [DRAWS (8)] [EPS (1e-6)] [PARAMS (0)]

Builds the model and inputs exactly as test_gpu_model's ref_init does for that seed (Dice loss,
batch 1, D^3), computes the double-precision gradients, then the float model's gradients on
DRAWS inputs multiplied by (1 + EPS n), n ~ N(0, 1) (a fresh draw each; with PARAMS 1 the
parameters too, as test_gpu_model's conditioning band does). Prints, per draw, the
number of parameter tensors outside test_gpu_model's fp32 bound (|g - g64| <= 1e-4 |g64| + atol,
atol = 1e-4 x rms of all gradients x sqrt(numel)) and the largest relative error among tensors
that are not near zero, and over all draws the tensors that ever fall outside. A draw that moves many tensors by
~1e-3 while the others move them by ~1e-6 is a kink (a ReLU input within EPS of zero flipping
sides), not noise: gradients are discontinuous there, so no implementation in another
arithmetic order can be held to 1e-4 at that seed.
*/
#include "check.h"
#include "model.h"
#include "rng.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ||a - b|| and ||b|| over n
static void norms(const float *a, const double *b, size_t n, double *dn, double *bn)
{
    double d = 0, w = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = (double)a[i] - b[i];
        d += e * e;
        w += b[i] * b[i];
    }
    *dn = sqrt(d);
    *bn = sqrt(w);
}

int main(int argc, char **argv)
{
    log_set_name("grad_conditioning");
    if (argc < 5) {
        fprintf(stderr, "usage: grad_conditioning VARIANT WIDTH D SEED [DRAWS] [EPS] [PARAMS]\n");
        return 2;
    }
    char err[ERR_LEN];
    model_cfg_t cfg = model_cfg_default();
    if (model_variant_parse(argv[1], &cfg.variant, err)) DIE("%s", err);
    cfg.width = atoi(argv[2]);
    const int D = atoi(argv[3]), dims[3] = { D, D, D };
    const uint64_t seed = strtoull(argv[4], NULL, 10);
    const int draws = argc > 5 ? atoi(argv[5]) : 8;
    const double eps = argc > 6 ? atof(argv[6]) : 1e-6;
    const int perturb_params = argc > 7 && atoi(argv[7]);
    model_t m;
    model_plan_t p;
    if (model_describe(&m, &cfg, err) || model_plan(&p, &m, 1, dims, err)) DIE("%s", err);
    train_cfg_t tc = train_cfg_default();
    tc.loss = LOSS_DICE;
    const size_t np = m.table.numel, S = (size_t)D * D * D;

    // the inputs of test_gpu_model's ref_init(seed)
    float *params = xmalloc(np * sizeof(float)), *x = xmalloc(p.in_numel * sizeof(float));
    model_init_params(&m, params, seed);
    rng_t R = rng_derive(seed, 17, 0);
    for (size_t i = 0; i < p.in_numel; i++) x[i] = (float)rng_normal(&R);
    uint8_t *labels = xmalloc(S);
    for (size_t i = 0; i < S; i++) labels[i] = (uint8_t)rng_below(&R, (uint64_t)cfg.classes);

    // the double reference
    double *ws64 = xcalloc(p.total, sizeof(double)), *P64 = xmalloc(np * sizeof(double));
    double *X64 = xmalloc(p.in_numel * sizeof(double)), *G64 = xcalloc(np, sizeof(double));
    for (size_t i = 0; i < np; i++) P64[i] = params[i];
    for (size_t i = 0; i < p.in_numel; i++) X64[i] = x[i];
    model_forward_cpu_f64(ws64, P64, X64, &m, &p);
    model_loss_cpu_f64(ws64, labels, &tc, &m, &p);
    model_backward_cpu_f64(G64, NULL, ws64, P64, X64, &m, &p);
    free(ws64);

    double ss = 0;
    for (size_t i = 0; i < np; i++) ss += G64[i] * G64[i];
    const double rtol = 1e-4, rms = sqrt(ss / (double)np);
    float *ws = xcalloc(p.total, sizeof(float)), *g = xmalloc(np * sizeof(float));
    float *xp = xmalloc(p.in_numel * sizeof(float)), *pp = xmalloc(np * sizeof(float));
    int *ever = xcalloc((size_t)m.table.count, sizeof(int));
    printf("%s width %d, %d^3, seed %llu: %d tensors, gradient RMS %.3e; %d draws at eps %.1e (%s)\n", argv[1],
           cfg.width, D, (unsigned long long)seed, m.table.count, rms, draws, eps,
           perturb_params ? "input and parameters" : "input");
    for (int k = 0; k <= draws; k++) {        // k = 0: the unperturbed float model
        rng_t Q = rng_derive(seed, 23, (uint64_t)k);
        for (size_t i = 0; i < p.in_numel; i++)
            xp[i] = k ? (float)((double)x[i] * (1.0 + eps * rng_normal(&Q))) : x[i];
        for (size_t i = 0; i < np; i++)
            pp[i] = k && perturb_params ? (float)((double)params[i] * (1.0 + eps * rng_normal(&Q)))
                                        : params[i];
        memset(ws, 0, p.total * sizeof(float));
        model_forward_cpu(ws, pp, xp, &m, &p);
        model_loss_cpu(ws, labels, &tc, &m, &p);
        memset(g, 0, np * sizeof(float));
        model_backward_cpu(g, NULL, ws, pp, xp, &m, &p);
        int over = 0;
        double worst = 0;
        const char *wname = "";
        for (int t = 0; t < m.table.count; t++) {
            const param_t *T = &m.table.items[t];
            double dn, bn;
            norms(g + T->offset, G64 + T->offset, T->numel, &dn, &bn);
            const double atol = rtol * rms * sqrt((double)T->numel);
            if (dn > rtol * bn + atol) { over++; ever[t] = 1; }
            if (bn > atol && dn / bn > worst) { worst = dn / bn; wname = T->name; }
        }
        printf("%s: %3d tensors outside the bound, largest relative error %.2e (%s)\n",
               k ? "draw " : "float", over, worst, wname);
    }
    int n_ever = 0;
    for (int t = 0; t < m.table.count; t++) n_ever += ever[t];
    printf("tensors outside the bound in at least one run: %d of %d\n", n_ever, m.table.count);
    free(ever); free(pp); free(xp); free(g); free(ws); free(P64); free(X64); free(G64);
    free(labels); free(x); free(params);
    model_free(&m);
    return 0;
}
