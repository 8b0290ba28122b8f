/*
trainer_loop.c -- srm-trainer's training mode (trainer_run) and --describe. Binds the patches
PULL, evaljobs PUSH and metrics PULL sockets, connects a DEALER to the exporter (docs/
pipeline.md), initialises or resumes the model, then loops: wait for a batch (answering acks and
validation metrics meanwhile), validate it, take one step, and report, checkpoint and send eval
jobs on their intervals. SIGINT/SIGTERM stop after the current step with a final checkpoint and a
bounded wait for its ack; a completed run also sends a final eval job and waits (bounded) for
its validation metrics.
*/
#include "trainer_internal.h"
#include "check.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int trainer_describe(const model_cfg_t *cfg, char *err)
{
    model_t m;
    if (model_describe(&m, cfg, err)) return -1;
    char shape[128];
    for (int i = 0; i < m.table.count; i++) {
        param_shape_str(&m.table.items[i], shape, sizeof shape);
        printf("%s %s\n", m.table.items[i].name, shape);
    }
    printf("parameters %zu\n", m.table.numel);
    model_free(&m);
    return fflush(stdout) == 0 ? 0 : set_err(err, "stdout: write failed");
}

typedef struct {
    const trainer_cfg_t *c;
    stage_t *st;
    void *patches, *jobs, *metrics, *exporter;
    model_t m;
    float *params, *adam_m, *adam_v;
    float *x;
    uint8_t *labels;
    train_backend_t *b;
    ckpt_flow_t ck;
    outbox_t *out;                  // metrics lines to the exporter until acknowledged
    journal_t journal;              // and on disk until then
    report_t rep;
    ckpt_state_t state;
    double last_batch;
    int warned_wait;
    long drops_since_good;          // batches dropped since the last good one
    long drops_logged, drops_unlogged;  // in the current minute of drop logging: lines, and drops
    double drop_window;             // without one (rate limit); monotonic start of that minute
    char why[ERR_LEN];              // next_batch's 3: the mismatch
    double t_start;                 // monotonic time at which trainer_run began (--max-minutes)
    double job_warned;              // when a final eval job that could not be written was said
    budget_t budget;
} trainer_t;

static int open_sockets(trainer_t *t, char *err)
{
    const trainer_cfg_t *c = t->c;
    stage_sock_opts_t srv = stage_sock_defaults();
    srv.allow_remote = c->allow_remote;
    if (c->curve_server) {
        if (stage_curve_authorize(t->st, c->authorized, err)) return -1;
        srv.curve_secret = c->curve_server;
        srv.curve_server = 1;
    }
    stage_sock_opts_t o = srv;
    o.hwm = 2;                               // patch batches are big: a couple in the queue is enough
    if (!(t->patches = stage_socket(t->st, ZMQ_PULL, c->patches_ep, STAGE_BIND, &o, err))) return -1;
    if (c->evaljobs_ep) {
        o = srv;
        o.hwm = 1;                           // one job waits at most; a busy evaluator is skipped
        if (!(t->jobs = stage_socket(t->st, ZMQ_PUSH, c->evaljobs_ep, STAGE_BIND, &o, err))) return -1;
    }
    if (c->metrics_ep) {
        o = srv;
        o.hwm = 16;
        o.max_msg = 64 << 20;
        if (!(t->metrics = stage_socket(t->st, ZMQ_PULL, c->metrics_ep, STAGE_BIND, &o, err))) return -1;
    }
    if (c->exporter_ep) {
        o = stage_sock_defaults();
        o.hwm = 16;
        o.curve_secret = c->curve_client;
        o.curve_server_public = c->server_key;
        if (!(t->exporter = stage_socket(t->st, ZMQ_DEALER, c->exporter_ep, STAGE_CONNECT, &o, err))) return -1;
    }
    return 0;
}

static int setup(trainer_t *t, char *err)
{
    const trainer_cfg_t *c = t->c;
    if (model_describe(&t->m, &c->model, err)) return -1;
    size_t P = t->m.table.numel;
    size_t nvox = (size_t)c->batch * c->patch[0] * c->patch[1] * c->patch[2];
    t->params = calloc(P, sizeof(float));
    t->adam_m = calloc(P, sizeof(float));
    t->adam_v = calloc(P, sizeof(float));
    t->x = malloc(nvox * (size_t)c->model.in_channels * sizeof(float));
    t->labels = malloc(nvox);
    if (!t->params || !t->adam_m || !t->adam_v || !t->x || !t->labels)
        return set_err(err, "cannot allocate the model (%zu parameters) and batch buffers", P);
    if (ckpt_flow_lock(c, err) || open_sockets(t, err) || ckpt_flow_open(&t->ck, c, &t->m, t->exporter, err))
        return -1;
    if (t->exporter) t->out = outbox_new("trainer", t->exporter, (size_t)64 << 20, c->exporter_resend_s);
    ckpt_flow_set_outbox(&t->ck, t->out);

    // Fresh state: the paper's schedule over --steps from --lr; RNG from --seed.
    t->state = (ckpt_state_t){ .cfg = c->model, .step = 0, .total_steps = c->steps, .base_lr = c->tc.adam.lr,
                               .adam_step = 0, .rng = rng_seed(c->seed) };
    int resumed = 0;
    if (c->resume || c->resume_file) {
        resumed = ckpt_flow_resume(&t->ck, t->st, t->params, t->adam_m, t->adam_v, &t->state, err);
        if (resumed < 0) return -1;
        if (!resumed) log_msg('I', "--resume: no checkpoint anywhere yet; starting from step 0");
        // (with --max-minutes the checkpoint's total is the budget's estimate, not --steps)
        if (resumed && ((c->max_minutes <= 0 && t->state.total_steps != c->steps) ||
                        fabs(t->state.base_lr - c->tc.adam.lr) > 1e-12 * c->tc.adam.lr))
            log_msg('W', "the checkpoint's schedule (%ld steps from lr %g) differs from the command line "
                    "(%ld from %g); keeping the checkpoint's", t->state.total_steps, t->state.base_lr, c->steps,
                    (double)c->tc.adam.lr);
    }
    // lines an earlier trainer left unacknowledged, up to the step this run goes on from
    if (t->out && journal_open(&t->journal, t->ck.spool, t->out, t->state.step, err)) return -1;
    budget_init(&t->budget, c, t->t_start, resumed, &t->state);
    if (!resumed) {
        // Initialisation draws its own stream, derived from the seed (the trainer's RNG stays
        // untouched, so it resumes identically).
        rng_t r = t->state.rng;
        model_init_params(&t->m, t->params, rng_u64(&r));
    }
    int lasting;
    if (!(t->b = tb_open(c, &t->m, t->params, t->adam_m, t->adam_v, &lasting, err))) return lasting ? TRAINER_EXIT_CONFIG : -1;
    tb_upload(t->b);
    log_msg('I', "model %s width %d, %d -> %d channels, %zu parameters; %s loss, %s lr %g, %ld steps, "
            "patch %dx%dx%d batch %d, device %s", model_variant_name(c->model.variant), c->model.width,
            c->model.in_channels, c->model.classes, t->m.table.numel,
            c->tc.loss == LOSS_DICE ? "softmax Dice" : c->tc.loss == LOSS_DICE_CE ? "Dice+CE" : "sigmoid region Dice",
            c->tc.adam.decoupled ? "AdamW" : "Adam", t->state.base_lr, t->state.total_steps, c->patch[0], c->patch[1],
            c->patch[2], c->batch, tb_device(t->b));
    return 0;
}

static void teardown(trainer_t *t)
{
    tb_close(&t->b);
    journal_close(&t->journal);
    outbox_free(&t->out);
    free(t->params); free(t->adam_m); free(t->adam_v); free(t->x); free(t->labels);
    if (t->m.table.items) model_free(&t->m);
}

// Everything that may arrive besides batches: acks from the exporter, validation metrics.
static void service(trainer_t *t)
{
    ckpt_flow_drain(&t->ck, t->out);
    if (t->out) outbox_tick(t->out);
    journal_settle(&t->journal, t->out);
    if (t->metrics) {
        for (;;) {
            wire_msg_t m;
            wire_msg_init(&m);
            char err[ERR_LEN];
            int rc = wire_recv(t->metrics, &m, ZMQ_DONTWAIT, err);
            if (rc == WIRE_AGAIN) { wire_msg_free(&m); break; }
            if (rc < 0) log_msg('W', "%s: rejected a message on the metrics socket: %s", m.peer[0] ? m.peer : "?", err);
            else if (!strcmp(m.type, "metrics")) report_on_validation(&t->rep, &m, t->c->run_id);
            else if (strcmp(m.type, "heartbeat")) log_msg('W', "%s: '%s' message on the metrics socket ignored", m.peer, m.type);
            wire_msg_free(&m);
        }
    }
    ckpt_flow_tick(&t->ck);
}

// A dropped batch: logged (at most 10 lines a minute, then the count of the others: an
// augmenter with the wrong --patch beside good ones sends a bad batch between good ones, all
// run long), and -- when nothing but dropped batches came for --batch-timeout -- the sign of a
// lasting disagreement with the augmenters (--batch, --in-channels, --patch, --classes) that no
// restart cures. 1 then, else 0.
// Once a minute of drop logging is over (seen at the next drop, or the next good batch): the
// count of the drops it did not log one by one, and a new minute begins.
static void drops_minute_over(trainer_t *t, double now)
{
    if (now - t->drop_window < 60) return;
    if (t->drops_unlogged)
        log_msg('W', "%ld more batches dropped in the last minute (not logged one by one)", t->drops_unlogged);
    t->drop_window = now;
    t->drops_logged = t->drops_unlogged = 0;
}

static int batch_dropped(trainer_t *t, const char *peer, const char *why)
{
    double now = trainer_now();
    t->rep.bad_batches++;
    t->drops_since_good++;
    drops_minute_over(t, now);
    if (t->drops_logged < 10) {
        log_msg('W', "%s: batch dropped: %s", peer, why);
        t->drops_logged++;
    } else {
        t->drops_unlogged++;
    }
    return t->c->batch_timeout_s > 0 && t->drops_since_good >= 10 && now - t->last_batch > t->c->batch_timeout_s;
}

// Wait for one valid batch into t->x / t->labels. 0, 1 when asked to stop, 2 when the
// --max-minutes deadline passed while waiting, 3 when for --batch-timeout every batch was
// dropped (a configuration mismatch: t->why says which). The caller accounts the data wait.
static int next_batch(trainer_t *t)
{
    for (;;) {
        zmq_pollitem_t it[3] = { { .socket = t->patches, .events = ZMQ_POLLIN } };
        int n = 1;
        if (t->exporter) it[n++] = (zmq_pollitem_t){ .socket = t->exporter, .events = ZMQ_POLLIN };
        if (t->metrics) it[n++] = (zmq_pollitem_t){ .socket = t->metrics, .events = ZMQ_POLLIN };
        stage_event_t ev = stage_poll(t->st, it, n, 500);
        if (ev == STAGE_STOP) return 1;
        service(t);
        double now = trainer_now();
        if (budget_expired(&t->budget, now)) return 2;
        if (t->c->batch_timeout_s > 0 && now - t->last_batch > t->c->batch_timeout_s && !t->warned_wait) {
            log_msg('W', "no patch batch for %.0f s: are the augmenters running and connected to %s?",
                    now - t->last_batch, t->c->patches_ep);
            t->warned_wait = 1;
        }
        if (ev != STAGE_READY || !(it[0].revents & ZMQ_POLLIN)) continue;
        wire_msg_t m;
        wire_msg_init(&m);
        char err[ERR_LEN];
        int rc = wire_recv(t->patches, &m, ZMQ_DONTWAIT, err), npos = 0;
        if (rc == 0 && strcmp(m.type, "patch_batch")) {
            if (!strcmp(m.type, "heartbeat") || !strcmp(m.type, "ready")) { wire_msg_free(&m); continue; }
            rc = set_err(err, "'%s' message on the patches socket", m.type);
        }
        if (rc == 0) rc = trainer_batch_take(t->c, &m, t->x, t->labels, &npos, err);
        if (rc < 0 && batch_dropped(t, m.peer[0] ? m.peer : "?", err)) {
            snprintf(t->why, sizeof t->why, "for %.0f s every patch batch was dropped (%ld of them), the last: %.300s",
                     trainer_now() - t->last_batch, t->drops_since_good, err);
            wire_msg_free(&m);
            return 3;
        }
        wire_msg_free(&m);
        if (rc == 0) {
            t->rep.patches += t->c->batch;
            t->last_batch = trainer_now();
            t->warned_wait = 0;
            t->drops_since_good = 0;
            if (t->drops_unlogged) drops_minute_over(t, t->last_batch);
            return 0;
        }
    }
}

// validated: an eval job of this step follows (the exporter keeps the step until it is scored)
static int save_ckpt(trainer_t *t, int final, int validated)
{
    char err[ERR_LEN];
    tb_download(t->b);
    journal_sync(&t->journal);              // the lines up to this step as durable as its weights
    ckpt_flow_take_prep(&t->ck, &t->state);
    if (ckpt_flow_save(&t->ck, t->params, t->adam_m, t->adam_v, &t->state, final, validated && t->jobs, err)) {
        log_msg('E', "checkpoint step %ld not written: %s", t->state.step, err);
        return -1;
    }
    return 0;
}

// Hand the evaluator a job of the current weights. 1 when it went out.
static int eval_job(trainer_t *t, int final)
{
    if (!t->jobs) return 0;
    char err[ERR_LEN];
    tb_download(t->b);
    int rc = report_eval_job(t->c, &t->m, t->ck.spool, t->jobs, t->params, t->state.step, final, err);
    if (rc < 0) log_msg('W', "eval job step %ld: %s", t->state.step, err);
    else if (rc == WIRE_AGAIN) { t->rep.val_skipped++; if (!final) log_msg('I', "evaluator busy or absent: validation at step %ld skipped", t->state.step); }
    else { t->rep.val_sent++; log_msg('I', "eval job step %ld sent%s", t->state.step, final ? " (final)" : ""); }
    return rc == 0;
}

// Poll the exporter (and metrics) until cond holds or timeout_s passes. interruptible: a signal
// ends the wait (the final validation); else signals do not cut it short (the final ack wait is
// itself the bounded shutdown).
static int wait_until(trainer_t *t, int (*cond)(trainer_t *), double timeout_s, int interruptible)
{
    double t0 = trainer_now();
    while (!cond(t)) {
        if (trainer_now() - t0 >= timeout_s || (interruptible && stage_stopping(t->st))) return 0;
        zmq_pollitem_t it[2];
        int n = 0;
        if (t->exporter) it[n++] = (zmq_pollitem_t){ .socket = t->exporter, .events = ZMQ_POLLIN };
        if (t->metrics) it[n++] = (zmq_pollitem_t){ .socket = t->metrics, .events = ZMQ_POLLIN };
        if (zmq_poll(it, n, 200) < 0 && zmq_errno() != EINTR) break;
        service(t);
    }
    return 1;
}

static int acked(trainer_t *t) { return ckpt_flow_done(&t->ck); }
static int never(trainer_t *t) { (void)t; return 0; }
static int lines_acked(trainer_t *t) { return outbox_pending(t->out) == 0; }
static int final_validated(trainer_t *t) { return t->rep.last_val_step >= t->state.step; }

// Try to hand over the final eval job (the evaluator may be busy with an earlier one): 1 sent,
// 0 not taken yet, -1 it could not be written (a full disk: said once a minute at most).
#define FINAL_JOB_RETRY_S 5
static int final_job_sent(trainer_t *t)
{
    char err[ERR_LEN];
    int rc = report_eval_job(t->c, &t->m, t->ck.spool, t->jobs, t->params, t->state.step, 1, err);
    if (rc < 0 && (t->job_warned == 0 || trainer_now() - t->job_warned >= 60)) {
        log_msg('W', "final eval job: %s (tried again every %d s)", err, FINAL_JOB_RETRY_S);
        t->job_warned = trainer_now();
    }
    return rc == 0 ? 1 : rc < 0 ? -1 : 0;
}

// Final checkpoint, its ack, and the final validation. Returns 0; -1 when the exporter did not
// acknowledge the final checkpoint (a full disk, an exporter gone: it is in the spool only); -2
// when it could not even be written to the spool. The caller must say so.
static int finish(trainer_t *t, int completed)
{
    const trainer_cfg_t *c = t->c;
    int durable = 0;
    if (t->state.step == 0) {
        // stopped before its first step (another stage could not start): --seed makes these
        // weights again, and a gigabyte of them in the spool would only stand in the way
        log_msg('I', "stopped before the first step: no checkpoint to keep");
        return 0;
    }
    const int saved = save_ckpt(t, 1, completed && c->final_eval_timeout_s > 0) == 0;
    if (saved && t->exporter) {
        log_msg('I', "waiting up to %.0f s for the exporter to acknowledge step %ld", c->final_ack_timeout_s, t->state.step);
        double t0 = trainer_now();
        if (!(durable = wait_until(t, acked, c->final_ack_timeout_s, 0)))
            log_msg('E', "checkpoint step %ld not acknowledged by the exporter; it stays in %s (resume with --resume or "
                    "--resume-file %s)", t->state.step, t->ck.spool, t->ck.pending_path);
        // the metrics lines: what is left of that wait, at least one resend period (lines lost in
        // an exporter restart go again after it); train.sh allows the trainer 120 s to stop
        else if (!wait_until(t, lines_acked, fmax(fmin(c->exporter_resend_s, 60) + 5, c->final_ack_timeout_s - (trainer_now() - t0)), 0))
            log_msg('W', "%d metrics line(s) not acknowledged by the exporter: not in metrics.jsonl yet; kept in %s "
                    "for a --resume to send again", outbox_pending(t->out), t->journal.path);
    }
    if (completed && t->jobs && c->final_eval_timeout_s > 0) {
        tb_download(t->b);
        double t0 = trainer_now();
        int sent = 0;
        log_msg('I', "final eval job step %ld: waiting up to %.0f s for an evaluator to take it", t->state.step,
                c->final_eval_timeout_s);
        while ((sent = final_job_sent(t)) <= 0 && trainer_now() - t0 < c->final_eval_timeout_s && !stage_stopping(t->st)) {
            // a job that could not be written waits before the next try (no evaluator: it
            // waits for the socket); the exporter and the metrics are served meanwhile
            if (sent < 0) wait_until(t, never, FINAL_JOB_RETRY_S, 1);
            zmq_pollitem_t it = { .socket = t->jobs, .events = ZMQ_POLLOUT };
            if (sent == 0 && zmq_poll(&it, 1, 500) < 0 && zmq_errno() != EINTR) break;
            service(t);
        }
        sent = sent > 0;
        if (!sent && stage_stopping(t->st))
            log_msg('W', "no evaluator took the final eval job (stopped after %.0f s)", trainer_now() - t0);
        else if (!sent) log_msg('W', "no evaluator took the final eval job within %.0f s", c->final_eval_timeout_s);
        else {
            log_msg('I', "final eval job step %ld sent; waiting up to %.0f s for its validation", t->state.step,
                    c->final_eval_timeout_s - (trainer_now() - t0));
            // The job lives only in the evaluator's memory: one killed meanwhile (train.sh
            // restarts it) lost it, so it is offered again every final_eval_resend_s until the
            // metrics come; an evaluator still working on it skips the copy (evaluator_service.c).
            int got = 0;
            for (double left; (left = c->final_eval_timeout_s - (trainer_now() - t0)) > 0 && !stage_stopping(t->st);) {
                if ((got = wait_until(t, final_validated, fmin(left, c->final_eval_resend_s), 1))) break;
                if (trainer_now() - t0 < c->final_eval_timeout_s && final_job_sent(t) > 0)
                    log_msg('I', "no validation of step %ld yet: the final eval job is offered again", t->state.step);
            }
            if (!got && stage_stopping(t->st))
                log_msg('W', "no validation metrics for step %ld (stopped after %.0f s)", t->state.step, trainer_now() - t0);
            else if (!got)
                log_msg('W', "no validation metrics for step %ld arrived in time", t->state.step);
            else if (isfinite(t->rep.last_mean_dice))
                log_msg('I', "final validation mean Dice %.4f", t->rep.last_mean_dice);
        }
    }
    return !saved ? -2 : durable || !t->exporter ? 0 : -1;
}

int trainer_run(const trainer_cfg_t *cfg, char *err)
{
    trainer_cfg_t c = *cfg;
    c.tc.regions = c.region_spec[0] ? &c.regions : NULL;   // points into this copy
    trainer_t t;
    memset(&t, 0, sizeof t);
    t.c = &c;
    t.t_start = trainer_now();
    stage_malloc_for_big_frames();          // patch batches are tens of MB a frame
    t.st = stage_new("trainer");
    int rc = setup(&t, err);
    if (rc) { teardown(&t); stage_destroy(&t.st); return rc == TRAINER_EXIT_CONFIG ? rc : -1; }

    t.rep.t_start = t.rep.t_last = trainer_now();
    t.rep.step_last = t.state.step;
    t.rep.last_val_step = -1;
    t.rep.last_mean_dice = NAN;
    t.last_batch = trainer_now();
    int stopped = 0, out_of_time = 0, mismatch = 0;
    float lr = 0;
    // nb: -1 no batch fetched yet, else next_batch's answer (0: a batch is ready in t.x)
    int nb = -1;
    while (t.state.step < t.state.total_steps) {
        if (nb < 0) {                       // nothing fetched ahead: the device idles meanwhile
            double t0 = trainer_now();
            nb = next_batch(&t);
            t.rep.wait_s += trainer_now() - t0;
        }
        if (nb == 2) { out_of_time = 1; break; }
        if (nb == 3) { mismatch = 1; break; }
        if (nb) { stopped = 1; break; }
        if (budget_expired(&t.budget, trainer_now())) { out_of_time = 1; break; }
        // Step k (1-based) uses the cosine rate after k-1 scheduler steps (torch order).
        lr = lr_cosine((float)t.state.base_lr, t.state.step, t.state.total_steps);
        const double t_begin = trainer_now();
        tb_step_begin(t.b, t.x, t.labels, lr, t.state.adam_step + 1);
        // Receive and decode the next batch while the GPU runs this step (the CPU reference has
        // already finished it). The data wait is the time the device sat idle for want of it:
        // from the end of its work (t_begin + busy) to the batch being ready.
        nb = -1;
        double t_ready = 0, busy = 0;
        if (t.state.step + 1 < t.state.total_steps) {
            nb = next_batch(&t);
            t_ready = trainer_now();
        }
        double loss = tb_step_end(t.b, &busy);
        if (nb == 0) t.rep.wait_s += fmax(0.0, t_ready - (t_begin + busy));
        t.state.step++;
        t.state.adam_step++;
        rng_u64(&t.state.rng);              // one draw per step: the stream's position is the step's
        budget_after_step(&t.budget, &t.state, trainer_now());     // may fix or correct the total
        const long total = t.state.total_steps;
        if (!isfinite(loss)) log_msg('W', "step %ld: loss is %g", t.state.step, loss);
        t.rep.loss_sum += loss;
        t.rep.loss_n++;
        if (t.state.step % c.log_every == 0 || t.state.step == total)
            report_interval(&t.rep, &t.journal, t.out, t.state.step, budget_total(&t.budget, &t.state), lr,
                            tb_mem_peak(t.b));
        // A validated step is also checkpointed: the exporter's best link can only point at
        // weights it holds (with --val-every off the --ckpt-every grid, best would miss them).
        // The job goes first: only a step whose job went out is marked for the exporter to keep
        // until scored (a skipped one would be kept for nothing).
        const int validate = c.val_every && t.state.step % c.val_every == 0 && t.state.step < total;
        const int job_sent = validate && eval_job(&t, 0);
        if (((c.ckpt_every && t.state.step % c.ckpt_every == 0) || validate) && t.state.step < total)
            save_ckpt(&t, 0, job_sent);
        service(&t);
    }
    if (out_of_time) {
        // The last interval's numbers, then the run ends as if the schedule had (a resume of
        // this final checkpoint has nothing left to do).
        if (t.rep.loss_n) report_interval(&t.rep, &t.journal, t.out, t.state.step, t.state.total_steps, lr, tb_mem_peak(t.b));
        log_msg('I', "--max-minutes %g: the budget ran out at step %ld of the estimated %ld (%.0f s since the start)",
                c.max_minutes, t.state.step, t.state.total_steps, trainer_now() - t.t_start);
        if (t.state.step < t.state.total_steps) t.state.total_steps = t.state.step;
    }
    if (stopped) log_msg('I', "stopping on signal %d at step %ld: final checkpoint", stage_signal(t.st), t.state.step);
    else if (mismatch) log_msg('E', "%s: stopping at step %ld (final checkpoint)", t.why, t.state.step);
    else if (!out_of_time)
        log_msg('I', "reached step %ld after %.1f s: final checkpoint", t.state.step, trainer_now() - t.t_start);
    const int fin = finish(&t, !stopped && !mismatch);
    log_msg('I', "done: %ld steps, %ld bad batches dropped, %ld checkpoints sent, %ld acknowledged, %ld eval jobs "
            "sent, %ld skipped, %ld metrics lines acknowledged, %ld dropped, %d never acknowledged, %ld to an older "
            "exporter (unconfirmed)", t.state.step, t.rep.bad_batches, t.ck.n_sent, t.ck.n_acked, t.rep.val_sent,
            t.rep.val_skipped, outbox_acked(t.out), outbox_dropped(t.out), outbox_pending(t.out), outbox_unconfirmed(t.out));
    teardown(&t);
    stage_destroy(&t.st);
    if (mismatch) { set_err(err, "%s", t.why); return TRAINER_EXIT_CONFIG; }
    if (fin == -1)
        set_err(err, "the final checkpoint (step %ld) is not with the exporter (it did not acknowledge it: see its log); it is kept in %s",
                t.state.step, t.ck.spool);
    if (fin == -2)
        set_err(err, "the final checkpoint (step %ld) could not be written to %s (see above); the newest checkpoint the "
                "exporter holds is step %ld", t.state.step, t.ck.spool, t.ck.acked_step);
    if (fin) return TRAINER_EXIT_NOT_DURABLE;
    return 0;
}
