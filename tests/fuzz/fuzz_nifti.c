/*
fuzz_nifti.c -- libFuzzer target for the NIfTI reader (nifti_read_volume in common/nifti_io.c).

Input: one flag byte, then the file's bytes. Flag bit 0 names the file .nii.gz (else .nii);
bit 1 gzips the bytes first, so mutations of the header inside a valid gzip stream are reached;
bit 2 cuts that gzip stream short by the amount in the next byte (truncated downloads). The file
goes to a private folder ($TMPDIR, else /dev/shm): nifti_read_volume takes a path, and the name's
ending decides gzip.
Contract checked: a refusal says why and names the file; an accepted volume has positive,
bounded dims, positive finite spacing, finite voxels and a finite affine. Seeds:
tests/fuzz/corpus/nifti (tests/corpus/good + bad with a flag byte). Build: make fuzz.
*/
#include "volume.h"
#include "check.h"
#include <math.h>
#include <nifti2_io.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static char dir[64], path_nii[96], path_gz[96];
static char err[ERR_LEN];

#define FINDING(...) do { fprintf(stderr, "fuzz_nifti: " __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

static void cleanup(void)
{
    unlink(path_nii);
    unlink(path_gz);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    nifti_set_debug_level(0);           // libnifti's own stderr chatter; our errors say it all
    // TMPDIR when set (the CI test points it at a folder it removes), else tmpfs, which keeps
    // the per-input write cheap.
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/srm-fuzz-nifti-XXXXXX", base);
    if (!mkdtemp(dir)) { perror("mkdtemp"); exit(1); }
    snprintf(path_nii, sizeof path_nii, "%s/f.nii", dir);
    snprintf(path_gz, sizeof path_gz, "%s/f.nii.gz", dir);
    atexit(cleanup);
    return 0;
}

// Write n bytes of p to path, gzip-compressed (level 1: speed) when gz. Truncate the result by
// cut bytes (at most its length). Exits on an I/O failure: that is the harness, not a finding.
static void write_file(const char *path, const uint8_t *p, size_t n, int gz, size_t cut)
{
    uint8_t *buf = NULL;
    size_t len = n;
    if (gz) {
        z_stream z;
        memset(&z, 0, sizeof z);
        // windowBits 15 + 16: gzip header and trailer, what .nii.gz files carry.
        if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) { fprintf(stderr, "deflateInit2 failed\n"); exit(1); }
        size_t cap = deflateBound(&z, (uLong)n);
        buf = malloc(cap ? cap : 1);
        if (!buf) { fprintf(stderr, "out of memory\n"); exit(1); }
        z.next_in = (Bytef *)p;
        z.avail_in = (uInt)n;
        z.next_out = buf;
        z.avail_out = (uInt)cap;
        if (deflate(&z, Z_FINISH) != Z_STREAM_END) { fprintf(stderr, "deflate failed\n"); exit(1); }
        len = z.total_out;
        deflateEnd(&z);
        p = buf;
    }
    len -= cut < len ? cut : len;
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(p, 1, len, f) != len) || fclose(f)) { perror(path); exit(1); }
    free(buf);
}

static void check_volume(const volume_t *v, const char *path)
{
    if (v->C < 1 || v->C > VOLUME_MAX_CHANNELS) FINDING("%s accepted with C = %d", path, v->C);
    for (int d = 0; d < 3; d++) {
        if (v->dim[d] < 1 || v->dim[d] > VOLUME_MAX_DIM) FINDING("%s accepted with dim[%d] = %d", path, d, v->dim[d]);
        if (!(v->spacing[d] > 0) || !isfinite(v->spacing[d])) FINDING("%s accepted with spacing[%d] = %g", path, d, v->spacing[d]);
    }
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            if (!isfinite(v->affine[r][c])) FINDING("%s accepted with a non-finite affine", path);
    if (!v->data) FINDING("%s accepted without data", path);
    size_t n = (size_t)v->C * volume_voxels(v);
    for (size_t i = 0; i < n; i++)      // reads every value: ASan sees a short buffer
        if (!isfinite(v->data[i])) FINDING("%s accepted with a non-finite voxel at %zu", path, i);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t flags = data[0];
    const uint8_t *body = data + 1;
    size_t n = size - 1, cut = 0;
    if ((flags & 4) && n > 0) { cut = 1 + body[0]; body++; n--; }
    const char *path = (flags & 1) ? path_gz : path_nii;
    write_file(path, body, n, (flags & 2) != 0, cut);
    volume_t v;
    err[0] = 0;
    if (nifti_read_volume(path, &v, err) == 0) {
        check_volume(&v, path);
        volume_free(&v);
    } else {
        // Every refusal says why, naming the file (the loader's log line is this text).
        if (strncmp(err, path, strlen(path)) || strlen(err) <= strlen(path) + 2) FINDING("refusal without a reason naming the file: \"%s\"", err);
        if (v.data) FINDING("refused %s but left data allocated", path);
    }
    unlink(path);
    return 0;
}
