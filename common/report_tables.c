/*
report_tables.c -- srm-report's markdown: the time-to-Dice table (first evaluation whose key
metric reaches each threshold: seconds since the start, step, and the trainer's time at that
step) and the final evaluation's per-case Dice table with per-class means. A Dice that is null
(class absent from both reference and prediction, system.md) prints as "n/a"; means skip it.
*/
#include "report.h"
#include <math.h>

static void cell(FILE *out, double v, const char *fmt)
{
    if (isfinite(v)) fprintf(out, fmt, v);
    else fprintf(out, " n/a |");
}

static const char *name_of(const report_run_t *r, const char *const *names, int j)
{
    return names && names[j] ? names[j] : r->fg_names[j];
}

static void time_table(FILE *out, const report_run_t *r, const double *thr, int nthr)
{
    fprintf(out, "## Time to Dice (%s)\n\n", r->key);
    fprintf(out, "Seconds since the start (%s) at which the evaluation that first reached the threshold "
                 "finished; the trainer's time at that step is when those weights existed.\n\n", r->t0_source);
    fprintf(out, "| %s >= | wall-clock s (evaluated) | step | trainer at that step, s |\n|---|---|---|---|\n", r->key);
    for (int i = 0; i < nthr; i++) {
        uint64_t step = 0;
        double t = report_time_to(r, thr[i], &step);
        if (!isfinite(t)) {
            fprintf(out, "| %.2f | not reached | | |\n", thr[i]);
            continue;
        }
        fprintf(out, "| %.2f | %.1f | %llu |", thr[i], t, (unsigned long long)step);
        cell(out, report_train_time_at(r, step), " %.1f |");
        fprintf(out, "\n");
    }
    double best = NAN;
    for (int i = 0; i < r->n_eval; i++)
        if (isfinite(r->ev[i].key) && !(r->ev[i].key <= best)) best = r->ev[i].key;
    fprintf(out, "\n%d evaluations; highest %s: ", r->n_eval, r->key);
    if (isfinite(best)) fprintf(out, "%.4f\n\n", best);
    else fprintf(out, "none\n\n");
}

static void case_table(FILE *out, const report_run_t *r, const char *const *names)
{
    fprintf(out, "## Final evaluation: step %llu, %.1f s after the start\n\n",
            (unsigned long long)r->final_step, r->final_t);
    if (r->final_ncases == 0) {
        fprintf(out, "No case was scored (see the evaluator's log).\n\n");
        return;
    }
    fprintf(out, "| case |");
    for (int j = 0; j < r->nfg; j++) fprintf(out, " %s |", name_of(r, names, j));
    fprintf(out, " mean |\n|---|");
    for (int j = 0; j <= r->nfg; j++) fprintf(out, "---|");
    fprintf(out, "\n");
    double case_sum = 0;                            // of the defined per-case means
    int case_n = 0;
    for (int i = 0; i < r->final_ncases; i++) {
        fprintf(out, "| %s |", r->final_ids[i]);
        double s = 0;
        int n = 0;
        for (int j = 0; j < r->nfg; j++) {
            double v = r->final_dice[(size_t)i * r->nfg + j];
            cell(out, v, " %.4f |");
            if (isfinite(v)) { s += v; n++; }
        }
        cell(out, n ? s / n : NAN, " %.4f |");
        if (n) { case_sum += s / n; case_n++; }
        fprintf(out, "\n");
    }
    // the bottom row holds each column's mean: the evaluator's per-class means, and under the
    // per-case means their mean over cases -- the evaluator's mean_dice (MONAI's two-step
    // "mean"), which differs from the mean of the class means when n/a cells fall unevenly
    fprintf(out, "| **mean** |");
    for (int j = 0; j < r->nfg; j++) cell(out, r->final_class_mean[j], " %.4f |");
    cell(out, case_n ? case_sum / case_n : NAN, " %.4f |");
    fprintf(out, "\n\n");
    int any = 0;
    for (int j = 0; j < r->nfg; j++) any |= r->final_undefined[j] > 0;
    if (any) {
        fprintf(out, "n/a: class absent from both the reference and the prediction of that case (no Dice, "
                     "left out of means); cases without a Dice per class:");
        for (int j = 0; j < r->nfg; j++)
            if (r->final_undefined[j]) fprintf(out, " %s %d", name_of(r, names, j), r->final_undefined[j]);
        fprintf(out, ".\n\n");
    }
    fprintf(out, "HD95 (mm) per case:\n\n| case |");
    for (int j = 0; j < r->nfg; j++) fprintf(out, " %s |", name_of(r, names, j));
    fprintf(out, "\n|---|");
    for (int j = 0; j < r->nfg; j++) fprintf(out, "---|");
    fprintf(out, "\n");
    for (int i = 0; i < r->final_ncases; i++) {
        fprintf(out, "| %s |", r->final_ids[i]);
        for (int j = 0; j < r->nfg; j++) cell(out, r->final_hd95[(size_t)i * r->nfg + j], " %.2f |");
        fprintf(out, "\n");
    }
    fprintf(out, "\n");
}

void report_print_tables(FILE *out, const report_run_t *r, const double *thr, int nthr,
                         const char *const *names)
{
    time_table(out, r, thr, nthr);
    case_table(out, r, names);
}
