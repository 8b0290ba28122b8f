/*
patch_sink.c -- a consumer of patch batches for benchmarks and tests (stands in for the trainer).
  patch_sink ENDPOINT [--seconds T] [--batches N] [--warmup S] [--stall-after K] [--classes K]
             [--log-batches 1]
Binds PULL at ENDPOINT, decodes every batch (wire_decode_patch_batch), checks finite images and
labels below the class count, and prints one JSON line on stdout at the end:
  {"batches", "patches", "seconds", "patches_per_s", "positive", "bad", "senders"}
where seconds/patches_per_s count only after the warm-up (first batch + S seconds).
--stall-after K: stop reading after K batches and just wait for SIGTERM (back-pressure tests).
--log-batches 1: also print "batch <unix time> <aug_seed> <seq> <B>" per batch (join/leave tests).
*/
#include "stage.h"
#include "wire_msgs.h"
#include "check.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: patch_sink ENDPOINT [--seconds T] [--batches N] [--warmup S] [--stall-after K] [--classes K] [--log-batches 1]\n"); return 2; }
    double seconds = 0, warmup = 0;
    long max_batches = 0, stall_after = -1;
    int classes = 0, log_batches = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--batches")) max_batches = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--stall-after")) stall_after = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--classes")) classes = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--log-batches")) log_batches = atoi(argv[i + 1]);
        else { fprintf(stderr, "patch_sink: unknown flag %s\n", argv[i]); return 2; }
    }
    stage_t *st = stage_new("patch_sink");
    char err[ERR_LEN];
    void *s = stage_socket(st, ZMQ_PULL, argv[1], STAGE_BIND, NULL, err);
    if (!s) DIE("%s", err);
    wire_msg_t m;
    wire_msg_init(&m);
    long batches = 0, patches = 0, positive = 0, bad = 0, counted = 0;
    double t_first = 0, t_start = 0, t_end = 0;
    while (!stage_stopping(st)) {
        if (stall_after >= 0 && batches >= stall_after) {   // read nothing more: only signals wake us
            zmq_pollitem_t none[1];
            stage_poll(st, none, 0, 1000);
            continue;
        }
        stage_event_t e = stage_wait(st, s, 500);
        if (e == STAGE_STOP) break;
        double t = now_s();
        if (seconds > 0 && t_start > 0 && t - t_start >= seconds) break;
        if (e != STAGE_READY) continue;
        int rc = wire_recv(s, &m, ZMQ_DONTWAIT, err);
        if (rc == WIRE_AGAIN) continue;
        wire_patch_batch_t p;
        if (rc < 0 || wire_decode_patch_batch(&m, &p, err) < 0) {
            log_msg('W', "bad message from %s: %s", m.peer, err);
            bad++;
            continue;
        }
        const wire_array_t *img = wire_find(&m, "images");
        int ok = wire_first_nonfinite(img) < 0;
        if (classes > 0) ok &= wire_labels_check(p.labels, (size_t)p.B * p.D * p.H * p.W, classes) < 0;
        bad += !ok;
        batches++;
        patches += p.B;
        for (int b = 0; b < p.B; b++) positive += p.positive[b];
        if (log_batches) {
            struct timespec rt;
            clock_gettime(CLOCK_REALTIME, &rt);
            printf("batch %.3f %llu %llu %d\n", rt.tv_sec + 1e-9 * rt.tv_nsec, (unsigned long long)p.aug_seed,
                   (unsigned long long)p.seq, p.B);
            fflush(stdout);
        }
        if (!t_first) t_first = t;
        if (!t_start && t - t_first >= warmup) t_start = t;
        else if (t_start) { counted += p.B; t_end = t; }
        wire_patch_batch_free(&p);
        if (max_batches && batches >= max_batches) break;
    }
    wire_msg_free(&m);
    double dt = t_end > t_start ? t_end - t_start : 0;
    printf("{\"batches\": %ld, \"patches\": %ld, \"seconds\": %.3f, \"patches_per_s\": %.2f, \"positive\": %ld, \"bad\": %ld}\n",
           batches, patches, dt, dt > 0 ? counted / dt : 0.0, positive, bad);
    fflush(stdout);
    stage_destroy(&st);
    return bad ? 1 : 0;
}
