/*
wire_msgs.h -- the typed messages of the pipeline on top of wire.h (docs/protocol.md is the spec).

Each type has a struct, an encoder (struct -> wire_out_t; array buffers are borrowed, so keep
them alive until wire_send returns, or donate them) and a decoder (validated wire_msg_t ->
struct). Decoded pointers point into the wire_msg_t: keep it alive while using them. Decoders
return 0, or -1 with err naming the field and the problem; they check types, ranges and shapes
but not values: wire_first_nonfinite and wire_labels_check are there for receivers that care.
*/
#ifndef SRM_WIRE_MSGS_H
#define SRM_WIRE_MSGS_H
#include "wire.h"

#define WIRE_ID_LEN      128     // case ids, incl. NUL
#define WIRE_MAX_BATCH   1024
#define WIRE_MAX_CHANNELS 64
#define WIRE_MAX_DIM     4096    // any spatial extent
#define WIRE_MAX_METRICS 64
#define WIRE_MAX_CAPS    16
#define WIRE_TEXT_LEN    1024    // error and reason strings, incl. NUL

// "volume": one preprocessed case. image (C, D, H, W) in i16, f16 or f32; labels (D, H, W) u8.
typedef struct {
    char case_id[WIRE_ID_LEN];
    int64_t index;              // position in the dataset, -1 when not given
    int64_t epoch;              // loader epoch, -1 when not given
    int C, D, H, W;
    wire_dtype_t image_dtype;   // WIRE_I16, WIRE_F16 or WIRE_F32
    const void *image;          // (C, D, H, W), W fastest
    const uint8_t *labels;      // (D, H, W), NULL for inference cases
    double spacing[3];          // mm along D, H, W (> 0)
    double affine[16];          // voxel (d, h, w, 1) -> world, row-major 4x4
    int num_classes;            // 0 when not given; else labels must be < num_classes
    int train_patch[3];         // the trainer's patch (D, H, W) and batch, sent with training
    int train_batch;            // volumes so that an augmenter cutting others stops; 0: not given
    const uint8_t *prep;        // preprocessing record (opaque bytes, e.g. JSON), NULL when absent
    size_t prep_len;
} wire_volume_t;

// "patch_batch": B training patches.
typedef struct {
    uint64_t seq;               // sender's running number
    uint64_t aug_seed;          // seed the augmenter derived this batch's randomness from
    int B, C, D, H, W;
    wire_dtype_t image_dtype;   // WIRE_F32, WIRE_F16 or WIRE_BF16
    const void *images;         // (B, C, D, H, W)
    const uint8_t *labels;      // (B, D, H, W)
    const int32_t *origins;     // (B, 3) crop corner (d, h, w) in the volume; negative = padded
    const uint8_t *positive;    // (B) 1: crop centre drawn from the foreground, else 0
    char (*case_ids)[WIRE_ID_LEN];  // B rows; decode allocates (wire_patch_batch_free)
    int num_classes;            // 0 when not given
} wire_patch_batch_t;

typedef enum { WIRE_CKPT_PERIODIC = 0, WIRE_CKPT_FINAL = 1 } wire_ckpt_kind_t;

// "checkpoint": the native checkpoint file's bytes plus what the exporter needs to file it.
typedef struct {
    uint64_t step;
    wire_ckpt_kind_t kind;
    int validated;              // an eval job of this step was sent: keep it until scored (optional)
    const char *config_json;    // a JSON object; travels as a msgpack map. Decode allocates it
    const uint8_t *blob;        // (n) u8: the checkpoint file
    size_t blob_len;
    char sha256[65];            // lowercase hex of the blob; the decoder verifies it
} wire_checkpoint_t;

typedef struct {
    uint64_t step;
    char sha256[65];
    int ok;                     // 1: durable on disk
    char error[WIRE_TEXT_LEN];  // why not, when ok == 0
} wire_checkpoint_ack_t;

// "metrics": named scalars, an optional JSON document and per-case arrays (first axis = case).
typedef struct {
    uint64_t step;
    double wall_time;           // seconds since the Unix epoch
    int nvalues;
    char names[WIRE_MAX_METRICS][WIRE_NAME_LEN];
    double values[WIRE_MAX_METRICS];        // finite, or NaN for "undefined" (sent as nil)
    const char *json;           // NULL when absent; decode allocates it
    int ncases;                 // rows of case_ids; 0 when not given
    char (*case_ids)[WIRE_ID_LEN];
    int narrays;                // per-case arrays: u8/i32/f32/f64, shape[0] == ncases when given
    wire_array_t arrays[WIRE_MAX_ARRAYS];
} wire_metrics_t;

typedef struct { char stage[WIRE_NAME_LEN]; int64_t pid; uint64_t seq; double time; } wire_heartbeat_t;
typedef struct {
    char stage[WIRE_NAME_LEN];
    int64_t pid;
    int ncaps;
    char caps[WIRE_MAX_CAPS][WIRE_NAME_LEN];
} wire_ready_t;
typedef struct { char reason[WIRE_TEXT_LEN]; } wire_stop_t;
// "request": what is "validation_case" (by index), "latest_checkpoint" or "checkpoint" (by step).
typedef struct { char what[WIRE_NAME_LEN]; int64_t index; uint64_t step; uint64_t seq; } wire_request_t;
typedef struct { char code[WIRE_NAME_LEN]; char message[WIRE_TEXT_LEN]; uint64_t seq; } wire_error_t;

int wire_encode_volume(wire_out_t *o, const wire_volume_t *v, char *err);
int wire_decode_volume(const wire_msg_t *m, wire_volume_t *v, char *err);
int wire_encode_patch_batch(wire_out_t *o, const wire_patch_batch_t *p, char *err);
int wire_decode_patch_batch(const wire_msg_t *m, wire_patch_batch_t *p, char *err);
void wire_patch_batch_free(wire_patch_batch_t *p);          // frees case_ids of a decoded batch
int wire_encode_checkpoint(wire_out_t *o, const wire_checkpoint_t *c, char *err);
int wire_decode_checkpoint(const wire_msg_t *m, wire_checkpoint_t *c, char *err);
void wire_checkpoint_free(wire_checkpoint_t *c);            // frees config_json of a decoded one
int wire_encode_checkpoint_ack(wire_out_t *o, const wire_checkpoint_ack_t *a, char *err);
int wire_decode_checkpoint_ack(const wire_msg_t *m, wire_checkpoint_ack_t *a, char *err);
int wire_encode_metrics(wire_out_t *o, const wire_metrics_t *x, char *err);
int wire_decode_metrics(const wire_msg_t *m, wire_metrics_t *x, char *err);
void wire_metrics_free(wire_metrics_t *x);                  // frees json and case_ids of a decoded one
int wire_encode_heartbeat(wire_out_t *o, const wire_heartbeat_t *h, char *err);
int wire_decode_heartbeat(const wire_msg_t *m, wire_heartbeat_t *h, char *err);
int wire_encode_ready(wire_out_t *o, const wire_ready_t *r, char *err);
int wire_decode_ready(const wire_msg_t *m, wire_ready_t *r, char *err);
int wire_encode_stop(wire_out_t *o, const wire_stop_t *s, char *err);
int wire_decode_stop(const wire_msg_t *m, wire_stop_t *s, char *err);
int wire_encode_request(wire_out_t *o, const wire_request_t *r, char *err);
int wire_decode_request(const wire_msg_t *m, wire_request_t *r, char *err);
int wire_encode_error(wire_out_t *o, const wire_error_t *e, char *err);
int wire_decode_error(const wire_msg_t *m, wire_error_t *e, char *err);

// ---- helpers for receivers -------------------------------------------------------------------
// Index of the first label >= num_classes (LABEL_IGNORE aside) in n labels, or -1 when all are valid.
int64_t wire_labels_check(const uint8_t *labels, size_t n, int num_classes);
// SHA-256 of n bytes as 64 lowercase hex characters + NUL.
void wire_sha256_hex(const void *data, size_t n, char out[65]);
// Whether s is a message or run id: 1..63 of [A-Za-z0-9_.:-] (docs/protocol.md).
int wire_token_ok(const char *s);
// A message's optional "run" (the trainer's run id, docs/protocol.md) against ours: 0 when either
// is absent or they are equal; 1 with err naming both when the message is another run's; -1 with
// err when its "run" is malformed.
int wire_check_run(const wire_msg_t *m, const char *ours, char *err);
// JSON text <-> msgpack (used for the checkpoint config; depth and size bounded).
int wire_pack_json(msgpack_packer *pk, const char *json, char *err);
char *wire_obj_to_json(const msgpack_object *o, char *err);    // malloc'd text, or NULL with err

#endif
