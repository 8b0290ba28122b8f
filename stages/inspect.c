/*
inspect.c -- bin/srm-inspect: what the loader sees in one NIfTI file, or in a dataset folder.

  srm-inspect FILE [--labels]   one JSON object: dims, channels, spacing, pixdim, datatype,
                                affine (nibabel img.affine, in mm), units, ras_affine (after reorientation to
                                RAS), orientation (axis codes of the source affine), min/max/mean
                                of the scaled intensities over all channels; --labels adds
                                "labels": {"value": voxel count, ...}.
  srm-inspect --dataset DIR     the dataset report (cases, splits, problems) of dataset.h.
  srm-inspect --dataset DIR --shape   {"channels": C, "classes": K, "classes_from": ...,
                                "ignore": V or null (nnU-Net's "ignore" label, not a class),
                                "undeclared": values below the largest class no label declares,
                                "validation": N, "folds": F, "folds_from": S, "fold0_train": N,
                                "fold0_val": N, "fold0_error": null or why, "regions": null or
                                --regions "NAME=V,..:OUT;..." when dataset.json declares nnU-Net
                                regions (regions_class_order giving OUT)}: what a model
                                for DIR takes and gives, and which validation cases it has
                                (pipelines/train.sh asks): the declared labels' largest value + 1,
                                or without declared labels (plain layout) the label files'
                                largest value + 1; the cases of the declared validation split,
                                the folds (splits_final.json, MSD fold keys or generated: 0 when
                                too few cases) and fold 0's cases, or why declared folds fail.
  srm-inspect --dataset DIR --folds [--through K]   every fold as nnU-Net's splits_final.json
                                (a generated split is nnU-Net v2's own, case for case:
                                dataset_folds.c); --through K runs on to fold K, the folds past
                                the split's being nnU-Net's seeded random 80:20 splits.
  srm-inspect --dataset DIR --intensities   each channel's foreground intensity fingerprint
                                (dataset_intensity.c: mean, std, min, max, 0.5 and 99.5
                                percentiles over the labelled non-test cases) and "ct_norm", the
                                --norm ct-z:MEAN,STD,LO,HI of nnU-Net's CT normalisation with them
                                for a one-channel CT dataset (else null, "ct_norm_why_not" says
                                why; pipelines/train.sh --norm ct-nnunet asks).
  srm-inspect --dataset DIR --spacing   the target spacing nnU-Net would plan (preprocess_plan.c):
                                median spacing and foreground-cropped shape of the labelled
                                non-test cases after reorientation to RAS, "thick_slice_axis"
                                (-1, or the axis given its 10th percentile), "target_spacing"
                                and "spacing_arg" (X,Y,Z for --spacing; pipelines/train.sh
                                --spacing auto asks).
Bad input: exit status 1 and one line on stderr naming the file and the problem.
*/
#define _GNU_SOURCE
#include "check.h"
#include "cli.h"
#include "dataset.h"
#include "labels.h"
#include "orient.h"
#include "preprocess.h"
#include "volume.h"
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *json_mat4(const double a[4][4])
{
    json_t *rows = json_array();
    for (int r = 0; r < 4; r++) {
        json_t *row = json_array();
        for (int c = 0; c < 4; c++) json_array_append_new(row, json_real(a[r][c]));
        json_array_append_new(rows, row);
    }
    return rows;
}

static json_t *json_vec3(const double *x)
{
    return json_pack("[fff]", x[0], x[1], x[2]);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

// A JSON key for a label value: "3" for integers, else the shortest exact float text.
static void value_key(char *buf, size_t n, float x)
{
    if (x == nearbyintf(x) && fabsf(x) < 1e9f) snprintf(buf, n, "%lld", (long long)x);
    else snprintf(buf, n, "%.9g", x);
}

// {"value": count} over all values. Integer labels within a small range are counted directly;
// anything else is sorted (a float volume passed with --labels by mistake still works).
static json_t *label_counts(const float *x, size_t n)
{
    json_t *obj = json_object();
    char key[64];
    float lo = INFINITY, hi = -INFINITY;
    int integral = 1;
    for (size_t i = 0; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
        integral &= x[i] == nearbyintf(x[i]);
    }
    if (n > 0 && integral && hi - lo < (1 << 20)) {
        size_t span = (size_t)(hi - lo) + 1;
        size_t *count = xcalloc(span, sizeof *count);
        for (size_t i = 0; i < n; i++) count[(size_t)(x[i] - lo)]++;
        for (size_t b = 0; b < span; b++)
            if (count[b]) {
                value_key(key, sizeof key, lo + (float)b);
                json_object_set_new(obj, key, json_integer((json_int_t)count[b]));
            }
        free(count);
        return obj;
    }
    float *s = xmalloc(n * sizeof *s);
    memcpy(s, x, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_float);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && s[j] == s[i]) j++;
        value_key(key, sizeof key, s[i]);
        json_object_set_new(obj, key, json_integer((json_int_t)(j - i)));
        i = j;
    }
    free(s);
    return obj;
}

// Build the JSON description of one file. Returns NULL with err on bad input.
static json_t *inspect_file(const char *path, int with_labels, char *err)
{
    volume_t v;
    if (nifti_read_volume(path, &v, err) < 0) return NULL;
    char codes[4];
    double ras[4][4];
    ornt_t ornt;
    if (orient_axcodes(v.affine, codes, err) < 0 || orient_ras_affine(v.affine, v.dim, ras, err) < 0 ||
        orient_of_affine(v.affine, &ornt, err) < 0) {
        char why[ERR_LEN];
        snprintf(why, sizeof why, "%s", err);
        set_err(err, "%s: %s", path, why);
        volume_free(&v);
        return NULL;
    }
    size_t n = (size_t)v.C * volume_voxels(&v);
    double lo = INFINITY, hi = -INFINITY, sum = 0;
    for (size_t i = 0; i < n; i++) {
        double x = v.data[i];
        lo = fmin(lo, x);
        hi = fmax(hi, x);
        sum += x;
    }
    json_t *o = json_object();
    json_object_set_new(o, "file", json_string(path));
    json_object_set_new(o, "dims", json_pack("[iii]", v.dim[0], v.dim[1], v.dim[2]));
    json_object_set_new(o, "channels", json_integer(v.C));
    json_object_set_new(o, "spacing", json_vec3(v.spacing));
    json_object_set_new(o, "pixdim", json_vec3(v.pixdim));
    json_object_set_new(o, "datatype", json_string(volume_datatype_name(v.datatype)));
    json_object_set_new(o, "datatype_code", json_integer(v.datatype));
    json_object_set_new(o, "nifti_version", json_integer(v.nifti_version));
    static const char *xform[3] = {"pixdim", "qform", "sform"};
    json_object_set_new(o, "xform", json_string(xform[v.xform_source]));
    // the header's spatial unit, named as nibabel names it; the affine above is in mm either way
    static const char *unit[8] = {"unknown", "meter", "mm", "micron", "unknown", "unknown", "unknown", "unknown"};
    json_object_set_new(o, "units", json_string(unit[v.xyz_units & 7]));
    json_object_set_new(o, "orientation", json_string(codes));
    json_object_set_new(o, "affine", json_mat4(v.affine));
    json_object_set_new(o, "ras_affine", json_mat4(ras));
    int rdim[3];  // extents after reorientation to RAS
    for (int d = 0; d < 3; d++) rdim[ornt.axis[d]] = v.dim[d];
    json_object_set_new(o, "ras_dims", json_pack("[iii]", rdim[0], rdim[1], rdim[2]));
    json_object_set_new(o, "min", json_real(lo));
    json_object_set_new(o, "max", json_real(hi));
    json_object_set_new(o, "mean", json_real(sum / (double)n));
    if (with_labels) json_object_set_new(o, "labels", label_counts(v.data, n));
    volume_free(&v);
    return o;
}

static void usage(void)
{
    fprintf(stderr, "usage: srm-inspect FILE.nii[.gz] [--labels]\n"
                    "       srm-inspect --dataset DIR [--shape | --intensities | --spacing | --folds [--through K]]\n");
}

// Channels and classes a model for the dataset needs. Undeclared labels are counted from the
// label files (each read once); nnU-Net regions count by their largest value, as the loader does.
static int print_shape(const char *dir, char *err)
{
    dataset_t ds;
    if (dataset_open(dir, &ds, err)) return -1;
    int classes = ds.num_classes, files = 0, maxv = 0;
    for (int i = 0; i < ds.n_cases && !ds.num_classes; i++) {
        if (!ds.cases[i].label) continue;
        volume_t l;
        if (nifti_read_volume(ds.cases[i].label, &l, err)) { dataset_free(&ds); return -1; }
        size_t n = (size_t)l.C * volume_voxels(&l);
        for (size_t k = 0; k < n; k++)
            if (l.data[k] > maxv && l.data[k] <= LABEL_MAX_CLASS) maxv = (int)lrintf(l.data[k]);
        volume_free(&l);
        files++;
    }
    if (!ds.num_classes) {
        if (!files) { dataset_free(&ds); return set_err(err, "%s: no label file to count the classes from", dir); }
        classes = maxv + 1 < 2 ? 2 : maxv + 1;
    }
    int nval = 0, *tr = NULL, *va = NULL, ntr = 0, nva = 0, nfolds;
    char e2[ERR_LEN];
    for (int i = 0; i < ds.n_cases; i++) nval += !strcmp(ds.cases[i].split, "validation");
    const char *source = dataset_fold_source(&ds, &nfolds);
    json_t *fold_err = json_null();
    // a generated split of too few cases has no fold 0; declared folds that fail are an error
    if (nfolds && dataset_fold(&ds, 0, &tr, &ntr, &va, &nva, e2)) {
        ntr = nva = 0;
        json_decref(fold_err);
        fold_err = json_string(e2);
    }
    free(tr);
    free(va);
    char *fe = json_dumps(fold_err, JSON_ENCODE_ANY), spec[2048];
    json_decref(fold_err);
    int nreg = dataset_regions_spec(&ds, spec, sizeof spec);
    if (nreg < 0) {
        free(fe);
        dataset_free(&ds);
        return set_err(err, "%s/dataset.json: its regions do not fit a --regions of %zu characters", dir, sizeof spec);
    }
    json_t *rj = nreg > 0 ? json_string(spec) : json_null();
    char *regions = json_dumps(rj, JSON_ENCODE_ANY);
    json_decref(rj);
    char ignore[16] = "null", gaps[1200] = "";
    if (ds.ignore_label >= 0) snprintf(ignore, sizeof ignore, "%d", ds.ignore_label);
    // values below the largest class that no label declares: outputs no voxel trains (nnU-Net
    // refuses such datasets; here they are said, and the model has a class that stays empty)
    for (int v = 0, len = 0; ds.n_labels && v < ds.num_classes && len < (int)sizeof gaps - 8; v++)
        if (!dataset_label_declared(&ds, v)) len += snprintf(gaps + len, sizeof gaps - len, "%s%d", len ? ", " : "", v);
    printf("{\"channels\": %d, \"classes\": %d, \"classes_from\": \"%s\", \"ignore\": %s, \"undeclared\": [%s], "
           "\"validation\": %d, \"folds\": %d, \"folds_from\": \"%s\", \"fold0_train\": %d, \"fold0_val\": %d, "
           "\"fold0_error\": %s, \"regions\": %s}\n", ds.n_channels, classes,
           ds.num_classes ? "declared labels" : "label files", ignore, gaps, nval, nfolds, source, ntr, nva,
           fe ? fe : "null", regions ? regions : "null");
    free(fe);
    free(regions);
    dataset_free(&ds);
    return fflush(stdout) ? set_err(err, "%s: cannot write to stdout", dir) : 0;
}

static int cmp_case_id(const void *a, const void *b, void *ds)
{
    const dataset_t *d = ds;
    return strcmp(d->cases[*(const int *)a].id, d->cases[*(const int *)b].id);
}

// The ids of cases idx (reordered: sorted by id) as a JSON array.
static json_t *id_array(const dataset_t *ds, int *idx, int n)
{
    qsort_r(idx, (size_t)n, sizeof *idx, cmp_case_id, (void *)ds);
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_string(ds->cases[idx[i]].id));
    return a;
}

// Every fold of dataset_fold as nnU-Net's splits_final.json: [{"train": [...], "val": [...]}, ...]
// (the ids sorted, as nnU-Net writes them), on to fold `through` when that is past them (-1: the
// split's own). A fold that cannot be made stops with its error.
static int print_folds(const char *dir, int through, char *err)
{
    dataset_t ds;
    if (dataset_open(dir, &ds, err)) return -1;
    int nfolds;
    const char *source = dataset_fold_source(&ds, &nfolds);
    if (!nfolds) {
        set_err(err, "%s: fewer than 2 labelled non-test cases: no folds", dir);
        dataset_free(&ds);
        return -1;
    }
    json_t *folds = json_array();
    int rc = 0;
    for (int k = 0; (k < nfolds || k <= through) && !rc; k++) {
        int *tr, *va, ntr, nva;
        if ((rc = dataset_fold(&ds, k, &tr, &ntr, &va, &nva, err))) break;
        json_t *f = json_object();
        json_object_set_new(f, "train", id_array(&ds, tr, ntr));
        json_object_set_new(f, "val", id_array(&ds, va, nva));
        json_array_append_new(folds, f);
        free(tr);
        free(va);
    }
    dataset_free(&ds);
    if (rc) { json_decref(folds); return -1; }
    log_msg('I', "%d folds (%s)", nfolds, source);
    rc = json_dumpf(folds, stdout, JSON_INDENT(4));
    json_decref(folds);
    if (rc != 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0) return set_err(err, "%s: cannot write to stdout", dir);
    return 0;
}

// Each channel's foreground intensity fingerprint, and the --norm that gives nnU-Net's CT
// normalisation with it ("ct_norm"): only when every channel is CT, since --norm sets the
// normalisation of every channel (null otherwise, and when the figures give no z-score).
static int print_intensities(const char *dir, char *err)
{
    dataset_t ds;
    if (dataset_open(dir, &ds, err)) return -1;
    intensity_fingerprint_t *fps = xcalloc((size_t)ds.n_channels, sizeof *fps);
    if (dataset_intensity_fingerprints(&ds, fps, err)) {
        free(fps);
        dataset_free(&ds);
        return -1;
    }
    if (fps[0].skipped)
        fprintf(stderr, "W: inspect: %d case(s) could not be read and were left out; the first: %s\n", fps[0].skipped,
                fps[0].first_problem);
    json_t *o = json_object(), *chans = json_array();
    json_object_set_new(o, "dataset", json_string(dir));
    json_object_set_new(o, "channels", chans);
    int all_ct = 1;
    for (int ch = 0; ch < ds.n_channels; ch++) {
        const intensity_fingerprint_t *fp = &fps[ch];
        json_array_append_new(chans, json_pack("{s:i, s:s, s:s, s:i, s:i, s:i, s:I, s:f, s:f, s:f, s:f, s:f, s:f}",
                                               "channel", ch, "name", ds.channel_names[ch], "modality",
                                               modality_name(ds.modality[ch]), "cases", fp->cases,
                                               "cases_without_foreground", fp->empty, "cases_unreadable", fp->skipped,
                                               "samples", (json_int_t)fp->samples, "mean", fp->mean, "std", fp->std,
                                               "min", fp->min, "max", fp->max, "percentile_00_5", fp->p00_5,
                                               "percentile_99_5", fp->p99_5));
        all_ct &= ds.modality[ch] == MODALITY_CT;
    }
    char norm[256];
    const intensity_fingerprint_t *f0 = &fps[0];
    int usable = all_ct && ds.n_channels == 1 && f0->std > 0 && f0->p00_5 < f0->p99_5;
    if (usable) snprintf(norm, sizeof norm, "ct-z:%.9g,%.9g,%.9g,%.9g", f0->mean, f0->std, f0->p00_5, f0->p99_5);
    json_object_set_new(o, "ct_norm", usable ? json_string(norm) : json_null());
    json_object_set_new(o, "ct_norm_why_not", usable ? json_null()
                        : json_string(!all_ct ? "not every channel is CT (--norm sets every channel's normalisation)"
                                      : ds.n_channels > 1 ? "several CT channels, one --norm setting"
                                      : "the foreground's intensities are constant"));
    free(fps);
    dataset_free(&ds);
    int rc = json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(o);
    if (rc != 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0) return set_err(err, "%s: cannot write to stdout", dir);
    return 0;
}

// nnU-Net's target spacing for the dataset, with the figures it comes from.
static int print_spacing(const char *dir, char *err)
{
    dataset_t ds;
    if (dataset_open(dir, &ds, err)) return -1;
    preprocess_cfg_t cfg;
    preprocess_cfg_default(&cfg);
    spacing_plan_t p;
    int rc = preprocess_plan_spacing(&ds, &cfg, &p, err);
    dataset_free(&ds);
    if (rc) return -1;
    if (p.skipped)
        fprintf(stderr, "W: inspect: %d case(s) could not be read and were left out; the first: %s\n", p.skipped,
                p.first_problem);
    char arg[128];
    snprintf(arg, sizeof arg, "%.9g,%.9g,%.9g", p.target[0], p.target[1], p.target[2]);
    json_t *o = json_pack("{s:s, s:i, s:i, s:o, s:o, s:i, s:o, s:s}", "dataset", dir, "cases", p.cases,
                          "cases_unreadable", p.skipped, "median_spacing", json_vec3(p.median_spacing),
                          "median_shape_after_crop", json_vec3(p.median_shape), "thick_slice_axis", p.aniso_axis,
                          "target_spacing", json_vec3(p.target), "spacing_arg", arg);
    rc = json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(o);
    if (rc != 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0) return set_err(err, "%s: cannot write to stdout", dir);
    return 0;
}

int main(int argc, char **argv)
{
    log_set_name("inspect");
    const char *file = NULL, *dataset = NULL;
    int labels = 0, shape = 0, intensities = 0, folds = 0, spacing = 0;
    long through = -1;
    char err[ERR_LEN];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--labels") == 0) labels = 1;
        else if (strcmp(argv[i], "--shape") == 0) shape = 1;
        else if (strcmp(argv[i], "--intensities") == 0) intensities = 1;
        else if (strcmp(argv[i], "--spacing") == 0) spacing = 1;
        else if (strcmp(argv[i], "--folds") == 0) folds = 1;
        else if (strcmp(argv[i], "--dataset") == 0 && i + 1 < argc) dataset = argv[++i];
        else if (strcmp(argv[i], "--through") == 0 && i + 1 < argc) {
            if (cli_long("--through", argv[++i], 0, DATASET_FOLD_MAX, &through, err)) {
                fprintf(stderr, "E: inspect: %s\n", err);
                return 2;
            }
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) { usage(); return 0; }
        else if (argv[i][0] == '-' || file) { usage(); return 2; }
        else file = argv[i];
    }
    if (!!file == !!dataset || ((shape || intensities || folds || spacing) && !dataset) ||
        shape + intensities + folds + spacing > 1 ||
        (labels && !file) || (through >= 0 && !folds)) {
        usage();
        return 2;
    }
    if (dataset) {
        int rc = shape ? print_shape(dataset, err) : intensities ? print_intensities(dataset, err)
               : spacing ? print_spacing(dataset, err) : folds ? print_folds(dataset, (int)through, err) : dataset_print_report(dataset, stdout, err);
        if (rc < 0) {
            fprintf(stderr, "E: inspect: %s\n", err);
            return 1;
        }
        return 0;
    }
    json_t *o = inspect_file(file, labels, err);
    if (!o) {
        fprintf(stderr, "E: inspect: %s\n", err);
        return 1;
    }
    // 17 significant digits: doubles survive the round trip through the JSON text
    int rc = json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(o);
    if (rc != 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0) {
        fprintf(stderr, "E: inspect: %s: cannot write the JSON to stdout\n", file);
        return 1;
    }
    return 0;
}
