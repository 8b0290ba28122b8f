/*
stage_internal.h -- the stage_t struct, shared by stage.c (sockets, signals, polling) and
stage_curve.c (key files, ZAP handler). Not for stages: they use stage.h only.
*/
#ifndef SRM_STAGE_INTERNAL_H
#define SRM_STAGE_INTERNAL_H
#include "stage.h"
#include <pthread.h>
#include <stdint.h>

#define STAGE_MAX_SOCKS 32

struct stage {
    char name[64];
    void *ctx;
    void *socks[STAGE_MAX_SOCKS];   // every socket stage_socket opened, closed by stage_destroy
    int nsocks;
    int stop;                       // set by stage_stop
    // ZAP handler (CURVE authentication), started by stage_curve_authorize
    pthread_t zap_thread;
    int zap_running;
    void *zap_sock;                 // REP on inproc://zeromq.zap.01, used only by the thread
    uint8_t (*keys)[32];            // authorised client public keys (binary), immutable once started
    int nkeys;
    long refused;                   // handshakes refused (atomic access)
};

// Set the CURVE options of opts on socket s (nothing when opts asks for no CURVE). 0 or -1.
int stage_curve_apply(stage_t *st, void *s, const stage_sock_opts_t *o, char *err);
// Join the ZAP thread after zmq_ctx_shutdown (no-op when none runs).
void stage_zap_stop(stage_t *st);

#endif
