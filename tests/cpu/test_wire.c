/*
test_wire.c -- the message layer: every typed message survives a round trip through a real
socket, and every way a header or frame can lie is rejected with -1 and a reason (never a
crash): frame counts, truncated frames, shapes vs sizes, dtypes, negative and overflowing dims,
versions, types, non-map and garbage headers, msgpack bombs, oversize input, bad typed fields.
Sockets and signals are tested in test_stage.c; the fuzzer (tests/fuzz/fuzz_wire.c) goes wider.
*/
#include "test.h"
#include "wire.h"
#include "wire_msgs.h"
#include "stage.h"
#include "check.h"
#include "rng.h"
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static char err[ERR_LEN];
static void *tx, *rx;           // inproc PUSH -> PULL

// Send o, receive into m. Returns wire_recv's rc.
static int through_socket(wire_out_t *o, wire_msg_t *m)
{
    int rc = wire_send(tx, o, 0, err);
    if (rc) { printf("send: %s\n", err); return -1; }
    return wire_recv(rx, m, 0, err);
}

// Parse an in-memory message; expect failure with `why` in the reason.
static void expect_reject(const char *label, const wire_frame_t *fr, int n, const char *why)
{
    wire_msg_t m;
    wire_msg_init(&m);
    err[0] = 0;
    int rc = wire_parse(&m, fr, n, err);
    EXPECT(rc == -1 && strstr(err, why), "%s: rc %d err '%s' (want '%s')", label, rc, err, why);
    wire_msg_free(&m);
}

// ---- a tiny header builder for hand-made (bad) headers ----------------------------------------
typedef struct { msgpack_sbuffer sb; msgpack_packer pk; } hb_t;
static void hb_init(hb_t *h) { msgpack_sbuffer_init(&h->sb); msgpack_packer_init(&h->pk, &h->sb, msgpack_sbuffer_write); }
static void hs(hb_t *h, const char *s) { msgpack_pack_str_with_body(&h->pk, s, strlen(s)); }
// {type, version, arrays: [{name: "x", dtype, shape: dims}]} with nextra more keys to be packed.
static void hb_std(hb_t *h, const char *type, int64_t version, const char *dtype, int rank, const int64_t *dims, int nextra)
{
    hb_init(h);
    msgpack_pack_map(&h->pk, 3 + (size_t)nextra);
    hs(h, "type"); hs(h, type);
    hs(h, "version"); msgpack_pack_int64(&h->pk, version);
    hs(h, "arrays"); msgpack_pack_array(&h->pk, 1);
    msgpack_pack_map(&h->pk, 3);
    hs(h, "name"); hs(h, "x");
    hs(h, "dtype"); hs(h, dtype);
    hs(h, "shape"); msgpack_pack_array(&h->pk, (size_t)rank);
    for (int i = 0; i < rank; i++) msgpack_pack_int64(&h->pk, dims[i]);
}

static void test_generic_rejects(void)
{
    static float payload[64];
    hb_t h;
    int64_t d4[1] = { 4 };
    wire_frame_t fr[20];

    hb_std(&h, "thing", 1, "f32", 1, d4, 0);
    fr[0] = (wire_frame_t){ h.sb.data, h.sb.size };
    fr[1] = (wire_frame_t){ payload, 16 };
    wire_msg_t m;
    wire_msg_init(&m);
    EXPECT(wire_parse(&m, fr, 2, err) == 0 && m.narrays == 1 && m.arrays[0].numel == 4, "baseline: %s", err);
    wire_msg_free(&m);
    fr[1].len = 15;
    expect_reject("truncated frame", fr, 2, "needs 16 bytes");
    fr[1].len = 17;
    expect_reject("long frame", fr, 2, "needs 16 bytes");
    fr[1].len = 16;
    expect_reject("missing frame", fr, 1, "lists 1 arrays but 0");
    fr[2] = fr[1];
    expect_reject("extra frame", fr, 3, "lists 1 arrays but 2");
    for (int i = 0; i < 20; i++) fr[i] = fr[1];
    fr[0] = (wire_frame_t){ h.sb.data, h.sb.size };
    expect_reject("too many frames", fr, 20, "at most");
    expect_reject("no frames", fr, 0, "no frames");
    msgpack_sbuffer_destroy(&h.sb);

    hb_std(&h, "thing", 1, "f128", 1, d4, 0);
    fr[0] = (wire_frame_t){ h.sb.data, h.sb.size };
    expect_reject("bad dtype", fr, 2, "unknown dtype");
    msgpack_sbuffer_destroy(&h.sb);

    int64_t neg[2] = { 4, -1 };
    hb_std(&h, "thing", 1, "u8", 2, neg, 0);
    fr[0] = (wire_frame_t){ h.sb.data, h.sb.size };
    expect_reject("negative dim", fr, 2, "negative dimension");
    msgpack_sbuffer_destroy(&h.sb);

    int64_t big[3] = { (int64_t)1 << 40, (int64_t)1 << 40, 16 };
    hb_std(&h, "thing", 1, "u8", 3, big, 0);
    fr[0] = (wire_frame_t){ h.sb.data, h.sb.size };
    expect_reject("overflowing product", fr, 2, "overflows");
    msgpack_sbuffer_destroy(&h.sb);

    int64_t huge[1] = { (int64_t)1 << 61 };        // product fits u64, bytes (x8) overflow
    hb_std(&h, "thing", 1, "f64", 1, huge, 0);
    fr[0] = (wire_frame_t){ h.sb.data, h.sb.size };
    expect_reject("byte count overflow", fr, 2, "more than");
    msgpack_sbuffer_destroy(&h.sb);

    int64_t r9[9] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 };
    hb_std(&h, "thing", 1, "u8", 9, r9, 0);
    fr[0] = (wire_frame_t){ h.sb.data, h.sb.size };
    expect_reject("rank 9", fr, 2, "rank 9");
    msgpack_sbuffer_destroy(&h.sb);

    hb_std(&h, "thing", 2, "f32", 1, d4, 0);
    fr[0] = (wire_frame_t){ h.sb.data, h.sb.size };
    expect_reject("version 2", fr, 2, "unsupported version 2");
    msgpack_sbuffer_destroy(&h.sb);

    hb_std(&h, "a_type_name_that_is_far_too_long_for_us", 1, "f32", 1, d4, 0);
    fr[0] = (wire_frame_t){ h.sb.data, h.sb.size };
    expect_reject("long type", fr, 2, "'type'");
    msgpack_sbuffer_destroy(&h.sb);

    // Unknown extra keys are ignored; a non-string key or a duplicate key is not.
    hb_std(&h, "thing", 1, "f32", 1, d4, 1);
    hs(&h, "future_field"); msgpack_pack_map(&h.pk, 1); hs(&h, "a"); msgpack_pack_array(&h.pk, 0);
    fr[0] = (wire_frame_t){ h.sb.data, h.sb.size };
    wire_msg_init(&m);
    EXPECT(wire_parse(&m, fr, 2, err) == 0, "unknown key should be ignored: %s", err);
    wire_msg_free(&m);
    msgpack_sbuffer_destroy(&h.sb);
    hb_std(&h, "thing", 1, "f32", 1, d4, 1);
    msgpack_pack_int(&h.pk, 7); msgpack_pack_int(&h.pk, 7);
    fr[0] = (wire_frame_t){ h.sb.data, h.sb.size };
    expect_reject("int key", fr, 2, "not a string");
    msgpack_sbuffer_destroy(&h.sb);
    hb_std(&h, "thing", 1, "f32", 1, d4, 1);
    hs(&h, "type"); hs(&h, "other");
    fr[0] = (wire_frame_t){ h.sb.data, h.sb.size };
    expect_reject("duplicate key", fr, 2, "duplicate key 'type'");
    msgpack_sbuffer_destroy(&h.sb);

    // Required keys, non-map headers, trailing bytes.
    hb_init(&h);
    msgpack_pack_map(&h.pk, 2); hs(&h, "type"); hs(&h, "thing"); hs(&h, "version"); msgpack_pack_int(&h.pk, 1);
    fr[0] = (wire_frame_t){ h.sb.data, h.sb.size };
    expect_reject("no arrays key", fr, 1, "'arrays' missing");
    msgpack_pack_nil(&h.pk);
    fr[0] = (wire_frame_t){ h.sb.data, h.sb.size };
    expect_reject("trailing bytes", fr, 1, "trailing bytes");
    msgpack_sbuffer_destroy(&h.sb);
    hb_init(&h);
    msgpack_pack_map(&h.pk, 2); hs(&h, "type"); hs(&h, "thing"); hs(&h, "version"); hs(&h, "1");
    fr[0] = (wire_frame_t){ h.sb.data, h.sb.size };
    expect_reject("string version", fr, 1, "'version' missing or not an integer");
    msgpack_sbuffer_destroy(&h.sb);
    hb_init(&h);
    msgpack_pack_array(&h.pk, 3); hs(&h, "type"); hs(&h, "x"); msgpack_pack_int(&h.pk, 1);
    fr[0] = (wire_frame_t){ h.sb.data, h.sb.size };
    expect_reject("array header", fr, 1, "not a msgpack map");
    msgpack_sbuffer_destroy(&h.sb);

    // msgpack bombs: huge declared counts, deep nesting, reserved bytes, truncation.
    static const uint8_t bomb[] = { 0x81, 0xa1, 'a', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x00 };
    fr[0] = (wire_frame_t){ bomb, sizeof bomb };
    expect_reject("count bomb", fr, 1, "claims 4294967295 elements");
    static const uint8_t map_bomb[] = { 0xdf, 0x7f, 0xff, 0xff, 0xff };
    fr[0] = (wire_frame_t){ map_bomb, sizeof map_bomb };
    expect_reject("map bomb", fr, 1, "claims");
    uint8_t deep[200];
    memset(deep, 0x91, sizeof deep);
    deep[199] = 0xc0;
    fr[0] = (wire_frame_t){ deep, sizeof deep };
    expect_reject("deep nesting", fr, 1, "nested deeper");
    static const uint8_t reserved[] = { 0x81, 0xc1, 0xc0 };
    fr[0] = (wire_frame_t){ reserved, sizeof reserved };
    expect_reject("byte 0xc1", fr, 1, "invalid msgpack byte 0xc1");
    static const uint8_t trunc_str[] = { 0x81, 0xdb, 0x00, 0x00, 0x10, 0x00, 'a' };
    fr[0] = (wire_frame_t){ trunc_str, sizeof trunc_str };
    expect_reject("truncated str32", fr, 1, "truncated");
    fr[0] = (wire_frame_t){ payload, 0 };
    expect_reject("empty header", fr, 1, "empty header");
    char *oversize = xcalloc(WIRE_MAX_HEADER + 1, 1);
    fr[0] = (wire_frame_t){ oversize, WIRE_MAX_HEADER + 1 };
    expect_reject("oversize header", fr, 1, "exceeds");
    free(oversize);

    // Garbage: random bytes must always be rejected cleanly.
    rng_t r = rng_seed(42);
    uint8_t junk[256];
    int rejected = 0;
    for (int t = 0; t < 5000; t++) {
        size_t n = 1 + rng_below(&r, sizeof junk);
        for (size_t i = 0; i < n; i++) junk[i] = (uint8_t)rng_u64(&r);
        if (t % 2) junk[0] = (uint8_t)(0x80 | (junk[0] & 0x0f));      // half start like a map
        fr[0] = (wire_frame_t){ junk, n };
        fr[1] = (wire_frame_t){ payload, rng_below(&r, 64) };
        wire_msg_init(&m);
        rejected += wire_parse(&m, fr, 1 + (int)rng_below(&r, 3), err) == -1 && err[0];
        wire_msg_free(&m);
    }
    EXPECT(rejected == 5000, "random garbage: %d of 5000 rejected", rejected);
}

// Misaligned frames (ZeroMQ may give any offset) are copied so typed access is aligned.
static void test_alignment(void)
{
    float src[5] = { 1, 2, 3, 4, 5 };
    uint8_t raw[64];
    memcpy(raw + 1, src, sizeof src);
    wire_out_t o;
    int64_t n = 5;
    wire_out_init(&o, "thing");
    wire_out_array(&o, "v", WIRE_F32, 1, &n, raw + 1);
    wire_frame_t fr[2];
    wire_out_frames(&o, fr);
    wire_msg_t m;
    wire_msg_init(&m);
    EXPECT(wire_parse(&m, fr, 2, err) == 0, "%s", err);
    EXPECT((uintptr_t)m.arrays[0].data % 4 == 0, "misaligned data not copied");
    EXPECT(memcmp(m.arrays[0].data, src, sizeof src) == 0, "copied data differs");
    wire_msg_free(&m);
    wire_out_free(&o);
}

static void test_finite(void)
{
    float f[4] = { 0, 1, NAN, 2 };
    uint16_t h[3] = { 0x3c00, 0x7c00, 0 };           // 1.0, +Inf (f16)
    uint16_t b[3] = { 0x3f80, 0, 0x7fc0 };           // 1.0, 0, NaN (bf16)
    wire_array_t a = { .dtype = WIRE_F32, .numel = 4, .data = f };
    EXPECT(wire_first_nonfinite(&a) == 2, "f32 NaN not found");
    f[2] = 3;
    EXPECT(wire_first_nonfinite(&a) == -1, "finite f32 flagged");
    a = (wire_array_t){ .dtype = WIRE_F16, .numel = 3, .data = h };
    EXPECT(wire_first_nonfinite(&a) == 1, "f16 Inf not found");
    a = (wire_array_t){ .dtype = WIRE_BF16, .numel = 3, .data = b };
    EXPECT(wire_first_nonfinite(&a) == 2, "bf16 NaN not found");
    EXPECT(wire_half_to_float(0x3c00) == 1.0f && wire_half_to_float(0xc000) == -2.0f, "half conversion");
    EXPECT(wire_bf16_to_float(0x3f80) == 1.0f, "bf16 conversion");
}

// ---- typed messages ----------------------------------------------------------------------------

static int json_same(const char *a, const char *b)
{
    json_error_t je;
    json_t *x = json_loads(a, 0, &je), *y = json_loads(b, 0, &je);
    int same = x && y && json_equal(x, y);
    json_decref(x);
    json_decref(y);
    return same;
}

static void test_typed_roundtrips(void)
{
    wire_out_t o;
    wire_msg_t m;
    wire_msg_init(&m);

    // volume, f32 with labels and every optional field
    enum { C = 2, D = 3, H = 4, W = 5 };
    static float img[C * D * H * W];
    static uint8_t lab[D * H * W];
    for (int i = 0; i < C * D * H * W; i++) img[i] = 0.25f * (float)i - 3.0f;
    for (int i = 0; i < D * H * W; i++) lab[i] = (uint8_t)(i % 3);
    const char *prep = "{\"crop\":[1,2,3]}";
    wire_volume_t v = { .index = 7, .epoch = 2, .C = C, .D = D, .H = H, .W = W, .image_dtype = WIRE_F32,
                        .image = img, .labels = lab, .spacing = { 1, 1.5, 2 },
                        .affine = { -1, 0, 0, 10, 0, -1.5, 0, 20, 0, 0, 2, -30, 0, 0, 0, 1 }, .num_classes = 3,
                        .train_patch = { 96, 128, 64 }, .train_batch = 2, .prep = (const uint8_t *)prep, .prep_len = strlen(prep) };
    strcpy(v.case_id, "BRATS_001");
    EXPECT(wire_encode_volume(&o, &v, err) == 0, "encode volume: %s", err);
    EXPECT(through_socket(&o, &m) == 0, "volume: %s", err);
    wire_out_free(&o);
    wire_volume_t g;
    EXPECT(wire_decode_volume(&m, &g, err) == 0, "decode volume: %s", err);
    EXPECT(!strcmp(g.case_id, "BRATS_001") && g.index == 7 && g.epoch == 2 && g.C == C && g.D == D && g.H == H &&
           g.W == W && g.image_dtype == WIRE_F32 && g.num_classes == 3 && g.train_patch[0] == 96 &&
           g.train_patch[1] == 128 && g.train_patch[2] == 64 && g.train_batch == 2, "volume fields differ");
    EXPECT(g.image && !memcmp(g.image, img, sizeof img) && g.labels && !memcmp(g.labels, lab, sizeof lab), "volume arrays differ");
    EXPECT(!memcmp(g.spacing, v.spacing, sizeof v.spacing) && !memcmp(g.affine, v.affine, sizeof v.affine), "geometry differs");
    EXPECT(g.prep_len == strlen(prep) && !memcmp(g.prep, prep, g.prep_len), "prep record differs");

    // volume, i16 image, no labels, nothing optional (an inference case)
    static int16_t img16[D * H * W];
    for (int i = 0; i < D * H * W; i++) img16[i] = (int16_t)(i * 97 - 1024);
    wire_volume_t v2 = { .index = -1, .epoch = -1, .C = 1, .D = D, .H = H, .W = W, .image_dtype = WIRE_I16,
                         .image = img16, .spacing = { 0.8, 0.8, 3 }, .affine = { 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1 } };
    strcpy(v2.case_id, "ct_042");
    EXPECT(wire_encode_volume(&o, &v2, err) == 0 && through_socket(&o, &m) == 0, "i16 volume: %s", err);
    wire_out_free(&o);
    EXPECT(wire_decode_volume(&m, &g, err) == 0, "decode i16 volume: %s", err);
    EXPECT(g.image_dtype == WIRE_I16 && !g.labels && g.index == -1 && g.num_classes == 0 && !g.prep && !g.train_batch &&
           !memcmp(g.image, img16, sizeof img16), "i16 volume differs");

    // patch_batch, f32 and bf16
    enum { B = 2, P = 4 };
    static float pimg[B * P * P * P];
    static uint16_t pbf[B * P * P * P];
    static uint8_t plab[B * P * P * P];
    for (int i = 0; i < B * P * P * P; i++) { pimg[i] = (float)i / 7; pbf[i] = (uint16_t)(0x3f80 + i % 16); plab[i] = (uint8_t)(i % 2); }
    int32_t org[B * 3] = { 0, 5, -2, 17, 3, 9 };
    uint8_t pos[B] = { 1, 0 };
    char ids[B][WIRE_ID_LEN] = { "case_a", "case_b" };
    wire_patch_batch_t pb = { .seq = 9, .aug_seed = ((uint64_t)1 << 63) + 5, .B = B, .C = 1, .D = P, .H = P, .W = P,
                              .image_dtype = WIRE_F32, .images = pimg, .labels = plab, .origins = org,
                              .positive = pos, .case_ids = ids, .num_classes = 2 };
    EXPECT(wire_encode_patch_batch(&o, &pb, err) == 0 && through_socket(&o, &m) == 0, "patch_batch: %s", err);
    wire_out_free(&o);
    wire_patch_batch_t gp;
    EXPECT(wire_decode_patch_batch(&m, &gp, err) == 0, "decode patch_batch: %s", err);
    EXPECT(gp.seq == 9 && gp.aug_seed == pb.aug_seed && gp.B == B && gp.C == 1 && gp.D == P && gp.num_classes == 2 &&
           !memcmp(gp.images, pimg, sizeof pimg) && !memcmp(gp.labels, plab, sizeof plab) &&
           !memcmp(gp.origins, org, sizeof org) && !memcmp(gp.positive, pos, sizeof pos) &&
           !strcmp(gp.case_ids[0], "case_a") && !strcmp(gp.case_ids[1], "case_b"), "patch_batch differs");
    EXPECT(wire_first_nonfinite(wire_find(&m, "images")) == -1, "finite images flagged");
    wire_patch_batch_free(&gp);
    pb.image_dtype = WIRE_BF16;
    pb.images = pbf;
    EXPECT(wire_encode_patch_batch(&o, &pb, err) == 0 && through_socket(&o, &m) == 0, "bf16 patch_batch: %s", err);
    wire_out_free(&o);
    EXPECT(wire_decode_patch_batch(&m, &gp, err) == 0 && gp.image_dtype == WIRE_BF16 && !memcmp(gp.images, pbf, sizeof pbf),
           "bf16 patch_batch: %s", err);
    wire_patch_batch_free(&gp);

    // checkpoint with a config map; the sha is verified on decode
    static uint8_t blob[1000];
    rng_t r = rng_seed(3);
    for (size_t i = 0; i < sizeof blob; i++) blob[i] = (uint8_t)rng_u64(&r);
    const char *cfg = "{\"model\":\"tiny\",\"lr\":0.001,\"dims\":[1,2,3],\"nested\":{\"a\":true,\"b\":null},\"neg\":-4}";
    wire_checkpoint_t ck = { .step = 500, .kind = WIRE_CKPT_FINAL, .config_json = cfg, .blob = blob, .blob_len = sizeof blob };
    wire_sha256_hex(blob, sizeof blob, ck.sha256);
    EXPECT(wire_encode_checkpoint(&o, &ck, err) == 0 && through_socket(&o, &m) == 0, "checkpoint: %s", err);
    wire_out_free(&o);
    wire_checkpoint_t gc;
    EXPECT(wire_decode_checkpoint(&m, &gc, err) == 0, "decode checkpoint: %s", err);
    EXPECT(gc.step == 500 && gc.kind == WIRE_CKPT_FINAL && gc.blob_len == sizeof blob && !memcmp(gc.blob, blob, sizeof blob) &&
           !strcmp(gc.sha256, ck.sha256) && gc.config_json && json_same(gc.config_json, cfg), "checkpoint differs: %s",
           gc.config_json ? gc.config_json : "(no config)");
    wire_checkpoint_free(&gc);

    // checkpoint_ack
    wire_checkpoint_ack_t ack = { .step = 500, .ok = 0 };
    strcpy(ack.sha256, ck.sha256);
    strcpy(ack.error, "disk full");
    EXPECT(wire_encode_checkpoint_ack(&o, &ack, err) == 0 && through_socket(&o, &m) == 0, "ack: %s", err);
    wire_out_free(&o);
    wire_checkpoint_ack_t ga;
    EXPECT(wire_decode_checkpoint_ack(&m, &ga, err) == 0 && ga.step == 500 && !ga.ok && !strcmp(ga.error, "disk full") &&
           !strcmp(ga.sha256, ck.sha256), "ack differs: %s", err);

    // metrics with scalars (one undefined), JSON, case ids and a per-case array
    wire_metrics_t mx = { .step = 1200, .wall_time = 1.7e9 + 0.25, .nvalues = 2, .json = "{\"best\":0.8}", .ncases = 3 };
    strcpy(mx.names[0], "mean_dice"); mx.values[0] = 0.8125;
    strcpy(mx.names[1], "hd95"); mx.values[1] = NAN;
    char cids[3][WIRE_ID_LEN] = { "c1", "c2", "c3" };
    mx.case_ids = cids;
    float dice[3 * 2] = { 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f };
    mx.narrays = 1;
    mx.arrays[0] = (wire_array_t){ .name = "dice", .dtype = WIRE_F32, .rank = 2, .shape = { 3, 2 }, .data = dice };
    EXPECT(wire_encode_metrics(&o, &mx, err) == 0 && through_socket(&o, &m) == 0, "metrics: %s", err);
    wire_out_free(&o);
    wire_metrics_t gm;
    EXPECT(wire_decode_metrics(&m, &gm, err) == 0, "decode metrics: %s", err);
    EXPECT(gm.step == 1200 && gm.wall_time == mx.wall_time && gm.nvalues == 2 && !strcmp(gm.names[0], "mean_dice") &&
           gm.values[0] == 0.8125 && isnan(gm.values[1]) && gm.json && !strcmp(gm.json, mx.json) && gm.ncases == 3 &&
           !strcmp(gm.case_ids[2], "c3") && gm.narrays == 1 && !memcmp(gm.arrays[0].data, dice, sizeof dice),
           "metrics differ");
    wire_metrics_free(&gm);

    // control messages
    wire_heartbeat_t hb = { .stage = "augmenter", .pid = 4242, .seq = 17, .time = 12.5 }, gh;
    EXPECT(wire_encode_heartbeat(&o, &hb, err) == 0 && through_socket(&o, &m) == 0 && wire_decode_heartbeat(&m, &gh, err) == 0 &&
           !strcmp(gh.stage, "augmenter") && gh.pid == 4242 && gh.seq == 17 && gh.time == 12.5, "heartbeat: %s", err);
    wire_out_free(&o);
    wire_ready_t rd = { .stage = "evaluator", .pid = 77, .ncaps = 2, .caps = { "cuda", "bf16" } }, gr;
    EXPECT(wire_encode_ready(&o, &rd, err) == 0 && through_socket(&o, &m) == 0 && wire_decode_ready(&m, &gr, err) == 0 &&
           gr.ncaps == 2 && !strcmp(gr.caps[1], "bf16") && gr.pid == 77, "ready: %s", err);
    wire_out_free(&o);
    wire_stop_t sp = { .reason = "SIGTERM" }, gs;
    EXPECT(wire_encode_stop(&o, &sp, err) == 0 && through_socket(&o, &m) == 0 && wire_decode_stop(&m, &gs, err) == 0 &&
           !strcmp(gs.reason, "SIGTERM") && m.narrays == 0, "stop: %s", err);
    wire_out_free(&o);
    wire_request_t rq = { .what = "validation_case", .index = 3, .seq = 11 }, gq;
    EXPECT(wire_encode_request(&o, &rq, err) == 0 && through_socket(&o, &m) == 0 && wire_decode_request(&m, &gq, err) == 0 &&
           !strcmp(gq.what, "validation_case") && gq.index == 3 && gq.seq == 11 && gq.step == 0, "request: %s", err);
    wire_out_free(&o);
    wire_error_t er = { .code = "not_found", .message = "no case 99", .seq = 11 }, ge;
    EXPECT(wire_encode_error(&o, &er, err) == 0 && through_socket(&o, &m) == 0 && wire_decode_error(&m, &ge, err) == 0 &&
           !strcmp(ge.code, "not_found") && !strcmp(ge.message, "no case 99") && ge.seq == 11, "error: %s", err);
    wire_out_free(&o);
    EXPECT(wire_decode_volume(&m, &g, err) == -1 && strstr(err, "expected a 'volume'"), "wrong type accepted: %s", err);
    wire_msg_free(&m);
}

// Build a volume message with one defect, parse it from memory and decode it.
enum { V_OK, V_NO_CASE, V_U8_IMAGE, V_LABEL_SHAPE, V_SPACING, V_AFFINE, V_LABEL_RANGE, V_NUL_ID, V_BIG_DIM, V_NCLASS,
       V_TRAIN_ALONE, V_TRAIN_PATCH };
static int volume_with(int defect)
{
    static float img[5000];
    static uint8_t lab[64];
    memset(lab, 0, sizeof lab);
    wire_out_t o;
    wire_out_init(&o, "volume");
    if (defect == V_NUL_ID) msgpack_pack_str_with_body(wire_put_key(&o, "case_id"), "a\0b", 3);
    else if (defect != V_NO_CASE) wire_put_str(&o, "case_id", "c");
    double sp[3] = { 1, defect == V_SPACING ? -1 : 1, 1 }, af[16] = { 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1 };
    if (defect == V_AFFINE) af[15] = 2;
    wire_put_f64v(&o, "spacing", sp, 3);
    wire_put_f64v(&o, "affine", af, 16);
    wire_put_i64(&o, "num_classes", defect == V_NCLASS ? 300 : 2);
    int64_t tp[3] = { 32, 0, 32 };
    if (defect == V_TRAIN_PATCH) wire_put_i64v(&o, "train_patch", tp, 3);
    if (defect == V_TRAIN_PATCH || defect == V_TRAIN_ALONE) wire_put_i64(&o, "train_batch", 2);
    int64_t s[4] = { 1, 4, 4, 4 }, ls[3] = { 4, 4, defect == V_LABEL_SHAPE ? 3 : 4 }, big[4] = { 1, 5000, 1, 1 };
    if (defect == V_LABEL_RANGE) lab[10] = 2;
    wire_out_array(&o, "image", defect == V_U8_IMAGE ? WIRE_U8 : WIRE_F32, 4, defect == V_BIG_DIM ? big : s, img);
    wire_out_array(&o, "labels", WIRE_U8, 3, ls, lab);
    wire_frame_t fr[3];
    int n = wire_out_frames(&o, fr);
    wire_msg_t m;
    wire_volume_t v;
    wire_msg_init(&m);
    err[0] = 0;
    int rc = wire_parse(&m, fr, n, err);
    if (rc == 0) rc = wire_decode_volume(&m, &v, err);
    wire_msg_free(&m);
    wire_out_free(&o);
    return rc;
}

enum { P_OK, P_POSITIVE, P_IDS, P_ORIGINS, P_LABELS, P_NO_SEQ, P_EMPTY_ID };
static int patch_with(int defect)
{
    static float img[2 * 8];
    static uint8_t lab[2 * 8], pos[2] = { 1, 0 };
    static int32_t org[6];
    wire_out_t o;
    wire_out_init(&o, "patch_batch");
    if (defect != P_NO_SEQ) wire_put_u64(&o, "seq", 1);
    wire_put_u64(&o, "aug_seed", 2);
    char ids[3][WIRE_ID_LEN] = { "a", "b", "c" };
    if (defect == P_EMPTY_ID) ids[1][0] = 0;
    wire_put_strv(&o, "case_ids", ids[0], WIRE_ID_LEN, defect == P_IDS ? 3 : 2);
    pos[1] = defect == P_POSITIVE ? 2 : 0;
    int64_t s[5] = { 2, 1, 2, 2, 2 }, ls[4] = { 2, 2, 2, defect == P_LABELS ? 1 : 2 }, os[2] = { 2, defect == P_ORIGINS ? 2 : 3 }, ps = 2;
    wire_out_array(&o, "images", WIRE_F32, 5, s, img);
    wire_out_array(&o, "labels", WIRE_U8, 4, ls, lab);
    wire_out_array(&o, "origins", WIRE_I32, 2, os, org);
    wire_out_array(&o, "positive", WIRE_U8, 1, &ps, pos);
    wire_frame_t fr[5];
    int n = wire_out_frames(&o, fr);
    wire_msg_t m;
    wire_patch_batch_t p;
    wire_msg_init(&m);
    err[0] = 0;
    int rc = wire_parse(&m, fr, n, err);
    if (rc == 0) { rc = wire_decode_patch_batch(&m, &p, err); if (rc == 0) wire_patch_batch_free(&p); }
    wire_msg_free(&m);
    wire_out_free(&o);
    return rc;
}

enum { K_OK, K_SHA, K_KIND, K_CFG_TYPE, K_CFG_BIN, K_SHA_CASE };
static int ckpt_with(int defect)
{
    static uint8_t blob[100];
    char sha[65];
    wire_sha256_hex(blob, sizeof blob, sha);
    if (defect == K_SHA) sha[0] = sha[0] == '0' ? '1' : '0';
    if (defect == K_SHA_CASE) for (int i = 0; sha[i]; i++) if (sha[i] >= 'a') sha[i] = (char)(sha[i] - 32);
    wire_out_t o;
    wire_out_init(&o, "checkpoint");
    wire_put_u64(&o, "step", 10);
    wire_put_str(&o, "kind", defect == K_KIND ? "sometimes" : "periodic");
    wire_put_str(&o, "sha256", sha);
    if (defect == K_CFG_TYPE) wire_put_str(&o, "config", "{}");
    if (defect == K_CFG_BIN) {
        msgpack_packer *pk = wire_put_key(&o, "config");
        msgpack_pack_map(pk, 1);
        msgpack_pack_str_with_body(pk, "w", 1);
        msgpack_pack_bin_with_body(pk, "xy", 2);
    }
    int64_t n = sizeof blob;
    wire_out_array(&o, "blob", WIRE_U8, 1, &n, blob);
    wire_frame_t fr[2];
    int nf = wire_out_frames(&o, fr);
    wire_msg_t m;
    wire_checkpoint_t c;
    wire_msg_init(&m);
    err[0] = 0;
    int rc = wire_parse(&m, fr, nf, err);
    if (rc == 0) { rc = wire_decode_checkpoint(&m, &c, err); if (rc == 0) wire_checkpoint_free(&c); }
    wire_msg_free(&m);
    wire_out_free(&o);
    return rc;
}

#define REJECT(call, why) do { int rc_ = (call); \
    EXPECT(rc_ == -1 && strstr(err, why), "%s: rc %d err '%s' (want '%s')", #call, rc_, err, why); } while (0)

static void test_typed_rejects(void)
{
    EXPECT(volume_with(V_OK) == 0, "good volume rejected: %s", err);
    REJECT(volume_with(V_NO_CASE), "required field 'case_id'");
    REJECT(volume_with(V_U8_IMAGE), "dtype u8, not allowed");
    REJECT(volume_with(V_LABEL_SHAPE), "labels shape differs");
    REJECT(volume_with(V_SPACING), "not positive");
    REJECT(volume_with(V_AFFINE), "last row");
    REJECT(volume_with(V_LABEL_RANGE), ">= num_classes 2");
    REJECT(volume_with(V_NUL_ID), "'case_id' is not a string");
    REJECT(volume_with(V_BIG_DIM), "outside");
    REJECT(volume_with(V_NCLASS), "'num_classes' = 300 outside");
    REJECT(volume_with(V_TRAIN_ALONE), "train_patch and train_batch go together");
    REJECT(volume_with(V_TRAIN_PATCH), "'train_patch'[1] is not an integer in [1, 4096]");
    EXPECT(patch_with(P_OK) == 0, "good patch_batch rejected: %s", err);
    REJECT(patch_with(P_POSITIVE), "not 0 or 1");
    REJECT(patch_with(P_IDS), "has 3 entries");
    REJECT(patch_with(P_ORIGINS), "origins shape");
    REJECT(patch_with(P_LABELS), "labels shape");
    REJECT(patch_with(P_NO_SEQ), "'seq' missing");
    REJECT(patch_with(P_EMPTY_ID), "empty case id 1");
    EXPECT(ckpt_with(K_OK) == 0, "good checkpoint rejected: %s", err);
    REJECT(ckpt_with(K_SHA), "does not match");
    REJECT(ckpt_with(K_SHA_CASE), "lowercase hex");
    REJECT(ckpt_with(K_KIND), "kind 'sometimes'");
    REJECT(ckpt_with(K_CFG_TYPE), "config is not a map");
    REJECT(ckpt_with(K_CFG_BIN), "bin/ext");

    // control messages with bad fields
    wire_out_t o;
    wire_msg_t m;
    wire_frame_t fr[2];
    wire_msg_init(&m);
    wire_heartbeat_t h;
    wire_out_init(&o, "heartbeat");
    wire_put_str(&o, "stage", "aug menter");
    wire_put_i64(&o, "pid", 1);
    wire_out_frames(&o, fr);
    REJECT(wire_parse(&m, fr, 1, err) ? -2 : wire_decode_heartbeat(&m, &h, err), "not a name");
    wire_out_free(&o);
    wire_out_init(&o, "heartbeat");
    wire_put_str(&o, "stage", "loader");
    wire_put_i64(&o, "pid", -5);
    wire_out_frames(&o, fr);
    REJECT(wire_parse(&m, fr, 1, err) ? -2 : wire_decode_heartbeat(&m, &h, err), "'pid' = -5 outside");
    wire_out_free(&o);
    wire_request_t rq;
    wire_out_init(&o, "request");
    wire_put_str(&o, "what", "validation_case");
    wire_out_frames(&o, fr);
    REJECT(wire_parse(&m, fr, 1, err) ? -2 : wire_decode_request(&m, &rq, err), "no index");
    wire_out_free(&o);
    wire_metrics_t mx;
    wire_out_init(&o, "metrics");
    wire_put_u64(&o, "step", 1);
    wire_put_f64(&o, "wall_time", 1);
    msgpack_packer *pk = wire_put_key(&o, "values");
    msgpack_pack_map(pk, 1);
    msgpack_pack_str_with_body(pk, "dice", 4);
    msgpack_pack_str_with_body(pk, "high", 4);
    wire_out_frames(&o, fr);
    REJECT(wire_parse(&m, fr, 1, err) ? -2 : wire_decode_metrics(&m, &mx, err), "not a number or nil");
    wire_out_free(&o);
    wire_out_init(&o, "metrics");
    wire_put_u64(&o, "step", 1);
    wire_put_f64(&o, "wall_time", 1);
    char ids[2][WIRE_ID_LEN] = { "a", "b" };
    wire_put_strv(&o, "case_ids", ids[0], WIRE_ID_LEN, 2);
    float d3[3] = { 0 };
    int64_t s3 = 3;
    wire_out_array(&o, "dice", WIRE_F32, 1, &s3, d3);
    int nf = wire_out_frames(&o, fr);
    REJECT(wire_parse(&m, fr, nf, err) ? -2 : wire_decode_metrics(&m, &mx, err), "one row per case");
    wire_out_free(&o);
    wire_ready_t rd;
    wire_out_init(&o, "ready");
    wire_put_str(&o, "stage", "trainer");
    wire_put_i64(&o, "pid", 1);
    wire_put_str(&o, "capabilities", "cuda");
    wire_out_frames(&o, fr);
    REJECT(wire_parse(&m, fr, 1, err) ? -2 : wire_decode_ready(&m, &rd, err), "'capabilities' is not a list");
    wire_out_free(&o);
    wire_msg_free(&m);
}

// A message with too many parts is rejected whole, and the next one still decodes.
static void test_recv_drains(void)
{
    wire_out_t o;
    wire_stop_t s = { .reason = "after" };
    for (int i = 0; i < 20; i++)
        if (zmq_send(tx, "x", 1, i < 19 ? ZMQ_SNDMORE : 0) != 1) DIE("zmq_send: %s", zmq_strerror(zmq_errno()));
    EXPECT(wire_encode_stop(&o, &s, err) == 0 && wire_send(tx, &o, 0, err) == 0, "send: %s", err);
    wire_out_free(&o);
    wire_msg_t m;
    wire_msg_init(&m);
    REJECT(wire_recv(rx, &m, 0, err), "20 frames");
    wire_stop_t g;
    EXPECT(wire_recv(rx, &m, 0, err) == 0 && wire_decode_stop(&m, &g, err) == 0 && !strcmp(g.reason, "after"),
           "message after an oversize one: %s", err);
    EXPECT(!strcmp(m.peer, "local"), "inproc peer is '%s'", m.peer);
    EXPECT(wire_recv(rx, &m, ZMQ_DONTWAIT, err) == WIRE_AGAIN, "empty socket should give WIRE_AGAIN");
    wire_msg_free(&m);
}

static int freed;
static void count_free(void *data, void *hint) { (void)hint; free(data); freed++; }

// Donated buffers go to ZeroMQ without a copy and are freed exactly once, sent or not.
static void test_donate(void)
{
    wire_out_t o;
    int64_t n = 1 << 20;
    uint8_t *big = xmalloc((size_t)n), *unsent = xmalloc(16);
    memset(big, 0xab, (size_t)n);
    wire_out_init(&o, "blobs");
    wire_out_array(&o, "big", WIRE_U8, 1, &n, big);
    wire_out_donate(&o, "big", count_free, NULL);
    wire_msg_t m;
    wire_msg_init(&m);
    EXPECT(through_socket(&o, &m) == 0 && m.arrays[0].nbytes == (size_t)n && ((uint8_t *)m.arrays[0].data)[n - 1] == 0xab,
           "donated send: %s", err);
    EXPECT(m.arrays[0].data == big, "inproc zero-copy should deliver the same buffer");
    wire_out_free(&o);
    EXPECT(freed == 0, "freed while the receiver still holds it");
    wire_msg_free(&m);
    EXPECT(freed == 1, "donated buffer freed %d times after receive", freed);
    int64_t k = 16;
    wire_out_init(&o, "blobs");
    wire_out_array(&o, "small", WIRE_U8, 1, &k, unsent);
    wire_out_donate(&o, "small", count_free, NULL);
    wire_out_free(&o);
    EXPECT(freed == 2, "unsent donated buffer freed %d times", freed - 1);
}

int main(void)
{
    setenv("SRM_QUIET", "1", 0);
    stage_t *st = stage_new("test_wire");
    stage_sock_opts_t o = stage_sock_defaults();
    o.hwm = 16;
    tx = stage_socket(st, ZMQ_PUSH, "inproc://wire", STAGE_BIND, &o, err);
    rx = stage_socket(st, ZMQ_PULL, "inproc://wire", STAGE_CONNECT, &o, err);
    if (!tx || !rx) DIE("sockets: %s", err);
    test_generic_rejects();
    test_alignment();
    test_finite();
    test_typed_roundtrips();
    test_typed_rejects();
    test_recv_drains();
    test_donate();
    stage_destroy(&st);
    return test_summary();
}
