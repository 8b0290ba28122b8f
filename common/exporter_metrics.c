/*
exporter_metrics.c -- `metrics` messages -> RUN/metrics.jsonl, the best checkpoint, RUN/curves.png.

One compact JSON object per message and line: step, wall_time, source ("trainer", "evaluator":
the header's optional `source` field, else "evaluator" when a `dice` array or a `mean_dice` value
is present, else "trainer"), every named value (loss, lr, patches_per_s, data_wait, gpu_mem,
mean_dice, ...; NaN/nil -> null), `cases` (the case ids), each per-case array as nested lists
(NaN -> null), the parsed `json` document under "extra", and for a `dice` [cases, classes] array
(foreground classes or regions, no background column): dice_mean_per_class, dice_undefined_count
per class, and mean_dice = mean of the defined entries unless the sender gave mean_dice; the same
for `hd95`, and the message's `id` when it has one (a message sent again is filed once: the ids
are read back at start-up). Appends use O_APPEND + fsync; a failed append is truncated away, so
no torn line stays.
The best checkpoint follows the evaluator's mean_dice (exporter_best_offer).
*/
#define _GNU_SOURCE
#include "exporter_internal.h"
#include "check.h"
#include "plot.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static double elem(const wire_array_t *a, size_t i)
{
    switch (a->dtype) {
    case WIRE_U8:  return ((const uint8_t *)a->data)[i];
    case WIRE_I32: return ((const int32_t *)a->data)[i];
    case WIRE_F32: return ((const float *)a->data)[i];
    case WIRE_F64: return ((const double *)a->data)[i];
    default:       return NAN;                          // the decoder admits only the four above
    }
}

// Nested lists of a (shape a->shape[dim..]), starting at flat index *i.
static json_t *to_list(const wire_array_t *a, int dim, size_t *i)
{
    if (dim == a->rank) {
        double v = elem(a, (*i)++);
        if (a->dtype == WIRE_U8 || a->dtype == WIRE_I32) return json_integer((json_int_t)v);
        return num(v);
    }
    json_t *l = json_array();
    for (int64_t k = 0; k < a->shape[dim]; k++) json_array_append_new(l, to_list(a, dim + 1, i));
    return l;
}

// Per-class means over cases (defined entries only), undefined counts, and the overall mean.
static void summarise(json_t *o, const wire_array_t *a, const char *name, int have_mean)
{
    if (a->rank != 2 || (a->dtype != WIRE_F32 && a->dtype != WIRE_F64)) return;
    int64_t nc = a->shape[0], nk = a->shape[1];
    json_t *means = json_array(), *undef = json_array();
    double sum = 0;
    long n = 0;
    for (int64_t k = 0; k < nk; k++) {
        double s = 0;
        long m = 0, u = 0;
        for (int64_t c = 0; c < nc; c++) {
            double v = elem(a, (size_t)(c * nk + k));
            if (isfinite(v)) { s += v; m++; } else u++;
        }
        json_array_append_new(means, m ? json_real(s / m) : json_null());
        json_array_append_new(undef, json_integer(u));
        sum += s;
        n += m;
    }
    char key[64];
    snprintf(key, sizeof key, "%s_mean_per_class", name);
    json_object_set_new(o, key, means);
    snprintf(key, sizeof key, "%s_undefined_count", name);
    json_object_set_new(o, key, undef);
    snprintf(key, sizeof key, "mean_%s", name);
    if (!have_mean) json_object_set_new(o, key, n ? json_real(sum / n) : json_null());
}

static int append_line(const char *path, const char *line, size_t n, char *err)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return set_err(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st)) { close(fd); return set_err(err, "%s: fstat: %s", path, strerror(errno)); }
    const char *p = line;
    size_t left = n;
    int e = 0;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { e = w < 0 ? errno : ENOSPC; break; }
        p += w;
        left -= (size_t)w;
    }
    if (!e) while (fsync(fd) && (e = errno) == EINTR) e = 0;
    if (e && ftruncate(fd, st.st_size))                 // never leave half a line behind
        log_msg('W', "%s: cannot truncate a failed append: %s", path, strerror(errno));
    close(fd);
    return e ? set_err(err, "%s: append: %s", path, strerror(e)) : 0;
}

static void curve_add(exporter_curve_t *c, uint64_t step, double v)
{
    if (!isfinite(v)) return;
    if (c->n == EXPORTER_MAX_POINTS) {                  // thin: keep every other point
        for (int i = 0; i < c->n / 2; i++) c->p[i] = c->p[2 * i + 1];
        c->n /= 2;
    }
    if (c->n == c->cap) c->p = xrealloc(c->p, (size_t)(c->cap = 2 * c->cap + 64) * sizeof *c->p);
    int i = c->n++;                                     // in step order: a line sent again comes late
    for (; i > 0 && c->p[i - 1].step > step; i--) c->p[i] = c->p[i - 1];
    c->p[i] = (exporter_point_t){ step, v };
}

// Set key unless taken (a value named "step" must not replace the step).
static void set_new(json_t *o, const char *key, json_t *v, uint64_t step)
{
    if (json_object_get(o, key)) {
        log_msg('W', "metrics step %" PRIu64 ": duplicate or reserved name '%s' ignored", step, key);
        json_decref(v);
        return;
    }
    if (json_object_set_new(o, key, v))                // jansson refuses keys that are not UTF-8
        log_msg('W', "metrics step %" PRIu64 ": name is not valid UTF-8; ignored", step);
}

// Build the line for one decoded metrics message.
static json_t *metrics_json(const wire_metrics_t *x, const char *source, const char *id, char *err)
{
    json_t *o = json_object();
    json_object_set_new(o, "step", json_integer((json_int_t)x->step));
    json_object_set_new(o, "wall_time", json_real(x->wall_time));
    json_object_set_new(o, "source", json_string(source));
    if (id) json_object_set_new(o, "id", json_string(id));
    for (int i = 0; i < x->nvalues; i++) set_new(o, x->names[i], num(x->values[i]), x->step);
    if (x->ncases) {
        json_t *ids = json_array();
        for (int i = 0; i < x->ncases; i++) {
            json_t *id = json_string(x->case_ids[i]);
            if (!id) {
                json_decref(ids);
                json_decref(o);
                set_err(err, "metrics step %" PRIu64 ": case id %d is not valid UTF-8", x->step, i);
                return NULL;
            }
            json_array_append_new(ids, id);
        }
        set_new(o, "cases", ids, x->step);
    }
    for (int i = 0; i < x->narrays; i++) {
        const wire_array_t *a = &x->arrays[i];
        size_t k = 0;
        set_new(o, a->name, to_list(a, 0, &k), x->step);
        if (!strcmp(a->name, "dice") || !strcmp(a->name, "hd95")) {
            char mean[40];
            snprintf(mean, sizeof mean, "mean_%s", a->name);
            summarise(o, a, a->name, json_object_get(o, mean) != NULL);
        }
    }
    if (x->json) {
        json_error_t je;
        json_t *extra = json_loads(x->json, JSON_REJECT_DUPLICATES, &je);
        if (!extra) {
            json_decref(o);
            set_err(err, "metrics step %" PRIu64 ": json: %s (line %d)", x->step, je.text, je.line);
            return NULL;
        }
        set_new(o, "extra", extra, x->step);
    }
    return o;
}

int exporter_metrics(exporter_t *ex, const wire_msg_t *m, const char *id, char *err)
{
    if (*id && id_set_has(&ex->filed, id)) return 1;
    wire_metrics_t x;
    if (wire_decode_metrics(m, &x, err)) return -1;
    char source[WIRE_NAME_LEN] = "";
    int rc = wire_get_str(m, "source", source, sizeof source, 0, err);
    if (rc < 0) { wire_metrics_free(&x); return -1; }
    int has_dice = wire_find(m, "dice") != NULL;
    for (int i = 0; i < x.nvalues && !has_dice; i++) has_dice = !strcmp(x.names[i], "mean_dice");
    if (rc == 1) snprintf(source, sizeof source, "%s", has_dice ? "evaluator" : "trainer");
    int ok = source[0] != 0;
    for (const char *p = source; *p && ok; p++)
        ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.';
    if (!ok) {
        wire_metrics_free(&x);
        return set_err(err, "metrics step %" PRIu64 ": source must be 1..31 of [a-z0-9_.-]", x.step);
    }

    json_t *o = metrics_json(&x, source, *id ? id : NULL, err);
    wire_metrics_free(&x);
    if (!o) return -1;
    char *line = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10));
    if (!line) { json_decref(o); return set_err(err, "metrics: cannot serialise"); }
    size_t n = strlen(line);
    line = xrealloc(line, n + 2);
    line[n++] = '\n';
    rc = append_line(ex->metrics_path, line, n, err) ? -2 : 0;
    free(line);
    if (!rc) {
        if (*id) id_set_add(&ex->filed, id);
        uint64_t step = (uint64_t)json_integer_value(json_object_get(o, "step"));
        json_t *loss = json_object_get(o, "loss"), *md = json_object_get(o, "mean_dice");
        if (json_is_number(loss)) curve_add(&ex->loss, step, json_number_value(loss));
        if (!strcmp(source, "evaluator") && json_is_number(md)) {
            curve_add(&ex->dice, step, json_number_value(md));
            exporter_best_offer(ex, step, json_number_value(md));
        }
        if (!strcmp(source, "evaluator")) exporter_scored(ex, step);
        ex->curves_dirty = 1;
        ex->n_metrics++;
    }
    json_decref(o);
    return rc;
}

int exporter_metrics_recover(exporter_t *ex, char *err)
{
    if (!fs_exists(ex->metrics_path)) return 0;
    uint8_t *text;
    size_t n;
    if (fs_read_file(ex->metrics_path, &text, &n, (size_t)4 << 30, err)) return -1;
    size_t end = n;
    while (end && text[end - 1] != '\n') end--;
    if (end != n) {                                     // a crash mid-append (no fsync'ed newline)
        log_msg('W', "%s: dropping a torn last line of %zu bytes", ex->metrics_path, n - end);
        if (truncate(ex->metrics_path, (off_t)end)) {
            free(text);
            return set_err(err, "%s: truncate: %s", ex->metrics_path, strerror(errno));
        }
    }
    long lines = 0, bad = 0;
    for (size_t a = 0; a < end;) {
        size_t b = a;
        while (text[b] != '\n') b++;
        json_t *o = json_loadb((const char *)text + a, b - a, 0, NULL);
        a = b + 1;
        lines++;
        json_t *st = o ? json_object_get(o, "step") : NULL;
        if (!json_is_integer(st)) { bad++; json_decref(o); continue; }
        uint64_t step = (uint64_t)json_integer_value(st);
        json_t *loss = json_object_get(o, "loss"), *md = json_object_get(o, "mean_dice");
        const char *src = json_string_value(json_object_get(o, "source"));
        const char *id = json_string_value(json_object_get(o, "id"));
        if (id) id_set_add(&ex->filed, id);
        if (json_is_number(loss)) curve_add(&ex->loss, step, json_number_value(loss));
        if (src && !strcmp(src, "evaluator") && (!ex->have_scored || step > ex->scored_upto)) {
            ex->scored_upto = step;                     // scores already in: no marker for them
            ex->have_scored = 1;
        }
        if (src && !strcmp(src, "evaluator") && json_is_number(md)) {
            double d = json_number_value(md);
            curve_add(&ex->dice, step, d);
            if (ex->have_best && step == ex->best_step && d > ex->best_dice) ex->best_dice = d;
        }
        json_decref(o);
    }
    free(text);
    if (bad) log_msg('W', "%s: %ld of %ld lines unreadable", ex->metrics_path, bad, lines);
    ex->curves_dirty = ex->loss.n || ex->dice.n;
    return 0;
}

static double *coords(const exporter_curve_t *c, int y)
{
    double *v = xmalloc((size_t)(c->n ? c->n : 1) * sizeof(double));
    for (int i = 0; i < c->n; i++) v[i] = y ? c->p[i].value : (double)c->p[i].step;
    return v;
}

void exporter_curves_refresh(exporter_t *ex, int force)
{
    double now = fs_now();
    if (!ex->curves_dirty || (!force && now - ex->curves_time < ex->cfg.plot_interval_s)) return;
    ex->curves_time = now;
    if (!ex->loss.n && !ex->dice.n) { ex->curves_dirty = 0; return; }
    double *lx = coords(&ex->loss, 0), *ly = coords(&ex->loss, 1), *dx = coords(&ex->dice, 0), *dy = coords(&ex->dice, 1);
    plot_series_t s[2];
    int ns = 0;
    if (ex->loss.n) s[ns++] = (plot_series_t){ .x = lx, .y = ly, .n = ex->loss.n, .label = "training loss", .rgb = { 214, 39, 40 } };
    if (ex->dice.n)
        s[ns++] = (plot_series_t){ .x = dx, .y = dy, .n = ex->dice.n, .label = "validation mean dice",
                                   .rgb = { 31, 119, 180 }, .right_axis = 1, .markers = 1 };
    plot_cfg_t cfg = { .width = 800, .height = 480, .title = "training curves", .xlabel = "step",
                       .left_label = "loss", .right_label = "dice", .right_lo = 0, .right_hi = 1 };
    char err[ERR_LEN];
    if (plot_png(ex->curves_path, &cfg, s, ns, err)) log_msg('W', "curves: %s", err);   // retried later
    else ex->curves_dirty = 0;
    free(lx); free(ly); free(dx); free(dy);
}

void exporter_curves_free(exporter_t *ex)
{
    free(ex->loss.p);
    free(ex->dice.p);
    memset(&ex->loss, 0, sizeof ex->loss);
    memset(&ex->dice, 0, sizeof ex->dice);
}
