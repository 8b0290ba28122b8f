/*
wire_out.c -- building and sending messages (see wire.h, docs/protocol.md).

Header fields are packed into a body buffer as they are added; frame 0 is assembled at send
time as {type, version, <fields>, arrays}. Array frames are either copied by zmq_send
(borrowed buffers) or handed to ZeroMQ without a copy (wire_out_donate + zmq_msg_init_data).
The receiving half is wire.c.
*/
#include "wire.h"
#include "check.h"
#include <errno.h>
#include <string.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the wire format is little-endian");

// msgpack write callback: grows with xrealloc, which dies on OOM, so packing never fails.
static int buf_write(void *data, const char *bytes, size_t len)
{
    wire_buf_t *b = data;
    if (b->size + len > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->size + len) cap *= 2;
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->size, bytes, len);
    b->size += len;
    return 0;
}

void wire_out_init(wire_out_t *o, const char *type)
{
    memset(o, 0, sizeof *o);
    ASSERT(strlen(type) > 0 && strlen(type) < WIRE_NAME_LEN);
    memcpy(o->type, type, strlen(type) + 1);
    msgpack_packer_init(&o->pk, &o->body, buf_write);
}

void wire_out_free(wire_out_t *o)
{
    for (int i = 0; i < o->narrays; i++)
        if (o->free_fn[i]) o->free_fn[i]((void *)o->arrays[i].data, o->hint[i]);
    free(o->body.data);
    free(o->hdr.data);
    memset(o, 0, sizeof *o);
}

static void pack_cstr(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

msgpack_packer *wire_put_key(wire_out_t *o, const char *key)
{
    ASSERT(o->nfields < WIRE_MAX_FIELDS - 3);       // type, version and arrays take three
    ASSERT(strcmp(key, "type") && strcmp(key, "version") && strcmp(key, "arrays"));
    o->nfields++;
    pack_cstr(&o->pk, key);
    return &o->pk;
}

void wire_put_str(wire_out_t *o, const char *key, const char *s)
{
    ASSERT(strlen(s) < WIRE_MAX_STR);               // receivers reject longer strings
    pack_cstr(wire_put_key(o, key), s);
}

void wire_put_i64(wire_out_t *o, const char *key, int64_t v)   { msgpack_pack_int64(wire_put_key(o, key), v); }
void wire_put_u64(wire_out_t *o, const char *key, uint64_t v)  { msgpack_pack_uint64(wire_put_key(o, key), v); }
void wire_put_f64(wire_out_t *o, const char *key, double v)    { msgpack_pack_double(wire_put_key(o, key), v); }

void wire_put_bool(wire_out_t *o, const char *key, int v)
{
    msgpack_packer *pk = wire_put_key(o, key);
    if (v) msgpack_pack_true(pk);
    else msgpack_pack_false(pk);
}

void wire_put_f64v(wire_out_t *o, const char *key, const double *v, int n)
{
    msgpack_packer *pk = wire_put_key(o, key);
    msgpack_pack_array(pk, (size_t)n);
    for (int i = 0; i < n; i++) msgpack_pack_double(pk, v[i]);
}

void wire_put_i64v(wire_out_t *o, const char *key, const int64_t *v, int n)
{
    msgpack_packer *pk = wire_put_key(o, key);
    msgpack_pack_array(pk, (size_t)n);
    for (int i = 0; i < n; i++) msgpack_pack_int64(pk, v[i]);
}

void wire_put_strv(wire_out_t *o, const char *key, const char *rows, size_t stride, int n)
{
    msgpack_packer *pk = wire_put_key(o, key);
    msgpack_pack_array(pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        ASSERT(strlen(rows + i * stride) < WIRE_MAX_STR);
        pack_cstr(pk, rows + i * stride);
    }
}

void wire_out_array(wire_out_t *o, const char *name, wire_dtype_t dtype, int rank,
                    const int64_t *shape, const void *data)
{
    ASSERT(o->narrays < WIRE_MAX_ARRAYS);
    ASSERT(rank >= 0 && rank <= WIRE_MAX_RANK);
    ASSERT(strlen(name) > 0 && strlen(name) < WIRE_NAME_LEN);
    wire_array_t *a = &o->arrays[o->narrays++];
    memset(a, 0, sizeof *a);
    memcpy(a->name, name, strlen(name) + 1);
    a->dtype = dtype;
    a->rank = rank;
    a->numel = 1;
    for (int d = 0; d < rank; d++) {
        ASSERT(shape[d] >= 0);
        a->shape[d] = shape[d];
        a->numel *= (size_t)shape[d];
    }
    a->nbytes = a->numel * wire_dtype_size(dtype);
    a->data = data;
    ASSERT(data || a->nbytes == 0);
}

void wire_out_donate(wire_out_t *o, const char *name, void (*free_fn)(void *, void *), void *hint)
{
    for (int i = 0; i < o->narrays; i++)
        if (strcmp(o->arrays[i].name, name) == 0) { o->free_fn[i] = free_fn; o->hint[i] = hint; return; }
    ASSERT(!"wire_out_donate: no such array");
}

void wire_out_keep(wire_out_t *o) { o->keep = 1; }

void wire_out_move(wire_out_t *dst, wire_out_t *src)
{
    *dst = *src;
    msgpack_packer_init(&dst->pk, &dst->body, buf_write);
    memset(src, 0, sizeof *src);
}

// Frame 0: {type, version, <body fields>, arrays: [{name, dtype, shape}, ...]}.
static void build_header(wire_out_t *o)
{
    o->hdr.size = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &o->hdr, buf_write);
    msgpack_pack_map(&pk, (size_t)o->nfields + 3);
    pack_cstr(&pk, "type");    pack_cstr(&pk, o->type);
    pack_cstr(&pk, "version"); msgpack_pack_int(&pk, WIRE_VERSION);
    if (o->body.size) buf_write(&o->hdr, o->body.data, o->body.size);
    pack_cstr(&pk, "arrays");
    msgpack_pack_array(&pk, (size_t)o->narrays);
    for (int i = 0; i < o->narrays; i++) {
        const wire_array_t *a = &o->arrays[i];
        msgpack_pack_map(&pk, 3);
        pack_cstr(&pk, "name");  pack_cstr(&pk, a->name);
        pack_cstr(&pk, "dtype"); pack_cstr(&pk, wire_dtype_name(a->dtype));
        pack_cstr(&pk, "shape"); msgpack_pack_array(&pk, (size_t)a->rank);
        for (int d = 0; d < a->rank; d++) msgpack_pack_int64(&pk, a->shape[d]);
    }
}

int wire_out_frames(wire_out_t *o, wire_frame_t *frames)
{
    build_header(o);
    frames[0].data = o->hdr.data;
    frames[0].len = o->hdr.size;
    for (int i = 0; i < o->narrays; i++) {
        frames[i + 1].data = o->arrays[i].data;
        frames[i + 1].len = o->arrays[i].nbytes;
    }
    return o->narrays + 1;
}

int wire_send(void *sock, wire_out_t *o, int flags, char *err)
{
    build_header(o);
    if (o->hdr.size > WIRE_MAX_HEADER)
        return set_err(err, "%s: header of %zu bytes exceeds %d", o->type, o->hdr.size, WIRE_MAX_HEADER);
    if (zmq_send(sock, o->hdr.data, o->hdr.size, (flags & ZMQ_DONTWAIT) | (o->narrays ? ZMQ_SNDMORE : 0)) < 0) {
        int e = zmq_errno();
        if (e == EAGAIN || e == EINTR) return WIRE_AGAIN;
        return set_err(err, "%s: zmq_send header: %s", o->type, zmq_strerror(e));
    }
    // Once the first part is queued the high-water mark admits the whole message, so the
    // remaining parts go out without ZMQ_DONTWAIT and cannot be refused for lack of room.
    for (int i = 0; i < o->narrays; i++) {
        wire_array_t *a = &o->arrays[i];
        int more = i + 1 < o->narrays ? ZMQ_SNDMORE : 0, rc;
        if (o->free_fn[i] && !o->keep) {
            zmq_msg_t msg;
            if (zmq_msg_init_data(&msg, (void *)a->data, a->nbytes, o->free_fn[i], o->hint[i]))
                return set_err(err, "%s: zmq_msg_init_data: %s", o->type, zmq_strerror(zmq_errno()));
            o->free_fn[i] = NULL;                   // ZeroMQ owns the buffer now
            do rc = zmq_msg_send(&msg, sock, more); while (rc < 0 && zmq_errno() == EINTR);
            if (rc < 0) {
                int e = zmq_errno();
                zmq_msg_close(&msg);                // runs free_fn
                return set_err(err, "%s: zmq_msg_send '%s': %s", o->type, a->name, zmq_strerror(e));
            }
        } else {
            do rc = zmq_send(sock, a->data, a->nbytes, more); while (rc < 0 && zmq_errno() == EINTR);
            if (rc < 0) return set_err(err, "%s: zmq_send '%s': %s", o->type, a->name, zmq_strerror(zmq_errno()));
        }
    }
    return 0;
}
