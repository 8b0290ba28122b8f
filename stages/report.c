/*
report.c -- bin/srm-report: what a finished training run reached, for people.

  srm-report RUN_DIR [--out DIR] [--key NAME] [--thresholds 0.7,0.8,0.85] [--t0 UNIX_S]
             [--dataset DIR | --images DIR [--labels DIR]] [--channel N] [--window LO,HI]
             [--max-overlays N]
Reads RUN_DIR/metrics.jsonl and writes into DIR (default RUN_DIR): dice_vs_time.png, and one
overlay_<case>.png per prediction in RUN_DIR/predictions/; prints markdown on stdout: the
time-to-Dice table and the final evaluation's per-case Dice. Time zero is RUN_DIR/started_at
when present (written by pipelines/brats.sh and btcv.sh before the pipeline starts), else --t0,
else the first line of metrics.jsonl. Exit status 1 when a picture could not be made (the rest
are still written), 2 for bad flags.
*/
#include "check.h"
#include "dataset.h"
#include "report.h"
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_THR 8

typedef struct {
    const char *run, *out, *key, *dataset, *images, *labels;
    double thr[MAX_THR];
    int nthr, channel, max_overlays;
    double t0, lo, hi;
} args_t;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: srm-report RUN_DIR [options]\n"
        "  --out DIR               where the PNGs go (RUN_DIR)\n"
        "  --key NAME              metric of the time-to-Dice table (dice_WT when present, else mean_dice)\n"
        "  --thresholds A,B,...    Dice thresholds (0.7,0.8,0.85)\n"
        "  --t0 UNIX_S             start time (default: RUN_DIR/started_at, else the first metrics line)\n"
        "  --dataset DIR           source images and labels of the predictions (RUN_DIR/dataset if present)\n"
        "  --images DIR            or: images as DIR/<case>_0000.nii.gz or DIR/<case>.nii.gz\n"
        "  --labels DIR            and reference labels as DIR/<case>.nii.gz\n"
        "  --channel N             image channel shown in overlays (0)\n"
        "  --window LO,HI          grey window of the overlays (0.5..99.5 percentiles)\n"
        "  --max-overlays N        at most N overlay pictures (8); 0: none\n");
}

static int parse_list(const char *s, double *v, int max, char *err)
{
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        double x = strtod(p, &end);
        if (end == p || errno || !isfinite(x)) return set_err(err, "'%s': not a list of numbers", s);
        if (n == max) return set_err(err, "'%s': more than %d numbers", s, max);
        v[n++] = x;
        p = end;
        if (*p == ',') p++;
        else if (*p) return set_err(err, "'%s': not a comma-separated list", s);
    }
    return n ? n : set_err(err, "empty list");
}

static int parse_args(int argc, char **argv, args_t *a, char *err)
{
    memset(a, 0, sizeof *a);
    a->thr[0] = 0.7; a->thr[1] = 0.8; a->thr[2] = 0.85; a->nthr = 3;
    a->t0 = NAN;
    a->max_overlays = 8;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "-h") || !strcmp(f, "--help")) return 1;
        if (f[0] != '-') {
            if (a->run) return set_err(err, "two run folders: %s and %s", a->run, f);
            a->run = f;
            continue;
        }
        if (i + 1 >= argc) return set_err(err, "%s: missing value (or unknown flag)", f);
        const char *v = argv[++i];
        char *end;
        double w[2];
        if (!strcmp(f, "--out")) a->out = v;
        else if (!strcmp(f, "--key")) a->key = v;
        else if (!strcmp(f, "--dataset")) a->dataset = v;
        else if (!strcmp(f, "--images")) a->images = v;
        else if (!strcmp(f, "--labels")) a->labels = v;
        else if (!strcmp(f, "--thresholds")) {
            if ((a->nthr = parse_list(v, a->thr, MAX_THR, err)) < 0) return -1;
        } else if (!strcmp(f, "--window")) {
            if (parse_list(v, w, 2, err) != 2 || !(w[1] > w[0])) return set_err(err, "--window: '%s' is not LO,HI with LO < HI", v);
            a->lo = w[0]; a->hi = w[1];
        } else if (!strcmp(f, "--t0")) {
            a->t0 = strtod(v, &end);
            if (*end || !(a->t0 > 0)) return set_err(err, "--t0: '%s' is not unix seconds", v);
        } else if (!strcmp(f, "--channel") || !strcmp(f, "--max-overlays")) {
            long x = strtol(v, &end, 10);
            if (*end || x < 0 || x > 10000) return set_err(err, "%s: '%s' is not a small non-negative integer", f, v);
            if (f[2] == 'c') a->channel = (int)x; else a->max_overlays = (int)x;
        } else return set_err(err, "unknown flag %s", f);
    }
    if (!a->run) return set_err(err, "RUN_DIR is required");
    if (a->dataset && a->images) return set_err(err, "--dataset and --images exclude each other");
    if (!a->out) a->out = a->run;
    return 0;
}

static int is_file(const char *p) { struct stat st; return stat(p, &st) == 0 && S_ISREG(st.st_mode); }
static int is_dir(const char *p) { struct stat st; return stat(p, &st) == 0 && S_ISDIR(st.st_mode); }

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Case ids of RUN/predictions/*.nii.gz, sorted. Returns the count (0 when the folder is absent).
static int list_predictions(const char *dir, char ***ids)
{
    *ids = NULL;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || l <= 7 || strcmp(e->d_name + l - 7, ".nii.gz")) continue;
        if (n == cap) *ids = xrealloc(*ids, sizeof **ids * (cap = 2 * cap + 8));
        (*ids)[n] = xstrdup(e->d_name);
        (*ids)[n++][l - 7] = 0;
    }
    closedir(d);
    qsort(*ids, (size_t)n, sizeof **ids, cmp_str);
    return n;
}

// Image file, its channel index, and reference label file of case id. 0 or -1 + err.
static int sources_of(const args_t *a, const dataset_t *ds, const char *id, char *img, char *lab, size_t cap,
                      int *channel, char *err)
{
    lab[0] = 0;
    *channel = a->channel;
    if (ds) {
        int i = dataset_find(ds, id);
        if (i < 0) return set_err(err, "%s: no case '%s' in the dataset", ds->dir, id);
        const dataset_case_t *c = &ds->cases[i];
        if (c->n_images > 1) {                      // one file per channel (nnU-Net)
            if (a->channel >= c->n_images) return set_err(err, "case %s: channel %d of %d", id, a->channel, c->n_images);
            snprintf(img, cap, "%s", c->images[a->channel]);
            *channel = 0;
        } else {
            snprintf(img, cap, "%s", c->images[0]);
        }
        if (c->label) snprintf(lab, cap, "%s", c->label);
        return 0;
    }
    snprintf(img, cap, "%s/%s_%04d.nii.gz", a->images, id, a->channel);
    if (is_file(img)) *channel = 0;
    else snprintf(img, cap, "%s/%s.nii.gz", a->images, id);
    if (!is_file(img)) return set_err(err, "%s: no %s_%04d.nii.gz or %s.nii.gz", a->images, id, a->channel, id);
    if (a->labels) {
        snprintf(lab, cap, "%s/%s.nii.gz", a->labels, id);
        if (!is_file(lab)) return set_err(err, "%s: no reference %s.nii.gz", a->labels, id);
    }
    return 0;
}

// Cases of the final validation whose prediction file is missing: said on stderr and in the
// markdown (the exporter writes one per case of a validation marked final; a missing one was
// lost or removed). A run without a final validation has no predictions to miss.
static void missing_predictions(const char *dir, char **ids, int n, const report_run_t *r, FILE *md)
{
    for (int k = 0; r->final_marked && k < r->final_ncases; k++) {
        const char *want = r->final_ids[k];
        int found = 0;
        for (int i = 0; i < n && !found; i++) found = !strcmp(ids[i], want);
        if (found) continue;
        log_msg('W', "%s: no prediction of case %s, which the final validation scored", dir, want);
        fprintf(md, "Missing: `%s/%s.nii.gz` (case %s of the final validation).\n\n", dir, want, want);
    }
}

static int overlays(const args_t *a, const dataset_t *ds, const report_run_t *r, FILE *md)
{
    char dir[4096], err[ERR_LEN], img[4096], lab[4096], pred[4096], png[4096], title[160];
    snprintf(dir, sizeof dir, "%s/predictions", a->run);
    char **ids;
    int n = list_predictions(dir, &ids), n_all = n, bad = 0, made = 0;
    missing_predictions(dir, ids, n, r, md);
    if (n == 0) fprintf(md, "No predictions in %s: no overlay.\n\n", dir);
    else if (!ds && !a->images) {
        fprintf(md, "%d predictions but no --dataset/--images: no overlay.\n\n", n);
        n = 0;
    }
    for (int i = 0; i < n && made < a->max_overlays; i++) {
        int ch;
        int rc = 0;
        if (snprintf(pred, sizeof pred, "%s/%s.nii.gz", dir, ids[i]) >= (int)sizeof pred ||
            snprintf(png, sizeof png, "%s/overlay_%s.png", a->out, ids[i]) >= (int)sizeof png)
            rc = set_err(err, "%s: path too long", ids[i]);
        if (rc == 0) rc = sources_of(a, ds, ids[i], img, lab, sizeof img, &ch, err);
        if (rc == 0) {
            snprintf(title, sizeof title, "%.100s: image channel %d, window %s", ids[i], a->channel,
                     a->hi > a->lo ? "fixed" : "0.5-99.5 pct");
            report_overlay_t o = { img, ch, lab[0] ? lab : NULL, pred, a->lo, a->hi, title };
            rc = report_overlay_png(png, &o, err);
        }
        if (rc) { log_msg('E', "overlay of %s: %s", ids[i], err); bad++; continue; }
        fprintf(md, "- `%s`: `%s` over `%s`%s%s\n", png, pred, img, lab[0] ? ", reference " : "", lab);
        made++;
    }
    if (made) fprintf(md, "\n");
    for (int i = 0; i < n_all; i++) free(ids[i]);
    free(ids);
    return bad ? -1 : 0;
}

int main(int argc, char **argv)
{
    log_set_name("report");
    char err[ERR_LEN], path[4096], started[4096];
    args_t a;
    int rc = parse_args(argc, argv, &a, err);
    if (rc) {
        if (rc > 0) { usage(stdout); return 0; }
        log_msg('E', "%s", err);
        usage(stderr);
        return 2;
    }
    if (!is_dir(a.out) && mkdir(a.out, 0755) && errno != EEXIST) {
        log_msg('E', "%s: cannot create: %s", a.out, strerror(errno));
        return 1;
    }
    // The dataset: given, or the view the recipes leave in RUN/dataset.
    char dsdir[4096];
    snprintf(dsdir, sizeof dsdir, "%s/dataset", a.run);
    if (!a.dataset && !a.images && is_dir(dsdir)) a.dataset = dsdir;
    dataset_t ds, *dsp = NULL;
    if (a.dataset) {
        if (dataset_open(a.dataset, &ds, err)) { log_msg('E', "%s", err); return 1; }
        dsp = &ds;
    }
    snprintf(path, sizeof path, "%s/metrics.jsonl", a.run);
    snprintf(started, sizeof started, "%s/started_at", a.run);
    report_run_t r;
    if (report_read_metrics(path, a.key, a.t0, started, &r, err)) {
        log_msg('E', "%s", err);
        if (dsp) dataset_free(dsp);
        return 1;
    }
    // Display names: dataset label names for numbered classes ("6" -> "liver").
    const char *names[REPORT_MAX_FG] = { 0 };
    for (int j = 0; dsp && j < r.nfg; j++) {
        char *end;
        long v = strtol(r.fg_names[j], &end, 10);
        for (int l = 0; !*end && l < ds.n_labels; l++)
            if (ds.labels[l].n_values == 1 && ds.labels[l].values[0] == v) names[j] = ds.labels[l].name;
    }
    int have_key = 0;
    for (int i = 0; i < r.n_eval; i++) have_key |= isfinite(r.ev[i].key);
    if (!have_key) log_msg('W', "%s: no evaluation has a value named '%s' (see --key)", path, r.key);
    printf("# Run %s\n\n", a.run);
    report_print_tables(stdout, &r, a.thr, a.nthr, names);
    int status = 0;
    snprintf(path, sizeof path, "%s/dice_vs_time.png", a.out);
    if (report_curve_png(path, &r, a.thr, a.nthr, names, err)) { log_msg('E', "%s", err); status = 1; }
    else printf("## Pictures\n\n- `%s`: evaluation Dice against seconds since the start\n", path);
    if (a.max_overlays > 0 && overlays(&a, dsp, &r, stdout)) status = 1;
    report_run_free(&r);
    if (dsp) dataset_free(dsp);
    return status;
}
