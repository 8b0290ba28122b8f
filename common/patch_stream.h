/*
patch_stream.h -- srm-augmenter's service: PULL volumes from the loader, keep the last few,
cut --samples-per-volume patches from each (augment.h), group them into batches of
--batch-size and PUSH `patch_batch` messages to the trainer. When no new volume is waiting, a
kept volume is cut again (at most --max-uses times), so one loader can feed many augmenters;
when none is left to reuse it waits. A full patches socket makes it wait too (back-pressure),
so memory stays bounded: --keep volumes plus one batch. Files: patch_cfg.c, patch_stream.c.
*/
#ifndef SRM_PATCH_STREAM_H
#define SRM_PATCH_STREAM_H
#include <stdint.h>
#include "augment.h"
#include "stage.h"

typedef struct {
    const char *volumes_ep, *patches_ep;    // both connected
    int batch;                  // patches per batch (2)
    int samples;                // patches per use of a volume (4)
    int keep;                   // volumes kept for reuse (2)
    int max_uses;               // times a volume is cut, the first included (4)
    int hwm;                    // patches socket high-water mark (2)
    uint64_t seed;
    double stats_every;         // seconds between stats lines (10; 0 off)
    long max_batches;           // stop after this many batches (0: never)
    augment_cfg_t aug;
} patch_cfg_t;

// 0, 1 for --help, -1 with err.
int patch_cfg_parse(patch_cfg_t *c, int argc, char **argv, char *err);
void patch_cfg_usage(void *file);

// Run until a signal or max_batches. Returns 0, or -1 with err (socket setup).
int patch_stream_run(const patch_cfg_t *cfg, stage_t *st, char *err);

#endif
