/*
model_step_time.c -- times one CPU training step (forward + loss + backward + Adam, float):
  model_step_time [--variant V] [--width W] [--dims D H W] [--batch N] [--steps K] [--warmup 0|1]
prints the mean seconds per step over K steps after a warm-up step (default 1), and the
workspace size.
The numbers for BENCHMARKS.md (tiny and full width at 64^3) come from this tool.
*/
#include "model.h"
#include "check.h"
#include "rng.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
    log_set_name("model_step_time");
    model_cfg_t cfg = model_cfg_default();
    cfg.width = 8;
    cfg.classes = 14;
    int dims[3] = { 64, 64, 64 }, N = 1, steps = 2, warmup = 1;
    char err[ERR_LEN];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dims") == 0 && i + 3 < argc) {
            for (int a = 0; a < 3; a++) dims[a] = atoi(argv[++i]);
            continue;
        }
        if (i + 1 >= argc) DIE("%s: missing value", argv[i]);
        const char *f = argv[i], *v = argv[++i];
        if (strcmp(f, "--variant") == 0) { if (model_variant_parse(v, &cfg.variant, err)) DIE("%s", err); }
        else if (strcmp(f, "--width") == 0) cfg.width = atoi(v);
        else if (strcmp(f, "--batch") == 0) N = atoi(v);
        else if (strcmp(f, "--steps") == 0) steps = atoi(v);
        else if (strcmp(f, "--warmup") == 0) warmup = atoi(v);
        else DIE("unknown flag %s", f);
    }
    model_t m;
    model_plan_t p;
    if (model_describe(&m, &cfg, err) || model_plan(&p, &m, N, dims, err)) DIE("%s", err);
    size_t np = m.table.numel;
    float *params = xmalloc(np * 4), *g = xcalloc(np, 4), *am = xcalloc(np, 4), *av = xcalloc(np, 4);
    float *ws = xcalloc(p.total, 4), *x = xmalloc(p.in_numel * 4);
    uint8_t *labels = xmalloc(p.out_numel / cfg.classes);
    model_init_params(&m, params, 1);
    rng_t r = rng_seed(2);
    rng_fill_normal(&r, x, p.in_numel, 0, 1);
    for (size_t i = 0; i < p.out_numel / cfg.classes; i++) labels[i] = (uint8_t)rng_below(&r, cfg.classes);
    train_cfg_t tc = train_cfg_default();
    if (steps < 1) DIE("--steps must be >= 1");
    if (warmup) model_train_step_cpu(params, g, am, av, ws, x, labels, &tc, 1e-4f, 1, &m, &p);
    double t0 = now_s(), loss = 0;
    for (int s = 0; s < steps; s++)
        loss = model_train_step_cpu(params, g, am, av, ws, x, labels, &tc, 1e-4f, s + 2, &m, &p);
    double dt = (now_s() - t0) / steps;
    printf("variant %s width %d dims %dx%dx%d batch %d: %.3f s/step (loss %.4f), params %zu, workspace %.1f MiB\n",
           model_variant_name(cfg.variant), cfg.width, dims[0], dims[1], dims[2], N, dt, loss, np,
           (double)p.total * 4 / (1 << 20));
    free(params); free(g); free(am); free(av); free(ws); free(x); free(labels);
    model_free(&m);
    return 0;
}
