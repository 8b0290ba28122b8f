/*
fuzz_wire.c -- libFuzzer target for the message decoder (common/wire*.c).

The input is a multipart message in a length-prefixed form: repeated [u32 little-endian length]
[that many bytes]; a length past the end takes what is left, a tail shorter than 4 bytes is one
last frame. Up to 18 frames are passed on, one more than the decoder accepts. Every message the
generic layer accepts goes through every typed decoder; every typed decode that succeeds is
re-encoded and decoded again and must give the same message (our encoders and decoders agree).
Seeds: tests/fuzz/corpus/wire/ (made by tests/tools/wire_emit --corpus). Build: make fuzz.
*/
#include "wire.h"
#include "wire_msgs.h"
#include "check.h"
#include <stdlib.h>
#include <string.h>

#define MAX_FRAMES (WIRE_MAX_ARRAYS + 2)

static char err[ERR_LEN];

// A finding of the round trip: abort so libFuzzer records the input.
#define SAME(cond) do { if (!(cond)) { fprintf(stderr, "round trip differs: %s (%s:%d)\n", #cond, __FILE__, __LINE__); abort(); } } while (0)

// Read every byte of every array so the sanitizers see any out-of-bounds pointer.
static unsigned touch(const wire_msg_t *m)
{
    unsigned s = 0;
    for (int i = 0; i < m->narrays; i++)
        for (size_t k = 0; k < m->arrays[i].nbytes; k++) s += ((const uint8_t *)m->arrays[i].data)[k];
    return s;
}

// Re-encode o, parse it into m2. 0 on success; 1 when the re-encoded header outgrew the limit
// (numbers re-packed wider than the sender packed them), which is not a finding.
static int reparse(wire_out_t *o, wire_msg_t *m2)
{
    wire_frame_t fr[WIRE_MAX_ARRAYS + 1];
    int n = wire_out_frames(o, fr);
    if (fr[0].len > WIRE_MAX_HEADER) return 1;
    if (wire_parse(m2, fr, n, err)) { fprintf(stderr, "re-encoded message rejected: %s\n", err); abort(); }
    return 0;
}

static void typed(const wire_msg_t *m)
{
    wire_out_t o;
    wire_msg_t m2;
    wire_msg_init(&m2);
    wire_volume_t v, v2;
    if (wire_decode_volume(m, &v, err) == 0) {
        if (wire_encode_volume(&o, &v, err) == 0 && reparse(&o, &m2) == 0) {
            SAME(wire_decode_volume(&m2, &v2, err) == 0);
            SAME(!strcmp(v.case_id, v2.case_id) && v.C == v2.C && v.D == v2.D && v.H == v2.H && v.W == v2.W);
            SAME(!memcmp(v.image, v2.image, wire_find(m, "image")->nbytes) && !memcmp(v.affine, v2.affine, sizeof v.affine));
            SAME(!v.labels == !v2.labels && v.prep_len == v2.prep_len && v.num_classes == v2.num_classes);
        }
        wire_out_free(&o);
    }
    wire_patch_batch_t p, p2;
    if (wire_decode_patch_batch(m, &p, err) == 0) {
        if (wire_encode_patch_batch(&o, &p, err) == 0 && reparse(&o, &m2) == 0) {
            SAME(wire_decode_patch_batch(&m2, &p2, err) == 0);
            SAME(p.seq == p2.seq && p.aug_seed == p2.aug_seed && p.B == p2.B && p.W == p2.W);
            SAME(!memcmp(p.case_ids, p2.case_ids, (size_t)p.B * WIRE_ID_LEN) && !memcmp(p.origins, p2.origins, 12 * (size_t)p.B));
            wire_patch_batch_free(&p2);
        }
        wire_out_free(&o);
        wire_patch_batch_free(&p);
    }
    wire_checkpoint_t c, c2;
    if (wire_decode_checkpoint(m, &c, err) == 0) {
        if (wire_encode_checkpoint(&o, &c, err) == 0 && reparse(&o, &m2) == 0) {
            SAME(wire_decode_checkpoint(&m2, &c2, err) == 0);
            SAME(c.step == c2.step && c.kind == c2.kind && !strcmp(c.sha256, c2.sha256) && !c.config_json == !c2.config_json);
            SAME(!c.config_json || !strcmp(c.config_json, c2.config_json));
            wire_checkpoint_free(&c2);
        }
        wire_out_free(&o);
        wire_checkpoint_free(&c);
    }
    wire_metrics_t x, x2;
    if (wire_decode_metrics(m, &x, err) == 0) {
        if (wire_encode_metrics(&o, &x, err) == 0 && reparse(&o, &m2) == 0) {
            SAME(wire_decode_metrics(&m2, &x2, err) == 0);
            SAME(x.step == x2.step && x.nvalues == x2.nvalues && x.ncases == x2.ncases && x.narrays == x2.narrays);
            SAME(!x.json == !x2.json && (!x.json || !strcmp(x.json, x2.json)));
            wire_metrics_free(&x2);
        }
        wire_out_free(&o);
        wire_metrics_free(&x);
    }
    // The small messages: decode, and when accepted, re-encode and compare whole structs.
#define SMALL(T, dec, enc)                                                              \
    do {                                                                                \
        T a, b;                                                                         \
        memset(&b, 0, sizeof b);                                                        \
        if (dec(m, &a, err) == 0) {                                                     \
            if (enc(&o, &a, err) == 0 && reparse(&o, &m2) == 0) {                       \
                SAME(dec(&m2, &b, err) == 0 && !memcmp(&a, &b, sizeof a));              \
            }                                                                           \
            wire_out_free(&o);                                                          \
        }                                                                               \
    } while (0)
    SMALL(wire_checkpoint_ack_t, wire_decode_checkpoint_ack, wire_encode_checkpoint_ack);
    SMALL(wire_ready_t, wire_decode_ready, wire_encode_ready);
    SMALL(wire_stop_t, wire_decode_stop, wire_encode_stop);
    SMALL(wire_request_t, wire_decode_request, wire_encode_request);
    SMALL(wire_error_t, wire_decode_error, wire_encode_error);
    wire_heartbeat_t h, h2;
    if (wire_decode_heartbeat(m, &h, err) == 0) {
        if (wire_encode_heartbeat(&o, &h, err) == 0 && reparse(&o, &m2) == 0) {
            SAME(wire_decode_heartbeat(&m2, &h2, err) == 0 && !strcmp(h.stage, h2.stage) && h.pid == h2.pid && h.seq == h2.seq);
        }
        wire_out_free(&o);
    }
    wire_msg_free(&m2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wire_frame_t fr[MAX_FRAMES];
    int n = 0;
    size_t pos = 0;
    while (pos < size && n < MAX_FRAMES) {
        if (size - pos < 4) { fr[n++] = (wire_frame_t){ data + pos, size - pos }; break; }
        uint32_t len;
        memcpy(&len, data + pos, 4);
        pos += 4;
        if (len > size - pos) len = (uint32_t)(size - pos);
        fr[n++] = (wire_frame_t){ data + pos, len };
        pos += len;
    }
    wire_msg_t m;
    wire_msg_init(&m);
    err[0] = 0;
    if (wire_parse(&m, fr, n, err) == 0) {
        volatile unsigned sink = touch(&m);
        (void)sink;
        typed(&m);
    } else if (!err[0]) {
        abort();                                    // every rejection must say why
    }
    wire_msg_free(&m);
    return 0;
}
