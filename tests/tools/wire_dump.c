/*
wire_dump.c -- receive messages and print one machine-readable line each, so another client's
encoder can be checked against our decoder (tests/cpu/test_wire_python.py).
  wire_dump ENDPOINT COUNT     connect a PULL socket, receive COUNT messages (10 s timeout each)
Lines: "ok volume case=ID shape=C,D,H,W dtype=DT sum=S labels=SUM|none spacing=a,b,c"
       "ok patch_batch seq=N shape=B,C,D,H,W dtype=DT sum=S labels=SUM pos=p0,p1.. ids=a,b.. origins=..
        nonfinite=I"
       "ok TYPE" for the other types it can decode, "rejected: REASON" for anything invalid.
*/
#include "wire.h"
#include "wire_msgs.h"
#include "stage.h"
#include "check.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double value_at(const void *p, wire_dtype_t t, size_t i)
{
    switch (t) {
    case WIRE_F32: { float x; memcpy(&x, (const char *)p + 4 * i, 4); return x; }
    case WIRE_I16: { int16_t x; memcpy(&x, (const char *)p + 2 * i, 2); return x; }
    case WIRE_F16: { uint16_t x; memcpy(&x, (const char *)p + 2 * i, 2); return wire_half_to_float(x); }
    case WIRE_BF16: { uint16_t x; memcpy(&x, (const char *)p + 2 * i, 2); return wire_bf16_to_float(x); }
    default: return NAN;
    }
}

static double sum_of(const void *p, wire_dtype_t t, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += value_at(p, t, i);
    return s;
}

static unsigned long long sum_u8(const uint8_t *p, size_t n)
{
    unsigned long long s = 0;
    for (size_t i = 0; i < n; i++) s += p[i];
    return s;
}

static int describe(const wire_msg_t *m, char *err)
{
    if (!strcmp(m->type, "volume")) {
        wire_volume_t v;
        if (wire_decode_volume(m, &v, err)) return -1;
        size_t n = (size_t)v.C * v.D * v.H * v.W;
        printf("ok volume case=%s shape=%d,%d,%d,%d dtype=%s sum=%.6f labels=", v.case_id, v.C, v.D, v.H, v.W,
               wire_dtype_name(v.image_dtype), sum_of(v.image, v.image_dtype, n));
        if (v.labels) printf("%llu", sum_u8(v.labels, (size_t)v.D * v.H * v.W));
        else printf("none");
        printf(" spacing=%g,%g,%g\n", v.spacing[0], v.spacing[1], v.spacing[2]);
    } else if (!strcmp(m->type, "patch_batch")) {
        wire_patch_batch_t p;
        if (wire_decode_patch_batch(m, &p, err)) return -1;
        size_t vox = (size_t)p.D * p.H * p.W;
        printf("ok patch_batch seq=%llu shape=%d,%d,%d,%d,%d dtype=%s sum=%.6f labels=%llu pos=", (unsigned long long)p.seq,
               p.B, p.C, p.D, p.H, p.W, wire_dtype_name(p.image_dtype), sum_of(p.images, p.image_dtype, vox * p.C * p.B),
               sum_u8(p.labels, vox * p.B));
        for (int b = 0; b < p.B; b++) printf("%s%d", b ? "," : "", p.positive[b]);
        printf(" ids=");
        for (int b = 0; b < p.B; b++) printf("%s%s", b ? "," : "", p.case_ids[b]);
        printf(" origins=");
        for (int i = 0; i < 3 * p.B; i++) printf("%s%d", i ? "," : "", p.origins[i]);
        printf(" nonfinite=%lld\n", (long long)wire_first_nonfinite(wire_find(m, "images")));
        wire_patch_batch_free(&p);
    } else if (!strcmp(m->type, "heartbeat")) {
        wire_heartbeat_t h;
        if (wire_decode_heartbeat(m, &h, err)) return -1;
        printf("ok heartbeat stage=%s pid=%lld\n", h.stage, (long long)h.pid);
    } else if (!strcmp(m->type, "stop")) {
        wire_stop_t s;
        if (wire_decode_stop(m, &s, err)) return -1;
        printf("ok stop reason=%s\n", s.reason);
    } else {
        return set_err(err, "type '%s' not handled by wire_dump", m->type);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) DIE("usage: wire_dump ENDPOINT COUNT");
    int count = atoi(argv[2]);
    char err[ERR_LEN];
    stage_t *st = stage_new("wire_dump");
    void *in = stage_socket(st, ZMQ_PULL, argv[1], STAGE_CONNECT, NULL, err);
    if (!in) DIE("%s", err);
    wire_msg_t m;
    wire_msg_init(&m);
    int rc = 0;
    for (int i = 0; i < count; i++) {
        stage_event_t ev = stage_wait(st, in, 10000);
        if (ev != STAGE_READY) { log_msg('E', "message %d: none within 10 s", i); rc = 1; break; }
        int r = wire_recv(in, &m, 0, err);
        if (r == WIRE_AGAIN) { i--; continue; }
        if (r || describe(&m, err)) printf("rejected: %s\n", err);
        fflush(stdout);
    }
    wire_msg_free(&m);
    stage_destroy(&st);
    return rc;
}
