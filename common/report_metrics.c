/*
report_metrics.c -- RUN/metrics.jsonl (srm-exporter's log, one JSON object per line) -> the
evaluator's Dice over time, the trainer's step times and the final evaluation's per-case table.

Evaluator lines carry "source":"evaluator", wall_time (unix s), step, mean_dice, dice_<name>,
dice_mean_per_class, cases, dice [cases][fg], hd95, and extra.foreground (the entry names) and
extra.final. Trainer lines carry "source":"trainer", step and wall_time. See exporter_metrics.c.
*/
#define _GNU_SOURCE
#include "report.h"
#include "check.h"
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static double num_or_nan(json_t *v) { return json_is_number(v) ? json_number_value(v) : NAN; }

static int cmp_eval(const void *a, const void *b)
{
    const report_eval_t *x = a, *y = b;
    return x->t < y->t ? -1 : x->t > y->t ? 1 : (x->step > y->step) - (x->step < y->step);
}

// The final evaluation's per-case arrays from line o (nfg entries per case).
static int take_final(report_run_t *r, json_t *o, const char *path, int lineno, char *err)
{
    json_t *ids = json_object_get(o, "cases"), *dice = json_object_get(o, "dice");
    json_t *hd = json_object_get(o, "hd95"), *pc = json_object_get(o, "dice_mean_per_class");
    json_t *und = json_object_get(o, "dice_undefined_count");
    free(r->final_ids); free(r->final_dice); free(r->final_hd95);
    r->final_ids = NULL; r->final_dice = r->final_hd95 = NULL;
    r->final_ncases = 0;
    r->final_step = (uint64_t)json_integer_value(json_object_get(o, "step"));
    for (int j = 0; j < r->nfg; j++) {
        r->final_class_mean[j] = num_or_nan(json_array_get(pc, (size_t)j));
        r->final_undefined[j] = (int)json_integer_value(json_array_get(und, (size_t)j));
    }
    if (!json_is_array(ids) || !json_is_array(dice)) return 0;      // no case scored
    int n = (int)json_array_size(ids);
    if (json_array_size(dice) != (size_t)n)
        return set_err(err, "%s:%d: %zu Dice rows for %d cases", path, lineno, json_array_size(dice), n);
    r->final_ids = xcalloc((size_t)n + 1, sizeof *r->final_ids);
    r->final_dice = xmalloc(sizeof(double) * ((size_t)n * r->nfg + 1));
    r->final_hd95 = xmalloc(sizeof(double) * ((size_t)n * r->nfg + 1));
    for (int i = 0; i < n; i++) {
        const char *id = json_string_value(json_array_get(ids, (size_t)i));
        json_t *row = json_array_get(dice, (size_t)i), *hrow = json_array_get(hd, (size_t)i);
        if (!id || !json_is_array(row) || json_array_size(row) != (size_t)r->nfg)
            return set_err(err, "%s:%d: case %d: no id or not %d Dice values", path, lineno, i, r->nfg);
        snprintf(r->final_ids[i], sizeof r->final_ids[i], "%s", id);
        for (int j = 0; j < r->nfg; j++) {
            r->final_dice[(size_t)i * r->nfg + j] = num_or_nan(json_array_get(row, (size_t)j));
            r->final_hd95[(size_t)i * r->nfg + j] = num_or_nan(json_array_get(hrow, (size_t)j));
        }
    }
    r->final_ncases = n;
    return 0;
}

// Foreground names from the first evaluator line that has them (extra.foreground, else the
// per-class array): 0, 1 when this line has none (a validation that scored no case), -1 + err.
static int set_names(report_run_t *r, json_t *o, const char *path, int lineno, char *err)
{
    json_t *names = json_object_get(json_object_get(o, "extra"), "foreground");
    json_t *pc = json_object_get(o, "dice_mean_per_class");
    size_t n = json_is_array(names) ? json_array_size(names) : json_array_size(pc);
    if (n == 0) return 1;
    if (n > REPORT_MAX_FG) return set_err(err, "%s:%d: %zu foreground entries (at most %d)", path, lineno, n, REPORT_MAX_FG);
    r->nfg = (int)n;
    for (size_t j = 0; j < n; j++) {
        const char *s = json_string_value(json_array_get(names, j));
        if (s) snprintf(r->fg_names[j], REPORT_NAME_LEN, "%s", s);
        else snprintf(r->fg_names[j], REPORT_NAME_LEN, "%zu", j + 1);
    }
    return 0;
}

static int read_t0_file(const char *p, double *t0, char *err)
{
    FILE *f = fopen(p, "r");
    if (!f) return errno == ENOENT ? 1 : set_err(err, "%s: cannot open: %s", p, strerror(errno));
    double v;
    int ok = fscanf(f, "%lf", &v) == 1 && isfinite(v) && v > 0;
    fclose(f);
    if (!ok) return set_err(err, "%s: expected one positive number (unix seconds)", p);
    *t0 = v;
    return 0;
}

int report_read_metrics(const char *path, const char *key, double t0, const char *started_at_path,
                        report_run_t *r, char *err)
{
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "r");
    if (!f) return set_err(err, "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0, cap_ev = 0, cap_tr = 0;
    double first_wall = INFINITY, final_wall = -INFINITY;
    uint64_t final_best = 0;
    int have_final = 0, final_marked = 0, final_lineno = 0;
    json_t *final_line = NULL;
    // Wall times are absolute until t0 is known; made relative at the end.
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (len <= 1) continue;
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        if (!json_is_object(o)) {
            json_decref(o);
            rc = set_err(err, "%s:%d: not a JSON object (%s)", path, lineno, je.text);
            break;
        }
        const char *src = json_string_value(json_object_get(o, "source"));
        double wall = num_or_nan(json_object_get(o, "wall_time"));
        json_t *js = json_object_get(o, "step");
        if (!src || !isfinite(wall) || !json_is_integer(js)) {
            json_decref(o);
            rc = set_err(err, "%s:%d: missing source, wall_time or step", path, lineno);
            break;
        }
        uint64_t step = (uint64_t)json_integer_value(js);
        if (wall < first_wall) first_wall = wall;
        if (!strcmp(src, "trainer")) {
            if (r->n_train == cap_tr) {
                cap_tr = 2 * cap_tr + 64;
                r->train_t = xrealloc(r->train_t, sizeof(double) * cap_tr);
                r->train_step = xrealloc(r->train_step, sizeof(uint64_t) * cap_tr);
            }
            r->train_t[r->n_train] = wall;
            r->train_step[r->n_train++] = step;
        } else if (!strcmp(src, "evaluator")) {
            // names and the default key from the first line that scored a case
            int named = r->nfg == 0 ? set_names(r, o, path, lineno, err) : 1;
            if (named < 0) { json_decref(o); rc = -1; break; }
            if (r->n_eval == 0 || named == 0) {
                if (key) snprintf(r->key, sizeof r->key, "%s", key);
                else snprintf(r->key, sizeof r->key, "%s", json_object_get(o, "dice_WT") ? "dice_WT" : "mean_dice");
            }
            json_t *pc = json_object_get(o, "dice_mean_per_class");
            if (json_is_array(pc) && json_array_size(pc) && json_array_size(pc) != (size_t)r->nfg) {
                json_decref(o);
                rc = set_err(err, "%s:%d: %zu classes where earlier lines had %d", path, lineno, json_array_size(pc), r->nfg);
                break;
            }
            if (r->n_eval == cap_ev) r->ev = xrealloc(r->ev, sizeof *r->ev * (cap_ev = 2 * cap_ev + 16));
            report_eval_t *e = &r->ev[r->n_eval++];
            e->t = wall;
            e->step = step;
            e->key = num_or_nan(json_object_get(o, r->key));
            e->mean = num_or_nan(json_object_get(o, "mean_dice"));
            for (int j = 0; j < REPORT_MAX_FG; j++) e->fg[j] = j < r->nfg ? num_or_nan(json_array_get(pc, (size_t)j)) : NAN;
            // The final evaluation: marked final beats unmarked; then higher step, then later.
            int marked = json_is_true(json_object_get(json_object_get(o, "extra"), "final"));
            if (!have_final || marked > final_marked ||
                (marked == final_marked && (step > final_best || (step == final_best && wall >= final_wall)))) {
                json_decref(final_line);
                final_line = json_incref(o);
                final_best = step; final_wall = wall; final_marked = marked; have_final = 1;
                r->final_t = wall;
                r->final_marked = marked;
                final_lineno = lineno;
            }
        }
        json_decref(o);
    }
    free(line);
    if (rc == 0 && ferror(f)) rc = set_err(err, "%s: read error: %s", path, strerror(errno));
    fclose(f);
    if (rc == 0 && r->n_eval == 0) rc = set_err(err, "%s: no evaluator line (no validation ran?)", path);
    if (rc == 0) rc = take_final(r, final_line, path, final_lineno, err);
    json_decref(final_line);
    if (rc == 0) {
        if (isfinite(t0)) {
            r->t0 = t0;
            snprintf(r->t0_source, sizeof r->t0_source, "--t0");
        } else {
            int s = started_at_path ? read_t0_file(started_at_path, &r->t0, err) : 1;
            if (s < 0) rc = -1;
            else if (s == 0) snprintf(r->t0_source, sizeof r->t0_source, "%s", started_at_path);
            else {
                r->t0 = first_wall;
                snprintf(r->t0_source, sizeof r->t0_source,
                         "first line of metrics.jsonl (start-up and loading before it not counted)");
            }
        }
    }
    if (rc) { report_run_free(r); return -1; }
    for (int i = 0; i < r->n_eval; i++) r->ev[i].t -= r->t0;
    for (int i = 0; i < r->n_train; i++) r->train_t[i] -= r->t0;
    r->final_t -= r->t0;
    qsort(r->ev, (size_t)r->n_eval, sizeof *r->ev, cmp_eval);
    return 0;
}

void report_run_free(report_run_t *r)
{
    free(r->ev); free(r->train_t); free(r->train_step);
    free(r->final_ids); free(r->final_dice); free(r->final_hd95);
    memset(r, 0, sizeof *r);
}

double report_time_to(const report_run_t *r, double thr, uint64_t *step)
{
    for (int i = 0; i < r->n_eval; i++)
        if (isfinite(r->ev[i].key) && r->ev[i].key >= thr) {
            if (step) *step = r->ev[i].step;
            return r->ev[i].t;
        }
    return NAN;
}

double report_train_time_at(const report_run_t *r, uint64_t step)
{
    double t = NAN;
    uint64_t best = 0;
    for (int i = 0; i < r->n_train; i++)
        if (r->train_step[i] <= step && (!isfinite(t) || r->train_step[i] >= best)) {
            best = r->train_step[i];
            t = r->train_t[i];
        }
    return t;
}
