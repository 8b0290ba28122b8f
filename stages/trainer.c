/*
trainer.c -- srm-trainer: trains SegResMamba. For now it answers
  srm-trainer --describe [--model M|P|R|no-tom] [--preset tiny|demo|full] [--width W]
              [--in-channels N] [--classes K]
printing one line per parameter "name [d0, d1, ...]" and a last line "parameters N" (issue 4).
main() parses flags into trainer_cfg_t and dispatches; the training loop (end-to-end issue) is to
be added as another mode beside trainer_describe().
*/
#include "model.h"
#include "check.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int describe;
    model_cfg_t model;
} trainer_cfg_t;

static void usage(FILE *f)
{
    fprintf(f, "usage: srm-trainer --describe [--model M|P|R|no-tom] [--preset tiny|demo|full]\n"
               "                   [--width W] [--in-channels N] [--classes K]\n");
}

static int parse_int(const char *flag, const char *s, int *out, char *err)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 1 || v > 1000000) return set_err(err, "%s: bad value '%s'", flag, s);
    *out = (int)v;
    return 0;
}

static int trainer_parse(trainer_cfg_t *c, int argc, char **argv, char *err)
{
    memset(c, 0, sizeof *c);
    c->model = model_cfg_default();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--describe") == 0) { c->describe = 1; continue; }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) { usage(stdout); exit(0); }
        if (i + 1 >= argc) return set_err(err, "%s: missing value (or unknown flag)", a);
        const char *v = argv[++i];
        int rc;
        if (strcmp(a, "--model") == 0) rc = model_variant_parse(v, &c->model.variant, err);
        else if (strcmp(a, "--preset") == 0) rc = model_cfg_preset(&c->model, v, err);
        else if (strcmp(a, "--width") == 0) rc = parse_int(a, v, &c->model.width, err);
        else if (strcmp(a, "--in-channels") == 0) rc = parse_int(a, v, &c->model.in_channels, err);
        else if (strcmp(a, "--classes") == 0) rc = parse_int(a, v, &c->model.classes, err);
        else rc = set_err(err, "unknown flag %s", a);
        if (rc) return -1;
    }
    return model_cfg_check(&c->model, err);
}

static int trainer_describe(const model_cfg_t *cfg, char *err)
{
    model_t m;
    if (model_describe(&m, cfg, err)) return -1;
    char shape[128];
    for (int i = 0; i < m.table.count; i++) {
        param_shape_str(&m.table.items[i], shape, sizeof shape);
        printf("%s %s\n", m.table.items[i].name, shape);
    }
    printf("parameters %zu\n", m.table.numel);
    model_free(&m);
    return fflush(stdout) == 0 ? 0 : set_err(err, "stdout: write failed");
}

int main(int argc, char **argv)
{
    log_set_name("trainer");
    char err[ERR_LEN];
    trainer_cfg_t cfg;
    if (trainer_parse(&cfg, argc, argv, err)) {
        log_msg('E', "%s", err);
        usage(stderr);
        return 1;
    }
    if (cfg.describe) {
        if (trainer_describe(&cfg.model, err)) { log_msg('E', "%s", err); return 1; }
        return 0;
    }
    log_msg('E', "the training loop is not built yet; only --describe is available");
    usage(stderr);
    return 1;
}
