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
#include <stddef.h>
#include "augment.h"
#include "stage.h"
#include "wire.h"

typedef struct {
    const char *volumes_ep, *patches_ep;    // both connected
    const char *curve_client;   // --curve-client KEYFILE: CURVE on the tcp endpoints (with server_key)
    const char *server_key;     // --server-key FILE: the servers' (loader's, trainer's) public key
    int batch;                  // patches per batch (2)
    int samples;                // patches per use of a volume (4)
    int keep;                   // volumes kept for reuse (2)
    int max_uses;               // times a volume is cut, the first included (4)
    int hwm;                    // patches socket high-water mark (2)
    uint64_t seed;
    double stats_every;         // seconds between stats lines (10; 0 off)
    long max_batches;           // stop after this many batches (0: never)
    wire_dtype_t image_dtype;   // --image-dtype: images on the wire, WIRE_F32 (default), F16 or BF16
    augment_cfg_t aug;
} patch_cfg_t;

// 0, 1 for --help, -1 with err.
int patch_cfg_parse(patch_cfg_t *c, int argc, char **argv, char *err);
void patch_cfg_usage(void *file);

// Narrow n float32 image values into out as dtype (F32: a copy; F16, BF16: round to nearest
// even). Returns how many f16 values were clamped to +-65504 (0 for the other dtypes).
long patch_images_convert(const float *x, void *out, size_t n, wire_dtype_t dtype);

// Run until a signal or max_batches. Returns 0; -2 + err when its sockets cannot be made (the
// endpoints or CURVE keys) or the loader says the run trains on another patch or batch (no
// restart cures either); -1 + err on a failure while running.
int patch_stream_run(const patch_cfg_t *cfg, stage_t *st, char *err);

#endif
