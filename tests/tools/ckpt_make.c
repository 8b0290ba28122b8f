/*
ckpt_make.c -- write a real native checkpoint (checkpoint.h) of a freshly initialised model, for
tests that need checkpoint bytes without training (tests/cpu/test_exporter.py).
  ckpt_make OUT.ckpt [--step N] [--width W] [--classes K] [--seed S]
Params come from model_init_params(seed); Adam m and v are small deterministic values so the
optimizer state is not all zeros. Prints "OUT.ckpt <bytes> <parameters>" on success.
*/
#include "checkpoint.h"
#include "check.h"
#include "model.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static long arg_long(const char *flag, const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0) DIE("%s: bad value '%s'", flag, s);
    return v;
}

int main(int argc, char **argv)
{
    log_set_name("ckpt_make");
    if (argc < 2) DIE("usage: ckpt_make OUT.ckpt [--step N] [--width W] [--classes K] [--seed S]");
    model_cfg_t cfg = model_cfg_default();
    cfg.width = 8;
    long step = 1, seed = 1;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--step")) step = arg_long(argv[i], argv[i + 1]);
        else if (!strcmp(argv[i], "--width")) cfg.width = (int)arg_long(argv[i], argv[i + 1]);
        else if (!strcmp(argv[i], "--classes")) cfg.classes = (int)arg_long(argv[i], argv[i + 1]);
        else if (!strcmp(argv[i], "--seed")) seed = arg_long(argv[i], argv[i + 1]);
        else DIE("unknown flag %s", argv[i]);
    }
    char err[ERR_LEN];
    model_t m;
    if (model_describe(&m, &cfg, err)) DIE("%s", err);
    size_t n = m.table.numel;
    float *p = xmalloc(n * sizeof(float)), *am = xmalloc(n * sizeof(float)), *av = xmalloc(n * sizeof(float));
    model_init_params(&m, p, (uint64_t)seed);
    for (size_t i = 0; i < n; i++) {
        am[i] = (float)((i % 97) - 48) * 1e-4f;
        av[i] = am[i] * am[i] + (float)(i % 89) * 1e-6f + 1e-6f;   // > m^2: a state Adam can go on from
    }
    ckpt_state_t st = { .cfg = cfg, .step = step, .total_steps = 1000, .base_lr = 1e-4,
                        .adam_step = step, .rng = rng_seed((uint64_t)seed) };
    if (ckpt_write(argv[1], &m, p, am, av, &st, err)) DIE("%s", err);
    struct stat sb;
    if (stat(argv[1], &sb)) DIE("%s: stat failed", argv[1]);
    printf("%s %lld %zu\n", argv[1], (long long)sb.st_size, n);
    free(p); free(am); free(av);
    model_free(&m);
    return 0;
}
