/*
evaluator_report.c -- what the evaluator says about its scores: one stdout line per case and a
"mean:" line (evaluate.sh prints them), and the `metrics` message for the exporter and the
trainer (docs/protocol.md): values mean_dice, dice_<name> (mean over cases of each foreground
class or region), mean_hd95 (the mean of the classes' mean HD95), cases_ok, cases_failed; per-case arrays `dice` and `hd95`
[cases, foreground] f32 (NaN = undefined) with `case_ids` (failed cases left out: they are
listed with their reason in the JSON document). Undefined means are nil / null.
*/
#include "evaluator.h"
#include "check.h"
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

void eval_fg_name(const eval_labels_t *lab, int j, char *out, size_t cap)
{
    if (lab->nregions) snprintf(out, cap, "%s", lab->names[j]);
    else snprintf(out, cap, "%d", j + 1);
}

static void put_num(const char *fmt, double v)
{
    if (isfinite(v)) printf(fmt, v);
    else printf("null");
}

// Mean over the cases that define entry j (dice or hd95 of ok cases); NaN when none does.
static double column_mean(const eval_result_t *rs, int n, int j, int hd, int *defined)
{
    double s = 0;
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!rs[i].ok || j >= rs[i].nfg) continue;
        double v = hd ? rs[i].hd95[j] : rs[i].dice[j];
        if (isfinite(v)) { s += v; k++; }
    }
    if (defined) *defined = k;
    return k ? s / k : NAN;
}

static double mean_of_case_means(const eval_result_t *rs, int n)
{
    double s = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (rs[i].ok && isfinite(rs[i].mean_dice)) { s += rs[i].mean_dice; k++; }
    return k ? s / k : NAN;
}

static void print_row(const char *head, const double *dice, const double *hd, int nfg, double mean,
                      const eval_labels_t *lab)
{
    char name[WIRE_NAME_LEN];
    printf("%s dice", head);
    for (int j = 0; j < nfg; j++) {
        eval_fg_name(lab, j, name, sizeof name);
        printf(" %s=", name);
        put_num("%.4f", dice[j]);
    }
    printf(" mean=");
    put_num("%.4f", mean);
    if (hd) {
        printf(" hd95");
        for (int j = 0; j < nfg; j++) {
            eval_fg_name(lab, j, name, sizeof name);
            printf(" %s=", name);
            put_num("%.2f", hd[j]);
        }
    }
    printf("\n");
}

void eval_print_case(const eval_result_t *r, const eval_labels_t *lab, int hd95)
{
    char head[WIRE_ID_LEN + 16];
    if (!r->ok) { printf("case %s: failed: %s\n", r->id, r->error); fflush(stdout); return; }
    snprintf(head, sizeof head, "case %s:", r->id);
    print_row(head, r->dice, hd95 ? r->hd95 : NULL, r->nfg, r->mean_dice, lab);
    fflush(stdout);
}

// The classes (or regions) scored: a case without a reference (nnU-Net's imagesTs, predicted
// only) scores none, wherever it stands in the list.
static int scored_classes(const eval_result_t *rs, int n, int *scored)
{
    int nfg = 0;
    *scored = 0;
    for (int i = 0; i < n; i++)
        if (rs[i].ok && rs[i].nfg > 0) { nfg = rs[i].nfg > nfg ? rs[i].nfg : nfg; (*scored)++; }
    return nfg;
}

void eval_print_summary(const eval_result_t *rs, int n, const eval_labels_t *lab, int hd95)
{
    int ok = 0, nfg = scored_classes(rs, n, &ok), done = 0;
    for (int i = 0; i < n; i++) done += rs[i].ok;
    double dice[EVAL_MAX_FG], hd[EVAL_MAX_FG];
    char name[WIRE_NAME_LEN];
    for (int j = 0; j < nfg; j++) {
        dice[j] = column_mean(rs, n, j, 0, NULL);
        hd[j] = column_mean(rs, n, j, 1, NULL);
        // A case with Dice defined but no HD95 has one mask empty: a missed (or invented)
        // structure. Its HD95 is infinite (MONAI: inf / nan), so the mean leaves it out; say so.
        int one_empty = 0;
        for (int i = 0; hd95 && i < n; i++)
            one_empty += rs[i].ok && j < rs[i].nfg && isfinite(rs[i].dice[j]) && !isfinite(rs[i].hd95[j]);
        eval_fg_name(lab, j, name, sizeof name);
        if (one_empty)
            log_msg('W', "hd95 %s: %d of %d cases have one mask empty (a missed or an invented structure, HD95 "
                         "infinite): the mean hd95 is over the other cases", name, one_empty, ok);
    }
    char head[96];
    if (done > ok) snprintf(head, sizeof head, "mean (%d of %d cases; %d without a reference):", ok, n, done - ok);
    else snprintf(head, sizeof head, "mean (%d of %d cases):", ok, n);
    print_row(head, dice, hd95 ? hd : NULL, nfg, mean_of_case_means(rs, n), lab);
    fflush(stdout);
}

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return tv.tv_sec + tv.tv_usec * 1e-6;
}

static void free_buf(void *data, void *hint)
{
    (void)hint;
    free(data);
}

static void add_value(wire_metrics_t *x, const char *name, double v)
{
    if (x->nvalues >= WIRE_MAX_METRICS) return;
    snprintf(x->names[x->nvalues], WIRE_NAME_LEN, "%.*s", WIRE_NAME_LEN - 1, name);
    x->values[x->nvalues++] = v;
}

// The JSON document: failures, names of the foreground entries, and the sender's extra fields.
static char *report_json(const eval_result_t *rs, int n, int nfg, const eval_labels_t *lab,
                         const char *extra_json, char *err)
{
    json_t *o = NULL;
    if (extra_json) {
        json_error_t je;
        o = json_loads(extra_json, 0, &je);
        if (!json_is_object(o)) { json_decref(o); set_err(err, "metrics extra JSON: %s", je.text); return NULL; }
    } else {
        o = json_object();
    }
    json_t *names = json_array(), *failed = json_array();
    char name[WIRE_NAME_LEN];
    for (int j = 0; j < nfg; j++) {
        eval_fg_name(lab, j, name, sizeof name);
        json_array_append_new(names, json_string(name));
    }
    for (int i = 0; i < n; i++) {
        if (rs[i].ok) continue;
        json_t *f = json_object();
        json_object_set_new(f, "case_id", json_string(rs[i].id));
        json_object_set_new(f, "error", json_string(rs[i].error));
        json_array_append_new(failed, f);
    }
    json_object_set_new(o, "foreground", names);
    json_object_set_new(o, "mode", json_string(lab->nregions ? "regions" : "softmax"));
    json_object_set_new(o, "failed", failed);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s) set_err(err, "metrics JSON: out of memory");
    return s;
}

int eval_metrics_msg(wire_out_t *o, uint64_t step, const eval_result_t *rs, int n,
                     const eval_labels_t *lab, const char *extra_json, char *err)
{
    wire_metrics_t x;
    memset(&x, 0, sizeof x);
    wire_out_init(o, "metrics");
    int ok = 0, nfg = scored_classes(rs, n, &ok);
    x.step = step;
    x.wall_time = now_s();
    add_value(&x, "mean_dice", mean_of_case_means(rs, n));
    char name[WIRE_NAME_LEN + 8], fg[WIRE_NAME_LEN];
    double hd_sum = 0;
    int hd_n = 0;
    for (int j = 0; j < nfg; j++) {
        eval_fg_name(lab, j, fg, sizeof fg);
        snprintf(name, sizeof name, "dice_%.20s", fg);
        add_value(&x, name, column_mean(rs, n, j, 0, NULL));
        double h = column_mean(rs, n, j, 1, NULL);
        if (isfinite(h)) { hd_sum += h; hd_n++; }
    }
    add_value(&x, "mean_hd95", hd_n ? hd_sum / hd_n : NAN);   // (the exporter then adds no mean of its own)
    add_value(&x, "cases_ok", ok);
    add_value(&x, "cases_failed", n - ok);
    char *json = report_json(rs, n, nfg, lab, extra_json, err);
    if (!json) return -1;
    x.json = json;
    float *dice = NULL, *hd = NULL;
    if (ok && nfg) {
        x.ncases = ok;
        x.case_ids = xcalloc((size_t)ok, WIRE_ID_LEN);
        dice = xmalloc(sizeof(float) * ok * nfg);
        hd = xmalloc(sizeof(float) * ok * nfg);
        for (int i = 0, k = 0; i < n; i++) {
            if (!rs[i].ok) continue;
            snprintf(x.case_ids[k], WIRE_ID_LEN, "%s", rs[i].id);
            for (int j = 0; j < nfg; j++) {
                dice[k * nfg + j] = (float)rs[i].dice[j];
                hd[k * nfg + j] = (float)rs[i].hd95[j];
            }
            k++;
        }
        const char *names[2] = { "dice", "hd95" };
        float *data[2] = { dice, hd };
        for (int a = 0; a < 2; a++) {
            wire_array_t *w = &x.arrays[x.narrays++];
            snprintf(w->name, sizeof w->name, "%s", names[a]);
            w->dtype = WIRE_F32;
            w->rank = 2;
            w->shape[0] = ok;
            w->shape[1] = nfg;
            w->data = data[a];
        }
    }
    int rc = wire_encode_metrics(o, &x, err);
    if (rc == 0) {
        wire_put_str(o, "source", "evaluator");
        // The arrays are borrowed by the message: hand them over so they live until it is sent.
        if (dice) {
            wire_out_donate(o, "dice", free_buf, NULL);
            wire_out_donate(o, "hd95", free_buf, NULL);
        }
    } else {
        free(dice);
        free(hd);
    }
    free(json);
    free(x.case_ids);
    return rc;
}
