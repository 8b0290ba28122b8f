/*
patch_sink.c -- a consumer of patch batches for benchmarks and tests (stands in for the trainer).
  patch_sink ENDPOINT [--seconds T] [--batches N] [--warmup S] [--stall-after K] [--log-batches 1]
             [--check 1] [--classes K] [--io-threads N | --peers N] [--hwm N] [--allow-remote]
             [--curve-server KEY --authorized FILE]
Binds PULL at ENDPOINT and counts. By default it only receives: wire_recv parses frame 0's
msgpack header and checks every frame's size against its shape and dtype (no copy of the arrays),
then the images/labels/positive arrays are checked to agree on B; nothing touches the voxels, so
the figure is what ZeroMQ can deliver. --check 1 (or --classes K) also decodes the batch fully and
checks finite images and labels < K, as a trainer would (per-voxel work, slower).
ZeroMQ I/O threads: --io-threads N, else one per expected peer (--peers, default the core count)
up to cores - 1 and 8: each connection is served by one I/O thread, which does the reads.
Prints one JSON line on stdout at the end:
  {"batches", "patches", "bytes", "seconds", "messages_per_s", "patches_per_s", "gb_per_s",
   "positive", "bad", "io_threads"}
where seconds and the rates count only after the warm-up (first batch + S seconds).
--stall-after K: stop reading after K batches and just wait for SIGTERM (back-pressure tests).
--log-batches 1: also print "batch <unix time> <aug_seed> <seq> <B> <bytes>" per batch.
*/
#include "stage.h"
#include "wire_msgs.h"
#include "check.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    double seconds, warmup;
    long max_batches, stall_after;
    int classes, log_batches, check, io_threads, peers, hwm, allow_remote;
    const char *curve_key, *authorized;
} sink_cfg_t;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int parse(sink_cfg_t *c, int argc, char **argv)
{
    memset(c, 0, sizeof *c);
    c->stall_after = -1;
    c->hwm = 2;                                 // the trainer's patches high-water mark
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--allow-remote")) { c->allow_remote = 1; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "patch_sink: %s needs a value\n", a); return -1; }
        const char *v = argv[++i];
        if (!strcmp(a, "--seconds")) c->seconds = atof(v);
        else if (!strcmp(a, "--batches")) c->max_batches = atol(v);
        else if (!strcmp(a, "--warmup")) c->warmup = atof(v);
        else if (!strcmp(a, "--stall-after")) c->stall_after = atol(v);
        else if (!strcmp(a, "--classes")) c->classes = atoi(v);
        else if (!strcmp(a, "--log-batches")) c->log_batches = atoi(v);
        else if (!strcmp(a, "--check")) c->check = atoi(v);
        else if (!strcmp(a, "--io-threads")) c->io_threads = atoi(v);
        else if (!strcmp(a, "--peers")) c->peers = atoi(v);
        else if (!strcmp(a, "--hwm")) c->hwm = atoi(v);
        else if (!strcmp(a, "--curve-server")) c->curve_key = v;
        else if (!strcmp(a, "--authorized")) c->authorized = v;
        else { fprintf(stderr, "patch_sink: unknown flag %s\n", a); return -1; }
    }
    if (c->classes > 0) c->check = 1;
    if (c->io_threads < 0 || c->io_threads > 64 || c->peers < 0 || c->hwm < 1 || !c->curve_key != !c->authorized) {
        fprintf(stderr, "patch_sink: bad values (--io-threads 0..64, --hwm >= 1, --curve-server with --authorized)\n");
        return -1;
    }
    if (!c->io_threads) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        int peers = c->peers > 0 ? c->peers : (int)cores;
        int cap = cores > 2 ? (int)cores - 1 : 1;          // leave a core to the receiving thread
        c->io_threads = peers < cap ? peers : cap;
        if (c->io_threads > 8) c->io_threads = 8;          // ~1 GB/s each: 8 is past any one consumer's need
        if (c->io_threads < 1) c->io_threads = 1;
    }
    return 0;
}

// The cheap check: a patch_batch whose arrays agree on B (sizes vs shapes were checked by
// wire_recv). Fills *B and positive. 0 or -1 with err.
static int count_batch(const wire_msg_t *m, int *B, const uint8_t **positive, char *err)
{
    const wire_array_t *img, *lab, *pos;
    if (strcmp(m->type, "patch_batch")) return set_err(err, "message type '%s', not patch_batch", m->type);
    if (wire_need_array(m, "images", WIRE_DT(WIRE_F32) | WIRE_DT(WIRE_F16) | WIRE_DT(WIRE_BF16), 5, 1, &img, err) ||
        wire_need_array(m, "labels", WIRE_DT(WIRE_U8), 4, 1, &lab, err) ||
        wire_need_array(m, "positive", WIRE_DT(WIRE_U8), 1, 1, &pos, err))
        return -1;
    if (img->shape[0] < 1 || lab->shape[0] != img->shape[0] || pos->shape[0] != img->shape[0] ||
        memcmp(lab->shape + 1, img->shape + 2, 3 * sizeof(int64_t)))
        return set_err(err, "images, labels and positive disagree on the batch shape");
    *B = (int)img->shape[0];
    *positive = pos->data;
    return 0;
}

// The full check (--check 1): decode as the trainer does, finite images, labels < classes.
static int check_batch(const wire_msg_t *m, int classes, char *err)
{
    wire_patch_batch_t p;
    if (wire_decode_patch_batch(m, &p, err) < 0) return -1;
    int64_t bad = wire_first_nonfinite(wire_find(m, "images"));
    int rc = 0;
    if (bad >= 0) rc = set_err(err, "patch_batch %llu: image value %lld is not finite", (unsigned long long)p.seq, (long long)bad);
    else if (classes > 0 && wire_labels_check(p.labels, (size_t)p.B * p.D * p.H * p.W, classes) >= 0)
        rc = set_err(err, "patch_batch %llu: a label is >= %d", (unsigned long long)p.seq, classes);
    wire_patch_batch_free(&p);
    return rc;
}

static size_t msg_bytes(wire_msg_t *m)
{
    size_t n = 0;
    for (int i = 0; i < m->nframes; i++) n += zmq_msg_size(&m->frames[i]);
    return n;
}

int main(int argc, char **argv)
{
    sink_cfg_t c;
    if (argc < 2 || argv[1][0] == '-' || parse(&c, argc, argv)) {
        fprintf(stderr, "usage: patch_sink ENDPOINT [--seconds T] [--batches N] [--warmup S] [--stall-after K] "
                        "[--log-batches 1] [--check 1] [--classes K] [--io-threads N | --peers N] [--hwm N] "
                        "[--allow-remote] [--curve-server KEY --authorized FILE]\n");
        return 2;
    }
    stage_malloc_for_big_frames();             // before any thread (ZeroMQ's) allocates
    stage_t *st = stage_new("patch_sink");
    char err[ERR_LEN];
    // Must be set before the first socket: the context starts its I/O threads then.
    if (zmq_ctx_set(stage_ctx(st), ZMQ_IO_THREADS, c.io_threads))
        DIE("ZMQ_IO_THREADS=%d: %s", c.io_threads, zmq_strerror(zmq_errno()));
    stage_sock_opts_t o = stage_sock_defaults();
    o.hwm = c.hwm;
    o.allow_remote = c.allow_remote;
    if (c.curve_key) {
        if (stage_curve_authorize(st, c.authorized, err)) DIE("%s", err);
        o.curve_secret = c.curve_key;
        o.curve_server = 1;
    }
    void *s = stage_socket(st, ZMQ_PULL, argv[1], STAGE_BIND, &o, err);
    if (!s) DIE("%s", err);
    log_msg('I', "receiving on %s with %d ZeroMQ I/O threads%s", argv[1], c.io_threads, c.check ? ", full checks" : "");
    wire_msg_t m;
    wire_msg_init(&m);
    long batches = 0, patches = 0, positive = 0, bad = 0, c_msgs = 0, c_patches = 0;
    size_t c_bytes = 0;
    double t_first = 0, t_start = 0, t_end = 0;
    int done = 0;
    while (!done && !stage_stopping(st)) {
        if (c.stall_after >= 0 && batches >= c.stall_after) {  // read nothing more: only signals wake us
            zmq_pollitem_t none[1];
            stage_poll(st, none, 0, 1000);
            continue;
        }
        stage_event_t e = stage_wait(st, s, 500);
        if (e == STAGE_STOP) break;
        if (c.seconds > 0 && t_start > 0 && now_s() - t_start >= c.seconds) break;
        if (e != STAGE_READY) continue;
        // Take everything that is waiting before polling again.
        for (;;) {
            int rc = wire_recv(s, &m, ZMQ_DONTWAIT, err);
            if (rc == WIRE_AGAIN) break;
            double t = now_s();
            int B = 0;
            const uint8_t *pos = NULL;
            if (rc < 0 || count_batch(&m, &B, &pos, err) || (c.check && check_batch(&m, c.classes, err))) {
                log_msg('W', "bad message from %s: %s", m.peer, err);
                bad++;
                continue;
            }
            size_t bytes = msg_bytes(&m);
            batches++;
            patches += B;
            for (int b = 0; b < B; b++) positive += pos[b] != 0;
            if (c.log_batches) {
                uint64_t seed = 0, seq = 0;
                wire_get_u64(&m, "aug_seed", &seed, 0, err);
                wire_get_u64(&m, "seq", &seq, 0, err);
                struct timespec rt;
                clock_gettime(CLOCK_REALTIME, &rt);
                printf("batch %.3f %llu %llu %d %zu\n", rt.tv_sec + 1e-9 * rt.tv_nsec, (unsigned long long)seed,
                       (unsigned long long)seq, B, bytes);
                fflush(stdout);
            }
            if (!t_first) t_first = t;
            if (!t_start && t - t_first >= c.warmup) t_start = t;
            else if (t_start) { c_msgs++; c_patches += B; c_bytes += bytes; t_end = t; }
            if (c.stall_after >= 0 && batches >= c.stall_after) break;      // the outer loop stalls
            if ((c.max_batches && batches >= c.max_batches) || (c.seconds > 0 && t_start > 0 && t - t_start >= c.seconds)) {
                done = 1;
                break;
            }
        }
    }
    wire_msg_free(&m);
    double dt = t_end > t_start ? t_end - t_start : 0;
    printf("{\"batches\": %ld, \"patches\": %ld, \"bytes\": %zu, \"seconds\": %.3f, \"messages_per_s\": %.2f, "
           "\"patches_per_s\": %.2f, \"gb_per_s\": %.3f, \"positive\": %ld, \"bad\": %ld, \"io_threads\": %d}\n",
           batches, patches, c_bytes, dt, dt > 0 ? c_msgs / dt : 0.0, dt > 0 ? c_patches / dt : 0.0,
           dt > 0 ? c_bytes / dt / 1e9 : 0.0, positive, bad, c.io_threads);
    fflush(stdout);
    stage_destroy(&st);
    return bad ? 1 : 0;
}
