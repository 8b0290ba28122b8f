/*
wire_emit.c -- send example messages whose every value follows a formula, so a client written
from docs/protocol.md alone can check it decodes them right (tests/cpu/test_wire_python.py).
  wire_emit ENDPOINT           connect a PUSH socket to ENDPOINT and send the examples below
  wire_emit --corpus DIR       write every message type (and edge cases) as fuzzer seeds in DIR,
                               in tests/fuzz/fuzz_wire.c's length-prefixed frame format
Formulas (W fastest; c, d, h, w, b are indices):
  volume "vol_f32"     image f32 [2,3,4,5] = 1000c + 100d + 10h + w; labels u8 [3,4,5] = (d+h+w) % 3
  volume "vol_f16"     image f16 [1,2,3,4] = (d+h+w) / 4; no labels
  patch_batch seq 7    images f32 [2,1,4,5,6] = 10000b + 1000c + 100d + 10h + w + 0.5;
                       labels u8 = (b+d+h+w) % 2; origins [b, 2b, -b]; positive = (b+1) % 2
  patch_batch seq 8    images bf16 [1,2,2,2,2] = (c+d+h+w) / 2 (exact in bf16); the rest as above
  checkpoint step 3    blob u8 [100] = i % 251, config {"model":"tiny","lr":0.001}
*/
#include "wire.h"
#include "wire_msgs.h"
#include "stage.h"
#include "check.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OUT 16
static wire_out_t outs[MAX_OUT];
static int nout;
static char err[ERR_LEN];

static uint16_t f32_to_f16(float x)      // exact for the small multiples of 1/4 used here
{
    if (x == 0) return 0;
    int e;
    float m = frexpf(x, &e);                // x = m * 2^e, 0.5 <= m < 1
    uint16_t mant = (uint16_t)((m * 2 - 1) * 1024);
    return (uint16_t)(((e - 1 + 15) << 10) | mant);
}

static uint16_t f32_to_bf16(float x)     // truncation; exact for the values used here
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)(u >> 16);
}

static void build_all(void)
{
    static float v1[2 * 3 * 4 * 5];
    static uint8_t l1[3 * 4 * 5];
    for (int c = 0; c < 2; c++) for (int d = 0; d < 3; d++) for (int h = 0; h < 4; h++) for (int w = 0; w < 5; w++) {
        v1[((c * 3 + d) * 4 + h) * 5 + w] = (float)(1000 * c + 100 * d + 10 * h + w);
        l1[(d * 4 + h) * 5 + w] = (uint8_t)((d + h + w) % 3);
    }
    wire_volume_t a = { .case_id = "vol_f32", .index = 0, .epoch = 1, .C = 2, .D = 3, .H = 4, .W = 5,
                        .image_dtype = WIRE_F32, .image = v1, .labels = l1, .spacing = { 1, 1.5, 2 },
                        .affine = { 1, 0, 0, -10, 0, 1.5, 0, -20, 0, 0, 2, -30, 0, 0, 0, 1 }, .num_classes = 3 };
    if (wire_encode_volume(&outs[nout++], &a, err)) DIE("%s", err);

    static uint16_t v2[2 * 3 * 4];
    for (int d = 0; d < 2; d++) for (int h = 0; h < 3; h++) for (int w = 0; w < 4; w++)
        v2[(d * 3 + h) * 4 + w] = f32_to_f16((float)(d + h + w) / 4);
    wire_volume_t b = { .case_id = "vol_f16", .index = -1, .epoch = -1, .C = 1, .D = 2, .H = 3, .W = 4,
                        .image_dtype = WIRE_F16, .image = v2, .spacing = { 1, 1, 1 },
                        .affine = { 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1 } };
    if (wire_encode_volume(&outs[nout++], &b, err)) DIE("%s", err);

    enum { B = 2, D = 4, H = 5, W = 6 };
    static float p1[B * D * H * W];
    static uint8_t pl[B * D * H * W];
    static int32_t org[B * 3];
    static uint8_t pos[B];
    static char ids[B][WIRE_ID_LEN];
    for (int i = 0; i < B; i++) {
        org[3 * i] = i; org[3 * i + 1] = 2 * i; org[3 * i + 2] = -i;
        pos[i] = (uint8_t)((i + 1) % 2);
        snprintf(ids[i], WIRE_ID_LEN, "case_%d", i);
        for (int d = 0; d < D; d++) for (int h = 0; h < H; h++) for (int w = 0; w < W; w++) {
            p1[((i * D + d) * H + h) * W + w] = (float)(10000 * i + 100 * d + 10 * h + w) + 0.5f;
            pl[((i * D + d) * H + h) * W + w] = (uint8_t)((i + d + h + w) % 2);
        }
    }
    wire_patch_batch_t p = { .seq = 7, .aug_seed = 123456789012345ull, .B = B, .C = 1, .D = D, .H = H, .W = W,
                             .image_dtype = WIRE_F32, .images = p1, .labels = pl, .origins = org, .positive = pos,
                             .case_ids = ids, .num_classes = 2 };
    if (wire_encode_patch_batch(&outs[nout++], &p, err)) DIE("%s", err);

    static uint16_t p2[2 * 2 * 2 * 2];
    static uint8_t pl2[2 * 2 * 2];
    for (int c = 0; c < 2; c++) for (int d = 0; d < 2; d++) for (int h = 0; h < 2; h++) for (int w = 0; w < 2; w++) {
        p2[((c * 2 + d) * 2 + h) * 2 + w] = f32_to_bf16((float)(c + d + h + w) / 2);
        pl2[(d * 2 + h) * 2 + w] = (uint8_t)((d + h + w) % 2);
    }
    wire_patch_batch_t q = { .seq = 8, .aug_seed = 1, .B = 1, .C = 2, .D = 2, .H = 2, .W = 2, .image_dtype = WIRE_BF16,
                             .images = p2, .labels = pl2, .origins = org, .positive = pos, .case_ids = ids };
    if (wire_encode_patch_batch(&outs[nout++], &q, err)) DIE("%s", err);

    static uint8_t blob[100];
    for (int i = 0; i < 100; i++) blob[i] = (uint8_t)(i % 251);
    wire_checkpoint_t k = { .step = 3, .kind = WIRE_CKPT_PERIODIC, .config_json = "{\"model\":\"tiny\",\"lr\":0.001}",
                            .blob = blob, .blob_len = sizeof blob };
    wire_sha256_hex(blob, sizeof blob, k.sha256);
    if (wire_encode_checkpoint(&outs[nout++], &k, err)) DIE("%s", err);
}

// Control messages and edge cases: only for the corpus.
static void build_corpus_extras(void)
{
    wire_checkpoint_ack_t ack = { .step = 3, .ok = 0, .error = "disk full" };
    memset(ack.sha256, 'a', 64);
    if (wire_encode_checkpoint_ack(&outs[nout++], &ack, err)) DIE("%s", err);
    static float dice[2 * 3] = { 0.5f, 0.25f, 1, 0, 0.75f, 0.125f };
    static char cids[2][WIRE_ID_LEN] = { "c1", "c2" };
    wire_metrics_t m = { .step = 10, .wall_time = 1.5, .nvalues = 2, .json = "{\"k\":[1,2]}", .ncases = 2, .case_ids = cids,
                         .narrays = 1 };
    strcpy(m.names[0], "mean_dice"); m.values[0] = 0.5;
    strcpy(m.names[1], "hd95"); m.values[1] = NAN;
    m.arrays[0] = (wire_array_t){ .name = "dice", .dtype = WIRE_F32, .rank = 2, .shape = { 2, 3 }, .data = dice };
    if (wire_encode_metrics(&outs[nout++], &m, err)) DIE("%s", err);
    wire_heartbeat_t hb = { .stage = "augmenter", .pid = 12, .seq = 3, .time = 2.5 };
    if (wire_encode_heartbeat(&outs[nout++], &hb, err)) DIE("%s", err);
    wire_ready_t rd = { .stage = "trainer", .pid = 1, .ncaps = 2, .caps = { "cuda", "bf16" } };
    if (wire_encode_ready(&outs[nout++], &rd, err)) DIE("%s", err);
    wire_stop_t sp = { .reason = "end of run" };
    if (wire_encode_stop(&outs[nout++], &sp, err)) DIE("%s", err);
    wire_request_t rq = { .what = "validation_case", .index = 4, .seq = 9 };
    if (wire_encode_request(&outs[nout++], &rq, err)) DIE("%s", err);
    wire_error_t er = { .code = "not_found", .message = "no such case", .seq = 9 };
    if (wire_encode_error(&outs[nout++], &er, err)) DIE("%s", err);
}

static void write_seed(const char *dir, const char *name, wire_out_t *o)
{
    wire_frame_t fr[WIRE_MAX_ARRAYS + 1];
    int n = wire_out_frames(o, fr);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) DIE("%s: cannot create", path);
    for (int i = 0; i < n; i++) {
        uint32_t len = (uint32_t)fr[i].len;                 // little-endian length prefix
        if (fwrite(&len, 4, 1, f) != 1 || (len && fwrite(fr[i].data, 1, len, f) != len)) DIE("%s: write failed", path);
    }
    if (fclose(f)) DIE("%s: close failed", path);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--corpus")) {
        build_all();
        build_corpus_extras();
        static const char *names[] = { "volume_f32", "volume_f16", "patch_batch_f32", "patch_batch_bf16", "checkpoint",
                                       "checkpoint_ack", "metrics", "heartbeat", "ready", "stop", "request", "error" };
        for (int i = 0; i < nout; i++) write_seed(argv[2], names[i], &outs[i]);
        for (int i = 0; i < nout; i++) wire_out_free(&outs[i]);
        return 0;
    }
    if (argc != 2) DIE("usage: wire_emit ENDPOINT | wire_emit --corpus DIR");
    stage_t *st = stage_new("wire_emit");
    void *out = stage_socket(st, ZMQ_PUSH, argv[1], STAGE_CONNECT, NULL, err);
    if (!out) DIE("%s", err);
    build_all();
    int rc = 0;
    for (int i = 0; i < nout && rc == 0; i++) {
        stage_event_t ev = stage_wait_out(st, out, 10000);
        if (ev != STAGE_READY) { log_msg('E', "%s: no peer within 10 s", argv[1]); rc = 1; break; }
        if (wire_send(out, &outs[i], 0, err)) { log_msg('E', "send: %s", err); rc = 1; }
    }
    for (int i = 0; i < nout; i++) wire_out_free(&outs[i]);
    stage_destroy(&st);
    return rc;
}
