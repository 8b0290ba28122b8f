/*
wire.h -- the message format every stage speaks (generic layer). docs/protocol.md is the spec.

One ZeroMQ multipart message per unit of work. Frame 0 is a msgpack map holding at least
"type" (string), "version" (integer) and "arrays" (a list of {name, dtype, shape} describing
frames 1..k in order); frames 1..k are raw little-endian arrays, row-major, last axis fastest.
This layer builds, sends, receives and validates such messages and reads header fields.
The typed messages (volume, patch_batch, checkpoint, ...) are in wire_msgs.h; sockets, signals
and polling are in stage.h.
*/
#ifndef SRM_WIRE_H
#define SRM_WIRE_H
#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>
#include <zmq.h>

#define WIRE_VERSION      1
#define WIRE_MAX_ARRAYS   16                    // data frames per message
#define WIRE_MAX_RANK     8
#define WIRE_MAX_HEADER   (1 << 20)             // bytes of frame 0
#define WIRE_MAX_OBJECTS  65536                 // msgpack objects in frame 0 (bounds decoder memory)
#define WIRE_MAX_DEPTH    8                     // nesting of maps/lists in frame 0
#define WIRE_MAX_FIELDS   64                    // keys of the top-level map
#define WIRE_MAX_STR      4096                  // bytes of any string we read from a header
#define WIRE_NAME_LEN     32                    // type, array and field names, incl. NUL
#define WIRE_MAX_PAYLOAD  ((uint64_t)4 << 30)   // sum of frames 1..k: 4 GiB

// Return codes besides 0 and -1: nothing was sent or received (ZMQ_DONTWAIT and the socket was
// full/empty, or a signal interrupted a blocking call). Nothing is lost; the caller retries.
#define WIRE_AGAIN 1

// Dtype names on the wire: "u8" "i8" "u16" "i16" "u32" "i32" "u64" "i64" "f16" "bf16" "f32" "f64".
typedef enum {
    WIRE_U8, WIRE_I8, WIRE_U16, WIRE_I16, WIRE_U32, WIRE_I32, WIRE_U64, WIRE_I64,
    WIRE_F16, WIRE_BF16, WIRE_F32, WIRE_F64, WIRE_NDTYPES
} wire_dtype_t;
#define WIRE_DT(t) (1u << (t))                  // dtype masks for wire_need_array

const char *wire_dtype_name(wire_dtype_t t);
size_t      wire_dtype_size(wire_dtype_t t);
int         wire_dtype_parse(const char *s, size_t len);    // dtype, or -1 when unknown

typedef struct {
    char name[WIRE_NAME_LEN];
    wire_dtype_t dtype;
    int rank;                                   // 0..WIRE_MAX_RANK; rank 0 is one element
    int64_t shape[WIRE_MAX_RANK];
    size_t numel, nbytes;
    const void *data;   // received: aligned to the item size, valid until wire_msg_free
} wire_array_t;

typedef struct { const void *data; size_t len; } wire_frame_t;

// A received message: validated header + arrays. Everything points into memory the struct owns.
typedef struct {
    char type[WIRE_NAME_LEN];
    int version;
    int narrays;
    wire_array_t arrays[WIRE_MAX_ARRAYS];
    const msgpack_object *header;               // the top-level map
    char peer[64];                              // sender address for log lines ("local" for ipc)
    // private
    msgpack_unpacked unp;
    int unp_live;
    zmq_msg_t frames[WIRE_MAX_ARRAYS + 1];
    int nframes;
    void *copies[WIRE_MAX_ARRAYS];              // aligned copies of misaligned frames
} wire_msg_t;

void wire_msg_init(wire_msg_t *m);
void wire_msg_free(wire_msg_t *m);              // safe to call twice; leaves m initialised

// Validate frames[0..n) (frame 0 = header) into m. The frames are referenced, not copied: keep
// them alive while m is used. Returns 0, or -1 with err naming the problem.
int wire_parse(wire_msg_t *m, const wire_frame_t *frames, int n, char *err);

// Receive one whole multipart message (all parts are always consumed, even when bad) and
// validate it. m must be initialised; its previous content is freed. Returns 0, WIRE_AGAIN,
// or -1 with err (the caller adds m->peer to its log line).
int wire_recv(void *sock, wire_msg_t *m, int flags, char *err);

// ---- reading header fields ------------------------------------------------------------------
// Each getter returns 0 when the key was read, 1 when it is absent and not required, and -1 with
// err when it is absent but required, of the wrong type, out of range or too long.
const msgpack_object *wire_get(const wire_msg_t *m, const char *key);
int wire_get_str(const wire_msg_t *m, const char *key, char *out, size_t cap, int required, char *err);
int wire_get_i64(const wire_msg_t *m, const char *key, int64_t *out, int64_t lo, int64_t hi,
                 int required, char *err);
int wire_get_u64(const wire_msg_t *m, const char *key, uint64_t *out, int required, char *err);
int wire_get_f64(const wire_msg_t *m, const char *key, double *out, int required, char *err);  // finite
int wire_get_f64v(const wire_msg_t *m, const char *key, double *out, int n, int required, char *err);
int wire_get_i64v(const wire_msg_t *m, const char *key, int64_t *out, int n, int64_t lo, int64_t hi,
                  int required, char *err);      // a list of exactly n integers in [lo, hi]
int wire_get_bool(const wire_msg_t *m, const char *key, int *out, int required, char *err);
// A list of at most max strings, each shorter than cap, into rows of out (max * cap chars).
int wire_get_strv(const wire_msg_t *m, const char *key, char *out, size_t cap, int max, int *count,
                  int required, char *err);
// Copy a msgpack string object into out (NUL-terminated). -1 if not a string, too long or has NUL.
int wire_obj_str(const msgpack_object *o, char *out, size_t cap);

const wire_array_t *wire_find(const wire_msg_t *m, const char *name);
// Find array `name`, check its dtype is in dtype_mask and its rank (rank < 0: any). Same return
// convention as the getters; *out is NULL when absent.
int wire_need_array(const wire_msg_t *m, const char *name, unsigned dtype_mask, int rank,
                    int required, const wire_array_t **out, char *err);

// ---- building and sending -------------------------------------------------------------------
typedef struct {
    char *data;
    size_t size, cap;
} wire_buf_t;

typedef struct {
    char type[WIRE_NAME_LEN];
    wire_buf_t body;            // packed key/value pairs after type and version
    msgpack_packer pk;          // packs into body; growth dies on OOM, so packing cannot fail
    int nfields;
    int narrays;
    wire_array_t arrays[WIRE_MAX_ARRAYS];
    void (*free_fn[WIRE_MAX_ARRAYS])(void *data, void *hint);   // set: zmq takes the buffer
    void *hint[WIRE_MAX_ARRAYS];
    int keep;                   // wire_out_keep: donated arrays are copied, the message resendable
    wire_buf_t hdr;             // frame 0 once built
} wire_out_t;

void wire_out_init(wire_out_t *o, const char *type);
void wire_out_free(wire_out_t *o);              // also frees donated buffers not yet sent

// Header fields. "type", "version" and "arrays" are written by the layer itself.
void wire_put_str(wire_out_t *o, const char *key, const char *s);
void wire_put_i64(wire_out_t *o, const char *key, int64_t v);
void wire_put_u64(wire_out_t *o, const char *key, uint64_t v);
void wire_put_f64(wire_out_t *o, const char *key, double v);
void wire_put_bool(wire_out_t *o, const char *key, int v);
void wire_put_f64v(wire_out_t *o, const char *key, const double *v, int n);
void wire_put_i64v(wire_out_t *o, const char *key, const int64_t *v, int n);
void wire_put_strv(wire_out_t *o, const char *key, const char *rows, size_t stride, int n);
// Packs the key and returns the packer: the caller packs exactly one value with msgpack_pack_*.
msgpack_packer *wire_put_key(wire_out_t *o, const char *key);

// Add a data frame. data: shape[0] x ... x shape[rank-1] items of dtype, row-major, little-endian.
// The buffer is borrowed (zmq_send copies it) unless wire_out_donate hands it over.
void wire_out_array(wire_out_t *o, const char *name, wire_dtype_t dtype, int rank,
                    const int64_t *shape, const void *data);
// Zero-copy: from now on the message owns array `name`'s buffer; free_fn(data, hint) runs when
// ZeroMQ is done with it (or in wire_out_free if it is never sent).
void wire_out_donate(wire_out_t *o, const char *name, void (*free_fn)(void *, void *), void *hint);
// From now on every send copies the arrays (donated ones too, which stay the message's until
// wire_out_free), so o can be sent again: a resend queue (outbox.c) holds it until acknowledged.
void wire_out_keep(wire_out_t *o);
// Move src into *dst (the packer follows its buffer); src is left empty, as after wire_out_free.
void wire_out_move(wire_out_t *dst, wire_out_t *src);

// Frame 0 plus the array frames, without a socket (tests, fuzzer seeds). frames: n_arrays + 1.
int wire_out_frames(wire_out_t *o, wire_frame_t *frames);

// Send o as one multipart message. flags: 0 or ZMQ_DONTWAIT. Returns 0, WIRE_AGAIN (nothing
// sent, o unchanged), or -1 with err. o is not freed.
int wire_send(void *sock, wire_out_t *o, int flags, char *err);

// ---- value checks the receiver may ask for ---------------------------------------------------
// Index of the first NaN/Inf in a f16/bf16/f32/f64 array, or -1 when all values are finite.
int64_t wire_first_nonfinite(const wire_array_t *a);
float wire_half_to_float(uint16_t h);
float wire_bf16_to_float(uint16_t h);

#endif
