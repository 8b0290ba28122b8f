/*
model_forward.c -- CLI for the PyTorch oracle test (tests/cpu/test_oracle_torch.py):
  model_forward --variant M|P|R|no-tom --width W --in-channels C --classes K --dims D H W
                --batch N --seed S --safetensors OUT.safetensors --input IN.f32 --output OUT.f32
                [--double]
builds the model, initialises it from the seed, writes the safetensors export, reads the raw
little-endian float32 input (N, C, D, H, W), runs the CPU forward (float, or double with
--double) and writes raw float32 logits (N, K, D, H, W). Exit 1 with a message on any problem.
*/
#include "model.h"
#include "safetensors.h"
#include "check.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    model_cfg_t cfg;
    int dims[3], batch, dbl;
    unsigned long long seed;
    const char *st_path, *in_path, *out_path;
} fwd_args_t;

static int to_int(const char *s, int *v)
{
    char *end;
    long x = strtol(s, &end, 10);
    if (!*s || *end || x < 1 || x > 1 << 20) return -1;
    *v = (int)x;
    return 0;
}

static void parse(fwd_args_t *a, int argc, char **argv)
{
    char err[ERR_LEN];
    memset(a, 0, sizeof *a);
    a->cfg = model_cfg_default();
    a->batch = 1;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (strcmp(f, "--double") == 0) { a->dbl = 1; continue; }
        int need = strcmp(f, "--dims") == 0 ? 3 : 1;
        if (i + need >= argc) DIE("%s: missing value", f);
        const char *v = argv[i + 1];
        int bad = 0;
        if (strcmp(f, "--variant") == 0) { if (model_variant_parse(v, &a->cfg.variant, err)) DIE("%s", err); }
        else if (strcmp(f, "--width") == 0) bad = to_int(v, &a->cfg.width);
        else if (strcmp(f, "--in-channels") == 0) bad = to_int(v, &a->cfg.in_channels);
        else if (strcmp(f, "--classes") == 0) bad = to_int(v, &a->cfg.classes);
        else if (strcmp(f, "--batch") == 0) bad = to_int(v, &a->batch);
        else if (strcmp(f, "--seed") == 0) a->seed = strtoull(v, NULL, 10);
        else if (strcmp(f, "--safetensors") == 0) a->st_path = v;
        else if (strcmp(f, "--input") == 0) a->in_path = v;
        else if (strcmp(f, "--output") == 0) a->out_path = v;
        else if (strcmp(f, "--dims") == 0)
            bad = to_int(argv[i + 1], &a->dims[0]) || to_int(argv[i + 2], &a->dims[1]) ||
                  to_int(argv[i + 3], &a->dims[2]);
        else DIE("unknown flag %s", f);
        if (bad) DIE("%s: bad value '%s'", f, v);
        i += need;
    }
    if (!a->dims[0] || !a->st_path || !a->in_path || !a->out_path)
        DIE("usage: model_forward --variant V --width W --in-channels C --classes K --dims D H W "
            "--batch N --seed S --safetensors F --input F --output F [--double]");
}

static void read_f32(const char *path, float *x, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f) DIE("%s: cannot open: %s", path, strerror(errno));
    size_t got = fread(x, sizeof *x, n, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != n || extra) DIE("%s: expected exactly %zu float32 values", path, n);
}

static void write_f32(const char *path, const float *x, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) DIE("%s: cannot create: %s", path, strerror(errno));
    if (fwrite(x, sizeof *x, n, f) != n || fclose(f) != 0) DIE("%s: write failed", path);
}

int main(int argc, char **argv)
{
    log_set_name("model_forward");
    fwd_args_t a;
    parse(&a, argc, argv);
    char err[ERR_LEN];
    model_t m;
    model_plan_t p;
    if (model_describe(&m, &a.cfg, err) || model_plan(&p, &m, a.batch, a.dims, err)) DIE("%s", err);
    float *params = xmalloc(m.table.numel * sizeof *params);
    model_init_params(&m, params, a.seed);
    if (safetensors_write(a.st_path, &m, params, NULL, err)) DIE("%s", err);
    float *x = xmalloc(p.in_numel * sizeof *x), *y = xmalloc(p.out_numel * sizeof *y);
    read_f32(a.in_path, x, p.in_numel);
    if (a.dbl) {
        double *pd = xmalloc(m.table.numel * sizeof *pd), *xd = xmalloc(p.in_numel * sizeof *xd);
        double *ws = xmalloc(p.total * sizeof *ws);
        for (size_t i = 0; i < m.table.numel; i++) pd[i] = params[i];
        for (size_t i = 0; i < p.in_numel; i++) xd[i] = x[i];
        model_forward_cpu_f64(ws, pd, xd, &m, &p);
        for (size_t i = 0; i < p.out_numel; i++) y[i] = (float)ws[p.logits + i];
        free(pd); free(xd); free(ws);
    } else {
        float *ws = xmalloc(p.total * sizeof *ws);
        model_forward_cpu(ws, params, x, &m, &p);
        memcpy(y, ws + p.logits, p.out_numel * sizeof *y);
        free(ws);
    }
    write_f32(a.out_path, y, p.out_numel);
    free(x); free(y); free(params);
    model_free(&m);
    return 0;
}
