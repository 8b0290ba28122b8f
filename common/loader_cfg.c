/*
loader_cfg.c -- srm-loader's command line: dataset and selection (split or fold), cache,
preprocessing (target spacing, normalisation, class count), endpoints, CURVE keys, seed and epochs.
*/
#include "loader.h"
#include "check.h"
#include "cli.h"
#include "labels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void loader_usage(void *file)
{
    fprintf((FILE *)file,
        "usage: srm-loader --dataset DIR --volumes EP [options]\n"
        "  --split train|validation|test|all   training selection (train)\n"
        "  --fold K [--fold-part train|val]     fold K of the dataset's 5-fold split instead (past\n"
        "                                       its folds: nnU-Net's seeded 80:20 split; all: every case)\n"
        "  --val-split NAME                     cases served on --cases (validation; foldK/val with --fold)\n"
        "  --splits FILE                        the folds of this splits_final.json, not the dataset's (a\n"
        "                                       run keeps the folds it began with)\n"
        "  --cache DIR                          preprocessed-case cache ($TMPDIR/srm-cache-UID-HASH)\n"
        "  --spacing X,Y,Z|none                 target spacing in mm (none)\n"
        "  --norm ct:LO,HI|ct-z:MEAN,STD[,LO,HI]|mr-fg|mr-all   (default by the dataset's modality)\n"
        "  --classes K                          number of classes sent with volumes (dataset's)\n"
        "  --trainer-patch D,H,W --trainer-batch B   the trainer's patch and batch, sent with each\n"
        "                                       training volume: an augmenter cutting another size\n"
        "                                       stops (exit 78) instead of having every batch dropped\n"
        "  --write-preprocessing FILE           write the preprocessing settings with each channel's\n"
        "                                       modality (JSON) for srm-trainer --preprocessing\n"
        "  --volumes EP                         PUSH endpoint the augmenters connect to (bound)\n"
        "  --cases EP                           ROUTER endpoint for validation cases (bound; off)\n"
        "  --allow-remote                       allow binding non-loopback addresses\n"
        "  --curve-server KEYFILE --authorized FILE   CURVE on tcp endpoints: this stage's key,\n"
        "                                       and the client keys admitted (scripts/keys.sh)\n"
        "  --hwm N                              volumes high-water mark per augmenter (2)\n"
        "  --seed N                             shuffle seed (0)\n"
        "  --epochs N                           stop after N epochs (0: forever)\n");
}

int loader_parse(loader_cfg_t *c, int argc, char **argv, char *err)
{
    memset(c, 0, sizeof *c);
    preprocess_cfg_default(&c->prep);
    c->hwm = 2;
    c->force_modality = -1;
    snprintf(c->train_sel, sizeof c->train_sel, "train");
    long fold = -1, v;
    int fold_given = 0;
    const char *fold_part = "train", *val_split = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
        if (!strcmp(a, "--allow-remote")) { c->allow_remote = 1; continue; }
        if (i + 1 >= argc) return set_err(err, "%s: missing value (or unknown flag)", a);
        const char *val = argv[++i];
        int rc = 0;
        if (!strcmp(a, "--dataset")) c->dataset = val;
        else if (!strcmp(a, "--cache")) c->cache = val;
        else if (!strcmp(a, "--split")) snprintf(c->train_sel, sizeof c->train_sel, "%s", val);
        else if (!strcmp(a, "--fold")) {
            if (!strcmp(val, "all")) fold = DATASET_FOLD_ALL;
            else rc = cli_long(a, val, 0, DATASET_FOLD_MAX, &fold, err);
            fold_given = 1;
        }
        else if (!strcmp(a, "--fold-part")) {
            if (strcmp(val, "train") && strcmp(val, "val")) rc = set_err(err, "--fold-part: train or val");
            fold_part = val;
        } else if (!strcmp(a, "--val-split")) val_split = val;
        else if (!strcmp(a, "--splits")) c->splits = val;
        else if (!strcmp(a, "--spacing")) rc = cli_spacing(val, c->prep.target_spacing, err);
        else if (!strcmp(a, "--norm")) rc = cli_norm(val, &c->prep, &c->force_modality, err);
        else if (!strcmp(a, "--classes")) { rc = cli_long(a, val, 1, LABEL_MAX_CLASS + 1, &v, err); c->classes = (int)v; }
        else if (!strcmp(a, "--trainer-patch")) rc = cli_dims3(a, val, 1, 4096, 1, c->trainer_patch, err);
        else if (!strcmp(a, "--trainer-batch")) rc = cli_int(a, val, 1, 1024, &c->trainer_batch, err);
        else if (!strcmp(a, "--write-preprocessing")) c->prep_out = val;
        else if (!strcmp(a, "--volumes")) c->volumes_ep = val;
        else if (!strcmp(a, "--cases")) c->cases_ep = val;
        else if (!strcmp(a, "--curve-server")) c->curve_server = val;
        else if (!strcmp(a, "--authorized")) c->authorized = val;
        else if (!strcmp(a, "--hwm")) { rc = cli_long(a, val, 1, 1000, &v, err); c->hwm = (int)v; }
        else if (!strcmp(a, "--seed")) { rc = cli_long(a, val, 0, 0x7fffffffffffffffL, &v, err); c->seed = (uint64_t)v; }
        else if (!strcmp(a, "--epochs")) rc = cli_long(a, val, 0, 1L << 40, &c->epochs, err);
        else rc = set_err(err, "unknown flag %s", a);
        if (rc) return -1;
    }
    if (!c->dataset) return set_err(err, "--dataset is required");
    if (!c->volumes_ep) return set_err(err, "--volumes is required");
    if (!c->trainer_patch[0] != !c->trainer_batch) return set_err(err, "--trainer-patch and --trainer-batch go together");
    if (!c->curve_server != !c->authorized) return set_err(err, "--curve-server and --authorized go together");
    char k[24];
    if (fold == DATASET_FOLD_ALL) snprintf(k, sizeof k, "all");
    else snprintf(k, sizeof k, "%ld", fold);
    if (fold_given) snprintf(c->train_sel, sizeof c->train_sel, "fold%s/%s", k, fold_part);
    if (val_split) snprintf(c->val_sel, sizeof c->val_sel, "%s", val_split);
    else if (fold_given) snprintf(c->val_sel, sizeof c->val_sel, "fold%s/val", k);
    else snprintf(c->val_sel, sizeof c->val_sel, "validation");
    if (!c->cache) {
        const char *t = getenv("TMPDIR");
        uint64_t h = 1469598103934665603ull;       // one cache per dataset path: ids may repeat
        for (const char *p = c->dataset; *p; p++) { h ^= (uint8_t)*p; h *= 1099511628211ull; }
        snprintf(c->cache_buf, sizeof c->cache_buf, "%s/srm-cache-%u-%08x", t && *t ? t : "/tmp",
                 (unsigned)getuid(), (unsigned)(h >> 32));
        c->cache = c->cache_buf;
    }
    return 0;
}
