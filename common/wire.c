/*
wire.c -- receiving and validating messages (see wire.h, docs/protocol.md).

Nothing a peer sends is trusted: frame 0 is walked by a non-allocating scanner before msgpack-c
sees it (msgpack-c allocates room for a container's declared element count before reading the
elements), then every header field and every data frame is checked against the header.
The building/sending half is wire_out.c; the typed messages are wire_msgs.c.
*/
#include "wire.h"
#include "check.h"
#include "stage.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const dtype_names[WIRE_NDTYPES] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64", "f16", "bf16", "f32", "f64"
};
static const size_t dtype_sizes[WIRE_NDTYPES] = { 1, 1, 2, 2, 4, 4, 8, 8, 2, 2, 4, 8 };

const char *wire_dtype_name(wire_dtype_t t)
{
    ASSERT((unsigned)t < WIRE_NDTYPES);
    return dtype_names[t];
}

size_t wire_dtype_size(wire_dtype_t t)
{
    ASSERT((unsigned)t < WIRE_NDTYPES);
    return dtype_sizes[t];
}

int wire_dtype_parse(const char *s, size_t len)
{
    for (int t = 0; t < WIRE_NDTYPES; t++)
        if (strlen(dtype_names[t]) == len && memcmp(dtype_names[t], s, len) == 0) return t;
    return -1;
}

// ---- structural scan of frame 0 --------------------------------------------------------------

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

// Walk exactly one msgpack object filling all n bytes. Each container's element count must fit
// in the bytes left (every element takes at least one byte), nesting stays within
// WIRE_MAX_DEPTH and the total object count within WIRE_MAX_OBJECTS. Returns 0 or -1 with err.
static int mp_scan(const uint8_t *p, size_t n, char *err)
{
    uint64_t left[WIRE_MAX_DEPTH + 2];      // objects still to read at each open level
    int depth = 0;
    size_t pos = 0, objects = 0;
    left[0] = 1;
    while (depth >= 0) {
        if (left[depth] == 0) { depth--; continue; }
        left[depth]--;
        if (pos >= n) return set_err(err, "header: truncated msgpack at byte %zu", pos);
        if (++objects > WIRE_MAX_OBJECTS)
            return set_err(err, "header: more than %d msgpack objects", WIRE_MAX_OBJECTS);
        uint8_t b = p[pos++];
        uint64_t skip = 0, items = 0;       // payload bytes to skip, or child objects to read
        int lenb = 0, container = 0;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            skip = 0;                                               // fixint, nil, bool
        } else if (b <= 0x8f) { items = 2u * (b & 0x0f); container = 1; }   // fixmap
        else if (b <= 0x9f) { items = b & 0x0f; container = 1; }            // fixarray
        else if (b <= 0xbf) { skip = b & 0x1f; }                            // fixstr
        else switch (b) {
            case 0xc4: case 0xd9: lenb = 1; break;                  // bin8, str8
            case 0xc5: case 0xda: lenb = 2; break;                  // bin16, str16
            case 0xc6: case 0xdb: lenb = 4; break;                  // bin32, str32
            case 0xc7: lenb = 1; skip = 1; break;                   // ext8: len, type
            case 0xc8: lenb = 2; skip = 1; break;
            case 0xc9: lenb = 4; skip = 1; break;
            case 0xca: skip = 4; break;  case 0xcb: skip = 8; break;           // float32/64
            case 0xcc: case 0xd0: skip = 1; break;  case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;  case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break;  case 0xd5: skip = 3; break;  case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;  case 0xd8: skip = 17; break;           // fixext
            case 0xdc: lenb = 2; container = 1; break;              // array16
            case 0xdd: lenb = 4; container = 1; break;              // array32
            case 0xde: lenb = 2; container = 2; break;              // map16
            case 0xdf: lenb = 4; container = 2; break;              // map32
            default: return set_err(err, "header: invalid msgpack byte 0x%02x at %zu", b, pos - 1);
        }
        if (lenb) {
            if (n - pos < (size_t)lenb) return set_err(err, "header: truncated msgpack length at byte %zu", pos);
            uint64_t len = be(p + pos, lenb);
            pos += (size_t)lenb;
            if (container) items = len * (uint64_t)container;
            else skip += len;
        }
        if (container) {
            if (items > n - pos)
                return set_err(err, "header: container claims %llu elements with %zu bytes left",
                               (unsigned long long)items, n - pos);
            if (depth + 1 > WIRE_MAX_DEPTH) return set_err(err, "header: nested deeper than %d", WIRE_MAX_DEPTH);
            left[++depth] = items;
        } else {
            if (skip > n - pos) return set_err(err, "header: truncated msgpack value at byte %zu", pos);
            pos += (size_t)skip;
        }
    }
    if (pos != n) return set_err(err, "header: %zu trailing bytes after the map", n - pos);
    return 0;
}

// ---- parse -----------------------------------------------------------------------------------

void wire_msg_init(wire_msg_t *m)
{
    memset(m, 0, sizeof *m);
    snprintf(m->peer, sizeof m->peer, "local");
}

void wire_msg_free(wire_msg_t *m)
{
    if (m->unp_live) msgpack_unpacked_destroy(&m->unp);
    for (int i = 0; i < m->nframes; i++) zmq_msg_close(&m->frames[i]);   // cannot fail on a valid msg
    for (int i = 0; i < WIRE_MAX_ARRAYS; i++) free(m->copies[i]);
    char peer[sizeof m->peer];
    memcpy(peer, m->peer, sizeof peer);
    memset(m, 0, sizeof *m);
    memcpy(m->peer, peer, sizeof peer);
}

static int key_is(const msgpack_object *k, const char *s)
{
    size_t n = strlen(s);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, s, n) == 0;
}

static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (key_is(&map->via.map.ptr[i].key, key)) return &map->via.map.ptr[i].val;
    return NULL;
}

int wire_obj_str(const msgpack_object *o, char *out, size_t cap)
{
    if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= cap || o->via.str.size >= WIRE_MAX_STR)
        return -1;
    // msgpack-c gives an empty string a NULL ptr: no mem*() on it (UB even for 0 bytes)
    if (o->via.str.size && memchr(o->via.str.ptr, 0, o->via.str.size)) return -1;
    if (o->via.str.size) memcpy(out, o->via.str.ptr, o->via.str.size);
    out[o->via.str.size] = 0;
    return 0;
}

static int obj_int(const msgpack_object *o, int64_t *v)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) { *v = (int64_t)o->via.u64; return 0; }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) { *v = o->via.i64; return 0; }
    return -1;
}

// Keys must be distinct strings: a duplicate would let two readers see different values.
static int check_keys(const msgpack_object *map, const char *what, char *err)
{
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR) return set_err(err, "%s: key %u is not a string", what, i);
        for (uint32_t j = 0; j < i; j++) {
            const msgpack_object *q = &map->via.map.ptr[j].key;
            // (an empty key has a NULL ptr: compare sizes alone then)
            if (q->via.str.size == k->via.str.size &&
                (k->via.str.size == 0 || memcmp(q->via.str.ptr, k->via.str.ptr, k->via.str.size) == 0))
                return set_err(err, "%s: duplicate key '%.*s'", what, (int)(k->via.str.size > 40 ? 40 : k->via.str.size),
                               k->via.str.ptr);
        }
    }
    return 0;
}

static int parse_array_entry(const msgpack_object *e, int idx, wire_array_t *a, char *err)
{
    if (e->type != MSGPACK_OBJECT_MAP) return set_err(err, "arrays[%d] is not a map", idx);
    if (check_keys(e, "arrays entry", err)) return -1;
    const msgpack_object *name = map_get(e, "name"), *dt = map_get(e, "dtype"), *sh = map_get(e, "shape");
    if (!name || !dt || !sh) return set_err(err, "arrays[%d] lacks name, dtype or shape", idx);
    if (wire_obj_str(name, a->name, sizeof a->name) || !a->name[0])
        return set_err(err, "arrays[%d].name is not a string of 1..%d bytes", idx, WIRE_NAME_LEN - 1);
    if (dt->type != MSGPACK_OBJECT_STR) return set_err(err, "array '%s': dtype is not a string", a->name);
    int t = wire_dtype_parse(dt->via.str.ptr, dt->via.str.size);
    if (t < 0) return set_err(err, "array '%s': unknown dtype '%.*s'", a->name,
                              (int)(dt->via.str.size > 16 ? 16 : dt->via.str.size), dt->via.str.ptr);
    a->dtype = (wire_dtype_t)t;
    if (sh->type != MSGPACK_OBJECT_ARRAY) return set_err(err, "array '%s': shape is not a list", a->name);
    if (sh->via.array.size > WIRE_MAX_RANK)
        return set_err(err, "array '%s': rank %u exceeds %d", a->name, sh->via.array.size, WIRE_MAX_RANK);
    a->rank = (int)sh->via.array.size;
    uint64_t numel = 1;
    for (int d = 0; d < a->rank; d++) {
        int64_t v;
        if (obj_int(&sh->via.array.ptr[d], &v)) return set_err(err, "array '%s': shape[%d] is not an integer", a->name, d);
        if (v < 0) return set_err(err, "array '%s': negative dimension %lld", a->name, (long long)v);
        a->shape[d] = v;
        if (__builtin_mul_overflow(numel, (uint64_t)v, &numel))
            return set_err(err, "array '%s': shape product overflows", a->name);
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, (uint64_t)wire_dtype_size(a->dtype), &nbytes) || nbytes > WIRE_MAX_PAYLOAD)
        return set_err(err, "array '%s': shape describes more than %llu bytes", a->name,
                       (unsigned long long)WIRE_MAX_PAYLOAD);
    a->numel = (size_t)numel;
    a->nbytes = (size_t)nbytes;
    return 0;
}

int wire_parse(wire_msg_t *m, const wire_frame_t *frames, int n, char *err)
{
    m->narrays = 0;                                 // m may hold an earlier message's results
    m->header = NULL;
    m->type[0] = 0;
    if (n < 1) return set_err(err, "no frames");
    if (n > WIRE_MAX_ARRAYS + 1) return set_err(err, "%d frames (at most %d)", n, WIRE_MAX_ARRAYS + 1);
    if (frames[0].len == 0) return set_err(err, "empty header frame");
    if (frames[0].len > WIRE_MAX_HEADER)
        return set_err(err, "header of %zu bytes exceeds %d", frames[0].len, WIRE_MAX_HEADER);
    if (mp_scan(frames[0].data, frames[0].len, err)) return -1;

    if (m->unp_live) msgpack_unpacked_destroy(&m->unp);
    msgpack_unpacked_init(&m->unp);
    m->unp_live = 1;
    size_t off = 0;
    int rc = msgpack_unpack_next(&m->unp, frames[0].data, frames[0].len, &off);
    if (rc != MSGPACK_UNPACK_SUCCESS) return set_err(err, "header: msgpack decode failed (%d)", rc);
    const msgpack_object *h = &m->unp.data;
    if (h->type != MSGPACK_OBJECT_MAP) return set_err(err, "header is not a msgpack map (type %d)", (int)h->type);
    if (h->via.map.size > WIRE_MAX_FIELDS)
        return set_err(err, "header has %u fields (at most %d)", h->via.map.size, WIRE_MAX_FIELDS);
    if (check_keys(h, "header", err)) return -1;
    m->header = h;

    const msgpack_object *type = map_get(h, "type"), *ver = map_get(h, "version"), *arr = map_get(h, "arrays");
    if (!type) return set_err(err, "header lacks 'type'");
    if (wire_obj_str(type, m->type, sizeof m->type) || !m->type[0])
        return set_err(err, "'type' is not a string of 1..%d bytes", WIRE_NAME_LEN - 1);
    int64_t v;
    if (!ver || obj_int(ver, &v)) return set_err(err, "%s: 'version' missing or not an integer", m->type);
    if (v != WIRE_VERSION)
        return set_err(err, "%s: unsupported version %lld (this build speaks %d)", m->type, (long long)v, WIRE_VERSION);
    m->version = (int)v;
    if (!arr || arr->type != MSGPACK_OBJECT_ARRAY) return set_err(err, "%s: 'arrays' missing or not a list", m->type);
    if (arr->via.array.size != (uint32_t)(n - 1))
        return set_err(err, "%s: header lists %u arrays but %d data frames came", m->type, arr->via.array.size, n - 1);

    uint64_t total = 0;
    for (int i = 0; i < n - 1; i++) {
        wire_array_t *a = &m->arrays[i];
        if (parse_array_entry(&arr->via.array.ptr[i], i, a, err)) return -1;
        for (int j = 0; j < i; j++)
            if (strcmp(m->arrays[j].name, a->name) == 0) return set_err(err, "%s: array '%s' listed twice", m->type, a->name);
        if (a->nbytes != frames[i + 1].len)
            return set_err(err, "%s: array '%s' %s shape needs %zu bytes, frame %d has %zu", m->type, a->name,
                           dtype_names[a->dtype], a->nbytes, i + 1, frames[i + 1].len);
        total += a->nbytes;
        if (total > WIRE_MAX_PAYLOAD) return set_err(err, "%s: payload exceeds %llu bytes", m->type,
                                                     (unsigned long long)WIRE_MAX_PAYLOAD);
        a->data = frames[i + 1].data;
        size_t isz = dtype_sizes[a->dtype];
        if (a->nbytes && (uintptr_t)a->data % isz) {
            // ZeroMQ may hand us a frame at any offset inside its receive buffer: copy once so
            // that typed access (float *, int32_t *) is well-defined.
            free(m->copies[i]);
            m->copies[i] = xmalloc(a->nbytes);
            memcpy(m->copies[i], a->data, a->nbytes);
            a->data = m->copies[i];
        }
        m->narrays = i + 1;
    }
    return 0;
}

int wire_recv(void *sock, wire_msg_t *m, int flags, char *err)
{
    wire_msg_free(m);
    if (zmq_msg_init(&m->frames[0])) return set_err(err, "zmq_msg_init: %s", zmq_strerror(zmq_errno()));
    if (zmq_msg_recv(&m->frames[0], sock, flags) < 0) {
        int e = zmq_errno();
        zmq_msg_close(&m->frames[0]);
        if (e == EAGAIN || e == EINTR) return WIRE_AGAIN;
        return set_err(err, "zmq_msg_recv: %s", zmq_strerror(e));
    }
    m->nframes = 1;
    stage_msg_peer(&m->frames[0], m->peer, sizeof m->peer);
    int extra = 0, more = zmq_msg_more(&m->frames[0]);
    while (more) {
        // The rest of a multipart message is already here (ZeroMQ delivers it atomically), so
        // these receives do not block; surplus parts are drained so the next message is aligned.
        zmq_msg_t part;
        zmq_msg_t *dst = m->nframes < WIRE_MAX_ARRAYS + 1 ? &m->frames[m->nframes] : &part;
        if (zmq_msg_init(dst)) return set_err(err, "zmq_msg_init: %s", zmq_strerror(zmq_errno()));
        int rc;
        do rc = zmq_msg_recv(dst, sock, 0); while (rc < 0 && zmq_errno() == EINTR);
        if (rc < 0) {
            zmq_msg_close(dst);
            return set_err(err, "zmq_msg_recv (part %d): %s", m->nframes + extra, zmq_strerror(zmq_errno()));
        }
        more = zmq_msg_more(dst);
        if (dst == &part) { extra++; zmq_msg_close(&part); }
        else m->nframes++;
    }
    if (extra) return set_err(err, "message has %d frames (at most %d)", m->nframes + extra, WIRE_MAX_ARRAYS + 1);
    wire_frame_t fr[WIRE_MAX_ARRAYS + 1];
    for (int i = 0; i < m->nframes; i++) {
        fr[i].data = zmq_msg_data(&m->frames[i]);
        fr[i].len = zmq_msg_size(&m->frames[i]);
    }
    return wire_parse(m, fr, m->nframes, err);
}

// ---- field getters ---------------------------------------------------------------------------

const msgpack_object *wire_get(const wire_msg_t *m, const char *key)
{
    return m->header ? map_get(m->header, key) : NULL;
}

// Shared head of every getter: 0 found, 1 absent and optional, -1 absent and required.
static int lookup(const wire_msg_t *m, const char *key, int required, const msgpack_object **o, char *err)
{
    *o = wire_get(m, key);
    if (*o) return 0;
    if (required) return set_err(err, "%s: required field '%s' missing", m->type, key);
    return 1;
}

int wire_get_str(const wire_msg_t *m, const char *key, char *out, size_t cap, int required, char *err)
{
    const msgpack_object *o;
    int rc = lookup(m, key, required, &o, err);
    if (rc) return rc;
    if (wire_obj_str(o, out, cap))
        return set_err(err, "%s: '%s' is not a string shorter than %zu bytes", m->type, key, cap);
    return 0;
}

int wire_get_i64(const wire_msg_t *m, const char *key, int64_t *out, int64_t lo, int64_t hi,
                 int required, char *err)
{
    const msgpack_object *o;
    int rc = lookup(m, key, required, &o, err);
    if (rc) return rc;
    int64_t v;
    if (obj_int(o, &v)) return set_err(err, "%s: '%s' is not an integer", m->type, key);
    if (v < lo || v > hi) return set_err(err, "%s: '%s' = %lld outside [%lld, %lld]", m->type, key,
                                         (long long)v, (long long)lo, (long long)hi);
    *out = v;
    return 0;
}

int wire_get_u64(const wire_msg_t *m, const char *key, uint64_t *out, int required, char *err)
{
    const msgpack_object *o;
    int rc = lookup(m, key, required, &o, err);
    if (rc) return rc;
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return set_err(err, "%s: '%s' is not an unsigned integer", m->type, key);
    *out = o->via.u64;
    return 0;
}

static int obj_f64(const msgpack_object *o, double *v)
{
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64) *v = o->via.f64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) *v = (double)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) *v = (double)o->via.i64;
    else return -1;
    return isfinite(*v) ? 0 : -1;
}

int wire_get_f64(const wire_msg_t *m, const char *key, double *out, int required, char *err)
{
    const msgpack_object *o;
    int rc = lookup(m, key, required, &o, err);
    if (rc) return rc;
    if (obj_f64(o, out)) return set_err(err, "%s: '%s' is not a finite number", m->type, key);
    return 0;
}

int wire_get_f64v(const wire_msg_t *m, const char *key, double *out, int n, int required, char *err)
{
    const msgpack_object *o;
    int rc = lookup(m, key, required, &o, err);
    if (rc) return rc;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != (uint32_t)n)
        return set_err(err, "%s: '%s' is not a list of %d numbers", m->type, key, n);
    for (int i = 0; i < n; i++)
        if (obj_f64(&o->via.array.ptr[i], &out[i]))
            return set_err(err, "%s: '%s'[%d] is not a finite number", m->type, key, i);
    return 0;
}

int wire_get_i64v(const wire_msg_t *m, const char *key, int64_t *out, int n, int64_t lo, int64_t hi,
                  int required, char *err)
{
    const msgpack_object *o;
    int rc = lookup(m, key, required, &o, err);
    if (rc) return rc;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != (uint32_t)n)
        return set_err(err, "%s: '%s' is not a list of %d integers", m->type, key, n);
    for (int i = 0; i < n; i++)
        if (obj_int(&o->via.array.ptr[i], &out[i]) || out[i] < lo || out[i] > hi)
            return set_err(err, "%s: '%s'[%d] is not an integer in [%lld, %lld]", m->type, key, i,
                           (long long)lo, (long long)hi);
    return 0;
}

int wire_get_bool(const wire_msg_t *m, const char *key, int *out, int required, char *err)
{
    const msgpack_object *o;
    int rc = lookup(m, key, required, &o, err);
    if (rc) return rc;
    if (o->type != MSGPACK_OBJECT_BOOLEAN) return set_err(err, "%s: '%s' is not a boolean", m->type, key);
    *out = o->via.boolean;
    return 0;
}

int wire_get_strv(const wire_msg_t *m, const char *key, char *out, size_t cap, int max, int *count,
                  int required, char *err)
{
    const msgpack_object *o;
    int rc = lookup(m, key, required, &o, err);
    if (rc) return rc;
    if (o->type != MSGPACK_OBJECT_ARRAY) return set_err(err, "%s: '%s' is not a list", m->type, key);
    if (o->via.array.size > (uint32_t)max)
        return set_err(err, "%s: '%s' has %u entries (at most %d)", m->type, key, o->via.array.size, max);
    for (uint32_t i = 0; i < o->via.array.size; i++)
        if (wire_obj_str(&o->via.array.ptr[i], out + i * cap, cap))
            return set_err(err, "%s: '%s'[%u] is not a string shorter than %zu bytes", m->type, key, i, cap);
    *count = (int)o->via.array.size;
    return 0;
}

const wire_array_t *wire_find(const wire_msg_t *m, const char *name)
{
    for (int i = 0; i < m->narrays; i++)
        if (strcmp(m->arrays[i].name, name) == 0) return &m->arrays[i];
    return NULL;
}

int wire_need_array(const wire_msg_t *m, const char *name, unsigned dtype_mask, int rank,
                    int required, const wire_array_t **out, char *err)
{
    *out = wire_find(m, name);
    if (!*out) {
        if (required) return set_err(err, "%s: required array '%s' missing", m->type, name);
        return 1;
    }
    if (!(dtype_mask & WIRE_DT((*out)->dtype)))
        return set_err(err, "%s: array '%s' has dtype %s, not allowed here", m->type, name, dtype_names[(*out)->dtype]);
    if (rank >= 0 && (*out)->rank != rank)
        return set_err(err, "%s: array '%s' has rank %d, expected %d", m->type, name, (*out)->rank, rank);
    return 0;
}

// ---- value checks ----------------------------------------------------------------------------

float wire_half_to_float(uint16_t h)
{
    int e = (h >> 10) & 0x1f, f = h & 0x3ff;
    float s = (h & 0x8000) ? -1.0f : 1.0f;
    if (e == 0) return s * ldexpf((float)f, -24);                  // subnormal
    if (e == 31) return f ? NAN : s * INFINITY;
    return s * ldexpf((float)(f | 0x400), e - 25);
}

float wire_bf16_to_float(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

int64_t wire_first_nonfinite(const wire_array_t *a)
{
    const uint8_t *p = a->data;
    for (size_t i = 0; i < a->numel; i++) {
        int bad;
        if (a->dtype == WIRE_F32) { float x; memcpy(&x, p + 4 * i, 4); bad = !isfinite(x); }
        else if (a->dtype == WIRE_F64) { double x; memcpy(&x, p + 8 * i, 8); bad = !isfinite(x); }
        else if (a->dtype == WIRE_F16) { uint16_t x; memcpy(&x, p + 2 * i, 2); bad = ((x >> 10) & 0x1f) == 0x1f; }
        else if (a->dtype == WIRE_BF16) { uint16_t x; memcpy(&x, p + 2 * i, 2); bad = ((x >> 7) & 0xff) == 0xff; }
        else return -1;                                             // integers are always finite
        if (bad) return (int64_t)i;
    }
    return -1;
}
