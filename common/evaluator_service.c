/*
evaluator_service.c -- service mode (docs/pipeline.md): PULL eval jobs from the trainer
(connect), ask the loader's ROUTER for the validation list once and then each case (DEALER,
connect; replies matched by `seq`, stale ones dropped), segment and score every case on its
source grid, and send one `metrics` message to the exporter (DEALER) and to the trainer (PUSH,
never blocking). After a final job (or every job with --predictions every) each case's label map
goes to the exporter as a `volume` of kind "prediction". What goes to the exporter waits in an
outbox (outbox.h) until acknowledged and is sent again when lost (a later one acknowledged, or
nothing for --exporter-resend seconds), so an exporter killed and restarted meanwhile loses none
of it; a final job's and the last messages are waited for (bounded) before the evaluator moves on
or exits.
Jobs that arrive while one runs wait in the socket; afterwards only the newest is taken.
The reference labels are the dataset's original label files when --dataset is given (same host
or shared storage), else the loader's labels mapped back to the source grid (exact unless the
loader resampled).
*/
#include "evaluator_internal.h"
#include "check.h"
#include "dataset.h"
#include "labels.h"
#include "outbox.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <jansson.h>

typedef struct {
    const eval_cfg_t *cfg;
    stage_t *st;
    void *jobs, *cases, *exporter, *metrics;
    uint64_t seq;
    char (*ids)[WIRE_ID_LEN];       // the loader's validation list (asked for every job: a joined
    int n_ids;                      // evaluator outlives runs, and a run's loader may change)
    dataset_t ds;                   // --dataset: source labels by case id
    int have_ds;
    eval_model_t *em;               // prepared model kept across jobs
    int em_roi[3];
    outbox_t *out;                  // metrics and predictions until the exporter acks them
    int final_done;                 // a final job was validated: its step and weights' sha256,
    uint64_t final_step;            // and its results, sent to the trainer again when it offers
    char final_sha[65];             // the job again (its first copy may not have reached it)
    eval_result_t *final_rs;
    int final_n;
    char *final_extra;
    char final_run[WIRE_ID_LEN];
    eval_labels_t final_lab;        // the classes / regions it was scored with
    char job_tag[48];               // a final job: "eval.final.STEP.SHA12", its weights' name:
                                    // the ids of its metrics and predictions, so that the exporter
                                    // files them once when two evaluators both took the job (the
                                    // trainer offers it again until metrics come); "" for others
} svc_t;

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return tv.tv_sec + tv.tv_usec * 1e-6;
}

static void *open_sock(svc_t *s, int type, const char *ep, int hwm, char *err)
{
    stage_sock_opts_t o = stage_sock_defaults();
    o.hwm = hwm;
    if (s->cfg->curve_client && !strncmp(ep, "tcp://", 6)) {
        o.curve_secret = s->cfg->curve_client;
        o.curve_server_public = s->cfg->server_key;
    }
    return stage_socket(s->st, type, ep, STAGE_CONNECT, &o, err);
}

// ---- the loader ---------------------------------------------------------------------------------

// Send a request on the cases socket and wait for the answer with its seq. 0 (reply in m),
// 1 stopping, -1 err (timeout, send failure).
static int ask_loader(svc_t *s, const char *what, int64_t index, const char *case_id, wire_msg_t *m, char *err)
{
    wire_request_t r = { .index = index, .seq = ++s->seq };
    snprintf(r.what, sizeof r.what, "%s", what);
    wire_out_t o;
    if (wire_encode_request(&o, &r, err)) { wire_out_free(&o); return -1; }
    if (case_id) wire_put_str(&o, "case_id", case_id);
    double deadline = now_s() + s->cfg->case_timeout_s;
    int rc = WIRE_AGAIN;
    while (rc == WIRE_AGAIN) {      // no loader connected yet: wait for one, bounded
        stage_event_t e = stage_wait_out(s->st, s->cases, 1000);
        if (e == STAGE_STOP) { wire_out_free(&o); return 1; }
        if (e == STAGE_READY) rc = wire_send(s->cases, &o, ZMQ_DONTWAIT, err);
        if (rc == WIRE_AGAIN && now_s() > deadline) rc = set_err(err, "no loader took the request within %d s", s->cfg->case_timeout_s);
    }
    if (rc < 0) { wire_out_free(&o); return -1; }
    // A request or its reply can be lost on the way (a loader stopped for a while, its connection
    // dropped and made again): the same request goes again after a quarter of --case-timeout (150
    // s by default: far beyond a case's preprocessing, since a loader merely slow would do the
    // work twice); a second answer to it is dropped as stale by the next request's seq.
    const double every = s->cfg->case_timeout_s / 4.0;
    double resend_at = now_s() + every;
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0) { wire_out_free(&o); return set_err(err, "loader: no answer to '%s' within %d s", what, s->cfg->case_timeout_s); }
        if (now_s() >= resend_at) {
            char e2[ERR_LEN];
            if (wire_send(s->cases, &o, ZMQ_DONTWAIT, e2) == 0)
                log_msg('I', "no answer from the loader to '%s' for %.0f s: asked again", what, every);
            resend_at = now_s() + every;
        }
        stage_event_t e = stage_wait(s->st, s->cases, left > 1 ? 1000 : (int)(left * 1000) + 1);
        if (e == STAGE_STOP) { wire_out_free(&o); return 1; }
        if (e != STAGE_READY) continue;
        char e2[ERR_LEN];
        int got = wire_recv(s->cases, m, ZMQ_DONTWAIT, e2);
        if (got == WIRE_AGAIN) continue;
        if (got < 0) { log_msg('W', "cases: bad reply from %s: %s", m->peer, e2); continue; }
        uint64_t seq = 0;
        if (wire_get_u64(m, "seq", &seq, 0, e2) < 0 || seq != r.seq) {
            log_msg('W', "cases: dropping a stale '%s' reply from %s (seq %llu, want %llu)", m->type, m->peer,
                    (unsigned long long)seq, (unsigned long long)r.seq);
            continue;
        }
        wire_out_free(&o);
        return 0;
    }
}

static int fetch_list(svc_t *s, char *err)
{
    free(s->ids);
    s->ids = NULL;
    s->n_ids = 0;
    wire_msg_t m;
    wire_msg_init(&m);
    int rc = ask_loader(s, "list", -1, NULL, &m, err);
    if (rc == 0 && eval_case_list_decode(&m, &s->ids, &s->n_ids, err) == 0)
        log_msg('I', "loader %s serves %d validation case(s)", m.peer, s->n_ids);
    else if (rc == 0) rc = -1;
    wire_msg_free(&m);
    return rc;
}

// Reference labels on the source grid. NULL with err when there are none.
static uint8_t *reference(svc_t *s, const eval_case_t *c, const char **how, char *err)
{
    size_t n = (size_t)c->rec.src_dim[0] * c->rec.src_dim[1] * c->rec.src_dim[2];
    if (s->have_ds) {
        int i = dataset_find(&s->ds, c->id);
        if (i < 0 || !s->ds.cases[i].label) { set_err(err, "%s: no label file in %s", c->id, s->cfg->dataset); return NULL; }
        volume_t l;
        if (nifti_read_volume(s->ds.cases[i].label, &l, err)) return NULL;
        uint8_t *ref;
        dataset_label_bytes(&s->ds, s->ds.cases[i].label, &l, c->rec.src_dim, c->rec.src_affine, c->id, &ref, err);
        volume_free(&l);
        *how = "source label files";
        return ref;
    }
    if (!c->labels) { set_err(err, "%s: the loader sent no labels (and no --dataset)", c->id); return NULL; }
    uint8_t *ref = xmalloc(n);
    if (preprocess_invert_labels(ref, c->labels, &c->rec, err)) { free(ref); return NULL; }
    *how = "loader labels mapped back";
    return ref;
}

// ---- the exporter ------------------------------------------------------------------------------

static void free_buf(void *data, void *hint) { (void)hint; free(data); }

// Answers the exporter sent us: acks to the outbox, problems logged; then (re)send what is due.
static void drain_exporter(svc_t *s)
{
    if (!s->exporter) return;
    for (;;) {
        wire_msg_t m;
        wire_msg_init(&m);
        char err[ERR_LEN];
        int rc = wire_recv(s->exporter, &m, ZMQ_DONTWAIT, err);
        if (rc == WIRE_AGAIN) { wire_msg_free(&m); break; }
        if (rc < 0) log_msg('W', "exporter %s: bad reply: %s", m.peer, err);
        else if (outbox_on_reply(s->out, &m)) {}
        else if (eval_reply_error(&m, err)) log_msg('W', "exporter %s: %s", m.peer, err + strlen("loader: "));
        else log_msg('W', "exporter %s: unexpected '%s' message", m.peer, m.type);
        wire_msg_free(&m);
    }
    outbox_tick(s->out);
}

// Wait until the exporter has acknowledged all but `keep` of what the outbox holds: 1 when it
// has. 0 after timeout_s, after stall_s without progress (the exporter is away: nothing to wait
// for), or -- interruptible -- at a stop request.
static int flush_outbox(svc_t *s, int keep, double timeout_s, double stall_s, int interruptible)
{
    double deadline = now_s() + timeout_s;
    for (;;) {
        drain_exporter(s);
        if (outbox_pending(s->out) <= keep) return 1;
        if (now_s() >= deadline || outbox_stalled_s(s->out) >= stall_s || (interruptible && stage_stopping(s->st))) return 0;
        zmq_pollitem_t it = { .socket = s->exporter, .events = ZMQ_POLLIN };
        if (zmq_poll(&it, 1, 200) < 0 && zmq_errno() != EINTR) return 0;
    }
}

// Hand o to the outbox. A slow exporter that is still acknowledging holds the evaluator up (up
// to 60 s) rather than let unacknowledged predictions pile up in memory; an absent one does not
// (the outbox's byte bound applies then).
// id: the message's id (NULL: a fresh one).
static void to_exporter(svc_t *s, wire_out_t *o, const char *what, const char *key, const char *id)
{
    if (!s->exporter) return;
    if (!flush_outbox(s, EVAL_OUTBOX_AHEAD, 60, 10, 1) && !stage_stopping(s->st))
        log_msg('W', "exporter: %d message(s) unacknowledged; %s queued behind them", outbox_pending(s->out), what);
    outbox_post_id(s->out, o, what, key, id);
}

// The exporter id of a final job's message: its tag and what it is, hashed ("metrics", or
// "case:" and a case's name for its prediction); NULL for other jobs.
static const char *final_msg_id(const svc_t *s, const char *part, char out[64])
{
    if (!s->job_tag[0]) return NULL;
    char sha[65];
    wire_sha256_hex((const uint8_t *)part, strlen(part), sha);
    snprintf(out, 64, "%s.%.12s", s->job_tag, sha);
    return out;
}

static void send_prediction(svc_t *s, const eval_case_t *c, uint8_t *labels, uint64_t step, const char *run)
{
    wire_out_t o;
    wire_out_init(&o, "volume");
    wire_put_str(&o, "case_id", c->id);
    wire_put_str(&o, "kind", "prediction");
    wire_put_u64(&o, "step", step);
    if (run[0]) wire_put_str(&o, "run", run);
    double a[16], sp[3];
    for (int r = 0; r < 4; r++)
        for (int k = 0; k < 4; k++) a[4 * r + k] = c->rec.src_affine[r][k];
    eval_affine_spacing(c->rec.src_affine, sp);
    wire_put_f64v(&o, "affine", a, 16);
    wire_put_f64v(&o, "spacing", sp, 3);
    int64_t shape[3] = { c->rec.src_dim[0], c->rec.src_dim[1], c->rec.src_dim[2] };
    wire_out_array(&o, "labels", WIRE_U8, 3, shape, labels);
    wire_out_donate(&o, "labels", free_buf, NULL);
    char what[WIRE_ID_LEN + 48];
    snprintf(what, sizeof what, "prediction %s of step %llu", c->id, (unsigned long long)step);
    char id[64];
    char part[WIRE_ID_LEN + 8];
    snprintf(part, sizeof part, "case:%s", c->id);
    to_exporter(s, &o, what, c->id, final_msg_id(s, part, id));
    wire_out_free(&o);
}

// Wait (bounded as flush_outbox) until the exporter acknowledged everything sent so far.
static void wait_acks(svc_t *s, double timeout_s, double stall_s, int interruptible)
{
    if (s->exporter && !flush_outbox(s, 0, timeout_s, stall_s, interruptible))
        log_msg('W', "exporter: %d message(s) not acknowledged yet", outbox_pending(s->out));
}

// The trainer's copy of a job's metrics. Its socket never holds the evaluator up: a full or
// absent peer drops this copy.
static void metrics_to_trainer(svc_t *s, uint64_t step, const eval_result_t *rs, int n, const eval_labels_t *lab,
                               const char *extra, const char *run)
{
    wire_out_t o;
    char err[ERR_LEN];
    if (!s->metrics) return;
    if (eval_metrics_msg(&o, step, rs, n, lab, extra, err)) log_msg('E', "metrics: %s", err);
    else {
        if (run[0]) wire_put_str(&o, "run", run);
        int rc = wire_send(s->metrics, &o, ZMQ_DONTWAIT, err);
        if (rc == WIRE_AGAIN) log_msg('W', "trainer metrics socket full or not connected: step %llu not sent to it", (unsigned long long)step);
        else if (rc < 0) log_msg('W', "trainer metrics: %s", err);
    }
    wire_out_free(&o);
}

// lab: the classes / regions the job was scored with (the job's regions, else ours): the names
static void send_metrics(svc_t *s, uint64_t step, const eval_result_t *rs, int n, const eval_labels_t *lab,
                         const char *extra, const char *run)
{
    wire_out_t o;
    char err[ERR_LEN];
    if (s->exporter) {
        char what[48];
        snprintf(what, sizeof what, "metrics of step %llu", (unsigned long long)step);
        if (eval_metrics_msg(&o, step, rs, n, lab, extra, err)) log_msg('E', "metrics: %s", err);
        else {
            if (run[0]) wire_put_str(&o, "run", run);
            char id[64];
            to_exporter(s, &o, what, NULL, final_msg_id(s, "metrics", id));
        }
        wire_out_free(&o);
    }
    metrics_to_trainer(s, step, rs, n, lab, extra, run);
}

// ---- one job -----------------------------------------------------------------------------------

// The model of job j, prepared for its window (kept from the previous job when it fits).
static int job_model(svc_t *s, const eval_job_t *j, sw_cfg_t *sw, char *err)
{
    char what[64];
    snprintf(what, sizeof what, "job step %llu", (unsigned long long)j->step);
    eval_model_t *em = eval_model_load_bytes(j->blob, j->blob_len, what, &s->cfg->model, err);
    if (!em) return -1;
    *sw = s->cfg->sw;
    if (!s->cfg->window_given && j->has_patch) memcpy(sw->roi, j->patch, sizeof sw->roi);
    if (s->em && !memcmp(s->em_roi, sw->roi, sizeof s->em_roi) && eval_model_adopt(s->em, em)) {
        eval_model_free(&em);
        return 0;
    }
    if (s->cfg->deterministic) eval_model_deterministic(em);
    if (eval_model_prepare(em, sw, s->cfg->device, err)) { eval_model_free(&em); return -1; }
    eval_model_free(&s->em);
    s->em = em;
    eval_model_stop_on(em, s->st);
    memcpy(s->em_roi, sw->roi, sizeof s->em_roi);
    return 0;
}

// Fetch, segment and score validation case k into r. 1 when stopping.
static int job_case(svc_t *s, const eval_job_t *j, const sw_cfg_t *sw, const eval_labels_t *lab, int k,
                    eval_result_t *r, const char **how)
{
    double t0 = now_s();
    snprintf(r->id, sizeof r->id, "%s", s->ids[k]);
    wire_msg_t m;
    wire_msg_init(&m);
    eval_case_t c;
    memset(&c, 0, sizeof c);
    uint8_t *pred = NULL, *ref = NULL;
    int rc = ask_loader(s, "case", k, s->ids[k], &m, r->error);
    if (rc == 0) rc = eval_case_decode(&m, &c, r->error);
    wire_msg_free(&m);
    if (rc == 0 && c.C != eval_model_cfg(s->em)->in_channels)
        rc = set_err(r->error, "%d image channels, the model takes %d", c.C, eval_model_cfg(s->em)->in_channels);
    if (rc == 0) {
        pred = xmalloc((size_t)c.rec.src_dim[0] * c.rec.src_dim[1] * c.rec.src_dim[2]);
        rc = eval_segment(&s->em, 1, sw, lab, s->cfg->keep_given ? s->cfg->keep_largest : NULL, c.image, &c.rec, pred, NULL, r->error);
    }
    if (rc == 0 && !(ref = reference(s, &c, how, r->error))) rc = -1;
    if (rc == 0) {
        double sp[3];
        eval_affine_spacing(c.rec.src_affine, sp);
        eval_score(r, pred, ref, c.rec.src_dim, sp, eval_model_cfg(s->em)->classes, lab, s->cfg->hd95);
        r->ok = 1;
        if (s->exporter && (s->cfg->predictions == EVAL_PRED_EVERY || (j->final && s->cfg->predictions == EVAL_PRED_FINAL))) {
            send_prediction(s, &c, pred, j->step, j->run);      // takes pred
            pred = NULL;
        }
    }
    r->seconds = now_s() - t0;
    free(pred);
    free(ref);
    eval_case_free(&c);
    return rc == 1 || (rc && stage_stopping(s->st)) ? 1 : 0;    // a stop is no failed case
}

static char *job_extra_json(const eval_job_t *j, const sw_cfg_t *sw, const char *device, const char *how, double secs)
{
    json_t *o = json_object();
    json_object_set_new(o, "kind", json_string(j->kind));
    json_object_set_new(o, "final", json_boolean(j->final));
    json_object_set_new(o, "window", json_pack("[iii]", sw->roi[0], sw->roi[1], sw->roi[2]));
    json_object_set_new(o, "overlap", json_real(sw->overlap));
    json_object_set_new(o, "blend", json_string(sw->blend == SW_BLEND_GAUSSIAN ? "gaussian" : "constant"));
    json_object_set_new(o, "mirror", json_boolean(sw->mirror));
    json_object_set_new(o, "device", json_string(device));
    json_object_set_new(o, "reference", json_string(how));
    json_object_set_new(o, "seconds", json_real(secs));
    char *txt = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!txt) DIE("json_dumps: out of memory");
    return txt;
}

// Run job j to the end. 1 when stopping, -1 when it could not run (logged by the caller).
static int run_job(svc_t *s, const eval_job_t *j, const char *peer, char *err)
{
    double t0 = now_s();
    sw_cfg_t sw;
    eval_labels_t lab = s->cfg->lab;
    if (!lab.nregions && j->has_regions && eval_regions_parse(&lab, j->regions, err)) return -1;
    if (job_model(s, j, &sw, err)) return -1;
    if (lab.nregions && lab.nregions != eval_model_cfg(s->em)->classes)
        return set_err(err, "%d regions but the model has %d outputs", lab.nregions, eval_model_cfg(s->em)->classes);
    int rc = fetch_list(s, err);
    if (rc) return rc;
    log_msg('I', "job step %llu (%s%s) from %s: %d case(s), window %dx%dx%d on the %s", (unsigned long long)j->step,
            j->kind, j->final && strcmp(j->kind, "final") ? ", final" : "", peer, s->n_ids, sw.roi[0], sw.roi[1], sw.roi[2], eval_model_device(s->em));
    eval_result_t *rs = xcalloc(s->n_ids ? (size_t)s->n_ids : 1, sizeof *rs);
    const char *how = "none";
    int ok = 0;
    for (int k = 0; k < s->n_ids && rc == 0; k++) {
        rc = job_case(s, j, &sw, &lab, k, &rs[k], &how);
        if (rc) break;
        if (rs[k].ok) { ok++; log_msg('I', "case %s: mean Dice %.4f (%.1f s)", rs[k].id, rs[k].mean_dice, rs[k].seconds); }
        else log_msg('W', "case %s skipped: %s", rs[k].id, rs[k].error);
    }
    if (rc == 0) {
        char *extra = job_extra_json(j, &sw, eval_model_device(s->em), how, now_s() - t0);
        send_metrics(s, j->step, rs, s->n_ids, &lab, extra, j->run);
        if (j->final) {                             // kept for the trainer's copies of this job
            free(s->final_rs);
            free(s->final_extra);
            s->final_rs = rs;
            s->final_n = s->n_ids;
            s->final_extra = extra;
            snprintf(s->final_run, sizeof s->final_run, "%s", j->run);
            s->final_lab = lab;
            rs = NULL;
        } else {
            free(extra);
        }
        if (j->final) wait_acks(s, 60, 30, 1);      // train.sh waits for the final predictions
        double md = NAN;
        const eval_result_t *done = rs ? rs : s->final_rs;
        for (int k = 0, c = 0; k < s->n_ids; k++)
            if (done[k].ok && isfinite(done[k].mean_dice)) { md = (c ? md * c : 0) + done[k].mean_dice; md /= ++c; }
        log_msg('I', "job step %llu done: %d/%d case(s), mean Dice %.4f, %.1f s", (unsigned long long)j->step, ok,
                s->n_ids, md, now_s() - t0);
    }
    free(rs);
    return rc;
}

// ---- the loop ----------------------------------------------------------------------------------

// Take every job waiting in the socket; keep the newest valid one in *m (its decoded form in *j).
// A dropped final job hands its final mark on. Returns 1 when a job was kept.
// With high-water marks of 1 a newer job still in the trainer's queue moves up only once the one
// taken has left ours, a few ms later for a model-sized message: after each job the socket is
// given NEWER_JOB_WAIT_MS to deliver the next, so the evaluator does not work through stale ones.
#define NEWER_JOB_WAIT_MS 200
static int newest_job(svc_t *s, wire_msg_t *m, eval_job_t *j)
{
    int have = 0, final = 0;
    for (;;) {
        if (have) {
            zmq_pollitem_t it = { .socket = s->jobs, .events = ZMQ_POLLIN };
            if (zmq_poll(&it, 1, NEWER_JOB_WAIT_MS) <= 0) break;
        }
        wire_msg_t t;
        wire_msg_init(&t);
        char err[ERR_LEN];
        int rc = wire_recv(s->jobs, &t, ZMQ_DONTWAIT, err);
        if (rc == WIRE_AGAIN) { wire_msg_free(&t); break; }
        eval_job_t tj;
        if (rc < 0 || eval_job_decode(&t, &tj, err) < 0) {
            log_msg('W', "jobs: rejected a message from %s: %s", t.peer[0] ? t.peer : "?", err);
            wire_msg_free(&t);
            continue;
        }
        if (have) {
            log_msg('I', "jobs: step %llu superseded by step %llu", (unsigned long long)j->step, (unsigned long long)tj.step);
            final |= j->final;
        }
        wire_msg_free(m);
        *m = t;                 // the message owns the frames tj.blob points into
        *j = tj;
        have = 1;
    }
    if (have) j->final |= final;
    return have;
}

static int svc_open(svc_t *s, const eval_cfg_t *cfg, stage_t *st, char *err)
{
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    s->st = st;
    if (cfg->dataset) {
        if (dataset_open(cfg->dataset, &s->ds, err)) return -1;
        s->have_ds = 1;
    }
    // The jobs socket is a PULL data pipe: stage_socket turns its heartbeats off, since the next
    // model-sized job waiting in the queue would hold the PONGs back. The trainer never blocks on it.
    if (!(s->jobs = open_sock(s, ZMQ_PULL, cfg->jobs_ep, 1, err))) return -1;
    if (!(s->cases = open_sock(s, ZMQ_DEALER, cfg->cases_ep, 4, err))) return -1;
    if (cfg->exporter_ep) {
        if (!(s->exporter = open_sock(s, ZMQ_DEALER, cfg->exporter_ep, 16, err))) return -1;
        s->out = outbox_new("evaluator", s->exporter, EVAL_OUTBOX_BYTES, cfg->exporter_resend_s);
    }
    if (cfg->metrics_ep && !(s->metrics = open_sock(s, ZMQ_PUSH, cfg->metrics_ep, 4, err))) return -1;
    return 0;
}

int eval_run_service(const eval_cfg_t *cfg, stage_t *st, char *err)
{
    svc_t s;
    int rc = svc_open(&s, cfg, st, err);
    long done = 0;
    if (rc == 0) log_msg('I', "waiting for eval jobs on %s (cases %s, exporter %s, metrics %s)", cfg->jobs_ep,
                         cfg->cases_ep, cfg->exporter_ep ? cfg->exporter_ep : "-", cfg->metrics_ep ? cfg->metrics_ep : "-");
    while (rc == 0) {
        stage_event_t e = stage_wait(st, s.jobs, 1000);
        drain_exporter(&s);
        if (e == STAGE_STOP) break;
        if (e != STAGE_READY) continue;
        wire_msg_t m;
        wire_msg_init(&m);
        eval_job_t j;
        if (!newest_job(&s, &m, &j)) { wire_msg_free(&m); continue; }
        char jerr[ERR_LEN], peer[64], sha[65] = "";
        snprintf(peer, sizeof peer, "%s", m.peer);
        if (j.final) wire_sha256_hex(j.blob, j.blob_len, sha);
        if (j.final && s.final_done && j.step == s.final_step && !strcmp(sha, s.final_sha) && !strcmp(j.run, s.final_run)) {
            // the trainer offers its final job again until the metrics arrive (an evaluator
            // killed meanwhile lost it, or the trainer was down when they came); this one already
            // validated these weights: the trainer gets their metrics again, not a second run
            log_msg('I', "final job step %llu from %s again: already validated; its metrics sent again",
                    (unsigned long long)j.step, peer);
            metrics_to_trainer(&s, j.step, s.final_rs, s.final_n, &s.final_lab, s.final_extra, s.final_run);
            wire_msg_free(&m);
            continue;
        }
        s.job_tag[0] = 0;
        if (j.final) snprintf(s.job_tag, sizeof s.job_tag, "eval.final.%llu.%.12s", (unsigned long long)j.step, sha);
        int jr = run_job(&s, &j, peer, jerr);
        wire_msg_free(&m);
        if (jr == 0 && j.final) {
            s.final_done = 1;
            s.final_step = j.step;
            memcpy(s.final_sha, sha, sizeof sha);
        }
        if (jr == 1) break;
        if (jr < 0) log_msg('W', "job step %llu from %s failed: %s", (unsigned long long)j.step, peer, jerr);
        done++;
        if ((cfg->max_jobs && done >= cfg->max_jobs) || (cfg->exit_after_final && j.final)) break;
    }
    log_msg('I', "stopping after %ld job(s)%s", done, stage_signal(st) ? " (signal)" : "");
    if (stage_signal(st)) wait_acks(&s, 5, 5, 0);   // train.sh allows 10 s after SIGTERM
    else wait_acks(&s, 60, 30, 1);
    if (s.out)
        log_msg('I', "exporter: %ld message(s) acknowledged, %ld dropped, %d never acknowledged, %ld to an older exporter "
                "(unconfirmed)", outbox_acked(s.out), outbox_dropped(s.out), outbox_pending(s.out), outbox_unconfirmed(s.out));
    outbox_free(&s.out);
    eval_model_free(&s.em);
    free(s.ids);
    free(s.final_rs);
    free(s.final_extra);
    if (s.have_ds) dataset_free(&s.ds);
    return rc;
}
