/*
loader.h -- srm-loader's pieces: options, the epoch loop that PUSHes training volumes forever,
the ROUTER service that answers validation-case requests, and the preprocessing record as the
JSON carried in a volume's `prep` array (so the evaluator can undo the preprocessing).
Sockets (docs/pipeline.md): volumes PUSH bind, cases ROUTER bind; both loopback unless
--allow-remote. Files: loader_cfg.c, loader_run.c, loader_cases.c, loader_prep.c.
*/
#ifndef SRM_LOADER_H
#define SRM_LOADER_H
#include <stdint.h>
#include "case_cache.h"
#include "dataset.h"
#include "preprocess.h"
#include "stage.h"
#include "wire_msgs.h"

typedef struct {
    const char *dataset;        // --dataset DIR
    const char *cache;          // --cache DIR; default $TMPDIR/srm-cache-<uid>-<hash of the
                                // dataset path> (datasets may be read-only)
    char cache_buf[512];
    char train_sel[64];         // dataset_select selection for training ("train", "fold0/train")
    char val_sel[64];           // for the cases socket ("validation", "fold0/val")
    const char *volumes_ep, *cases_ep;  // NULL cases_ep: no cases socket
    int allow_remote;
    const char *curve_server;   // --curve-server KEYFILE: CURVE on the bound tcp endpoints
    const char *authorized;     // --authorized FILE: client public keys admitted (with the above)
    int hwm;                    // volumes PUSH high-water mark (messages per peer)
    uint64_t seed;
    long epochs;                // 0: forever
    int classes;                // --classes override (0: the dataset's)
    int trainer_patch[3], trainer_batch;    // sent with training volumes (0: not given)
    const char *splits;         // --splits FILE: the folds (splits_final.json) instead of the dataset's
    int force_modality;         // -1: the dataset's; else MODALITY_MR / MODALITY_CT for all channels
    preprocess_cfg_t prep;
    const char *prep_out;       // --write-preprocessing FILE: the settings as JSON, for the trainer
} loader_cfg_t;

// Parse argv into c. Returns 0, 1 for --help (usage printed), -1 with err.
int loader_parse(loader_cfg_t *c, int argc, char **argv, char *err);
void loader_usage(void *file);

// State shared by the epoch loop and the cases service.
typedef struct {
    const loader_cfg_t *cfg;
    stage_t *st;
    dataset_t ds;
    int num_classes;
    int *train, n_train;        // dataset indices
    int *val, n_val;
    uint8_t *bad;               // [ds.n_cases] 1: failed once, skipped from then on
    void *volumes, *cases;      // sockets (cases may be NULL)
} loader_t;

// 0; -2 + err for what no restart cures (the dataset, its selections, the CURVE keys); -1 + err.
int loader_open(loader_t *L, const loader_cfg_t *cfg, stage_t *st, char *err);
void loader_close(loader_t *L);
// Push volumes until stopped (signal) or cfg->epochs are done. Returns 0; -2 + err when no
// case of the split can be used (each skipped case was logged; err names the first and why);
// -1 + err when the volumes cannot be sent.
int loader_run(loader_t *L, char *err);

// Build the `volume` message of dataset case i (cache hit or preprocess). *cc must be closed
// by the caller after sending (the image frames point into its mapping). epoch -1: none.
// 0; -1 + err when the case is bad; -2 + err when the cache cannot be used (case_cache_get).
int loader_volume_msg(loader_t *L, int i, int64_t index, int64_t epoch, int with_prep,
                      wire_out_t *o, cached_case_t *cc, char **prep_json, char *err);
// Answer every request waiting on the cases socket (non-blocking).
void loader_serve_cases(loader_t *L);

// The preprocessing record as JSON text (malloc'd) and back.
char *prep_record_to_json(const preprocess_record_t *r);
int prep_record_from_json(const char *text, size_t len, preprocess_record_t *r, char *err);

#endif
