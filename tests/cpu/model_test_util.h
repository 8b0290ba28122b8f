/*
model_test_util.h -- shared set-up for the model tests (test_model_*.c): a tiny model of one
variant with initialised parameters in float and double, a planned workspace, a fixed random
input and random labels. Header-only (static functions) so each test binary stays one file.
*/
#ifndef SRM_MODEL_TEST_UTIL_H
#define SRM_MODEL_TEST_UTIL_H
#include "model.h"
#include "rng.h"
#include "check.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    model_t m;
    model_plan_t p;
    float *pf, *gf, *wsf, *xf;          // float model
    double *pd, *gd, *wsd, *xd;         // double model (finite differences)
    uint8_t *labels;
    train_cfg_t tc;
} tmodel_t;

static inline double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// want_double: also allocate the double buffers.
static inline void tmodel_init(tmodel_t *t, model_variant_t v, int width, int cin, int classes,
                        const int dims[3], int N, uint64_t seed, int want_double)
{
    char err[ERR_LEN];
    memset(t, 0, sizeof *t);
    model_cfg_t c = { .variant = v, .width = width, .in_channels = cin, .classes = classes };
    if (model_describe(&t->m, &c, err) || model_plan(&t->p, &t->m, N, dims, err)) DIE("%s", err);
    size_t np = t->m.table.numel;
    t->pf = xcalloc(np, sizeof(float));
    t->gf = xcalloc(np, sizeof(float));
    t->wsf = xcalloc(t->p.total, sizeof(float));
    t->xf = xcalloc(t->p.in_numel, sizeof(float));
    t->labels = xcalloc(t->p.out_numel / classes, 1);
    model_init_params(&t->m, t->pf, seed);
    rng_t r = rng_seed(seed + 1);
    rng_fill_normal(&r, t->xf, t->p.in_numel, 0.0f, 1.0f);
    for (size_t i = 0; i < t->p.out_numel / classes; i++) t->labels[i] = (uint8_t)rng_below(&r, classes);
    t->tc = train_cfg_default();
    if (want_double) {
        t->pd = xcalloc(np, sizeof(double));
        t->gd = xcalloc(np, sizeof(double));
        t->wsd = xcalloc(t->p.total, sizeof(double));
        t->xd = xcalloc(t->p.in_numel, sizeof(double));
        for (size_t i = 0; i < np; i++) t->pd[i] = t->pf[i];
        for (size_t i = 0; i < t->p.in_numel; i++) t->xd[i] = t->xf[i];
    }
}

static inline void tmodel_free(tmodel_t *t)
{
    free(t->pf); free(t->gf); free(t->wsf); free(t->xf); free(t->labels);
    free(t->pd); free(t->gd); free(t->wsd); free(t->xd);
    model_free(&t->m);
}

static inline double tmodel_loss_d(tmodel_t *t, const double *params)
{
    model_forward_cpu_f64(t->wsd, params, t->xd, &t->m, &t->p);
    return model_loss_cpu_f64(t->wsd, t->labels, &t->tc, &t->m, &t->p);
}

// loss and analytic gradients into t->gd
static inline double tmodel_grad_d(tmodel_t *t)
{
    memset(t->gd, 0, t->m.table.numel * sizeof(double));
    double l = tmodel_loss_d(t, t->pd);
    model_backward_cpu_f64(t->gd, NULL, t->wsd, t->pd, t->xd, &t->m, &t->p);
    return l;
}

static inline double tmodel_grad_f(tmodel_t *t)
{
    memset(t->gf, 0, t->m.table.numel * sizeof(float));
    model_forward_cpu(t->wsf, t->pf, t->xf, &t->m, &t->p);
    double l = model_loss_cpu(t->wsf, t->labels, &t->tc, &t->m, &t->p);
    model_backward_cpu(t->gf, NULL, t->wsf, t->pf, t->xf, &t->m, &t->p);
    return l;
}

#endif
