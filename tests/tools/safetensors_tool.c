/*
safetensors_tool.c -- drives common/safetensors.c for tests/cpu/test_safetensors.py:
  safetensors_tool write FILE [model flags] --seed S [--preprocessing JSONFILE]
                                                        init from the seed, export FILE (with
                                                        those preprocessing settings)
  safetensors_tool read  FILE [model flags] [--dump OUT] import FILE into the model; with
                                                        --dump write the parameter buffer as raw
                                                        float32 in table order, and print the
                                                        table ("name offset numel") to stdout
  safetensors_tool config FILE                          print the configuration in the metadata
  safetensors_tool prep FILE                            print the preprocessing settings ("" if none)
model flags: --variant M|P|R|no-tom --width W --in-channels C --classes K.
Exit 0 on success; 1 with the reader's message on stderr otherwise.
*/
#include "model.h"
#include "safetensors.h"
#include "check.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    log_set_name("safetensors_tool");
    if (argc < 3) DIE("usage: safetensors_tool write|read|config|prep FILE [flags]");
    const char *cmd = argv[1], *path = argv[2], *dump = NULL;
    char prep[4096] = "";
    char err[ERR_LEN];
    model_cfg_t cfg = model_cfg_default();
    unsigned long long seed = 0;
    for (int i = 3; i + 1 < argc; i += 2) {
        const char *f = argv[i], *v = argv[i + 1];
        if (strcmp(f, "--variant") == 0) { if (model_variant_parse(v, &cfg.variant, err)) DIE("%s", err); }
        else if (strcmp(f, "--width") == 0) cfg.width = atoi(v);
        else if (strcmp(f, "--in-channels") == 0) cfg.in_channels = atoi(v);
        else if (strcmp(f, "--classes") == 0) cfg.classes = atoi(v);
        else if (strcmp(f, "--seed") == 0) seed = strtoull(v, NULL, 10);
        else if (strcmp(f, "--dump") == 0) dump = v;
        else if (strcmp(f, "--preprocessing") == 0) {
            FILE *pf = fopen(v, "rb");
            size_t n = pf ? fread(prep, 1, sizeof prep - 1, pf) : 0;
            if (!pf) DIE("%s: %s", v, strerror(errno));
            fclose(pf);
            prep[n] = 0;
        }
        else DIE("unknown flag %s", f);
    }
    if (strcmp(cmd, "config") == 0) {
        if (safetensors_read_config(path, &cfg, err)) { log_msg('E', "%s", err); return 1; }
        printf("%s %d %d %d\n", model_variant_name(cfg.variant), cfg.width, cfg.in_channels, cfg.classes);
        return 0;
    }
    if (strcmp(cmd, "prep") == 0) {
        if (safetensors_read_prep(path, prep, sizeof prep, err)) { log_msg('E', "%s", err); return 1; }
        printf("%s\n", prep);
        return 0;
    }
    model_t m;
    if (model_describe(&m, &cfg, err)) DIE("%s", err);
    float *params = xcalloc(m.table.numel, sizeof *params);
    int rc = 0;
    if (strcmp(cmd, "write") == 0) {
        model_init_params(&m, params, seed);
        rc = safetensors_write(path, &m, params, prep, err);
    } else if (strcmp(cmd, "read") == 0) {
        rc = safetensors_read(path, &m, params, err);
        if (!rc && dump) {
            FILE *f = fopen(dump, "wb");
            if (!f) DIE("%s: %s", dump, strerror(errno));
            if (fwrite(params, sizeof *params, m.table.numel, f) != m.table.numel || fclose(f) != 0)
                DIE("%s: write failed", dump);
            for (int k = 0; k < m.table.count; k++)
                printf("%s %zu %zu\n", m.table.items[k].name, m.table.items[k].offset, m.table.items[k].numel);
        }
    } else {
        DIE("unknown command %s", cmd);
    }
    if (rc) log_msg('E', "%s", err);
    free(params);
    model_free(&m);
    return rc ? 1 : 0;
}
