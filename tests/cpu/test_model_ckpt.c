/*
test_model_ckpt.c -- the native checkpoint (checkpoint.h) and the safetensors export in C:
  - round trip of params, Adam m and v (bit-exact), step, schedule, Adam step and RNG state
    (the restored stream continues exactly);
  - ckpt_read_state reads the header alone;
  - a flipped byte anywhere, a truncated file, a wrong model or a missing file are rejected with a
    message that says what is wrong;
  - safetensors write/read round trip bit-exact, and the configuration comes back from metadata;
  - the preprocessing settings travel in both (checkpoint version 2, __metadata__
    "preprocessing"), and a version-1 checkpoint (before them) still reads, with none.
*/
#define _GNU_SOURCE
#include "test.h"
#include "model.h"
#include "checkpoint.h"
#include "safetensors.h"
#include "check.h"
#include "rng.h"
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

static void copy_modified(const char *src, const char *dst, long flip_at, long truncate_to)
{
    long n = file_size(src);
    unsigned char *b = xmalloc((size_t)n);
    FILE *f = fopen(src, "rb");
    ASSERT(f && fread(b, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    if (flip_at >= 0) b[flip_at] ^= 0x10;
    if (truncate_to >= 0) n = truncate_to;
    f = fopen(dst, "wb");
    ASSERT(f && fwrite(b, 1, (size_t)n, f) == (size_t)n && fclose(f) == 0);
    free(b);
}

// Rewrite a version-2 checkpoint whose preprocessing settings are empty as version 1: drop the
// u32 length (after magic, version, 4 configuration u32s, step, schedule, lr, Adam step and the
// 4 RNG words: byte 92), set the version, and append a fresh SHA-256 of the rest.
static void make_v1(const char *src, const char *dst)
{
    long n = file_size(src);
    unsigned char *b = xmalloc((size_t)n);
    FILE *f = fopen(src, "rb");
    ASSERT(f && fread(b, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    ASSERT(b[8] == 2 && b[92] == 0 && b[93] == 0 && b[94] == 0 && b[95] == 0);
    b[8] = 1;
    memmove(b + 92, b + 96, (size_t)n - 96);
    n -= 4 + 32;                                // without the length and the old checksum
    unsigned int dl = 0;
    ASSERT(EVP_Digest(b, (size_t)n, b + n, &dl, EVP_sha256(), NULL) == 1 && dl == 32);
    f = fopen(dst, "wb");
    ASSERT(f && fwrite(b, 1, (size_t)n + 32, f) == (size_t)n + 32 && fclose(f) == 0);
    free(b);
}

int main(void)
{
    char err[ERR_LEN], path[512], bad[512];
    const char *dir = test_tmpdir("ckpt");
    model_t m;
    model_cfg_t cfg = { .variant = MODEL_P, .width = 8, .in_channels = 2, .classes = 4 };
    ASSERT(model_describe(&m, &cfg, err) == 0);
    size_t n = m.table.numel;
    float *p = xmalloc(n * 4), *mm = xmalloc(n * 4), *vv = xmalloc(n * 4);
    float *p2 = xmalloc(n * 4), *m2 = xmalloc(n * 4), *v2 = xmalloc(n * 4);
    model_init_params(&m, p, 3);
    rng_t r = rng_seed(17);
    rng_fill_normal(&r, mm, n, 0, 1e-3f);
    rng_fill_uniform(&r, vv, n, 0, 1e-6f);
    ckpt_state_t st = { .cfg = cfg, .step = 1234, .total_steps = 25000, .base_lr = 1e-4,
                        .adam_step = 1234, .rng = rng_seed(99) };
    rng_u64(&st.rng);

    snprintf(path, sizeof path, "%s/a.ckpt", dir);
    EXPECT(ckpt_write(path, &m, p, mm, vv, &st, err) == 0, "write: %s", err);
    ckpt_state_t s2;
    memset(&s2, 0, sizeof s2);
    EXPECT(ckpt_read(path, &m, p2, m2, v2, &s2, err) == 0, "read: %s", err);
    EXPECT(memcmp(p, p2, n * 4) == 0 && memcmp(mm, m2, n * 4) == 0 && memcmp(vv, v2, n * 4) == 0,
           "params, m, v bit-exact");
    EXPECT(s2.step == 1234 && s2.total_steps == 25000 && s2.base_lr == 1e-4 && s2.adam_step == 1234 &&
           memcmp(&s2.cfg, &cfg, sizeof cfg) == 0, "state restored");
    EXPECT(rng_u64(&s2.rng) == rng_u64(&st.rng), "rng stream continues exactly");
    memset(&s2, 0, sizeof s2);
    EXPECT(ckpt_read_state(path, &s2, err) == 0 && s2.cfg.variant == MODEL_P && s2.cfg.classes == 4 &&
           s2.step == 1234, "read_state: %s", err);

    EXPECT(s2.prep[0] == 0, "no preprocessing settings written, none read: '%s'", s2.prep);

    // the preprocessing settings travel in the header; a version-1 file reads with none
    const char *prep_text = "{\"version\":1,\"modality\":[\"CT\",\"MR\"],\"note\":\"a \\\"quoted\\\" word\"}";
    ckpt_state_t sp = st;
    snprintf(sp.prep, sizeof sp.prep, "%s", prep_text);
    char ppath[512];
    snprintf(ppath, sizeof ppath, "%s/prep.ckpt", dir);
    EXPECT(ckpt_write(ppath, &m, p, mm, vv, &sp, err) == 0, "write with settings: %s", err);
    memset(&s2, 0, sizeof s2);
    EXPECT(ckpt_read(ppath, &m, p2, m2, v2, &s2, err) == 0 && !strcmp(s2.prep, prep_text) &&
           memcmp(p, p2, n * 4) == 0 && s2.step == 1234, "settings round trip: %s / '%s'", err, s2.prep);
    snprintf(ppath, sizeof ppath, "%s/v1.ckpt", dir);
    make_v1(path, ppath);
    memset(&s2, 0, sizeof s2);
    memset(p2, 0, n * 4);
    EXPECT(ckpt_read(ppath, &m, p2, m2, v2, &s2, err) == 0 && s2.prep[0] == 0 && s2.step == 1234 &&
           memcmp(p, p2, n * 4) == 0 && memcmp(vv, v2, n * 4) == 0, "version-1 checkpoint: %s", err);

    // corruption: a flipped byte in the header, in the table, in v, in the checksum
    long size = file_size(path);
    long at[4] = { 20, 200, size - 100, size - 5 };
    snprintf(bad, sizeof bad, "%s/bad.ckpt", dir);
    for (int k = 0; k < 4; k++) {
        copy_modified(path, bad, at[k], -1);
        int rc = ckpt_read(bad, &m, p2, m2, v2, &s2, err);
        EXPECT(rc == -1 && strstr(err, "checksum") && strstr(err, "bad.ckpt"), "flip at %ld: %s", at[k], err);
    }
    copy_modified(path, bad, -1, size / 2);
    EXPECT(ckpt_read(bad, &m, p2, m2, v2, &s2, err) == -1 && (strstr(err, "checksum") || strstr(err, "truncated")),
           "truncated: %s", err);
    copy_modified(path, bad, -1, 10);
    EXPECT(ckpt_read_state(bad, &s2, err) == -1 && strstr(err, "truncated"), "truncated to 10 bytes: %s", err);
    EXPECT(ckpt_read("/nonexistent/x.ckpt", &m, p2, m2, v2, &s2, err) == -1 && strstr(err, "cannot open"),
           "missing file: %s", err);
    model_t other;
    model_cfg_t oc = cfg;
    oc.variant = MODEL_M;
    ASSERT(model_describe(&other, &oc, err) == 0);
    float *po = xmalloc(other.table.numel * 4);
    EXPECT(ckpt_read(path, &other, po, NULL, NULL, &s2, err) == -1 && strstr(err, "running model"),
           "other model refused: %s", err);
    free(po);
    model_free(&other);

    // safetensors round trip in C
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    EXPECT(safetensors_write(path, &m, p, NULL, err) == 0, "st write: %s", err);
    memset(p2, 0, n * 4);
    EXPECT(safetensors_read(path, &m, p2, err) == 0 && memcmp(p, p2, n * 4) == 0, "st round trip: %s", err);
    model_cfg_t c2;
    EXPECT(safetensors_read_config(path, &c2, err) == 0 && memcmp(&c2, &cfg, sizeof cfg) == 0, "st config: %s", err);
    char got[CKPT_PREP_MAX];
    EXPECT(safetensors_read_prep(path, got, sizeof got, err) == 0 && got[0] == 0, "st without settings: %s", err);
    snprintf(ppath, sizeof ppath, "%s/prep.safetensors", dir);
    EXPECT(safetensors_write(ppath, &m, p, prep_text, err) == 0, "st write with settings: %s", err);
    EXPECT(safetensors_read_prep(ppath, got, sizeof got, err) == 0 && !strcmp(got, prep_text),
           "st settings round trip: %s / '%s'", err, got);
    EXPECT(safetensors_read_prep(ppath, got, 8, err) == -1 && strstr(err, "longer than 7"), "st settings too long: %s", err);
    memset(p2, 0, n * 4);
    EXPECT(safetensors_read(ppath, &m, p2, err) == 0 && memcmp(p, p2, n * 4) == 0 &&
           safetensors_read_config(ppath, &c2, err) == 0 && memcmp(&c2, &cfg, sizeof cfg) == 0,
           "st with settings reads as before: %s", err);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    copy_modified(path, bad, -1, file_size(path) - 4);
    EXPECT(safetensors_read(bad, &m, p2, err) == -1 && strstr(err, "truncated"), "st truncated: %s", err);

    free(p); free(mm); free(vv); free(p2); free(m2); free(v2);
    model_free(&m);
    return test_summary();
}
