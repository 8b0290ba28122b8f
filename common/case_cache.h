/*
case_cache.h -- on-disk cache of preprocessed cases: one raw little-endian file per case that
reloads with a single mmap (no decompression, no parsing of voxels).

File layout (version 1): a 1024-byte header, then the image (C, D, H, W) at a 64-byte aligned
offset in the compact dtype (int16 when every value is an integer in range, else float16 when
allowed and in range, else float32), then the uint8 label map (D, H, W) when present.
The header holds magic "SRMCASE\0", version, the cache key, the case geometry, the
preprocess_record_t (to invert predictions), CRC-32 of the header and of the payload.
The key hashes every source file's path, size and mtime plus preprocess_cfg_hash and the
dataset's channel modalities and classes, so touching a source or changing a setting rebuilds.
Files are written to a temporary name, fsync'd and renamed, so a reader never sees half a file.
*/
#ifndef SRM_CASE_CACHE_H
#define SRM_CASE_CACHE_H
#include <stddef.h>
#include <stdint.h>
#include "dataset.h"
#include "preprocess.h"

typedef enum { CACHE_DTYPE_F32 = 0, CACHE_DTYPE_F16 = 1, CACHE_DTYPE_I16 = 2 } cache_dtype_t;
// Outcome of opening a cache file (case_cache_open) or why case_cache_get rebuilt it.
typedef enum { CACHE_HIT = 0, CACHE_MISSING, CACHE_STALE, CACHE_CORRUPT } cache_status_t;

typedef struct {
    char id[128];
    int C, dim[3];
    cache_dtype_t image_dtype;
    const void *image;          // (C, D, H, W) in image_dtype, little-endian; inside the mapping
    const uint8_t *label;       // (D, H, W) or NULL; inside the mapping
    modality_t modality[CASE_MAX_CHANNELS];
    preprocess_record_t rec;    // out_affine / out_spacing: the grid of image and label
    void *map;                  // the mmap'd file (private; released by cached_case_close)
    size_t map_len;
} cached_case_t;

// Key of case i of ds under cfg. Returns 0, or -1 + err when a source file cannot be stat'ed.
int case_cache_key(const dataset_t *ds, int i, const preprocess_cfg_t *cfg, uint64_t *key, char *err);

// Write a preprocessed case (c after preprocess_case, rec its record) to path atomically.
int case_cache_write(const char *path, uint64_t key, const case_t *c, const preprocess_record_t *rec,
                     int allow_f16, char *err);

// Map path and check magic, version, key, sizes and both checksums. Returns CACHE_HIT (out is
// filled; close it) or another status with err saying why.
cache_status_t case_cache_open(const char *path, uint64_t key, cached_case_t *out, char *err);

// The loader's entry point: open <dir>/<case id>.srmcase, or load + preprocess + write it when it
// is missing, stale or corrupt, then open it. *status (may be NULL) receives what was found.
// Returns 0, -1 + err when the case itself is bad (the run goes on without it), or -2 + err when
// the cache cannot be written or read back (its disk: full, read-only...), which is no fault of
// the case.
int case_cache_get(const char *dir, const dataset_t *ds, int i, const preprocess_cfg_t *cfg,
                   cached_case_t *out, cache_status_t *status, char *err);

// Remove the temp files a loader killed while writing left in dir (case_cache_sweep.c): those
// of this host whose writer is gone, and any a day old. Returns how many.
int case_cache_sweep(const char *dir);
// This host's name as used in temp file names ([A-Za-z0-9-], others as '_', at most 63).
void case_cache_host(char *out, size_t cap);

// Expand the image to float32: dst holds C * D * H * W floats.
void cached_case_image_f32(const cached_case_t *c, float *dst);
void cached_case_close(cached_case_t *c);

// IEEE half precision conversion (round to nearest even), used for the float16 images.
uint16_t cache_f32_to_f16(float f);
float cache_f16_to_f32(uint16_t h);

#endif
