/*
exporter_serve.c -- srm-exporter's command line and its ROUTER loop (exporter.h lists the messages).
Every message is handled to the end with SIGINT/SIGTERM blocked, so a stop request finishes the
write in progress; the stage's self-pipe then reports STOP at the next wait. A message that
fails validation is logged with the peer and the reason and answered with `error` (checkpoints:
checkpoint_ack ok=false when the header names a step and sha256; metrics and predictions that
carry an `id`: `ack` ok=false); the loop always goes on.
*/
#define _GNU_SOURCE
#include "exporter_internal.h"
#include "check.h"
#include "durable_fs.h"
#include "stage.h"
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

exporter_cfg_t exporter_cfg_default(void)
{
    return (exporter_cfg_t){ .keep = 3, .every = 0, .plot_interval_s = 2.0 };
}

void exporter_usage(void)
{
    fprintf(stderr,
            "usage: srm-exporter --run-dir RUN [--bind ENDPOINT] [--keep K] [--every N]\n"
            "                    [--allow-remote] [--curve-server KEYFILE --authorized FILE]\n"
            "                    [--plot-interval SECONDS] [--run-id ID]\n"
            "  --bind      ROUTER endpoint (default ipc://RUN/sock/exporter; loopback only unless\n"
            "              --allow-remote)\n"
            "  --keep      keep the K newest step checkpoints besides latest and best (default 3)\n"
            "  --every     also keep every step that is a multiple of N for good (default 0: off)\n"
            "  --run-id    this run's id (train.sh: RUN/run.id): metrics and predictions that name\n"
            "              another run are refused, so an evaluator that outlived its run drops them\n");
}

#define EXPORTER_DRAIN_IDLE_S 10
#define EXPORTER_DRAIN_MAX_S 45

static volatile sig_atomic_t orphaned;     // SIGUSR2: the pipeline script that started us is gone
static void on_orphaned(int signo) { (void)signo; orphaned = 1; }

static int parse_u64(const char *flag, const char *s, uint64_t *out, uint64_t lo, uint64_t hi, char *err)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || errno || *s == '-' || v < lo || v > hi)
        return set_err(err, "%s: '%s' is not an integer in [%" PRIu64 ", %" PRIu64 "]", flag, s, lo, hi);
    *out = v;
    return 0;
}

int exporter_parse_args(exporter_cfg_t *cfg, int argc, char **argv, char *err)
{
    *cfg = exporter_cfg_default();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { exporter_usage(); return 1; }
        if (!strcmp(a, "--allow-remote")) { cfg->allow_remote = 1; continue; }
        if (i + 1 >= argc) return set_err(err, "%s: missing value (or unknown flag)", a);
        const char *v = argv[++i];
        uint64_t u;
        if (!strcmp(a, "--run-dir")) cfg->run_dir = v;
        else if (!strcmp(a, "--bind")) cfg->bind = v;
        else if (!strcmp(a, "--curve-server")) cfg->curve_secret = v;
        else if (!strcmp(a, "--authorized")) cfg->authorized = v;
        else if (!strcmp(a, "--run-id")) {
            if (!wire_token_ok(v)) return set_err(err, "--run-id: '%s' is not 1..63 of [A-Za-z0-9_.:-]", v);
            cfg->run_id = v;
        }
        else if (!strcmp(a, "--keep")) { if (parse_u64(a, v, &u, 1, 1000000, err)) return -1; cfg->keep = (int)u; }
        else if (!strcmp(a, "--every")) { if (parse_u64(a, v, &cfg->every, 0, UINT64_MAX / 2, err)) return -1; }
        else if (!strcmp(a, "--plot-interval")) {
            char *end;
            cfg->plot_interval_s = strtod(v, &end);
            if (!*v || *end || !(cfg->plot_interval_s >= 0 && cfg->plot_interval_s <= 3600))
                return set_err(err, "--plot-interval: '%s' is not a number of seconds in [0, 3600]", v);
        } else return set_err(err, "unknown flag %s", a);
    }
    if (!cfg->run_dir || !*cfg->run_dir) return set_err(err, "--run-dir is required");
    if (!cfg->curve_secret != !cfg->authorized) return set_err(err, "--curve-server and --authorized go together");
    return 0;
}

// ---- replies -----------------------------------------------------------------------------------

static void send_to(void *sock, zmq_msg_t *id, wire_out_t *o, const char *peer)
{
    char err[ERR_LEN];
    // ROUTER: the identity frame addresses the reply; an unknown or gone peer drops it silently.
    if (zmq_send(sock, zmq_msg_data(id), zmq_msg_size(id), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        wire_send(sock, o, ZMQ_DONTWAIT, err) != 0)
        log_msg('W', "%s: could not send '%s' reply", peer, o->type);
    wire_out_free(o);
}

static void reply_error(void *sock, zmq_msg_t *id, const char *peer, const char *code, const char *msg, uint64_t seq)
{
    wire_error_t e = { .seq = seq };
    snprintf(e.code, sizeof e.code, "%s", code);
    snprintf(e.message, sizeof e.message, "%s", msg);
    wire_out_t o;
    char err[ERR_LEN];
    if (wire_encode_error(&o, &e, err)) { log_msg('E', "error reply: %s", err); wire_out_free(&o); return; }
    send_to(sock, id, &o, peer);
}

static void reply_ack(void *sock, zmq_msg_t *id, const char *peer, uint64_t step, const char *sha, int ok, const char *why)
{
    wire_checkpoint_ack_t a = { .step = step, .ok = ok };
    snprintf(a.sha256, sizeof a.sha256, "%s", sha);
    snprintf(a.error, sizeof a.error, "%s", why ? why : "");
    wire_out_t o;
    char err[ERR_LEN];
    if (wire_encode_checkpoint_ack(&o, &a, err)) { log_msg('E', "ack: %s", err); wire_out_free(&o); return; }
    send_to(sock, id, &o, peer);
}

// An `ack` (docs/protocol.md) of a message, by its `id` when it had one (msg_id "": a prediction
// of an older sender): ok, or why not and whether a resend may succeed (retry: the exporter could
// not write it now) or never will; for a prediction its case and file.
static void reply_msg_ack(void *sock, zmq_msg_t *id, const char *peer, const char *of, const char *msg_id,
                         int ok, const char *why, int retry, const char *case_id)
{
    wire_out_t o;
    wire_out_init(&o, "ack");
    wire_put_str(&o, "of", of);
    if (*msg_id) wire_put_str(&o, "id", msg_id);
    wire_put_bool(&o, "ok", ok);
    if (!ok) {
        wire_put_str(&o, "error", why);
        wire_put_bool(&o, "retry", retry);
    }
    if (case_id) {
        char rel[WIRE_ID_LEN + 32];
        snprintf(rel, sizeof rel, "predictions/%s.nii.gz", case_id);
        wire_put_str(&o, "case_id", case_id);
        wire_put_str(&o, "path", rel);
    }
    send_to(sock, id, &o, peer);
}

// The message's optional `id` into out ("" when absent): 1..63 of [A-Za-z0-9_.:-]. 0 or -1 + err.
static int message_id(const wire_msg_t *m, char out[64], char *err)
{
    int rc = wire_get_str(m, "id", out, 64, 0, err);
    if (rc == 0 && wire_token_ok(out)) return 0;
    out[0] = 0;
    if (rc == 1) return 0;
    return rc < 0 ? -1 : set_err(err, "%s: 'id' must be 1..63 of [A-Za-z0-9_.:-]", m->type);
}

// ---- handlers ----------------------------------------------------------------------------------

static void on_checkpoint(exporter_t *ex, void *sock, zmq_msg_t *id, const wire_msg_t *m)
{
    char err[ERR_LEN];
    wire_checkpoint_t c;
    if (wire_decode_checkpoint(m, &c, err)) {
        uint64_t step;
        char sha[65], why[ERR_LEN];
        ex->n_rejected++;
        log_msg('W', "%s: checkpoint rejected: %s", m->peer, err);
        if (wire_get_u64(m, "step", &step, 1, why) == 0 && wire_get_str(m, "sha256", sha, sizeof sha, 1, why) == 0 &&
            strspn(sha, "0123456789abcdef") == 64)
            reply_ack(sock, id, m->peer, step, sha, 0, err);
        else reply_error(sock, id, m->peer, "bad_request", err, 0);
        return;
    }
    double t0 = fs_now();
    if (exporter_ckpt_store(ex, c.step, c.validated, c.blob, c.blob_len, c.sha256, err)) {
        log_msg('E', "%s: checkpoint step %" PRIu64 " NOT stored: %s", m->peer, c.step, err);
        reply_ack(sock, id, m->peer, c.step, c.sha256, 0, err);
    } else {
        log_msg('I', "checkpoint step %" PRIu64 " (%s, %.1f MB) stored in %.2f s", c.step,
                c.kind == WIRE_CKPT_FINAL ? "final" : "periodic", c.blob_len / 1e6, fs_now() - t0);
        reply_ack(sock, id, m->peer, c.step, c.sha256, 1, NULL);
    }
    wire_checkpoint_free(&c);
}

static void free_blob(void *data, void *hint) { (void)hint; free(data); }

static void on_request(exporter_t *ex, void *sock, zmq_msg_t *id, const wire_msg_t *m)
{
    char err[ERR_LEN];
    wire_request_t r;
    if (wire_decode_request(m, &r, err)) {
        ex->n_rejected++;
        log_msg('W', "%s: request rejected: %s", m->peer, err);
        reply_error(sock, id, m->peer, "bad_request", err, 0);
        return;
    }
    if (!strcmp(r.what, "acks")) {                  // a sender asks whether we ack by id: we do
        char msg_id[64];
        err[0] = 0;
        if (message_id(m, msg_id, err) || !*msg_id) {
            if (!*msg_id && !err[0]) snprintf(err, sizeof err, "request 'acks' needs an 'id'");
            log_msg('W', "%s: %s", m->peer, err);
            reply_error(sock, id, m->peer, "bad_request", err, r.seq);
        } else reply_msg_ack(sock, id, m->peer, "request", msg_id, 1, NULL, 0, NULL);
        return;
    }
    uint64_t want;
    if (!strcmp(r.what, "latest") || !strcmp(r.what, "latest_checkpoint")) want = UINT64_MAX;
    else if (!strcmp(r.what, "checkpoint")) want = r.step;
    else {
        snprintf(err, sizeof err, "request '%s': the exporter serves latest, latest_checkpoint, checkpoint, acks", r.what);
        log_msg('W', "%s: %s", m->peer, err);
        reply_error(sock, id, m->peer, "bad_request", err, r.seq);
        return;
    }
    wire_checkpoint_t c = { .kind = WIRE_CKPT_PERIODIC };
    uint8_t *blob;
    int rc = exporter_ckpt_load(ex, want, &blob, &c.blob_len, &c.step, c.sha256, err);
    if (rc) {                           // "damaged": a resuming trainer must stop, not start over
        log_msg(rc == -1 ? 'W' : 'E', "%s: request %s: %s", m->peer, r.what, err);
        reply_error(sock, id, m->peer, rc == -1 ? "not_found" : "damaged", err, r.seq);
        return;
    }
    c.blob = blob;
    wire_out_t o;
    if (wire_encode_checkpoint(&o, &c, err)) {
        log_msg('E', "checkpoint reply: %s", err);
        wire_out_free(&o);
        free(blob);
        return;
    }
    wire_out_donate(&o, "blob", free_blob, NULL);       // zero-copy: ZeroMQ frees it when sent
    log_msg('I', "%s: sending checkpoint step %" PRIu64 " (%zu bytes)", m->peer, c.step, c.blob_len);
    send_to(sock, id, &o, m->peer);
}

// A prediction. With an `id` it is acknowledged by id, and one already written (its ack was
// lost, so it came again) is acknowledged without being written twice.
// A metrics line or prediction of another run (a joined evaluator that outlived it, now talking
// to this run's exporter on the same port): refused for good, so its sender drops it. 1 when
// refused (answered), else 0.
static int other_run(exporter_t *ex, void *sock, zmq_msg_t *id, const wire_msg_t *m, const char *msg_id)
{
    char err[ERR_LEN];
    int rc = wire_check_run(m, ex->cfg.run_id, err);
    if (rc == 0) return 0;
    ex->n_rejected++;
    log_msg('W', "%s: %s refused: %s", m->peer, m->type, err);
    if (*msg_id) reply_msg_ack(sock, id, m->peer, m->type, msg_id, 0, err, 0, NULL);
    else reply_error(sock, id, m->peer, "bad_request", err, 0);
    return 1;
}

static void on_volume(exporter_t *ex, void *sock, zmq_msg_t *id, const wire_msg_t *m)
{
    char err[ERR_LEN], case_id[WIRE_ID_LEN], msg_id[64];
    if (message_id(m, msg_id, err)) {
        ex->n_rejected++;
        log_msg('W', "%s: prediction rejected: %s", m->peer, err);
        reply_error(sock, id, m->peer, "bad_request", err, 0);
        return;
    }
    if (other_run(ex, sock, id, m, msg_id)) return;
    if (*msg_id && id_set_has(&ex->filed, msg_id)) {
        char cid[WIRE_ID_LEN] = "";
        wire_get_str(m, "case_id", cid, sizeof cid, 0, err);
        log_msg('I', "%s: prediction %s (id %s) came again: already written", m->peer, cid, msg_id);
        reply_msg_ack(sock, id, m->peer, "volume", msg_id, 1, NULL, 0, cid[0] ? cid : NULL);
        return;
    }
    int rc = exporter_prediction(ex, m, case_id, err);
    if (rc) {
        ex->n_rejected++;
        log_msg('W', "%s: prediction %s not written: %s", m->peer, case_id[0] ? case_id : "?", err);
        if (*msg_id) reply_msg_ack(sock, id, m->peer, "volume", msg_id, 0, err, rc == -2, NULL);
        else reply_error(sock, id, m->peer, "bad_request", err, 0);
        return;
    }
    log_msg('I', "%s: wrote predictions/%s.nii.gz", m->peer, case_id);
    if (*msg_id) id_set_add(&ex->filed, msg_id);
    reply_msg_ack(sock, id, m->peer, "volume", msg_id, 1, NULL, 0, case_id);
}

// A metrics line. With an `id` it is acknowledged once durable (appended and fsynced), and a
// copy of one already filed (its ack was lost) is acknowledged without a second line.
static void on_metrics(exporter_t *ex, void *sock, zmq_msg_t *id, const wire_msg_t *m)
{
    char err[ERR_LEN], msg_id[64];
    int rc = message_id(m, msg_id, err);
    if (!rc && other_run(ex, sock, id, m, msg_id)) return;
    if (!rc) rc = exporter_metrics(ex, m, msg_id, err);
    if (rc == 1) log_msg('I', "%s: metrics id %s came again: already recorded", m->peer, msg_id);
    if (rc < 0) {
        ex->n_rejected++;
        log_msg('W', "%s: metrics not recorded: %s", m->peer, err);
        if (!*msg_id) reply_error(sock, id, m->peer, "bad_request", err, 0);
    }
    if (*msg_id) reply_msg_ack(sock, id, m->peer, "metrics", msg_id, rc >= 0, err, rc == -2, NULL);
}

static void handle_one(exporter_t *ex, void *sock)
{
    char err[ERR_LEN];
    zmq_msg_t id;
    if (zmq_msg_init(&id)) DIE("zmq_msg_init: %s", zmq_strerror(zmq_errno()));
    if (zmq_msg_recv(&id, sock, ZMQ_DONTWAIT) < 0) {
        if (zmq_errno() != EAGAIN && zmq_errno() != EINTR) log_msg('W', "recv: %s", zmq_strerror(zmq_errno()));
        zmq_msg_close(&id);
        return;
    }
    wire_msg_t m;
    wire_msg_init(&m);
    int rc = zmq_msg_more(&id) ? wire_recv(sock, &m, ZMQ_DONTWAIT, err) : set_err(err, "empty message");
    if (rc == WIRE_AGAIN) rc = set_err(err, "message ended after its routing frame");
    if (rc < 0) {
        ex->n_rejected++;
        log_msg('W', "%s: rejected a message: %s", m.peer[0] ? m.peer : "?", err);
        reply_error(sock, &id, m.peer, "bad_request", err, 0);
    } else if (!strcmp(m.type, "checkpoint")) on_checkpoint(ex, sock, &id, &m);
    else if (!strcmp(m.type, "request")) on_request(ex, sock, &id, &m);
    else if (!strcmp(m.type, "volume")) on_volume(ex, sock, &id, &m);
    else if (!strcmp(m.type, "metrics")) on_metrics(ex, sock, &id, &m);
    else if (strcmp(m.type, "heartbeat") && strcmp(m.type, "ready")) {
        ex->n_rejected++;
        snprintf(err, sizeof err, "the exporter does not take '%s' messages", m.type);
        log_msg('W', "%s: %s", m.peer, err);
        reply_error(sock, &id, m.peer, "bad_request", err, 0);
    }
    wire_msg_free(&m);
    zmq_msg_close(&id);
}

// ---- set-up and loop ---------------------------------------------------------------------------

static int exporter_init(exporter_t *ex, const exporter_cfg_t *cfg, char *err)
{
    memset(ex, 0, sizeof *ex);
    ex->cfg = *cfg;
    if (snprintf(ex->run, sizeof ex->run, "%s", cfg->run_dir) >= (int)sizeof ex->run)
        return set_err(err, "%s: run directory path too long", cfg->run_dir);
    snprintf(ex->ckpt_dir, sizeof ex->ckpt_dir, "%s/checkpoints", ex->run);
    snprintf(ex->pred_dir, sizeof ex->pred_dir, "%s/predictions", ex->run);
    snprintf(ex->metrics_path, sizeof ex->metrics_path, "%s/metrics.jsonl", ex->run);
    snprintf(ex->curves_path, sizeof ex->curves_path, "%s/curves.png", ex->run);
    if (fs_mkdir_p(ex->ckpt_dir, err) || fs_mkdir_p(ex->pred_dir, err)) return -1;
    // one exporter a run folder: a second one's recovery would remove the first one's files in
    // the making (a previous pipeline still stopping gets 60 s to finish)
    char lock[EXPORTER_PATH];
    snprintf(lock, sizeof lock, "%s/.exporter.lock", ex->run);
    if (fs_lock_file(lock, "srm-exporter", 60, err) < 0) return -1;
    // Its own leftovers only: in the run folder that is curves.png.tmp -- other stages write
    // there too (the loader's preprocessing.json, through its own .tmp, maybe at this moment)
    char own[EXPORTER_PATH + 8];
    snprintf(own, sizeof own, "%s.tmp", ex->curves_path);
    int t = (unlink(own) == 0) + fs_remove_tmp(ex->pred_dir);
    if (t) log_msg('W', "%s: removed %d temporary file(s) left by an interrupted write", ex->run, t);
    if (exporter_ckpt_recover(ex, err) || exporter_metrics_recover(ex, err)) return -1;
    if (ex->have_scored) exporter_scored(ex, ex->scored_upto);  // markers the file's scores settle
    return 0;
}

int exporter_run(const exporter_cfg_t *cfg, char *err)
{
    exporter_t ex;
    if (exporter_init(&ex, cfg, err)) return -1;
    char bind[EXPORTER_PATH + 32];
    if (cfg->bind) snprintf(bind, sizeof bind, "%s", cfg->bind);
    else {
        char sockdir[EXPORTER_DIR];
        snprintf(sockdir, sizeof sockdir, "%s/sock", ex.run);
        if (fs_mkdir_p(sockdir, err)) return -1;
        snprintf(bind, sizeof bind, "ipc://%s/exporter", sockdir);
    }
    stage_t *st = stage_new("exporter");
    stage_sock_opts_t opts = stage_sock_defaults();
    // Never stop reading a peer while a checkpoint is being stored (seconds for a GB one): with the
    // default queue of 4 the trainer's metrics lines filled it, ZeroMQ stopped reading that
    // connection, our heartbeat saw no traffic for 3 s and dropped it with the next checkpoint
    // half sent (seen on the GPU host, one GB checkpoint in six). The peers bound what they have
    // in flight themselves (one checkpoint, an outbox of metrics and predictions).
    opts.hwm = EXPORTER_RCV_QUEUE;
    opts.allow_remote = cfg->allow_remote;
    if (cfg->curve_secret) {                    // the key files: no restart makes them appear
        char pub[41], sec[41];
        if (stage_key_read(cfg->curve_secret, pub, sec, err) || stage_curve_authorize(st, cfg->authorized, err)) {
            stage_destroy(&st);
            exporter_curves_free(&ex);
            id_set_free(&ex.filed);
            return -2;
        }
        opts.curve_secret = cfg->curve_secret;
        opts.curve_server = 1;
    }
    void *sock = stage_socket(st, ZMQ_ROUTER, bind, STAGE_BIND, &opts, err);
    if (!sock) { stage_destroy(&st); exporter_curves_free(&ex); id_set_free(&ex.filed); return -1; }
    log_msg('I', "serving %s on %s (keep %d, every %" PRIu64 ")", ex.run, bind, cfg->keep, cfg->every);

    // The pipeline script gone (kill -9 of train.sh): every stage stops at once, and the trainer's
    // final checkpoint, the evaluator's last lines come to this exporter only then. So it serves
    // on until EXPORTER_DRAIN_IDLE_S pass without a message (EXPORTER_DRAIN_MAX_S at most, under
    // the minute a --resume waits for the run folder); SIGTERM still stops it at once.
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_orphaned;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, NULL);
    if (stage_parent_death_signal(st, SIGUSR2)) orphaned = 1;
    double drain_from = 0, last_msg = fs_now();
    sigset_t stop, old;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGUSR2);
    for (;;) {
        stage_event_t ev = stage_wait(st, sock, 500);
        if (ev == STAGE_STOP) break;
        if (ev == STAGE_READY) {
            sigprocmask(SIG_BLOCK, &stop, &old);        // finish this message whatever arrives
            handle_one(&ex, sock);
            sigprocmask(SIG_SETMASK, &old, NULL);
            last_msg = fs_now();
        }
        if (orphaned && drain_from == 0) {
            drain_from = last_msg = fs_now();           // the idle time counts from here
            log_msg('I', "the pipeline script is gone: taking the other stages' last messages (until %d s pass without "
                    "one, %d s at most)", EXPORTER_DRAIN_IDLE_S, EXPORTER_DRAIN_MAX_S);
        }
        if (drain_from && (fs_now() - last_msg >= EXPORTER_DRAIN_IDLE_S || fs_now() - drain_from >= EXPORTER_DRAIN_MAX_S))
            break;
        exporter_curves_refresh(&ex, 0);
    }
    exporter_curves_refresh(&ex, 1);
    log_msg('I', "stopping (%s %d): %ld checkpoints, %ld metrics, %ld predictions stored, %ld messages rejected",
            orphaned && !stage_signal(st) ? "pipeline script gone, signal" : "signal",
            orphaned && !stage_signal(st) ? SIGUSR2 : stage_signal(st), ex.n_ckpt, ex.n_metrics, ex.n_pred, ex.n_rejected);
    stage_destroy(&st);
    exporter_curves_free(&ex);
    id_set_free(&ex.filed);
    return 0;
}
