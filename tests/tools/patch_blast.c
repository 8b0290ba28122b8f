/*
patch_blast.c -- a producer of patch batches as fast as ZeroMQ takes them, to measure how much
one consumer (patch_sink, the trainer) can take in, without any augmentation cost in the way.
  patch_blast ENDPOINT [--seconds T] [--connections K] [--batch B] [--channels C] [--patch N]
              [--dtype f32|f16|bf16] [--hwm N] [--curve-client KEY --server-key FILE]
One valid patch_batch (B x C x N^3 images of a finite ramp, labels 0..3, all positive) is built
once; K threads each connect their own PUSH socket (K connections, like K augmenters) and send
it over and over: the header frame is re-packed per message (it carries seq), images and labels
are handed to ZeroMQ with zmq_msg_init_data on the one shared buffer (no copy, no free).
Prints one JSON line: {"connections", "messages", "bytes", "seconds", "messages_per_s", "gb_per_s"}.
*/
#include "stage.h"
#include "wire_msgs.h"
#include "check.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_CONN 64

typedef struct {
    void *sock;
    const wire_patch_batch_t *proto;
    double t_end;
    atomic_int *stop;
    long messages;
    size_t bytes;
    char err[ERR_LEN];
} sender_t;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

// The shared buffers live until exit: ZeroMQ "frees" them with this no-op.
static void keep(void *data, void *hint) { (void)data; (void)hint; }

static void *sender_main(void *arg)
{
    sender_t *s = arg;
    wire_patch_batch_t p = *s->proto;
    while (!atomic_load(s->stop) && now_s() < s->t_end) {
        wire_out_t o;
        if (wire_encode_patch_batch(&o, &p, s->err)) { wire_out_free(&o); atomic_store(s->stop, 1); break; }
        wire_out_donate(&o, "images", keep, NULL);
        wire_out_donate(&o, "labels", keep, NULL);
        // Blocking send bounded by SNDTIMEO (set on the socket) so the stop flag is seen.
        int rc = wire_send(s->sock, &o, 0, s->err);
        if (rc == 0) {
            wire_frame_t fr[WIRE_MAX_ARRAYS + 1];
            int n = wire_out_frames(&o, fr);
            for (int i = 0; i < n; i++) s->bytes += fr[i].len;
            s->messages++;
            p.seq++;
        }
        wire_out_free(&o);
        if (rc < 0) { atomic_store(s->stop, 1); break; }
    }
    return NULL;
}

static int dtype_of(const char *s, wire_dtype_t *dt)
{
    if (!strcmp(s, "f32")) *dt = WIRE_F32;
    else if (!strcmp(s, "f16")) *dt = WIRE_F16;
    else if (!strcmp(s, "bf16")) *dt = WIRE_BF16;
    else return -1;
    return 0;
}

int main(int argc, char **argv)
{
    const char *usage = "usage: patch_blast ENDPOINT [--seconds T] [--connections K] [--batch B] [--channels C] "
                        "[--patch N] [--dtype f32|f16|bf16] [--hwm N] [--curve-client KEY --server-key FILE]\n";
    if (argc < 2 || argv[1][0] == '-') { fputs(usage, stderr); return 2; }
    double seconds = 10;
    int conns = 1, B = 2, C = 2, P = 128, hwm = 2;
    wire_dtype_t dt = WIRE_F32;
    const char *curve_key = NULL, *server_key = NULL;
    for (int i = 2; i < argc; i += 2) {
        if (i + 1 >= argc) { fprintf(stderr, "patch_blast: %s needs a value\n", argv[i]); return 2; }
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--seconds")) seconds = atof(v);
        else if (!strcmp(a, "--connections")) conns = atoi(v);
        else if (!strcmp(a, "--batch")) B = atoi(v);
        else if (!strcmp(a, "--channels")) C = atoi(v);
        else if (!strcmp(a, "--patch")) P = atoi(v);
        else if (!strcmp(a, "--hwm")) hwm = atoi(v);
        else if (!strcmp(a, "--dtype")) { if (dtype_of(v, &dt)) { fprintf(stderr, "patch_blast: --dtype f32, f16 or bf16\n"); return 2; } }
        else if (!strcmp(a, "--curve-client")) curve_key = v;
        else if (!strcmp(a, "--server-key")) server_key = v;
        else { fprintf(stderr, "patch_blast: unknown flag %s\n%s", a, usage); return 2; }
    }
    if (!(seconds > 0) || conns < 1 || conns > MAX_CONN || B < 1 || B > 64 || C < 1 || C > 16 || P < 1 || P > 512 ||
        hwm < 1 || !curve_key != !server_key) {
        fprintf(stderr, "patch_blast: bad option values (connections 1..%d, batch 1..64, channels 1..16, patch 1..512, "
                        "--curve-client and --server-key together)\n%s", MAX_CONN, usage);
        return 2;
    }

    // One batch, built once. Values are a finite ramp in [-2, 2) so checking consumers accept it.
    size_t pn = (size_t)P * P * P, nimg = (size_t)B * C * pn, isz = dt == WIRE_F32 ? 4 : 2;
    void *images = xmalloc(nimg * isz);
    uint8_t *labels = xmalloc((size_t)B * pn);
    for (size_t i = 0; i < nimg; i++) {
        float x = (float)(i % 1024) / 256.0f - 2.0f;           // multiples of 1/256: exact in f16, bf16
        uint32_t u;
        memcpy(&u, &x, 4);
        if (dt == WIRE_F32) ((float *)images)[i] = x;
        else if (dt == WIRE_BF16) ((uint16_t *)images)[i] = (uint16_t)(u >> 16);
        else {                                                  // f16 of a normal float, exact here
            uint16_t h = 0;
            if (x != 0) {
                int e = (int)((u >> 23) & 0xff) - 127 + 15;
                h = (uint16_t)(((u >> 16) & 0x8000) | ((uint32_t)e << 10) | ((u >> 13) & 0x3ff));
            }
            ((uint16_t *)images)[i] = h;
        }
    }
    for (size_t i = 0; i < (size_t)B * pn; i++) labels[i] = (uint8_t)(i % 4);
    int32_t *origins = xcalloc((size_t)B * 3, sizeof(int32_t));
    uint8_t *positive = xmalloc((size_t)B);
    memset(positive, 1, (size_t)B);
    char (*ids)[WIRE_ID_LEN] = xcalloc((size_t)B, WIRE_ID_LEN);
    for (int b = 0; b < B; b++) snprintf(ids[b], WIRE_ID_LEN, "blast_%d", b);
    wire_patch_batch_t proto = { .seq = 0, .aug_seed = 0, .B = B, .C = C, .D = P, .H = P, .W = P,
                                 .image_dtype = dt, .images = images, .labels = labels, .origins = origins,
                                 .positive = positive, .case_ids = ids, .num_classes = 4 };

    stage_t *st = stage_new("patch_blast");
    char err[ERR_LEN];
    int io = conns < 8 ? conns : 8;                             // one I/O thread per connection, up to 8
    if (zmq_ctx_set(stage_ctx(st), ZMQ_IO_THREADS, io)) DIE("ZMQ_IO_THREADS=%d: %s", io, zmq_strerror(zmq_errno()));
    stage_sock_opts_t o = stage_sock_defaults();
    o.hwm = hwm;
    o.sndtimeo_ms = 200;
    o.linger_ms = 0;
    o.curve_secret = curve_key;
    o.curve_server_public = server_key;
    atomic_int stop;
    atomic_init(&stop, 0);
    sender_t *snd = xcalloc((size_t)conns, sizeof *snd);
    for (int k = 0; k < conns; k++) {
        snd[k].sock = stage_socket(st, ZMQ_PUSH, argv[1], STAGE_CONNECT, &o, err);
        if (!snd[k].sock) DIE("%s", err);
        snd[k].proto = &proto;
        snd[k].stop = &stop;
    }
    // Wait for the consumer: the clock starts when the first connection can take a message.
    while (!stage_stopping(st) && stage_wait_out(st, snd[0].sock, 1000) != STAGE_READY) {}
    double t0 = now_s();
    pthread_t th[MAX_CONN];
    for (int k = 0; k < conns; k++) {
        snd[k].t_end = t0 + seconds;
        int rc = pthread_create(&th[k], NULL, sender_main, &snd[k]);
        if (rc) DIE("pthread_create: %s", strerror(rc));
    }
    // The main thread only watches for SIGINT/SIGTERM (the senders block signals' effects only
    // through the flag).
    while (!atomic_load(&stop) && now_s() < t0 + seconds) {
        zmq_pollitem_t none[1];
        if (stage_poll(st, none, 0, 100) == STAGE_STOP) atomic_store(&stop, 1);
    }
    atomic_store(&stop, 1);
    long msgs = 0;
    size_t bytes = 0;
    int bad = 0;
    for (int k = 0; k < conns; k++) {
        pthread_join(th[k], NULL);
        msgs += snd[k].messages;
        bytes += snd[k].bytes;
        if (snd[k].err[0]) { log_msg('E', "connection %d: %s", k, snd[k].err); bad = 1; }
    }
    double dt_s = now_s() - t0;
    printf("{\"connections\": %d, \"messages\": %ld, \"bytes\": %zu, \"seconds\": %.3f, \"messages_per_s\": %.2f, "
           "\"gb_per_s\": %.3f}\n", conns, msgs, bytes, dt_s, msgs / dt_s, bytes / dt_s / 1e9);
    fflush(stdout);
    stage_destroy(&st);                 // linger 0: messages still queued are dropped
    free(snd);
    free(images);
    free(labels);
    free(origins);
    free(positive);
    free(ids);
    return bad;
}
