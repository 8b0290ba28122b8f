/*
checkpoint.c -- native checkpoint writer and reader (see checkpoint.h). The header is packed
into a byte buffer with explicit little-endian helpers; the SHA-256 runs over the stream as it is
written, and on reading the whole file is hashed before anything is parsed, so a flipped or
missing byte is reported as such rather than as a confusing parse error.
*/
#define _GNU_SOURCE
#include "checkpoint.h"
#include "check.h"
#include "durable_fs.h"
#include <errno.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char CKPT_MAGIC[8] = { 'S', 'R', 'M', 'C', 'K', 'P', 'T', 0 };
#define HASH_LEN 32

// ---- little-endian byte buffer --------------------------------------------------------

typedef struct { unsigned char *b; size_t len, cap, pos; } buf_t;

static void put(buf_t *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = 2 * (b->len + n) + 256;
        b->b = xrealloc(b->b, b->cap);
    }
    memcpy(b->b + b->len, p, n);
    b->len += n;
}

static void put_u64(buf_t *b, uint64_t v)
{
    unsigned char x[8];
    for (int i = 0; i < 8; i++) x[i] = (unsigned char)(v >> (8 * i));
    put(b, x, 8);
}

static void put_u32(buf_t *b, uint32_t v)
{
    unsigned char x[4];
    for (int i = 0; i < 4; i++) x[i] = (unsigned char)(v >> (8 * i));
    put(b, x, 4);
}

static void put_f64(buf_t *b, double v) { uint64_t u; memcpy(&u, &v, 8); put_u64(b, u); }

// Readers return 0, or -1 when the buffer ends first.
static int get(buf_t *b, void *p, size_t n)
{
    if (b->pos + n > b->len) return -1;
    memcpy(p, b->b + b->pos, n);
    b->pos += n;
    return 0;
}

static int get_u64(buf_t *b, uint64_t *v)
{
    unsigned char x[8];
    if (get(b, x, 8)) return -1;
    *v = 0;
    for (int i = 0; i < 8; i++) *v |= (uint64_t)x[i] << (8 * i);
    return 0;
}

static int get_u32(buf_t *b, uint32_t *v)
{
    unsigned char x[4];
    if (get(b, x, 4)) return -1;
    *v = 0;
    for (int i = 0; i < 4; i++) *v |= (uint32_t)x[i] << (8 * i);
    return 0;
}

static int get_f64(buf_t *b, double *v) { uint64_t u; if (get_u64(b, &u)) return -1; memcpy(v, &u, 8); return 0; }

// ---- header ---------------------------------------------------------------------------

static void pack_header(buf_t *b, const model_t *m, const ckpt_state_t *st)
{
    put(b, CKPT_MAGIC, 8);
    put_u32(b, CKPT_VERSION);
    put_u32(b, (uint32_t)m->cfg.variant);
    put_u32(b, (uint32_t)m->cfg.width);
    put_u32(b, (uint32_t)m->cfg.in_channels);
    put_u32(b, (uint32_t)m->cfg.classes);
    put_u64(b, (uint64_t)st->step);
    put_u64(b, (uint64_t)st->total_steps);
    put_f64(b, st->base_lr);
    put_u64(b, (uint64_t)st->adam_step);
    for (int i = 0; i < 4; i++) put_u64(b, st->rng.s[i]);
    const uint32_t np = (uint32_t)strnlen(st->prep, CKPT_PREP_MAX - 1);
    put_u32(b, np);
    put(b, st->prep, np);
    put_u32(b, (uint32_t)m->table.count);
    put_u64(b, m->table.numel);
    for (int k = 0; k < m->table.count; k++) {
        const param_t *p = &m->table.items[k];
        uint32_t n = (uint32_t)strlen(p->name);
        put_u32(b, n);
        put(b, p->name, n);
        put_u32(b, (uint32_t)p->ndim);
        for (int a = 0; a < p->ndim; a++) put_u32(b, (uint32_t)p->shape[a]);
    }
}

static int write_all(FILE *f, EVP_MD_CTX *h, const void *p, size_t n)
{
    return fwrite(p, 1, n, f) == n && EVP_DigestUpdate(h, p, n) == 1;
}

int ckpt_write(const char *path, const model_t *m, const float *params, const float *adam_m,
               const float *adam_v, const ckpt_state_t *st, char *err)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return set_err(err, "%s: path too long", path);
    buf_t hdr = { 0 };
    pack_header(&hdr, m, st);
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    if (!h || EVP_DigestInit_ex(h, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(h); free(hdr.b);
        return set_err(err, "%s: OpenSSL SHA-256 unavailable", path);
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) { EVP_MD_CTX_free(h); free(hdr.b); return set_err(err, "%s: cannot create: %s", tmp, strerror(errno)); }
    size_t nb = m->table.numel * sizeof(float);
    int ok = write_all(f, h, hdr.b, hdr.len) && write_all(f, h, params, nb) &&
             write_all(f, h, adam_m, nb) && write_all(f, h, adam_v, nb);
    unsigned char dg[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    ok = ok && EVP_DigestFinal_ex(h, dg, &dlen) == 1 && dlen == HASH_LEN && fwrite(dg, 1, HASH_LEN, f) == HASH_LEN;
    int e = errno;
    if (ok && fflush(f) != 0) { ok = 0; e = errno; }
    if (ok && fsync(fileno(f)) != 0) { ok = 0; e = errno; }
    if (fclose(f) != 0 && ok) { ok = 0; e = errno; }
    EVP_MD_CTX_free(h);
    free(hdr.b);
    if (!ok) { unlink(tmp); return set_err(err, "%s: write failed: %s", tmp, strerror(e)); }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return set_err(err, "%s: rename from %s failed: %s", path, tmp, strerror(e));
    }
    // the rename itself must reach the disk too, or a power cut can leave the old name (or none)
    char dir[FS_PATH_MAX], e2[ERR_LEN];
    fs_split_path(path, dir, sizeof dir);
    if (fs_fsync_dir(dir, e2)) log_msg('W', "%s: written, but %s", path, e2);   // the file is in place
    return 0;
}

// ---- reading ----------------------------------------------------------------------------

// Hash all but the last 32 bytes and compare with them. Leaves *size = file size.
static int verify(FILE *f, const char *path, uint64_t *size, char *err)
{
    struct stat s;
    if (fstat(fileno(f), &s) != 0) return set_err(err, "%s: stat: %s", path, strerror(errno));
    *size = (uint64_t)s.st_size;
    if (*size < 8 + HASH_LEN) return set_err(err, "%s: truncated (%llu bytes)", path, (unsigned long long)*size);
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    if (!h || EVP_DigestInit_ex(h, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(h);
        return set_err(err, "%s: OpenSSL SHA-256 unavailable", path);
    }
    size_t chunk = 1 << 20;
    unsigned char *b = xmalloc(chunk);
    uint64_t left = *size - HASH_LEN;
    int rc = 0;
    while (left && !rc) {
        size_t n = left < chunk ? (size_t)left : chunk;
        if (fread(b, 1, n, f) != n) rc = set_err(err, "%s: read error: %s", path, strerror(errno));
        else if (EVP_DigestUpdate(h, b, n) != 1) rc = set_err(err, "%s: SHA-256 update failed", path);
        left -= n;
    }
    unsigned char want[HASH_LEN], got[EVP_MAX_MD_SIZE];
    unsigned int glen = 0;
    if (!rc && fread(want, 1, HASH_LEN, f) != HASH_LEN) rc = set_err(err, "%s: read error in checksum", path);
    if (!rc && (EVP_DigestFinal_ex(h, got, &glen) != 1 || glen != HASH_LEN))
        rc = set_err(err, "%s: SHA-256 final failed", path);
    if (!rc && memcmp(want, got, HASH_LEN) != 0)
        rc = set_err(err, "%s: SHA-256 checksum mismatch: the file is corrupted or truncated", path);
    EVP_MD_CTX_free(h);
    free(b);
    return rc;
}

typedef struct {
    ckpt_state_t st;
    uint32_t count;
    uint64_t numel;
    buf_t b;                // whole header; b.pos at the table after parse_fixed
    size_t table_pos;
} parsed_t;

// Read the fixed part of the header (everything before the table) from the file start.
static int parse_fixed(FILE *f, const char *path, uint64_t size, parsed_t *p, char *err)
{
    memset(p, 0, sizeof *p);
    // the header is at most the whole file minus the hash; read it all (it is small next to
    // the tensors, but its length is only known after parsing the table)
    uint64_t hmax = size - HASH_LEN;
    size_t want = hmax < (1u << 20) ? (size_t)hmax : (1u << 20);   // tables are ~50 kB
    p->b.b = xmalloc(want ? want : 1);
    p->b.cap = p->b.len = want;
    if (fseeko(f, 0, SEEK_SET) != 0 || fread(p->b.b, 1, want, f) != want)
        return set_err(err, "%s: read error in header", path);
    char magic[8];
    uint32_t version, u[4];
    uint64_t step, total, astep;
    if (get(&p->b, magic, 8) || memcmp(magic, CKPT_MAGIC, 8) != 0)
        return set_err(err, "%s: not an SRM checkpoint (bad magic)", path);
    if (get_u32(&p->b, &version)) return set_err(err, "%s: truncated header", path);
    if (version < 1 || version > CKPT_VERSION)
        return set_err(err, "%s: checkpoint version %u, this build reads 1 to %d", path, version, CKPT_VERSION);
    for (int i = 0; i < 4; i++) if (get_u32(&p->b, &u[i])) return set_err(err, "%s: truncated header", path);
    if (get_u64(&p->b, &step) || get_u64(&p->b, &total) || get_f64(&p->b, &p->st.base_lr) ||
        get_u64(&p->b, &astep))
        return set_err(err, "%s: truncated header", path);
    for (int i = 0; i < 4; i++)
        if (get_u64(&p->b, &p->st.rng.s[i])) return set_err(err, "%s: truncated header", path);
    uint32_t np = 0;
    if (version >= 2 && get_u32(&p->b, &np)) return set_err(err, "%s: truncated header", path);
    if (np >= CKPT_PREP_MAX) return set_err(err, "%s: preprocessing settings of %u bytes (at most %d)", path, np, CKPT_PREP_MAX - 1);
    if (get(&p->b, p->st.prep, np)) return set_err(err, "%s: truncated header", path);
    p->st.prep[np] = 0;
    if (get_u32(&p->b, &p->count) || get_u64(&p->b, &p->numel)) return set_err(err, "%s: truncated header", path);
    p->st.cfg = (model_cfg_t){ .variant = (model_variant_t)u[0], .width = (int)u[1],
                               .in_channels = (int)u[2], .classes = (int)u[3] };
    p->st.step = (long)step;
    p->st.total_steps = (long)total;
    p->st.adam_step = (long)astep;
    p->table_pos = p->b.pos;
    if (model_cfg_check(&p->st.cfg, err)) {
        char e2[ERR_LEN];
        snprintf(e2, sizeof e2, "%s", err);
        return set_err(err, "%s: bad model configuration: %s", path, e2);
    }
    return 0;
}

// Opens path, verifies its checksum and parses its fixed header into *p (*size: the file's
// bytes). On success the caller owns *f and p->b.b; on failure nothing is left open.
static int open_parsed(const char *path, FILE **f, parsed_t *p, uint64_t *size, char *err)
{
    *f = fopen(path, "rb");
    if (!*f) return set_err(err, "%s: cannot open: %s", path, strerror(errno));
    int rc = verify(*f, path, size, err);
    if (!rc) rc = parse_fixed(*f, path, *size, p, err);
    if (rc) {
        free(p->b.b);
        p->b.b = NULL;
        fclose(*f);
        *f = NULL;
    }
    return rc;
}

int ckpt_read_state(const char *path, ckpt_state_t *st, char *err)
{
    FILE *f;
    uint64_t size;
    parsed_t p = { 0 };
    if (open_parsed(path, &f, &p, &size, err)) return -1;
    *st = p.st;
    free(p.b.b);
    fclose(f);
    return 0;
}

// Compare the file's table with the model's, entry by entry.
static int check_table(parsed_t *p, const model_t *m, const char *path, char *err)
{
    if (p->count != (uint32_t)m->table.count || p->numel != m->table.numel)
        return set_err(err, "%s: %u tensors / %llu parameters, the model has %d / %zu", path, p->count,
                       (unsigned long long)p->numel, m->table.count, m->table.numel);
    for (int k = 0; k < m->table.count; k++) {
        const param_t *q = &m->table.items[k];
        uint32_t n, nd, d;
        char name[PARAM_NAME_MAX];
        if (get_u32(&p->b, &n) || n >= PARAM_NAME_MAX || get(&p->b, name, n) || get_u32(&p->b, &nd))
            return set_err(err, "%s: truncated or bad parameter table at entry %d", path, k);
        name[n] = 0;
        if (strcmp(name, q->name) != 0)
            return set_err(err, "%s: table entry %d is '%s', the model has '%s'", path, k, name, q->name);
        if (nd != (uint32_t)q->ndim) return set_err(err, "%s: tensor '%s' has %u dims, expected %d", path, name, nd, q->ndim);
        for (uint32_t a = 0; a < nd; a++) {
            if (get_u32(&p->b, &d)) return set_err(err, "%s: truncated parameter table", path);
            if (d != (uint32_t)q->shape[a])
                return set_err(err, "%s: tensor '%s' dim %u is %u, expected %d", path, name, a, d, q->shape[a]);
        }
    }
    return 0;
}

int ckpt_read(const char *path, const model_t *m, float *params, float *adam_m, float *adam_v,
              ckpt_state_t *st, char *err)
{
    FILE *f;
    uint64_t size;
    parsed_t p = { 0 };
    if (open_parsed(path, &f, &p, &size, err)) return -1;
    int rc = 0;
    if (memcmp(&p.st.cfg, &m->cfg, sizeof m->cfg) != 0)
        rc = set_err(err, "%s: checkpoint is model %s width %d in %d classes %d; the running model is "
                     "%s width %d in %d classes %d", path, model_variant_name(p.st.cfg.variant), p.st.cfg.width,
                     p.st.cfg.in_channels, p.st.cfg.classes, model_variant_name(m->cfg.variant), m->cfg.width,
                     m->cfg.in_channels, m->cfg.classes);
    if (!rc) rc = check_table(&p, m, path, err);
    size_t nb = m->table.numel * sizeof(float);
    if (!rc && (uint64_t)p.b.pos + 3 * (uint64_t)nb + HASH_LEN != size)
        rc = set_err(err, "%s: size %llu does not match header + 3 x %zu parameter bytes + checksum", path,
                     (unsigned long long)size, nb);
    float *dst[3] = { params, adam_m, adam_v };
    for (int k = 0; k < 3 && !rc; k++) {
        off_t at = (off_t)(p.b.pos + (size_t)k * nb);
        if (!dst[k]) continue;
        if (fseeko(f, at, SEEK_SET) != 0 || fread(dst[k], 1, nb, f) != nb)
            rc = set_err(err, "%s: read error in tensor data", path);
    }
    if (!rc && st) *st = p.st;
    free(p.b.b);
    fclose(f);
    return rc;
}
