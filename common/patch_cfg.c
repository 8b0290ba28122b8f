/*
patch_cfg.c -- srm-augmenter's command line: endpoints, batching, reuse, seed, and every
augmentation option of augment_cfg.c, and the CURVE client keys.
*/
#include "patch_stream.h"
#include "check.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void patch_cfg_usage(void *file)
{
    FILE *f = file;
    fprintf(f, "usage: srm-augmenter --volumes EP --patches EP [options]\n"
               "  --volumes EP              the loader's volumes endpoint (connect)\n"
               "  --patches EP              the trainer's patches endpoint (connect)\n"
               "  --batch-size B            patches per batch (2)\n"
               "  --samples-per-volume N    patches cut per use of a volume (4)\n"
               "  --keep N                  recent volumes kept for reuse (2)\n"
               "  --max-uses N              uses of a volume, the first included (4)\n"
               "  --hwm N                   patches high-water mark (2)\n"
               "  --seed S                  augmentation seed (0)\n"
               "  --stats-every SECONDS     throughput log period (10; 0 off)\n"
               "  --max-batches N           exit after N batches (0: never)\n"
               "  --image-dtype f32|f16|bf16   images on the wire (f32); 16-bit halves the bytes per patch\n"
               "  --curve-client KEYFILE --server-key FILE   CURVE on tcp endpoints: this worker's key\n"
               "                            and the public key of the loader/trainer (scripts/keys.sh)\n");
    augment_cfg_usage(f);
}

static int int_opt(const char *flag, const char *s, long lo, long hi, long *out, char *err)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return set_err(err, "%s: '%s' is not an integer in [%ld, %ld]", flag, s, lo, hi);
    *out = v;
    return 0;
}

int patch_cfg_parse(patch_cfg_t *c, int argc, char **argv, char *err)
{
    memset(c, 0, sizeof *c);
    c->batch = 2;
    c->samples = 4;
    c->keep = 2;
    c->max_uses = 4;
    c->hwm = 2;
    c->stats_every = 10;
    c->image_dtype = WIRE_F32;
    augment_cfg_default(&c->aug);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
        int used, rc = augment_cfg_flag(&c->aug, a, val, &used, err);
        if (rc < 0) return -1;
        if (rc == 1) { i += used; continue; }
        if (!val) return set_err(err, "%s: missing value (or unknown flag)", a);
        i++;
        long v = 0;
        if (!strcmp(a, "--volumes")) c->volumes_ep = val;
        else if (!strcmp(a, "--patches")) c->patches_ep = val;
        else if (!strcmp(a, "--image-dtype")) {
            if (!strcmp(val, "f32")) c->image_dtype = WIRE_F32;
            else if (!strcmp(val, "f16")) c->image_dtype = WIRE_F16;
            else if (!strcmp(val, "bf16")) c->image_dtype = WIRE_BF16;
            else rc = set_err(err, "--image-dtype: '%s' is not f32, f16 or bf16", val);
        }
        else if (!strcmp(a, "--curve-client")) c->curve_client = val;
        else if (!strcmp(a, "--server-key")) c->server_key = val;
        else if (!strcmp(a, "--batch-size")) { rc = int_opt(a, val, 1, 1024, &v, err); c->batch = (int)v; }
        else if (!strcmp(a, "--samples-per-volume")) { rc = int_opt(a, val, 1, 4096, &v, err); c->samples = (int)v; }
        else if (!strcmp(a, "--keep")) { rc = int_opt(a, val, 1, 64, &v, err); c->keep = (int)v; }
        else if (!strcmp(a, "--max-uses")) { rc = int_opt(a, val, 1, 1 << 20, &v, err); c->max_uses = (int)v; }
        else if (!strcmp(a, "--hwm")) { rc = int_opt(a, val, 1, 1000, &v, err); c->hwm = (int)v; }
        else if (!strcmp(a, "--seed")) { rc = int_opt(a, val, 0, 0x7fffffffffffffffL, &v, err); c->seed = (uint64_t)v; }
        else if (!strcmp(a, "--stats-every")) { rc = int_opt(a, val, 0, 86400, &v, err); c->stats_every = (double)v; }
        else if (!strcmp(a, "--max-batches")) rc = int_opt(a, val, 0, 1L << 40, &c->max_batches, err);
        else rc = set_err(err, "unknown flag %s", a);
        if (rc) return -1;
    }
    if (!c->volumes_ep || !c->patches_ep) return set_err(err, "--volumes and --patches are required");
    if (!c->curve_client != !c->server_key) return set_err(err, "--curve-client and --server-key go together");
    return augment_cfg_check(&c->aug, err);
}
