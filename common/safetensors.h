/*
safetensors.h -- the model's parameters as a safetensors file (anchors.md §B3): u64 LE header
length, JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}} padded with
spaces to a multiple of 8, then the tensors tiling the byte buffer contiguously. We write F32
tensors sorted by name, with the model configuration as string metadata (variant, width,
in_channels, classes, and the preprocessing settings when known); the file loads into PyTorch with safetensors.torch.load_file.
Reading validates everything and converts F16/BF16 to float. Partner: checkpoint.h (native
format with optimizer state).
*/
#ifndef SRM_SAFETENSORS_H
#define SRM_SAFETENSORS_H
#include "model.h"

// Write params (m->table layout) to path: path.tmp, fsync, rename. prep: the preprocessing
// settings (JSON text, preprocess_settings.c) kept as the string __metadata__ "preprocessing";
// NULL or "": none. 0 or -1 with err.
int safetensors_write(const char *path, const model_t *m, const float *params, const char *prep, char *err);

// Read path into params (m->table layout). Every tensor of the table must be present with its
// exact shape; names the model ignores on import (model_name_ignored_on_import) are skipped;
// any other name is an error naming it. -1 with err ("<path>: <problem>") on any problem; params
// may then be partly written.
int safetensors_read(const char *path, const model_t *m, float *params, char *err);

// The model configuration from the file's __metadata__ (written by safetensors_write).
int safetensors_read_config(const char *path, model_cfg_t *cfg, char *err);
// The __metadata__ "preprocessing" text into buf ("" when the file has none). 0, or -1 with err
// (unreadable file, a value that is not a string or longer than cap - 1).
int safetensors_read_prep(const char *path, char *buf, size_t cap, char *err);

#endif
