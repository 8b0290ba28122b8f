/*
stage.c -- context, sockets, signals and polling for every stage (see stage.h).

Signals follow zguide's interrupt.c: the handler only sets a flag and writes one byte to a
non-blocking self-pipe whose read end is polled next to the stage's sockets, so a stage blocked
in zmq_poll wakes up and shuts down cleanly. The CURVE key files and the ZAP handler are in
stage_curve.c.
*/
#define _GNU_SOURCE
#include "stage.h"
#include "stage_internal.h"
#include "check.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static int sig_pipe[2] = { -1, -1 };
static volatile sig_atomic_t sig_got;

static void on_signal(int signo)
{
    int saved = errno;
    sig_got = signo;
    ssize_t w = write(sig_pipe[1], "s", 1);         // a full pipe already wakes the poller
    (void)w;
    errno = saved;
}

static void signals_install(void)
{
    if (sig_pipe[0] < 0) {
        if (pipe2(sig_pipe, O_NONBLOCK | O_CLOEXEC)) DIE("pipe2: %s", strerror(errno));
    }
    char buf[64];
    while (read(sig_pipe[0], buf, sizeof buf) > 0) {}    // a new stage starts without a stop pending
    sig_got = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;                                // no SA_RESTART: blocking zmq calls return EINTR
    if (sigaction(SIGINT, &sa, NULL) || sigaction(SIGTERM, &sa, NULL)) DIE("sigaction: %s", strerror(errno));
    // A peer that vanishes must not kill us through a broken pipe (ZeroMQ uses MSG_NOSIGNAL, but
    // log pipes and helper fds do not).
    signal(SIGPIPE, SIG_IGN);
}

stage_sock_opts_t stage_sock_defaults(void)
{
    stage_sock_opts_t o;
    memset(&o, 0, sizeof o);
    o.hwm = 4;
    o.linger_ms = 1000;
    o.max_msg = (int64_t)2 << 30;
    o.heartbeat_ms = 1000;
    o.immediate = 1;
    o.sndtimeo_ms = -1;
    o.rcvtimeo_ms = -1;
    return o;
}

// ZeroMQ mallocs every large incoming frame in its I/O thread and the receiver frees it. A 2 x 2 x
// 128^3 f32 images frame (33.5 MB) is over glibc's largest mmap threshold (32 MiB), so each one
// would be a fresh mmap whose ~8,000 pages fault in (kernel zeroing) and are unmapped again:
// measured, that alone held one consumer (tests/tools/patch_sink) to 1.3 GB/s on the 2-core VM
// (3.9 GB/s with this). One arena, no mmap for big blocks and no trimming keep the freed frames'
// pages mapped for the next message; memory stays bounded by what can be in flight (high-water
// marks x peers), which the soak test's flat resident memory checks.
void stage_malloc_for_big_frames(void)
{
    if (!mallopt(M_ARENA_MAX, 1) || !mallopt(M_MMAP_MAX, 0) || !mallopt(M_TRIM_THRESHOLD, 1 << 30) ||
        !mallopt(M_TOP_PAD, 64 << 20))
        log_msg('W', "mallopt refused a setting: large frames will be page-faulted in");
}

// SRM_PARENT_PID (set by pipelines/lib.sh for the stages it starts): stop as on SIGTERM when
// that process ends -- also by kill -9, which it cannot pass on -- so a killed train.sh leaves
// no stage running on its run directory (a --resume would start a second pipeline beside it).
// Stages started by hand keep running on their own.
int stage_parent_death_signal(stage_t *st, int signo)
{
    (void)st;
    const char *s = getenv("SRM_PARENT_PID");
    if (!s || !*s) return 0;
    if (prctl(PR_SET_PDEATHSIG, signo)) log_msg('W', "prctl(PR_SET_PDEATHSIG): %s", strerror(errno));
    return (long)getppid() != strtol(s, NULL, 10);      // it ended before the request above
}

static void stop_with_parent(void)
{
    if (stage_parent_death_signal(NULL, SIGTERM)) {
        log_msg('W', "the pipeline script (pid %s) is gone: stopping", getenv("SRM_PARENT_PID"));
        raise(SIGTERM);
    }
}

stage_t *stage_new(const char *name)
{
    stage_t *st = xcalloc(1, sizeof *st);
    snprintf(st->name, sizeof st->name, "%s", name);
    log_set_name(name);
    st->ctx = zmq_ctx_new();
    if (!st->ctx) DIE("zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    signals_install();
    stop_with_parent();
    return st;
}

void *stage_ctx(stage_t *st) { return st->ctx; }

void stage_close(stage_t *st, void **sock)
{
    if (!*sock) return;
    for (int i = 0; i < st->nsocks; i++)
        if (st->socks[i] == *sock) { st->socks[i] = st->socks[--st->nsocks]; break; }
    if (zmq_close(*sock)) log_msg('W', "zmq_close: %s", zmq_strerror(zmq_errno()));
    *sock = NULL;
}

void stage_destroy(stage_t **stp)
{
    stage_t *st = *stp;
    if (!st) return;
    while (st->nsocks) {
        void *s = st->socks[st->nsocks - 1];
        stage_close(st, &s);
    }
    if (zmq_ctx_shutdown(st->ctx)) log_msg('W', "zmq_ctx_shutdown: %s", zmq_strerror(zmq_errno()));
    stage_zap_stop(st);                             // its recv returns ETERM after the shutdown
    int rc;
    do rc = zmq_ctx_term(st->ctx); while (rc < 0 && zmq_errno() == EINTR);
    if (rc) log_msg('W', "zmq_ctx_term: %s", zmq_strerror(zmq_errno()));
    free(st->keys);
    free(st);
    *stp = NULL;
}

// ---- endpoints -------------------------------------------------------------------------------

int stage_endpoint_is_local(const char *ep)
{
    if (!strncmp(ep, "ipc://", 6) || !strncmp(ep, "inproc://", 9)) return 1;
    if (strncmp(ep, "tcp://", 6)) return 0;
    const char *host = ep + 6, *colon = strrchr(host, ':');
    if (!colon || colon == host) return 0;
    char h[128];
    size_t n = (size_t)(colon - host);
    if (n >= sizeof h) return 0;
    memcpy(h, host, n);
    h[n] = 0;
    if (!strcmp(h, "localhost") || !strcmp(h, "lo") || !strcmp(h, "[::1]") || !strcmp(h, "::1")) return 1;
    struct in_addr a;
    if (inet_pton(AF_INET, h, &a) == 1) return (ntohl(a.s_addr) >> 24) == 127;
    return 0;                                       // *, 0.0.0.0, interface names, other hosts
}

int stage_endpoint(void *sock, char *out, size_t cap, char *err)
{
    size_t len = cap;
    if (zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, out, &len))
        return set_err(err, "ZMQ_LAST_ENDPOINT: %s", zmq_strerror(zmq_errno()));
    return 0;
}

// ---- sockets ---------------------------------------------------------------------------------

static int setopt_int(void *s, int opt, int v, const char *what, char *err)
{
    if (zmq_setsockopt(s, opt, &v, sizeof v)) return set_err(err, "setsockopt %s=%d: %s", what, v, zmq_strerror(zmq_errno()));
    return 0;
}

static int apply_opts(stage_t *st, void *s, const stage_sock_opts_t *o, char *err)
{
    int64_t mx = o->max_msg;
    if (setopt_int(s, ZMQ_SNDHWM, o->hwm, "SNDHWM", err) || setopt_int(s, ZMQ_RCVHWM, o->hwm, "RCVHWM", err) ||
        setopt_int(s, ZMQ_LINGER, o->linger_ms, "LINGER", err) ||
        setopt_int(s, ZMQ_SNDTIMEO, o->sndtimeo_ms, "SNDTIMEO", err) ||
        setopt_int(s, ZMQ_RCVTIMEO, o->rcvtimeo_ms, "RCVTIMEO", err) ||
        setopt_int(s, ZMQ_IMMEDIATE, o->immediate ? 1 : 0, "IMMEDIATE", err))
        return -1;
    if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &mx, sizeof mx))
        return set_err(err, "setsockopt MAXMSGSIZE: %s", zmq_strerror(zmq_errno()));
    if (o->heartbeat_ms > 0) {
        // The peer is declared dead after three silent intervals (zguide's liveness of 3).
        int ttl = 3 * o->heartbeat_ms > 6553500 ? 6553500 : 3 * o->heartbeat_ms;
        if (setopt_int(s, ZMQ_HEARTBEAT_IVL, o->heartbeat_ms, "HEARTBEAT_IVL", err) ||
            setopt_int(s, ZMQ_HEARTBEAT_TIMEOUT, 3 * o->heartbeat_ms, "HEARTBEAT_TIMEOUT", err) ||
            setopt_int(s, ZMQ_HEARTBEAT_TTL, ttl, "HEARTBEAT_TTL", err))
            return -1;
    }
    return stage_curve_apply(st, s, o, err);
}

void *stage_socket(stage_t *st, int type, const char *endpoint, stage_mode_t mode,
                   const stage_sock_opts_t *opts, char *err)
{
    stage_sock_opts_t def = stage_sock_defaults();
    const stage_sock_opts_t *o = opts ? opts : &def;
    if (!endpoint || !*endpoint || strlen(endpoint) > 255) return set_err(err, "bad endpoint"), NULL;
    if (strncmp(endpoint, "tcp://", 6) && strncmp(endpoint, "ipc://", 6) && strncmp(endpoint, "inproc://", 9))
        return set_err(err, "%s: unsupported transport (tcp, ipc or inproc)", endpoint), NULL;
    if (mode == STAGE_BIND && !o->allow_remote && !stage_endpoint_is_local(endpoint))
        return set_err(err, "%s: refusing to bind a non-loopback address (needs the allow-remote option)",
                       endpoint), NULL;
    if ((o->curve_secret || o->curve_server) && strncmp(endpoint, "tcp://", 6))
        return set_err(err, "%s: CURVE is for tcp endpoints", endpoint), NULL;
    if (st->nsocks == STAGE_MAX_SOCKS) return set_err(err, "%s: too many sockets", endpoint), NULL;
    void *s = zmq_socket(st->ctx, type);
    if (!s) return set_err(err, "%s: zmq_socket: %s", endpoint, zmq_strerror(zmq_errno())), NULL;
    // ZMTP heartbeats travel in the same pipe as the data: on a PUSH/PULL pipe held at its HWM by
    // back-pressure the PING waits behind tens of MB the reader is not taking, the peer is declared
    // dead after three intervals and the queued messages are dropped and re-sent forever. So data
    // pipes never heartbeat (a dead local peer is still seen at once through the closed socket);
    // request/reply sockets (DEALER, ROUTER) keep them.
    stage_sock_opts_t eff = *o;
    if (type == ZMQ_PUSH || type == ZMQ_PULL) eff.heartbeat_ms = 0;
    char why[ERR_LEN];
    int rc = apply_opts(st, s, &eff, why);
    if (rc == 0) {
        rc = mode == STAGE_BIND ? zmq_bind(s, endpoint) : zmq_connect(s, endpoint);
        if (rc) snprintf(why, sizeof why, "%s: %s", mode == STAGE_BIND ? "bind" : "connect", zmq_strerror(zmq_errno()));
    }
    if (rc) {
        int zero = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);   // best effort: the socket is discarded
        zmq_close(s);
        set_err(err, "%s: %s", endpoint, why);
        return NULL;
    }
    st->socks[st->nsocks++] = s;
    return s;
}

// ---- waiting ---------------------------------------------------------------------------------

void stage_stop(stage_t *st) { st->stop = 1; }
int  stage_stopping(const stage_t *st) { return st->stop || sig_got; }
int  stage_signal(const stage_t *st) { (void)st; return sig_got; }

stage_event_t stage_poll(stage_t *st, zmq_pollitem_t *items, int n, int timeout_ms)
{
    ASSERT(n >= 0 && n < 16);
    zmq_pollitem_t all[17];
    memcpy(all, items, (size_t)n * sizeof *items);
    all[n] = (zmq_pollitem_t){ .socket = NULL, .fd = sig_pipe[0], .events = ZMQ_POLLIN, .revents = 0 };
    if (stage_stopping(st)) return STAGE_STOP;
    int rc = zmq_poll(all, n + 1, timeout_ms);
    for (int i = 0; i < n; i++) items[i].revents = all[i].revents;
    if (stage_stopping(st)) return STAGE_STOP;
    if (rc < 0) {
        if (zmq_errno() == EINTR) return STAGE_IDLE;   // some other signal: the caller loops
        if (zmq_errno() == ETERM) return STAGE_STOP;
        DIE("zmq_poll: %s", zmq_strerror(zmq_errno()));
    }
    return rc > 0 ? STAGE_READY : STAGE_IDLE;
}

static stage_event_t wait_one(stage_t *st, void *sock, short ev, int timeout_ms)
{
    zmq_pollitem_t it = { .socket = sock, .fd = 0, .events = ev, .revents = 0 };
    stage_event_t e = stage_poll(st, &it, 1, timeout_ms);
    if (e == STAGE_READY && !(it.revents & ev)) return STAGE_IDLE;
    return e;
}

stage_event_t stage_wait(stage_t *st, void *sock, int timeout_ms) { return wait_one(st, sock, ZMQ_POLLIN, timeout_ms); }
stage_event_t stage_wait_out(stage_t *st, void *sock, int timeout_ms) { return wait_one(st, sock, ZMQ_POLLOUT, timeout_ms); }

void stage_msg_peer(zmq_msg_t *msg, char *out, size_t cap)
{
    const char *a = zmq_msg_gets(msg, "Peer-Address");     // NULL for ipc/inproc
    if (a && *a) snprintf(out, cap, "tcp %s", a);
    else snprintf(out, cap, "local");
}
