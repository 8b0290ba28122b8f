/*
trainer_ckpt.c -- the trainer's side of system.md "Checkpoints: who holds what". A checkpoint is
written (ckpt_write: temp, fsync, rename) into the spool directory and stays there until the
exporter acknowledges it; only the newest unacknowledged one is kept, and at most one is in
flight. Sends never block: DONTWAIT on the exporter DEALER (ZMQ_IMMEDIATE: nothing queues
while the exporter is away), acks are read between steps, and a checkpoint without an ack after
--ack-timeout (or with ok=false), or whose exporter acknowledged a metrics line sent after it
(it was restarted meanwhile), is sent again, the newest one. Resume takes the newer of the
exporter's `latest` and the spool's newest valid file, so a checkpoint written just before a
crash (or left behind by SIGINT without an ack) is not lost.
*/
#include "trainer_internal.h"
#include "check.h"
#include "durable_fs.h"
#include "preprocess.h"
#include <dirent.h>
#include <jansson.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RETRY_S 1.0                 // exporter unreachable (EAGAIN): try again this often
#define FAILED_BACKOFF_S 5.0        // ack ok=false (disk full ...): resend after this long

static void free_blob(void *data, void *hint) { (void)hint; free(data); }

static void spool_name(const ckpt_flow_t *f, long step, char *out, size_t cap)
{
    snprintf(out, cap, "%s/step-%08ld.ckpt", f->spool, step);
}

// 1 when name is exactly a spool file name "step-NNNNNNNN.ckpt" (not a .tmp), with its step.
static int spool_parse(const char *name, long *step)
{
    char again[64];
    if (sscanf(name, "step-%ld", step) != 1 || *step < 0) return 0;
    snprintf(again, sizeof again, "step-%08ld.ckpt", *step);
    return !strcmp(again, name);
}

// Remove spooled checkpoints of steps <= upto, except keep_path.
static void spool_prune(ckpt_flow_t *f, long upto, const char *keep_path)
{
    DIR *d = opendir(f->spool);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        long s;
        if (!spool_parse(e->d_name, &s) || s > upto) continue;
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", f->spool, e->d_name) >= (int)sizeof p) continue;
        if (keep_path && !strcmp(p, keep_path)) continue;
        if (unlink(p)) log_msg('W', "%s: cannot remove: %s", p, strerror(errno));
    }
    closedir(d);
}

// The spool folder: --spool, else /tmp/srm-trainer-PID; made if missing. 0 or -1 + err.
static int spool_dir(const trainer_cfg_t *c, char *out, size_t cap, char *err)
{
    if (c->spool_dir && strlen(c->spool_dir) >= cap) return set_err(err, "--spool: path too long");
    if (c->spool_dir) snprintf(out, cap, "%s", c->spool_dir);
    else snprintf(out, cap, "/tmp/srm-trainer-%d", (int)getpid());
    return fs_mkdir_p(out, err);
}

int ckpt_flow_lock(const trainer_cfg_t *c, char *err)
{
    char spool[sizeof ((ckpt_flow_t *)0)->spool], lock[PATH_MAX];
    if (spool_dir(c, spool, sizeof spool, err)) return -1;
    snprintf(lock, sizeof lock, "%s/.lock", spool);
    return fs_lock_file(lock, "srm-trainer", 90, err) < 0 ? -1 : 0;
}

int ckpt_flow_open(ckpt_flow_t *f, const trainer_cfg_t *c, const model_t *m, void *exporter_sock, char *err)
{
    memset(f, 0, sizeof *f);
    f->c = c;
    f->m = m;
    f->sock = exporter_sock;
    f->acked_step = -1;
    f->quick_resent = -1;
    if (spool_dir(c, f->spool, sizeof f->spool, err)) return -1;
    snprintf(f->config_json, sizeof f->config_json,
             "{\"variant\":\"%s\",\"width\":%d,\"in_channels\":%d,\"classes\":%d,\"patch\":[%d,%d,%d],"
             "\"batch\":%d,\"steps\":%ld,\"lr\":%g,\"loss\":\"%s\",\"dice\":{\"squared_pred\":%d,\"smooth_nr\":%g,"
             "\"smooth_dr\":%g},\"regions\":\"%s\",\"seed\":%" PRIu64 "}",
             model_variant_name(c->model.variant), c->model.width, c->model.in_channels, c->model.classes,
             c->patch[0], c->patch[1], c->patch[2], c->batch, c->steps, (double)c->tc.adam.lr,
             trainer_loss_name(c->tc.loss), c->tc.dice.squared_pred, c->tc.dice.smooth_nr, c->tc.dice.smooth_dr,
             c->region_spec, c->seed);
    return 0;
}

// Try to send the pending checkpoint now. Nothing happens while one is in flight.
static void try_send(ckpt_flow_t *f)
{
    if (!f->sock || !f->have_pending || f->in_flight || trainer_now() < f->next_try) return;
    char err[ERR_LEN];
    size_t n = 0;
    uint8_t *blob;
    if (fs_read_file(f->pending_path, &blob, &n, SIZE_MAX, err)) {
        log_msg('E', "pending checkpoint: %s", err);
        f->next_try = trainer_now() + FAILED_BACKOFF_S;
        return;
    }
    wire_checkpoint_t ck = { .step = (uint64_t)f->pending_step, .kind = f->pending_final ? WIRE_CKPT_FINAL : WIRE_CKPT_PERIODIC,
                             .validated = f->pending_validated, .config_json = f->config_json, .blob = blob,
                             .blob_len = n };
    wire_sha256_hex(blob, n, ck.sha256);
    wire_out_t o;
    if (wire_encode_checkpoint(&o, &ck, err)) {
        log_msg('E', "checkpoint step %ld: %s", f->pending_step, err);
        wire_out_free(&o);
        free(blob);
        f->next_try = trainer_now() + FAILED_BACKOFF_S;
        return;
    }
    wire_out_donate(&o, "blob", free_blob, NULL);
    int rc = wire_send(f->sock, &o, ZMQ_DONTWAIT, err);
    wire_out_free(&o);                      // frees the blob if it was not handed to ZeroMQ
    if (rc == WIRE_AGAIN) {                 // exporter not connected (or its queue is full)
        f->next_try = trainer_now() + RETRY_S;
        return;
    }
    if (rc < 0) {
        log_msg('W', "checkpoint step %ld: send failed: %s", f->pending_step, err);
        f->next_try = trainer_now() + RETRY_S;
        return;
    }
    f->in_flight = 1;
    f->pending_in_flight = 1;
    f->flight_step = f->pending_step;
    memcpy(f->flight_sha, ck.sha256, sizeof f->flight_sha);
    f->flight_sent = trainer_now();
    f->flight_out_sends = f->out ? outbox_sends(f->out) : 0;
    f->n_sent++;
    log_msg('I', "checkpoint step %ld sent to the exporter (%.1f MB, sha256 %.12s...)", f->flight_step,
            (double)n / 1e6, f->flight_sha);
}

// The loader's settings text plus "training": {"patch": [D, H, W], "loss": ..., "regions": ...},
// what predict.sh needs besides the preprocessing to use the weights as trained (its default
// window, and sigmoid regions decoded as regions). 0, or -1 when it does not fit in cap.
static int with_training(const trainer_cfg_t *c, const char *text, char *out, size_t cap)
{
    json_t *o = json_loads(text, 0, NULL);
    if (!json_is_object(o)) { json_decref(o); return -1; }
    json_object_set_new(o, "training", json_pack("{s:[iii], s:s, s:s}", "patch", c->patch[0], c->patch[1], c->patch[2],
                                                 "loss", trainer_loss_name(c->tc.loss), "regions", c->region_spec));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    int rc = s && strlen(s) < cap ? 0 : -1;
    if (!rc) memcpy(out, s, strlen(s) + 1);
    free(s);
    return rc;
}

void ckpt_flow_take_prep(ckpt_flow_t *f, ckpt_state_t *st)
{
    if (!f->c->prep_file) return;
    // read before every save: the loader writes the file when it starts, maybe after the trainer
    char why[ERR_LEN] = "";
    uint8_t *raw = NULL;
    size_t n = 0;
    if (fs_read_file(f->c->prep_file, &raw, &n, CKPT_PREP_MAX - 1, why) == 0) {
        char text[CKPT_PREP_MAX];
        memcpy(text, raw, n);
        text[n] = 0;
        free(raw);
        preprocess_cfg_t cfg;
        modality_t mod[CASE_MAX_CHANNELS];
        int C = 0;
        if (preprocess_settings_parse(text, &cfg, mod, &C, why) == 0 && C != f->m->cfg.in_channels)
            snprintf(why, sizeof why, "%d channels, the model takes %d", C, f->m->cfg.in_channels);
        char full[CKPT_PREP_MAX];
        if (!why[0] && with_training(f->c, text, full, sizeof full))
            snprintf(why, sizeof why, "settings and training settings longer than %d bytes", CKPT_PREP_MAX - 1);
        if (!why[0]) {
            if (strcmp(st->prep, full)) log_msg('I', "checkpoints carry the preprocessing of %s and the training's patch, loss and regions", f->c->prep_file);
            memcpy(st->prep, full, strlen(full) + 1);
            return;
        }
    }
    if (!f->prep_warned)                    // why names the file when fs_read_file failed
        log_msg('W', "%s: %s; checkpoints keep %s", f->c->prep_file, why,
                st->prep[0] ? "the resumed checkpoint's preprocessing" : "no preprocessing settings");
    f->prep_warned = 1;
}

int ckpt_flow_save(ckpt_flow_t *f, const float *params, const float *adam_m, const float *adam_v,
                   const ckpt_state_t *st, int final, int validated, char *err)
{
    char path[PATH_MAX];
    spool_name(f, st->step, path, sizeof path);
    if (ckpt_write(path, f->m, params, adam_m, adam_v, st, err)) return -1;
    // The new file supersedes the older pending one (its bytes, if in flight, are ZeroMQ's).
    if (f->have_pending && strcmp(f->pending_path, path) && unlink(f->pending_path))
        log_msg('W', "%s: cannot remove: %s", f->pending_path, strerror(errno));
    f->have_pending = 1;
    f->pending_in_flight = 0;               // new bytes, even for the step in flight
    f->pending_step = st->step;
    f->pending_final = final;
    f->pending_validated = validated;
    snprintf(f->pending_path, sizeof f->pending_path, "%s", path);
    f->next_try = 0;
    if (!f->sock) log_msg('I', "checkpoint step %ld written to %s (no exporter)", st->step, path);
    try_send(f);
    return 0;
}

void ckpt_flow_set_outbox(ckpt_flow_t *f, const outbox_t *out) { f->out = out; }

void ckpt_flow_tick(ckpt_flow_t *f)
{
    // The exporter answers one connection's messages in order: an ack of a metrics line sent
    // after the checkpoint, and none for the checkpoint, means the checkpoint was lost -- the
    // exporter was killed and restarted, or ZeroMQ dropped and remade the connection (a missed
    // heartbeat under a GB-sized transfer, seen on the GPU host): send it again now, not after
    // --ack-timeout.
    // (once a step: an exporter that answers this checkpoint with something else than an ack
    // falls back to the timeout, rather than a resend of a model-sized blob per metrics line)
    if (f->in_flight && f->out && f->flight_step != f->quick_resent && outbox_acked_since(f->out, f->flight_out_sends)) {
        f->quick_resent = f->flight_step;
        log_msg('W', "checkpoint step %ld: the exporter answered later messages but not this one (it restarted, or "
                "the connection dropped under the transfer); sending again", f->flight_step);
        f->in_flight = 0;
        f->next_try = 0;
    }
    if (f->in_flight && trainer_now() - f->flight_sent > f->c->ack_timeout_s) {
        log_msg('W', "checkpoint step %ld: no ack from the exporter after %.0f s; sending again", f->flight_step,
                f->c->ack_timeout_s);
        f->in_flight = 0;
    }
    try_send(f);
}

void ckpt_flow_on_message(ckpt_flow_t *f, const wire_msg_t *msg)
{
    char err[ERR_LEN];
    if (!strcmp(msg->type, "checkpoint_ack")) {
        wire_checkpoint_ack_t a;
        if (wire_decode_checkpoint_ack(msg, &a, err)) { log_msg('W', "%s: bad checkpoint_ack: %s", msg->peer, err); return; }
        if (!f->in_flight || (long)a.step != f->flight_step || strcmp(a.sha256, f->flight_sha)) {
            log_msg('I', "%s: late ack for checkpoint step %" PRIu64 " (ok=%d) ignored", msg->peer, a.step, a.ok);
            if (a.ok && (long)a.step > f->acked_step) f->acked_step = (long)a.step;
            return;
        }
        f->in_flight = 0;
        if (!a.ok) {
            f->n_failed++;
            log_msg('W', "exporter could not store checkpoint step %" PRIu64 ": %s; kept in %s, retrying in %.0f s",
                    a.step, a.error, f->spool, FAILED_BACKOFF_S);
            f->next_try = trainer_now() + FAILED_BACKOFF_S;
            return;
        }
        f->n_acked++;
        f->acked_step = (long)a.step;
        log_msg('I', "checkpoint step %" PRIu64 " acknowledged (durable) after %.1f s", a.step, trainer_now() - f->flight_sent);
        if (f->have_pending && f->pending_in_flight) {     // the acked bytes are the pending file's
            f->have_pending = 0;
            spool_prune(f, f->acked_step, NULL);
        } else {
            spool_prune(f, f->acked_step, f->have_pending ? f->pending_path : NULL);
            f->next_try = 0;
            try_send(f);                    // a newer one waited for this ack
        }
    } else if (!strcmp(msg->type, "error")) {
        wire_error_t e;
        if (wire_decode_error(msg, &e, err)) log_msg('W', "%s: bad error message: %s", msg->peer, err);
        else log_msg('W', "exporter says: %s (%s)", e.message, e.code);
    } else if (strcmp(msg->type, "heartbeat") && strcmp(msg->type, "checkpoint")) {
        log_msg('W', "%s: unexpected '%s' message on the exporter socket ignored", msg->peer, msg->type);
    }
}

void ckpt_flow_drain(ckpt_flow_t *f, outbox_t *out)
{
    if (!f->sock) return;
    for (;;) {
        wire_msg_t m;
        wire_msg_init(&m);
        char err[ERR_LEN];
        int rc = wire_recv(f->sock, &m, ZMQ_DONTWAIT, err);
        if (rc == WIRE_AGAIN) { wire_msg_free(&m); break; }
        if (rc < 0) log_msg('W', "%s: rejected a message from the exporter: %s", m.peer[0] ? m.peer : "?", err);
        else if (!out || !outbox_on_reply(out, &m)) ckpt_flow_on_message(f, &m);
        wire_msg_free(&m);
    }
}

int ckpt_flow_done(const ckpt_flow_t *f) { return !f->have_pending; }

// ---- resume -------------------------------------------------------------------------------

// The newest spooled checkpoint that verifies. Returns its step or -1.
static long spool_newest(ckpt_flow_t *f, char *path, size_t cap)
{
    long best = -1;
    DIR *d = opendir(f->spool);
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        long s;
        char p[PATH_MAX], err[ERR_LEN];
        if (!spool_parse(e->d_name, &s) || s <= best) continue;
        if (snprintf(p, sizeof p, "%s/%s", f->spool, e->d_name) >= (int)sizeof p) continue;
        ckpt_state_t st;
        if (ckpt_read_state(p, &st, err)) { log_msg('W', "spool: %s (ignored)", err); continue; }
        best = s;
        snprintf(path, cap, "%s", p);
    }
    closedir(d);
    return best;
}

// Ask the exporter for its latest checkpoint; write it to out_path. Returns its step, -1 when
// the exporter has none, -2 with err when it did not answer or the answer is bad.
static long ask_exporter(ckpt_flow_t *f, stage_t *st, const char *out_path, char *err)
{
    double t0 = trainer_now(), next = 0;
    uint64_t seq = (uint64_t)getpid();
    while (trainer_now() - t0 < f->c->resume_timeout_s) {
        if (stage_stopping(st)) return set_err(err, "stopped while waiting for the exporter"), -2;
        if (trainer_now() >= next) {        // (re)ask: the exporter may be starting up
            wire_request_t r = { .index = -1, .seq = seq };
            snprintf(r.what, sizeof r.what, "latest_checkpoint");
            wire_out_t o;
            if (wire_encode_request(&o, &r, err)) { wire_out_free(&o); return -2; }
            int rc = wire_send(f->sock, &o, ZMQ_DONTWAIT, err);
            wire_out_free(&o);
            if (rc < 0) return -2;
            next = trainer_now() + (rc == WIRE_AGAIN ? 0.5 : 10.0);
        }
        if (stage_wait(st, f->sock, 200) != STAGE_READY) continue;
        wire_msg_t m;
        wire_msg_init(&m);
        int rc = wire_recv(f->sock, &m, ZMQ_DONTWAIT, err);
        if (rc) {
            if (rc < 0) log_msg('W', "%s: rejected a reply: %s", m.peer[0] ? m.peer : "?", err);
            wire_msg_free(&m);
            continue;
        }
        long result = -3;
        if (!strcmp(m.type, "error")) {
            wire_error_t e;
            if (!wire_decode_error(&m, &e, err)) {
                if (!strcmp(e.code, "not_found")) result = -1;
                else { set_err(err, "exporter: %s (%s)", e.message, e.code); result = -2; }
            }
        } else if (!strcmp(m.type, "checkpoint")) {
            wire_checkpoint_t ck;
            if (wire_decode_checkpoint(&m, &ck, err)) {     // also verifies the sha256
                log_msg('W', "%s: bad checkpoint reply: %s", m.peer, err);
            } else {
                char dir[FS_PATH_MAX];
                const char *name = fs_split_path(out_path, dir, sizeof dir);
                result = fs_write_atomic(dir, name, ck.blob, ck.blob_len, err) ? -2 : (long)ck.step;
                wire_checkpoint_free(&ck);
            }
        } else {
            ckpt_flow_on_message(f, &m);
        }
        wire_msg_free(&m);
        if (result != -3) return result;
    }
    return set_err(err, "the exporter did not answer the `latest` request within %.0f s", f->c->resume_timeout_s), -2;
}

int ckpt_flow_resume(ckpt_flow_t *f, stage_t *st, float *params, float *adam_m, float *adam_v,
                     ckpt_state_t *state, char *err)
{
    char path[PATH_MAX] = "";
    const char *source;
    if (f->c->resume_file) {
        snprintf(path, sizeof path, "%s", f->c->resume_file);
        source = "file";
    } else {
        char spooled[PATH_MAX] = "", fetched[PATH_MAX];
        long s_spool = spool_newest(f, spooled, sizeof spooled), s_exp = -1;
        snprintf(fetched, sizeof fetched, "%s/resume-latest.ckpt", f->spool);
        if (f->sock) {
            s_exp = ask_exporter(f, st, fetched, err);
            if (s_exp == -2) {
                if (s_spool < 0) return -1;
                log_msg('W', "%s; resuming from the spool", err);
            }
        }
        if (s_exp >= 0) f->acked_step = s_exp;
        if (s_exp < 0 && s_spool < 0) return 0;
        if (s_spool > s_exp) {
            snprintf(path, sizeof path, "%s", spooled);
            source = "spool (not yet acknowledged; it will be sent again)";
        } else {
            snprintf(path, sizeof path, "%s", fetched);
            source = "exporter (latest acknowledged)";
        }
    }
    if (ckpt_read(path, f->m, params, adam_m, adam_v, state, err)) return -1;
    log_msg('I', "resuming from step %ld (%s: %s), schedule %ld steps from lr %g, adam step %ld", state->step,
            source, path, state->total_steps, state->base_lr, state->adam_step);
    if (!f->c->resume_file) {
        if (!strncmp(source, "spool", 5)) {             // not acknowledged yet: send it again
            f->have_pending = 1;
            f->pending_in_flight = 0;
            f->pending_step = state->step;
            f->pending_final = 0;
            snprintf(f->pending_path, sizeof f->pending_path, "%s", path);
            spool_prune(f, state->step, path);
        } else {
            unlink(path);                               // the exporter holds it durably
        }
    }
    return 1;
}
