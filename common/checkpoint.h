/*
checkpoint.h -- the native training checkpoint: everything needed to resume a run exactly.
Layout (little-endian): header (magic "SRMCKPT\0", version, model configuration, step, cosine
schedule state, Adam step, RNG state, and from version 2 the preprocessing settings the model was
trained with: u32 length + JSON text, preprocess_settings.c), the parameter table (names and
shapes), then params,
Adam m and Adam v as float32 in table order, and last a SHA-256 (OpenSSL EVP) of all the bytes
before it. Written to path.tmp, fsync'ed and renamed (and the directory fsync'ed), so a reader
never sees half a file.
Partner: safetensors.h (parameters only, for PyTorch).
*/
#ifndef SRM_CHECKPOINT_H
#define SRM_CHECKPOINT_H
#include "model.h"
#include "rng.h"

#define CKPT_VERSION 2            // written; version 1 (no preprocessing settings) is read too
#define CKPT_PREP_MAX 2048

typedef struct {
    model_cfg_t cfg;
    long step;              // training steps done
    long total_steps;       // cosine schedule length
    double base_lr;         // cosine schedule start
    long adam_step;         // Adam's bias-correction step (1-based count of updates done)
    rng_t rng;              // the trainer's sampling stream, restored exactly
    char prep[CKPT_PREP_MAX];   // preprocessing settings (JSON), "" when unknown
} ckpt_state_t;

// Write. params, adam_m, adam_v follow m->table. 0 or -1 with err.
int ckpt_write(const char *path, const model_t *m, const float *params, const float *adam_m,
               const float *adam_v, const ckpt_state_t *st, char *err);

// Verify the checksum and read the header only (so the caller can build the model from st->cfg).
int ckpt_read_state(const char *path, ckpt_state_t *st, char *err);

// Verify the checksum, check that the file's configuration and table equal the model's (a
// mismatch names the tensor), and read params, m, v (any may be NULL: skipped) and the state.
int ckpt_read(const char *path, const model_t *m, float *params, float *adam_m, float *adam_v,
              ckpt_state_t *st, char *err);

#endif
