/*
trainer_report.c -- what the trainer tells the world. Every --log-every steps: one progress line
on stdout (step, loss, lr, patches/s, share of wall time spent waiting for data, GPU memory,
ETA) and the same numbers as a `metrics` message (source "trainer") to the exporter, never
blocking: it waits in the outbox (outbox.h), and on disk (trainer_journal.c), until the
exporter acknowledges it. Every
--val-every steps: an eval job (`checkpoint` of kind "weights": safetensors bytes) on the
evaljobs PUSH socket with DONTWAIT, skipped when the evaluator is busy or absent.
The evaluator's validation metrics arriving on the metrics socket are logged here.
*/
#include "trainer_internal.h"
#include "check.h"
#include "safetensors.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double trainer_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

double trainer_wall(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void fmt_eta(double s, char *out, size_t cap)
{
    if (!isfinite(s) || s < 0) { snprintf(out, cap, "?"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(out, cap, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else snprintf(out, cap, "%ldm%02lds", t / 60, t % 60);
}

static void put_value(wire_metrics_t *x, const char *name, double v)
{
    snprintf(x->names[x->nvalues], WIRE_NAME_LEN, "%s", name);
    x->values[x->nvalues++] = v;
}

void report_interval(report_t *r, journal_t *j, outbox_t *out, long step, long total, float lr, size_t gpu_peak)
{
    double now = trainer_now(), dt = now - r->t_last;
    long dsteps = step - r->step_last;
    if (dsteps <= 0 || dt <= 0) return;
    double loss = r->loss_n ? r->loss_sum / (double)r->loss_n : NAN;
    double pps = (double)(r->patches - r->patches_last) / dt;
    double wait = (r->wait_s - r->wait_last) / dt;
    char eta[32], mem[48] = "";
    char of[24] = "?";                      // total <= 0: not known yet (--max-minutes warm-up)
    if (total > 0) snprintf(of, sizeof of, "%ld", total);
    fmt_eta(total > 0 ? (double)(total - step) * dt / (double)dsteps : NAN, eta, sizeof eta);
    if (gpu_peak) snprintf(mem, sizeof mem, " gpu-mem %.2f GiB", (double)gpu_peak / (1 << 30));
    printf("step %ld/%s loss %.4f lr %.3e patches/s %.2f data-wait %.0f%%%s eta %s\n", step, of, loss,
           (double)lr, pps, 100 * wait, mem, eta);
    fflush(stdout);

    if (out) {
        wire_metrics_t x;
        memset(&x, 0, sizeof x);
        x.step = (uint64_t)step;
        x.wall_time = trainer_wall();
        put_value(&x, "loss", loss);
        put_value(&x, "lr", lr);
        put_value(&x, "patches_per_s", pps);
        put_value(&x, "steps_per_s", (double)dsteps / dt);
        put_value(&x, "data_wait", wait);
        if (gpu_peak) put_value(&x, "gpu_mem", (double)gpu_peak);
        if (r->bad_batches) put_value(&x, "bad_batches", (double)r->bad_batches);
        journal_post(j, out, &x);
    }
    r->t_last = now;
    r->step_last = step;
    r->wait_last = r->wait_s;
    r->patches_last = r->patches;
    r->loss_sum = 0;
    r->loss_n = 0;
}

static void free_blob(void *data, void *hint) { (void)hint; free(data); }

int report_eval_job(const trainer_cfg_t *c, const model_t *m, const char *spool, void *jobs_sock,
                    const float *params, long step, int final, char *err)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/evaljob.safetensors", spool) >= (int)sizeof path)
        return set_err(err, "%s: spool path too long", spool);
    if (safetensors_write(path, m, params, NULL, err)) return -1;
    FILE *f = fopen(path, "rb");
    if (!f) return set_err(err, "%s: %s", path, strerror(errno));
    uint8_t *blob = NULL;
    long n = -1;
    if (!fseek(f, 0, SEEK_END)) n = ftell(f);
    if (n > 0 && !fseek(f, 0, SEEK_SET) && (blob = malloc((size_t)n)) && fread(blob, 1, (size_t)n, f) != (size_t)n) {
        free(blob);
        blob = NULL;
    }
    fclose(f);
    unlink(path);
    if (!blob) return set_err(err, "%s: cannot read back the safetensors file", path);

    // A `checkpoint` of kind "weights"/"final" (docs/pipeline.md): built here, since the typed
    // encoder only knows the exporter's kinds.
    char sha[65], cfg[512];
    wire_sha256_hex(blob, (size_t)n, sha);
    snprintf(cfg, sizeof cfg,
             "{\"variant\":\"%s\",\"width\":%d,\"in_channels\":%d,\"classes\":%d,\"patch\":[%d,%d,%d],"
             "\"loss\":\"%s\",\"regions\":\"%s\"}",
             model_variant_name(c->model.variant), c->model.width, c->model.in_channels, c->model.classes,
             c->patch[0], c->patch[1], c->patch[2],
             trainer_loss_name(c->tc.loss), c->region_spec);
    wire_out_t o;
    wire_out_init(&o, "checkpoint");
    wire_put_u64(&o, "step", (uint64_t)step);
    wire_put_str(&o, "kind", final ? "final" : "weights");
    wire_put_str(&o, "sha256", sha);
    if (c->run_id) wire_put_str(&o, "run", c->run_id);      // echoed by the evaluator's results
    int rc = wire_pack_json(wire_put_key(&o, "config"), cfg, err);
    if (!rc) {
        msgpack_packer *pk = wire_put_key(&o, "patch");
        msgpack_pack_array(pk, 3);
        for (int i = 0; i < 3; i++) msgpack_pack_int(pk, c->patch[i]);
        int64_t len = n;
        wire_out_array(&o, "blob", WIRE_U8, 1, &len, blob);
        wire_out_donate(&o, "blob", free_blob, NULL);
        rc = wire_send(jobs_sock, &o, ZMQ_DONTWAIT, err);
    } else {
        free(blob);
    }
    wire_out_free(&o);
    return rc;
}

void report_on_validation(report_t *r, const wire_msg_t *msg, const char *run_id)
{
    char err[ERR_LEN];
    wire_metrics_t x;
    int other = wire_check_run(msg, run_id, err);
    if (other) {                        // a joined evaluator that outlived its run: not ours
        log_msg('W', "%s: validation metrics ignored: %s", msg->peer, err);
        return;
    }
    if (wire_decode_metrics(msg, &x, err)) {
        log_msg('W', "%s: bad metrics message: %s", msg->peer, err);
        return;
    }
    char line[1024];
    int len = snprintf(line, sizeof line, "validation at step %llu:", (unsigned long long)x.step);
    double md = NAN;
    for (int i = 0; i < x.nvalues && len < (int)sizeof line - 40; i++) {
        if (!strcmp(x.names[i], "mean_dice")) md = x.values[i];
        if (isfinite(x.values[i])) len += snprintf(line + len, sizeof line - len, " %s %.4f", x.names[i], x.values[i]);
        else len += snprintf(line + len, sizeof line - len, " %s null", x.names[i]);
    }
    if (x.ncases) snprintf(line + len, sizeof line - len, " (%d cases)", x.ncases);
    log_msg('I', "%s", line);
    if ((long)x.step > r->last_val_step) {
        r->last_val_step = (long)x.step;
        r->last_mean_dice = md;
    }
    wire_metrics_free(&x);
}
