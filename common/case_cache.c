/*
case_cache.c -- write, map and validate preprocessed-case files (format in case_cache.h), and
case_cache_get, which the loader calls: hit -> mmap; missing/stale/corrupt -> rebuild.
The header is serialised field by field (no struct dumps), little-endian; this code assumes a
little-endian host (x86-64, aarch64), which a static assertion checks.
*/
#define _GNU_SOURCE
#include "case_cache.h"
#include "check.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "case cache assumes a little-endian host");

#define CACHE_MAGIC "SRMCASE"
#define CACHE_VERSION 4u        // 2: foreground holes filled; 3: labels resampled per label; 4: separate z
#define CACHE_HEADER 1024
#define CACHE_CRC_AT 24          // offset of the header CRC (zeroed while it is computed)

// ---- half precision ---------------------------------------------------------------------------

uint16_t cache_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, mant = x & 0x7fffff;
    int e = (int)((x >> 23) & 0xff);
    if (e == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    int exp = e - 127 + 15;
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {                              // half subnormal: value = m * 2^-24
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000;
        int shift = 14 - exp;
        uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (mant >> 13), rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;   // a carry rounds up into the exponent
    return (uint16_t)h;
}

float cache_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, x;
    if (exp == 0) {
        float f = (float)mant * (1.0f / 16777216.0f);
        return sign ? -f : f;
    }
    x = exp == 31 ? sign | 0x7f800000 | (mant << 13) : sign | ((exp - 15 + 127) << 23) | (mant << 13);
    float f;
    memcpy(&f, &x, 4);
    return f;
}

// ---- key ---------------------------------------------------------------------------------------

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 1099511628211ull; }
    return h;
}

static int hash_file(uint64_t *h, const char *path, char *err)
{
    struct stat st;
    if (stat(path, &st) < 0) return set_err(err, "%s: %s", path, strerror(errno));
    int64_t f[3] = { (int64_t)st.st_size, (int64_t)st.st_mtim.tv_sec, (int64_t)st.st_mtim.tv_nsec };
    *h = fnv(*h, path, strlen(path) + 1);
    *h = fnv(*h, f, sizeof f);
    return 0;
}

int case_cache_key(const dataset_t *ds, int i, const preprocess_cfg_t *cfg, uint64_t *key, char *err)
{
    const dataset_case_t *c = &ds->cases[i];
    uint64_t h = 1469598103934665603ull, cfg_h = preprocess_cfg_hash(cfg);
    uint32_t v = CACHE_VERSION;
    h = fnv(h, &v, sizeof v);
    h = fnv(h, &cfg_h, sizeof cfg_h);
    for (int k = 0; k < c->n_images; k++)
        if (!c->images[k] || hash_file(&h, c->images[k], err) < 0) return c->images[k] ? -1 : set_err(err, "%s: case %s lacks a channel file", ds->dir, c->id);
    if (c->label && hash_file(&h, c->label, err) < 0) return -1;
    // What the dataset declares changes loading (channel modalities, label checks, "ignore").
    int decl[3] = { ds->n_channels, ds->num_classes, ds->ignore_label };
    h = fnv(h, decl, sizeof decl);
    h = fnv(h, ds->modality, (size_t)ds->n_channels * sizeof *ds->modality);
    *key = h;
    return 0;
}

// ---- header (de)serialisation ------------------------------------------------------------------

typedef struct { uint8_t *b; size_t pos; } wbuf_t;
static void put(wbuf_t *w, const void *p, size_t n) { ASSERT(w->pos + n <= CACHE_HEADER); memcpy(w->b + w->pos, p, n); w->pos += n; }
static void put_i32(wbuf_t *w, int32_t v) { put(w, &v, 4); }
static void put_aff(wbuf_t *w, const double a[4][4]) { put(w, a, 16 * sizeof(double)); }
static void put_i3(wbuf_t *w, const int v[3]) { for (int d = 0; d < 3; d++) put_i32(w, v[d]); }

typedef struct { const uint8_t *b; size_t pos; } rbuf_t;
static void get(rbuf_t *r, void *p, size_t n) { memcpy(p, r->b + r->pos, n); r->pos += n; }
static int32_t get_i32(rbuf_t *r) { int32_t v; get(r, &v, 4); return v; }
static void get_i3(rbuf_t *r, int v[3]) { for (int d = 0; d < 3; d++) v[d] = get_i32(r); }

// Record, id, shape and array offsets: everything after the fixed 32-byte preamble.
static void put_body(wbuf_t *w, const char *id, int C, const int dim[3], int dtype, int has_label,
                     const modality_t *mod, const preprocess_record_t *r, uint64_t img_off, uint64_t img_bytes,
                     uint64_t lab_off, uint64_t lab_bytes)
{
    char idb[128] = {0};
    snprintf(idb, sizeof idb, "%s", id);
    put(w, idb, sizeof idb);
    put_i32(w, C); put_i3(w, dim); put_i32(w, dtype); put_i32(w, has_label);
    for (int k = 0; k < CASE_MAX_CHANNELS; k++) put_i32(w, k < C ? (int)mod[k] : 0);
    put_i3(w, r->src_dim); put_aff(w, r->src_affine); put_i32(w, r->reoriented);
    put_i3(w, r->src_ornt.axis); put_i3(w, r->src_ornt.flip);
    put_i3(w, r->ras_dim); put_aff(w, r->ras_affine);
    put_i3(w, r->crop_lo); put_i3(w, r->crop_dim);
    put_i3(w, r->out_dim); put_aff(w, r->out_affine); put(w, r->out_spacing, sizeof r->out_spacing);
    put(w, &img_off, 8); put(w, &img_bytes, 8); put(w, &lab_off, 8); put(w, &lab_bytes, 8);
}

// ---- write ---------------------------------------------------------------------------------------

static cache_dtype_t pick_dtype(const float *x, size_t n, int allow_f16)
{
    int ints = 1, f16 = allow_f16;
    for (size_t i = 0; i < n && (ints || f16); i++) {
        float v = x[i];
        if (ints && !(v == rintf(v) && v >= -32768.0f && v <= 32767.0f)) ints = 0;
        if (f16 && !(fabsf(v) <= 65504.0f)) f16 = 0;
    }
    return ints ? CACHE_DTYPE_I16 : f16 ? CACHE_DTYPE_F16 : CACHE_DTYPE_F32;
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t k = write(fd, b, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        b += k; n -= (size_t)k;
    }
    return 0;
}

int case_cache_write(const char *path, uint64_t key, const case_t *c, const preprocess_record_t *rec,
                     int allow_f16, char *err)
{
    const volume_t *v = &c->image;
    size_t nv = volume_voxels(v), n = (size_t)v->C * nv;
    cache_dtype_t dt = pick_dtype(v->data, n, allow_f16);
    size_t esz = dt == CACHE_DTYPE_F32 ? 4 : 2, img_bytes = n * esz, lab_bytes = c->label ? nv : 0;
    uint64_t img_off = CACHE_HEADER, lab_off = (img_off + img_bytes + 63) / 64 * 64;
    size_t total = lab_off + lab_bytes;
    uint8_t *buf = xcalloc(total, 1);
    uint8_t *img = buf + img_off;
    for (size_t i = 0; i < n; i++) {
        if (dt == CACHE_DTYPE_F32) memcpy(img + 4 * i, &v->data[i], 4);
        else {
            uint16_t h = dt == CACHE_DTYPE_I16 ? (uint16_t)(int16_t)v->data[i] : cache_f32_to_f16(v->data[i]);
            memcpy(img + 2 * i, &h, 2);
        }
    }
    if (c->label) memcpy(buf + lab_off, c->label, nv);
    uint32_t pcrc = (uint32_t)crc32_z(crc32_z(0, Z_NULL, 0), buf + img_off, total - img_off);
    wbuf_t w = { buf, 0 };
    uint32_t ver = CACHE_VERSION, hl = CACHE_HEADER, zero = 0;
    put(&w, CACHE_MAGIC, 8); put(&w, &ver, 4); put(&w, &hl, 4); put(&w, &key, 8);
    put(&w, &zero, 4); put(&w, &pcrc, 4);                 // header CRC filled below
    put_body(&w, c->id, v->C, v->dim, dt, c->label != NULL, c->modality, rec, img_off, img_bytes,
             lab_off, lab_bytes);
    uint32_t hcrc = (uint32_t)crc32_z(crc32_z(0, Z_NULL, 0), buf, CACHE_HEADER);
    memcpy(buf + CACHE_CRC_AT, &hcrc, 4);

    char tmp[4300], host[64];                           // the writer in the name: case_cache_sweep
    case_cache_host(host, sizeof host);
    snprintf(tmp, sizeof tmp, "%s.tmp.%s.%d", path, host, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644), rc = 0;
    if (fd < 0) rc = set_err(err, "%s: %s", tmp, strerror(errno));
    else {
        if (write_all(fd, buf, total) < 0 || fsync(fd) < 0) rc = set_err(err, "%s: write: %s", tmp, strerror(errno));
        if (close(fd) < 0 && rc == 0) rc = set_err(err, "%s: close: %s", tmp, strerror(errno));
        if (rc == 0 && rename(tmp, path) < 0) rc = set_err(err, "%s: rename: %s", path, strerror(errno));
        if (rc < 0) unlink(tmp);
    }
    free(buf);
    return rc;
}

// ---- open ----------------------------------------------------------------------------------------

static cache_status_t parse(const uint8_t *b, size_t len, uint64_t key, const char *path, cached_case_t *o, char *err)
{
    if (len < CACHE_HEADER || memcmp(b, CACHE_MAGIC, 8) != 0) { set_err(err, "%s: not a case cache file", path); return CACHE_CORRUPT; }
    rbuf_t r = { b, 8 };
    uint32_t ver, hl, hcrc, pcrc;
    uint64_t k;
    get(&r, &ver, 4); get(&r, &hl, 4); get(&r, &k, 8); get(&r, &hcrc, 4); get(&r, &pcrc, 4);
    if (ver != CACHE_VERSION || hl != CACHE_HEADER) { set_err(err, "%s: cache format version %u (want %u)", path, ver, CACHE_VERSION); return CACHE_STALE; }
    uint8_t *h = xmalloc(CACHE_HEADER);
    memcpy(h, b, CACHE_HEADER);
    memset(h + CACHE_CRC_AT, 0, 4);
    uint32_t got = (uint32_t)crc32_z(crc32_z(0, Z_NULL, 0), h, CACHE_HEADER);
    free(h);
    if (got != hcrc) { set_err(err, "%s: header checksum mismatch", path); return CACHE_CORRUPT; }
    if (k != key) { set_err(err, "%s: stale (source files or settings changed)", path); return CACHE_STALE; }
    get(&r, o->id, sizeof o->id);
    o->id[sizeof o->id - 1] = 0;
    o->C = get_i32(&r); get_i3(&r, o->dim);
    int dt = get_i32(&r), has_label = get_i32(&r);
    for (int c = 0; c < CASE_MAX_CHANNELS; c++) o->modality[c] = (modality_t)get_i32(&r);
    preprocess_record_t *p = &o->rec;
    get_i3(&r, p->src_dim); get(&r, p->src_affine, 128); p->reoriented = get_i32(&r);
    get_i3(&r, p->src_ornt.axis); get_i3(&r, p->src_ornt.flip);
    get_i3(&r, p->ras_dim); get(&r, p->ras_affine, 128);
    get_i3(&r, p->crop_lo); get_i3(&r, p->crop_dim);
    get_i3(&r, p->out_dim); get(&r, p->out_affine, 128); get(&r, p->out_spacing, 24);
    uint64_t io, ib, lo, lb;
    get(&r, &io, 8); get(&r, &ib, 8); get(&r, &lo, 8); get(&r, &lb, 8);
    size_t nv = (size_t)o->dim[0] * o->dim[1] * o->dim[2];
    if (o->C < 1 || o->C > CASE_MAX_CHANNELS || dt < 0 || dt > 2 || o->dim[0] < 1 || o->dim[1] < 1 || o->dim[2] < 1 ||
        ib != (uint64_t)o->C * nv * (dt == CACHE_DTYPE_F32 ? 4 : 2) || lb != (has_label ? nv : 0) ||
        io < CACHE_HEADER || lo < io + ib || lo + lb != len) {
        set_err(err, "%s: header sizes disagree with the file (%zu bytes)", path, len);
        return CACHE_CORRUPT;
    }
    if ((uint32_t)crc32_z(crc32_z(0, Z_NULL, 0), b + io, len - io) != pcrc) {
        set_err(err, "%s: payload checksum mismatch", path);
        return CACHE_CORRUPT;
    }
    o->image_dtype = (cache_dtype_t)dt;
    o->image = b + io;
    o->label = has_label ? b + lo : NULL;
    return CACHE_HIT;
}

cache_status_t case_cache_open(const char *path, uint64_t key, cached_case_t *out, char *err)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        set_err(err, "%s: %s", path, strerror(errno));
        return errno == ENOENT ? CACHE_MISSING : CACHE_CORRUPT;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size < CACHE_HEADER) {
        close(fd);
        set_err(err, "%s: too short for a case cache file", path);
        return CACHE_CORRUPT;
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) { set_err(err, "%s: mmap: %s", path, strerror(errno)); return CACHE_CORRUPT; }
    cache_status_t s = parse(m, (size_t)st.st_size, key, path, out, err);
    if (s != CACHE_HIT) { munmap(m, (size_t)st.st_size); memset(out, 0, sizeof *out); return s; }
    out->map = m;
    out->map_len = (size_t)st.st_size;
    return CACHE_HIT;
}

void cached_case_close(cached_case_t *c)
{
    if (c->map && munmap(c->map, c->map_len) < 0) log_msg('W', "munmap of cached case %s failed", c->id);
    memset(c, 0, sizeof *c);
}

void cached_case_image_f32(const cached_case_t *c, float *dst)
{
    size_t n = (size_t)c->C * c->dim[0] * c->dim[1] * c->dim[2];
    const uint8_t *b = c->image;
    for (size_t i = 0; i < n; i++) {
        if (c->image_dtype == CACHE_DTYPE_F32) { memcpy(&dst[i], b + 4 * i, 4); continue; }
        uint16_t h;
        memcpy(&h, b + 2 * i, 2);
        dst[i] = c->image_dtype == CACHE_DTYPE_I16 ? (float)(int16_t)h : cache_f16_to_f32(h);
    }
}

// ---- the loader's entry point --------------------------------------------------------------------

int case_cache_get(const char *dir, const dataset_t *ds, int i, const preprocess_cfg_t *cfg,
                   cached_case_t *out, cache_status_t *status, char *err)
{
    uint64_t key;
    char why[ERR_LEN], path[4096];
    if (case_cache_key(ds, i, cfg, &key, err) < 0) return -1;
    snprintf(path, sizeof path, "%s/%s.srmcase", dir, ds->cases[i].id);
    cache_status_t s = case_cache_open(path, key, out, why);
    if (status) *status = s;
    if (s == CACHE_HIT) return 0;
    if (s == CACHE_CORRUPT) log_msg('W', "%s; rebuilding", why);
    else if (s == CACHE_STALE) log_msg('I', "%s; rebuilding", why);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) return set_err(err, "%s: %s", dir, strerror(errno)), -2;
    case_t c;
    preprocess_record_t rec;
    if (dataset_load_case(ds, i, &c, err) < 0) return -1;
    int rc = preprocess_case(&c, cfg, &rec, err) < 0 ? -1 : 0;
    if (rc == 0 && case_cache_write(path, key, &c, &rec, cfg->allow_f16, err) < 0) rc = -2;
    case_free(&c);
    if (rc < 0) return rc;
    if (case_cache_open(path, key, out, err) != CACHE_HIT) return -2;
    return 0;
}
