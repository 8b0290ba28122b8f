/*
safetensors.c -- safetensors writer and validating reader (see safetensors.h, anchors.md §B3).
The header is built by hand on writing (our names are plain ASCII) and parsed with jansson on
reading. Validation follows the reference Metadata::validate: header <= 100,000,000 bytes, JSON
object without duplicate keys, known dtype, END - BEGIN = numel * dtype size, offsets tiling the
buffer from 0 with no gap or overlap, last END = buffer length.
*/
#define _GNU_SOURCE
#include "safetensors.h"
#include "check.h"
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_HEADER_MAX 100000000ull

// ---- writing --------------------------------------------------------------------------

typedef struct { char *s; size_t len, cap; } sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        ASSERT(n >= 0);
        if ((size_t)n < b->cap - b->len) { b->len += (size_t)n; return; }
        b->cap = 2 * b->cap + (size_t)n + 64;
        b->s = xrealloc(b->s, b->cap);
    }
}

static const model_t *sort_model;
static int by_name(const void *a, const void *b)
{
    return strcmp(sort_model->table.items[*(const int *)a].name,
                  sort_model->table.items[*(const int *)b].name);
}

static void put_u64le(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64le(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

int safetensors_write(const char *path, const model_t *m, const float *params, const char *prep, char *err)
{
    const param_table_t *t = &m->table;
    int *order = xmalloc((size_t)t->count * sizeof *order);
    for (int i = 0; i < t->count; i++) order[i] = i;
    sort_model = m;                          // all F32: the writer convention sorts by name
    qsort(order, (size_t)t->count, sizeof *order, by_name);

    sbuf_t h = { xmalloc(4096), 0, 4096 };
    sb_printf(&h, "{\"__metadata__\":{\"format\":\"pt\",\"model\":\"SegResMamba\",\"variant\":\"%s\","
              "\"width\":\"%d\",\"in_channels\":\"%d\",\"classes\":\"%d\"",
              model_variant_name(m->cfg.variant), m->cfg.width, m->cfg.in_channels, m->cfg.classes);
    if (prep && *prep) {                     // JSON text as a JSON string: jansson escapes it
        json_t *v = json_string(prep);
        char *q = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
        json_decref(v);
        if (!q) { free(order); free(h.s); return set_err(err, "%s: preprocessing settings are not UTF-8 text", path); }
        sb_printf(&h, ",\"preprocessing\":%s", q);
        free(q);
    }
    sb_printf(&h, "}");
    uint64_t off = 0;
    for (int k = 0; k < t->count; k++) {
        const param_t *p = &t->items[order[k]];
        sb_printf(&h, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[", p->name);
        for (int a = 0; a < p->ndim; a++) sb_printf(&h, "%s%d", a ? "," : "", p->shape[a]);
        uint64_t end = off + 4 * (uint64_t)p->numel;
        sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)end);
        off = end;
    }
    sb_printf(&h, "}");
    while (h.len % 8) sb_printf(&h, " ");

    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        free(order); free(h.s);
        return set_err(err, "%s: path too long", path);
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) { free(order); free(h.s); return set_err(err, "%s: cannot create: %s", tmp, strerror(errno)); }
    unsigned char len8[8];
    put_u64le(len8, h.len);
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h.s, 1, h.len, f) == h.len;
    // float32 little-endian: our hosts are x86-64/aarch64 little-endian (ASSERTed in the reader)
    for (int k = 0; ok && k < t->count; k++) {
        const param_t *p = &t->items[order[k]];
        ok = fwrite(params + p->offset, sizeof(float), p->numel, f) == p->numel;
    }
    free(order); free(h.s);
    int saved_errno = errno;
    if (ok && fflush(f) != 0) { ok = 0; saved_errno = errno; }
    if (ok && fsync(fileno(f)) != 0) { ok = 0; saved_errno = errno; }
    if (fclose(f) != 0 && ok) { ok = 0; saved_errno = errno; }
    if (!ok) { unlink(tmp); return set_err(err, "%s: write failed: %s", tmp, strerror(saved_errno)); }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return set_err(err, "%s: rename from %s failed: %s", path, tmp, strerror(e));
    }
    return 0;
}

// ---- reading --------------------------------------------------------------------------

typedef enum { DT_F32, DT_F16, DT_BF16 } dtype_t;

typedef struct {
    const char *name;
    dtype_t dt;
    int ndim;
    int64_t shape[8];
    uint64_t begin, end;
} entry_t;

typedef struct {
    FILE *f;
    json_t *root;
    entry_t *e;
    int n;
    uint64_t data_start, data_len;
} stfile_t;

static void st_close(stfile_t *s)
{
    if (s->f) fclose(s->f);
    if (s->root) json_decref(s->root);
    free(s->e);
    memset(s, 0, sizeof *s);
}

static int by_begin(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int parse_entry(const char *path, const char *name, json_t *v, entry_t *e, char *err)
{
    memset(e, 0, sizeof *e);
    e->name = name;
    if (!json_is_object(v)) return set_err(err, "%s: tensor '%s': not a JSON object", path, name);
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
           *of = json_object_get(v, "data_offsets");
    if (!json_is_string(dt) || !json_is_array(sh) || !json_is_array(of) || json_array_size(of) != 2)
        return set_err(err, "%s: tensor '%s': needs dtype, shape and data_offsets [begin, end]", path, name);
    const char *d = json_string_value(dt);
    size_t esz;
    if (strcmp(d, "F32") == 0) { e->dt = DT_F32; esz = 4; }
    else if (strcmp(d, "F16") == 0) { e->dt = DT_F16; esz = 2; }
    else if (strcmp(d, "BF16") == 0) { e->dt = DT_BF16; esz = 2; }
    else return set_err(err, "%s: tensor '%s': unsupported dtype %s (F32, F16, BF16)", path, name, d);
    if (json_array_size(sh) > 8) return set_err(err, "%s: tensor '%s': too many dimensions", path, name);
    e->ndim = (int)json_array_size(sh);
    uint64_t numel = 1;
    for (int a = 0; a < e->ndim; a++) {
        json_t *x = json_array_get(sh, (size_t)a);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > (1ll << 40))
            return set_err(err, "%s: tensor '%s': bad shape", path, name);
        e->shape[a] = json_integer_value(x);
        numel *= (uint64_t)e->shape[a];
        if (numel > (1ull << 40)) return set_err(err, "%s: tensor '%s': shape too large", path, name);
    }
    json_t *b = json_array_get(of, 0), *en = json_array_get(of, 1);
    if (!json_is_integer(b) || !json_is_integer(en) || json_integer_value(b) < 0 ||
        json_integer_value(en) < json_integer_value(b))
        return set_err(err, "%s: tensor '%s': bad data_offsets", path, name);
    e->begin = (uint64_t)json_integer_value(b);
    e->end = (uint64_t)json_integer_value(en);
    if (e->end - e->begin != numel * esz)
        return set_err(err, "%s: tensor '%s': data_offsets span %llu bytes, shape x %s needs %llu",
                       path, name, (unsigned long long)(e->end - e->begin), d,
                       (unsigned long long)(numel * esz));
    return 0;
}

// Open, parse and validate the header and the byte layout.
static int st_open(stfile_t *s, const char *path, char *err)
{
    memset(s, 0, sizeof *s);
    uint32_t probe = 1;
    ASSERT(*(unsigned char *)&probe == 1);      // little-endian host: F32 bytes are used as is
    s->f = fopen(path, "rb");
    if (!s->f) return set_err(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat stt;
    if (fstat(fileno(s->f), &stt) != 0) return set_err(err, "%s: stat: %s", path, strerror(errno));
    uint64_t fsize = (uint64_t)stt.st_size;
    unsigned char len8[8];
    if (fsize < 8 || fread(len8, 1, 8, s->f) != 8)
        return set_err(err, "%s: truncated: shorter than the 8-byte header length", path);
    uint64_t hlen = get_u64le(len8);
    if (hlen > ST_HEADER_MAX) return set_err(err, "%s: header length %llu exceeds 100000000",
                                             path, (unsigned long long)hlen);
    if (hlen < 2 || 8 + hlen > fsize)
        return set_err(err, "%s: truncated: header length %llu but file has %llu bytes", path,
                       (unsigned long long)hlen, (unsigned long long)fsize);
    char *hdr = xmalloc(hlen);
    if (fread(hdr, 1, hlen, s->f) != hlen) { free(hdr); return set_err(err, "%s: read error in header", path); }
    json_error_t je;
    s->root = json_loadb(hdr, hlen, JSON_REJECT_DUPLICATES, &je);
    free(hdr);
    if (!s->root) return set_err(err, "%s: header is not valid JSON: %s (at byte %d)", path, je.text, je.position);
    if (!json_is_object(s->root)) return set_err(err, "%s: header is not a JSON object", path);
    s->data_start = 8 + hlen;
    s->data_len = fsize - s->data_start;

    s->e = xcalloc(json_object_size(s->root) + 1, sizeof *s->e);
    const char *key;
    json_t *val;
    json_object_foreach(s->root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            const char *k2;
            json_t *v2;
            if (!json_is_object(val)) return set_err(err, "%s: __metadata__ is not an object", path);
            json_object_foreach(val, k2, v2)
                if (!json_is_string(v2))
                    return set_err(err, "%s: __metadata__ value of '%s' is not a string", path, k2);
            continue;
        }
        if (parse_entry(path, key, val, &s->e[s->n], err)) return -1;
        s->n++;
    }
    // the tensors must tile the byte buffer exactly
    entry_t *sorted = xmalloc((size_t)(s->n + 1) * sizeof *sorted);
    memcpy(sorted, s->e, (size_t)s->n * sizeof *sorted);
    qsort(sorted, (size_t)s->n, sizeof *sorted, by_begin);
    uint64_t at = 0;
    for (int i = 0; i < s->n; i++) {
        if (sorted[i].begin != at) {
            int gap = sorted[i].begin > at;
            set_err(err, "%s: tensor '%s' starts at byte %llu, expected %llu (%s)", path, sorted[i].name,
                    (unsigned long long)sorted[i].begin, (unsigned long long)at,
                    gap ? "gap in the data buffer" : "overlaps the previous tensor");
            free(sorted);
            return -1;
        }
        at = sorted[i].end;
    }
    free(sorted);
    if (at != s->data_len)
        return set_err(err, "%s: %s: tensors cover %llu bytes, the data buffer has %llu", path,
                       at > s->data_len ? "truncated" : "trailing bytes",
                       (unsigned long long)at, (unsigned long long)s->data_len);
    return 0;
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, ex = (h >> 10) & 31, man = h & 1023, bits;
    if (ex == 0) {
        if (man == 0) bits = sign;
        else {                                   // subnormal: normalise
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 1024));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 1023) << 13);
        }
    } else if (ex == 31) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((ex + 127 - 15) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static int read_tensor(stfile_t *s, const char *path, const entry_t *e, float *dst, size_t numel, char *err)
{
    if (fseeko(s->f, (off_t)(s->data_start + e->begin), SEEK_SET) != 0)
        return set_err(err, "%s: seek to tensor '%s': %s", path, e->name, strerror(errno));
    if (e->dt == DT_F32) {
        if (fread(dst, 4, numel, s->f) != numel)
            return set_err(err, "%s: tensor '%s': short read (truncated file?)", path, e->name);
        return 0;
    }
    uint16_t *tmp = xmalloc(numel * 2 + 2);
    if (fread(tmp, 2, numel, s->f) != numel) {
        free(tmp);
        return set_err(err, "%s: tensor '%s': short read (truncated file?)", path, e->name);
    }
    for (size_t i = 0; i < numel; i++) {
        if (e->dt == DT_F16) dst[i] = half_to_float(tmp[i]);
        else { uint32_t b = (uint32_t)tmp[i] << 16; memcpy(&dst[i], &b, 4); }
    }
    free(tmp);
    return 0;
}

int safetensors_read(const char *path, const model_t *m, float *params, char *err)
{
    stfile_t s;
    if (st_open(&s, path, err)) { st_close(&s); return -1; }
    const param_table_t *t = &m->table;
    char *seen = xcalloc((size_t)t->count + 1, 1);
    int rc = 0;
    for (int i = 0; i < s.n && !rc; i++) {
        const entry_t *e = &s.e[i];
        const param_t *p = param_table_find(t, e->name);
        if (!p) {
            if (!model_name_ignored_on_import(m, e->name))
                rc = set_err(err, "%s: unknown tensor '%s' (not in model %s width %d)", path, e->name,
                             model_variant_name(m->cfg.variant), m->cfg.width);
            continue;
        }
        int same = e->ndim == p->ndim;
        for (int a = 0; same && a < p->ndim; a++) same = e->shape[a] == p->shape[a];
        if (!same) {
            char want[128], got[160] = "[";
            param_shape_str(p, want, sizeof want);
            for (int a = 0; a < e->ndim; a++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", a ? ", " : "",
                         (long long)e->shape[a]);
            rc = set_err(err, "%s: tensor '%s' has shape %s], expected %s", path, e->name, got, want);
            continue;
        }
        seen[p - t->items] = 1;
        rc = read_tensor(&s, path, e, params + p->offset, p->numel, err);
    }
    for (int k = 0; k < t->count && !rc; k++)
        if (!seen[k]) rc = set_err(err, "%s: missing tensor '%s'", path, t->items[k].name);
    free(seen);
    st_close(&s);
    return rc;
}

static int meta_int(const char *path, json_t *meta, const char *key, int *out, char *err)
{
    json_t *v = json_object_get(meta, key);
    char *end;
    if (!json_is_string(v)) return set_err(err, "%s: __metadata__ lacks '%s'", path, key);
    long x = strtol(json_string_value(v), &end, 10);
    if (*end || end == json_string_value(v)) return set_err(err, "%s: __metadata__ '%s' is not an integer", path, key);
    *out = (int)x;
    return 0;
}

int safetensors_read_prep(const char *path, char *buf, size_t cap, char *err)
{
    stfile_t s;
    int rc = st_open(&s, path, err);
    json_t *v = rc ? NULL : json_object_get(json_object_get(s.root, "__metadata__"), "preprocessing");
    buf[0] = 0;
    if (!rc && v && !json_is_string(v)) rc = set_err(err, "%s: __metadata__ 'preprocessing' is not a string", path);
    else if (!rc && v && json_string_length(v) >= cap)
        rc = set_err(err, "%s: __metadata__ 'preprocessing' is longer than %zu bytes", path, cap - 1);
    else if (!rc && v) memcpy(buf, json_string_value(v), json_string_length(v) + 1);
    st_close(&s);
    return rc;
}

int safetensors_read_config(const char *path, model_cfg_t *cfg, char *err)
{
    stfile_t s;
    int rc = st_open(&s, path, err);
    json_t *meta = rc ? NULL : json_object_get(s.root, "__metadata__");
    if (!rc && !json_is_object(meta)) rc = set_err(err, "%s: no __metadata__ with the model configuration", path);
    if (!rc) {
        json_t *v = json_object_get(meta, "variant");
        if (!json_is_string(v)) rc = set_err(err, "%s: __metadata__ lacks 'variant'", path);
        else if (model_variant_parse(json_string_value(v), &cfg->variant, err)) rc = -1;
    }
    if (!rc) rc = meta_int(path, meta, "width", &cfg->width, err);
    if (!rc) rc = meta_int(path, meta, "in_channels", &cfg->in_channels, err);
    if (!rc) rc = meta_int(path, meta, "classes", &cfg->classes, err);
    if (!rc) rc = model_cfg_check(cfg, err);
    st_close(&s);
    return rc;
}
