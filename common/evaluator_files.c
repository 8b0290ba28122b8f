/*
evaluator_files.c -- file mode: segment images given on the command line (--images, optional
--labels to score) or the cases of a dataset (--dataset DIR --split S), preprocessing each one
as the loader does (preprocess_case with the --spacing/--norm flags), and write each result on
its source image's grid: OUT/<case>.nii.gz, a uint8 label map or float32 logits (K on the 4th
axis), carrying the source affine. A case that cannot be read or segmented is reported by name
and skipped. Several --model files are an ensemble (eval_segment averages their logits): they
must agree on classes, channels, preprocessing and regions, and the first one's training patch
is the window.
*/
#include "evaluator.h"
#include "check.h"
#include "dataset.h"
#include "durable_fs.h"
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return tv.tv_sec + tv.tv_usec * 1e-6;
}

// A --labels file on the grid of image (read from image_path) -> class bytes under the rules of
// a dataset that declares no labels (dataset_label_bytes: integers 0..254). NULL with err.
static uint8_t *read_label(const char *path, const volume_t *image, const char *image_path, char *err)
{
    static const dataset_t none = { .ignore_label = -1 };
    volume_t l;
    if (nifti_read_volume(path, &l, err)) return NULL;
    uint8_t *out;
    dataset_label_bytes(&none, path, &l, image->dim, image->affine, image_path, &out, err);
    volume_free(&l);
    return out;
}

// OUT/<id>.nii.gz: the one name a case's result has (written, checked, kept by --continue).
static void result_path(char *path, size_t cap, const char *dir, const char *id)
{
    snprintf(path, cap, "%s/%s.nii.gz", dir, id);
}

// ndim: the source image's (a 2D one gives a 2D label map).
static int write_result(const char *dir, const char *id, const preprocess_record_t *rec, int ndim,
                        const uint8_t *labels, const float *logits, int K, char *err)
{
    volume_t v;
    memset(&v, 0, sizeof v);
    v.ndim = ndim;
    memcpy(v.dim, rec->src_dim, sizeof v.dim);
    memcpy(v.affine, rec->src_affine, sizeof v.affine);
    eval_affine_spacing(rec->src_affine, v.spacing);
    size_t n = volume_voxels(&v);
    v.C = logits ? K : 1;
    v.data = xmalloc(n * v.C * sizeof(float));
    if (logits) memcpy(v.data, logits, n * K * sizeof(float));
    else for (size_t i = 0; i < n; i++) v.data[i] = labels[i];
    char path[4096];
    result_path(path, sizeof path, dir, id);
    int rc = nifti_write_volume(path, &v, logits ? 16 : 2, err);
    free(v.data);
    return rc;
}

// Preprocess, segment with the ensemble ems (n models), write and score one loaded case (c is
// consumed). 0 or -1 + err.
static int run_case(eval_model_t *const *ems, int nm, const eval_cfg_t *cfg, case_t *c, const uint8_t *ref,
                    eval_result_t *r, char *err)
{
    const model_cfg_t *mc = eval_model_cfg(ems[0]);
    free(c->label);                     // the reference is kept on the source grid by the caller
    c->label = NULL;
    preprocess_record_t rec;
    char e2[ERR_LEN];
    const int ndim = c->image.ndim;
    if (preprocess_case(c, &cfg->prep, &rec, e2)) return set_err(err, "preprocessing: %s", e2);
    size_t sn = (size_t)rec.src_dim[0] * rec.src_dim[1] * rec.src_dim[2];
    uint8_t *labels = xmalloc(sn);
    float *logits = cfg->logits ? xmalloc(sn * mc->classes * sizeof(float)) : NULL;
    int rc = eval_segment(ems, nm, &cfg->sw, &cfg->lab, cfg->keep_given ? cfg->keep_largest : NULL, c->image.data, &rec, labels, logits, err);
    if (rc == 0 && cfg->out_dir) rc = write_result(cfg->out_dir, r->id, &rec, ndim, labels, logits, mc->classes, err);
    if (rc == 0 && ref) {
        double sp[3];
        eval_affine_spacing(rec.src_affine, sp);
        eval_score(r, labels, ref, rec.src_dim, sp, mc->classes, &cfg->lab, cfg->hd95);
    } else if (rc == 0) {
        r->nfg = 0;                     // segmented, nothing to score against
        r->mean_dice = NAN;
    }
    free(labels);
    free(logits);
    return rc;
}

// A reference label the scoring has no place for (a value the model's K classes do not hold;
// with --regions every label has one) would silently count as background: refuse the case,
// naming the file and the voxel.
static int check_reference(const char *path, const uint8_t *ref, const volume_t *img, int K,
                           const eval_labels_t *lab, int ignore_ok, char *err)
{
    int64_t bad = eval_ref_unscorable(ref, volume_voxels(img), K, lab, ignore_ok);
    if (bad < 0) return 0;
    char at[80];
    volume_ijk(img->dim, (size_t)bad, at);
    if (ref[bad] == LABEL_IGNORE)
        return set_err(err, "%s: voxel %s holds 255, no class (a dataset.json can declare it \"ignore\")", path, at);
    return set_err(err, "%s: voxel %s holds label %d, but the model has %d classes (labels 0..%d)", path, at,
                   ref[bad], K, K - 1);
}

// Load case k of the run (its image files, or dataset case idx[k]) into c and its reference,
// checked against the model's channels and classes (or the regions).
static int load_case(const eval_cfg_t *cfg, const dataset_t *ds, const int *idx, int k, const model_cfg_t *mc,
                     case_t *c, uint8_t **ref, char *err)
{
    memset(c, 0, sizeof *c);
    *ref = NULL;
    if (ds) {
        if (dataset_load_case(ds, idx[k], c, err)) return -1;
        if (c->label) {
            size_t n = volume_voxels(&c->image);
            *ref = xmalloc(n);
            memcpy(*ref, c->label, n);
        }
    } else {
        if (eval_case_id(cfg, k, c->id, sizeof c->id) >= (int)sizeof c->id)
            return set_err(err, "%s: its case name is longer than %d characters: give the file a shorter name",
                           cfg->images[cfg->case_first[k]], (int)sizeof c->id - 1);
        if (case_read_images(c, cfg->images + cfg->case_first[k], cfg->case_nch[k], err)) return -1;
        for (int ch = 0; ch < c->image.C && ch < CASE_MAX_CHANNELS; ch++) c->modality[ch] = MODALITY_MR;
        if (cfg->n_labels && !(*ref = read_label(cfg->labels[k], &c->image, cfg->images[cfg->case_first[k]], err)))
            return -1;
    }
    if (c->image.C != mc->in_channels) {
        int many = ds ? ds->cases[idx[k]].n_images > 1 : cfg->case_nch[k] > 1;
        return set_err(err, "%s%s: %d image channel%s, the model takes %d%s",
                       ds ? ds->cases[idx[k]].images[0] : cfg->images[cfg->case_first[k]], many ? " ..." : "",
                       c->image.C, c->image.C == 1 ? "" : "s", mc->in_channels,
                       !ds && c->image.C < mc->in_channels ? " (give a 4D image, or one file per channel named "
                                                             "CASE_0000, CASE_0001, ... as nnU-Net)" : "");
    }
    if (*ref && check_reference(ds ? ds->cases[idx[k]].label : cfg->labels[k], *ref, &c->image, mc->classes, &cfg->lab,
                                ds && ds->ignore_label >= 0, err))
        return -1;
    for (int ch = 0; ch < c->image.C && ch < cfg->n_modality; ch++) c->modality[ch] = cfg->modality[ch];
    if (cfg->force_modality >= 0)
        for (int ch = 0; ch < c->image.C; ch++) c->modality[ch] = (modality_t)cfg->force_modality;
    return 0;
}

// --continue: case k's prediction is in OUT already (an earlier run stopped part way): kept,
// and, when the case has a reference, scored from that file (it must be a label map on the
// image's grid, as dataset_label_bytes checks a label file). 1 kept (r filled), 0 not there.
static int kept_prediction(const eval_cfg_t *cfg, const dataset_t *ds, const int *idx, int k, const model_cfg_t *mc,
                           eval_result_t *r)
{
    char path[4096];
    struct stat st;
    result_path(path, sizeof path, cfg->out_dir, r->id);
    if (stat(path, &st) != 0) return 0;
    r->ok = 1;
    r->nfg = 0;
    r->mean_dice = NAN;
    if (ds ? !ds->cases[idx[k]].label : k >= cfg->n_labels) return 1;
    case_t c;
    uint8_t *ref = NULL, *pred = NULL;
    char e2[ERR_LEN];
    r->ok = load_case(cfg, ds, idx, k, mc, &c, &ref, r->error) == 0;
    if (r->ok) {
        const char *image = ds ? ds->cases[idx[k]].images[0] : cfg->images[cfg->case_first[k]];
        r->ok = (pred = read_label(path, &c.image, image, e2)) != NULL;
        if (!r->ok) set_err(r->error, "--continue: the kept prediction: %s", e2);
    }
    if (r->ok) {
        double sp[3];
        eval_affine_spacing(c.image.affine, sp);
        eval_score(r, pred, ref, c.image.dim, sp, mc->classes, &cfg->lab, cfg->hd95);
    }
    case_free(&c);
    free(ref);
    free(pred);
    return 1;
}

// The preprocessing of this run into run (a copy of cfg): the settings the model was trained
// with when its file carries them (srm-trainer keeps the loader's in every checkpoint), with
// --spacing and --norm overriding their parts; else the flags and the defaults, as before.
static void choose_prep(eval_cfg_t *run, const eval_cfg_t *cfg, const eval_model_t *em)
{
    const char *text = eval_model_prep(em);
    preprocess_cfg_t mp;
    modality_t mod[CASE_MAX_CHANNELS];
    int C = 0;
    char why[ERR_LEN] = "";
    if (*text && preprocess_settings_parse(text, &mp, mod, &C, why) == 0 && C != eval_model_cfg(em)->in_channels)
        snprintf(why, sizeof why, "settings for %d channels, the model takes %d", C, eval_model_cfg(em)->in_channels);
    if (!*text || why[0]) {
        if (why[0]) log_msg('W', "%s: unusable preprocessing settings (%s): ignored", cfg->model_path, why);
        if (cfg->force_modality < 0 || !cfg->spacing_given)
            log_msg('W', "%s carries no preprocessing settings (weights from elsewhere, or a checkpoint from "
                         "before they were kept): unless --norm and --spacing say otherwise, %s and keep their "
                         "own spacing; give both as the training's loader had them", cfg->model_path,
                    cfg->dataset ? "channels are normalised by the dataset's modality"
                                 : "images are normalised as MR (z-score over the foreground)");
        return;
    }
    run->prep = mp;
    run->prep.allow_f16 = cfg->prep.allow_f16;
    run->prep.blank_ok = cfg->prep.blank_ok;    // a policy of this run, not a training setting
    if (cfg->spacing_given) memcpy(run->prep.target_spacing, cfg->prep.target_spacing, sizeof mp.target_spacing);
    if (cfg->force_modality >= 0) {             // --norm: its normalisation for every channel
        const preprocess_cfg_t *u = &cfg->prep;
        run->prep.ct_norm = u->ct_norm;
        run->prep.ct_lo = u->ct_lo; run->prep.ct_hi = u->ct_hi;
        run->prep.ct_b_min = u->ct_b_min; run->prep.ct_b_max = u->ct_b_max;
        run->prep.ct_mean = u->ct_mean; run->prep.ct_std = u->ct_std;
        run->prep.mr_norm = u->mr_norm;
    } else {
        run->n_modality = C;
        memcpy(run->modality, mod, sizeof mod);
    }
    log_msg('I', "preprocessing as trained (from %s)%s%s: %s", cfg->model_path,
            cfg->spacing_given ? ", --spacing given" : "", cfg->force_modality >= 0 ? ", --norm given" : "", text);
}

// What else the model file says of its training (srm-trainer adds "training" to the settings in
// every checkpoint): its patch is the default window, and its regions, when the output channels
// are sigmoid regions, decode them unless --regions is given. A file without them (weights from
// elsewhere, older checkpoints) keeps the flags and defaults.
static void take_training(eval_cfg_t *run, const eval_cfg_t *cfg, const eval_model_t *em)
{
    json_t *o = json_loads(eval_model_prep(em), 0, NULL), *t = json_object_get(o, "training");
    json_t *patch = json_object_get(t, "patch");
    const char *regions = json_string_value(json_object_get(t, "regions"));
    if (!cfg->window_given && json_array_size(patch) == 3) {
        int p[3], ok = 1;
        for (int a = 0; a < 3; a++) {
            p[a] = (int)json_integer_value(json_array_get(patch, (size_t)a));
            ok &= p[a] >= 16 && p[a] <= 1024 && p[a] % 16 == 0;
        }
        if (ok) {
            memcpy(run->sw.roi, p, sizeof p);
            log_msg('I', "window %dx%dx%d: the training patch (from %s; --window for another)", p[0], p[1], p[2], cfg->model_path);
        } else {
            log_msg('W', "%s: its training patch is not a window this model takes (multiples of 16 in [16, 1024]): "
                    "window %dx%dx%d (--window for another)", cfg->model_path, run->sw.roi[0], run->sw.roi[1], run->sw.roi[2]);
        }
    }
    if (!cfg->lab.nregions && regions && *regions) {
        char why[ERR_LEN];
        if (eval_regions_parse(&run->lab, regions, why)) {
            run->lab = cfg->lab;
            log_msg('W', "%s: its training regions '%s' are unusable (%s): ignored", cfg->model_path, regions, why);
        } else {
            log_msg('I', "outputs are the regions %s the model was trained on (from %s)", regions, cfg->model_path);
        }
    }
    json_decref(o);
}

// What a model file says of its preprocessing and regions (what makes inputs of an image and
// labels of its outputs; not its patch or loss) as one canonical JSON text (malloc'd; "" when it
// carries none): ensemble members must say the same.
static char *prep_key(const eval_model_t *em)
{
    json_t *o = json_loads(eval_model_prep(em), 0, NULL), *t = json_object_get(o, "training");
    if (!o) return xstrdup("");
    json_t *regions = json_incref(json_object_get(t, "regions"));
    json_object_del(o, "training");
    if (regions) json_object_set_new(o, "regions", regions);
    char *s = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(o);
    return s ? s : xstrdup("");
}

// The members of an ensemble after the first must take its inputs and give its outputs the
// same way: classes, channels, preprocessing settings and regions. 0, or -1 + err naming them.
static int check_ensemble(eval_model_t *const *ems, int n, const char *const *paths, char *err)
{
    const model_cfg_t *a = eval_model_cfg(ems[0]);
    char *key0 = prep_key(ems[0]);
    int rc = 0;
    for (int m = 1; m < n && !rc; m++) {
        const model_cfg_t *b = eval_model_cfg(ems[m]);
        char *key = prep_key(ems[m]);
        if (b->classes != a->classes || b->in_channels != a->in_channels)
            rc = set_err(err, "%s takes %d channel(s) and gives %d outputs, %s %d and %d: no ensemble", paths[m],
                         b->in_channels, b->classes, paths[0], a->in_channels, a->classes);
        else if (strcmp(key, key0))
            rc = set_err(err, "%s was trained with other preprocessing or regions than %s (%s against %s): no ensemble",
                         paths[m], paths[0], *key ? key : "none kept", *key0 ? key0 : "none kept");
        free(key);
    }
    free(key0);
    return rc;
}

// Case id and input files of case k (the first an image): an image file and its label file,
// or dataset case idx[k]. Returns the number of files, -1 when the id does not fit in cap.
static int case_inputs(const eval_cfg_t *cfg, const dataset_t *ds, const int *idx, int k, char *id, size_t cap,
                       const char **files)
{
    int nf = 0;
    if (ds) {
        const dataset_case_t *dc = &ds->cases[idx[k]];
        for (int i = 0; i < dc->n_images && nf < CASE_MAX_CHANNELS; i++) files[nf++] = dc->images[i];
        if (dc->label) files[nf++] = dc->label;
        snprintf(id, cap, "%s", dc->id);
        return nf;
    }
    for (int i = 0; i < cfg->case_nch[k]; i++) files[nf++] = cfg->images[cfg->case_first[k] + i];
    if (k < cfg->n_labels) files[nf++] = cfg->labels[k];
    return eval_case_id(cfg, k, id, cap) < (int)cap ? nf : -1;
}

// Before any work: every case's OUT/<id>.nii.gz must be its own and must not be an input.
// Two images of one file name in different folders (KiTS' case_*/imaging.nii.gz) would
// otherwise overwrite each other's result, and an output folder holding the images would
// replace a source scan (or label) by its segmentation. 0, or -1 with err naming the files.
static int check_outputs(const eval_cfg_t *cfg, const dataset_t *ds, const int *idx, int n, char *err)
{
    typedef struct { dev_t dev; ino_t ino; const char *path; } file_key_t;
    char (*ids)[WIRE_ID_LEN] = xmalloc(sizeof *ids * (n ? (size_t)n : 1));   // as eval_result_t's id
    const char **first = xmalloc(sizeof *first * (n ? (size_t)n : 1));   // each case's image
    file_key_t *in = xmalloc(sizeof *in * (size_t)(n ? n : 1) * (CASE_MAX_CHANNELS + 1));
    int nin = 0, rc = 0;
    for (int k = 0; k < n; k++) {
        const char *files[CASE_MAX_CHANNELS + 1];
        const int nf = case_inputs(cfg, ds, idx, k, ids[k], sizeof ids[k], files);
        if (nf < 0 && !rc)
            rc = set_err(err, "%s: its case name is longer than %d characters (it names the prediction file and the "
                         "metrics' case): give the file a shorter name", cfg->images[cfg->case_first[k]], WIRE_ID_LEN - 1);
        first[k] = nf > 0 ? files[0] : ids[k];
        for (int i = 0; i < nf; i++) {              // (none when nf < 0)
            struct stat st;
            if (stat(files[i], &st) == 0) in[nin++] = (file_key_t){ st.st_dev, st.st_ino, files[i] };
        }
    }
    for (int k = 0; k < n && !rc; k++) {
        for (int j = 0; j < k; j++)
            if (!strcmp(ids[j], ids[k])) {
                rc = set_err(err, "%s and %s would both be written to %s/%s.nii.gz: give the images distinct file "
                                  "names or predict them into separate output folders", first[j], first[k],
                             cfg->out_dir, ids[k]);
                break;
            }
        char path[4096];
        struct stat st;
        result_path(path, sizeof path, cfg->out_dir, ids[k]);
        if (rc || stat(path, &st)) continue;
        for (int i = 0; i < nin; i++)
            if (in[i].dev == st.st_dev && in[i].ino == st.st_ino) {
                rc = set_err(err, "%s: the output %s is this input file; choose another output folder", in[i].path, path);
                break;
            }
    }
    free(ids);
    free(first);
    free(in);
    return rc;
}

int eval_run_files(const eval_cfg_t *cfg, char *err)
{
    if (cfg->out_dir && mkdir(cfg->out_dir, 0777) && errno != EEXIST)
        return set_err(err, "%s: cannot make the output folder: %s", cfg->out_dir, strerror(errno));
    // a run killed while writing left STEM.tmpPID.nii.gz behind (others may be writing here now)
    int stale = cfg->out_dir ? fs_remove_dead_nifti_tmp(cfg->out_dir) : 0;
    if (stale) log_msg('I', "%s: removed %d unfinished file(s) of a stopped run", cfg->out_dir, stale);
    dataset_t ds, *dsp = NULL;
    int *idx = NULL, n = 0;
    if (cfg->dataset) {
        if (dataset_open(cfg->dataset, &ds, err)) return -1;
        dsp = &ds;
        if (dataset_select(&ds, cfg->split, &idx, &n, err)) { dataset_free(&ds); return -1; }
        if (n == 0) {
            // (not fold 0 by itself: whether the model was trained without those cases is
            // known only to whoever trained it)
            set_err(err, "%s: the selection '%s' holds no case%s", cfg->dataset, cfg->split,
                     strcmp(cfg->split, "validation") ? "" : " (no validation split declared: train.sh then validates "
                                                             "fold 0, --split fold0/val; --split all for every case)");
            free(idx);
            dataset_free(&ds);
            return -1;
        }
    }
    eval_model_t *ems[EVAL_MAX_MODELS] = { NULL }, *em;
    const int nm = cfg->n_models > 0 ? cfg->n_models : 1;
    const char *const *paths = cfg->n_models > 0 ? cfg->models : &cfg->model_path;
    eval_cfg_t *run = xmalloc(sizeof *run);     // cfg with the cases grouped and the preprocessing
    *run = *cfg;                                // chosen (large: heap)
    for (int m = 0; m < nm; m++)
        if (!(ems[m] = eval_model_load_file(paths[m], &cfg->model, err))) goto fail;
    em = ems[0];
    if (check_ensemble(ems, nm, paths, err)) goto fail;
    if (!dsp) {                                 // channel files make cases for a multi-channel model
        if (eval_group_channels(run, eval_model_cfg(em)->in_channels, err)) goto fail;
        n = run->n_cases;
    }
    if (cfg->out_dir && check_outputs(run, dsp, idx, n, err)) goto fail;
    take_training(run, cfg, em);
    if (run->lab.nregions && run->lab.nregions != eval_model_cfg(em)->classes) {
        set_err(err, "--regions gives %d regions, the model has %d outputs", run->lab.nregions, eval_model_cfg(em)->classes);
        goto fail;
    }
    if (dsp && ds.n_channels != eval_model_cfg(em)->in_channels) {
        set_err(err, "%s declares %d channel%s, the model %s takes %d", cfg->dataset, ds.n_channels,
                ds.n_channels == 1 ? "" : "s", cfg->model_path, eval_model_cfg(em)->in_channels);
        goto fail;
    }
    if (dsp && !run->lab.nregions && ds.num_classes && ds.num_classes != eval_model_cfg(em)->classes) {
        set_err(err, "%s declares %d classes (labels 0..%d), the model %s has %d: its scores would drop or invent "
                     "classes; evaluate it on data with its own label set",
                cfg->dataset, ds.num_classes, ds.num_classes - 1, cfg->model_path, eval_model_cfg(em)->classes);
        goto fail;
    }
    for (int m = 0; m < nm; m++) {
        if (cfg->deterministic) eval_model_deterministic(ems[m]);
        if (eval_model_prepare(ems[m], &run->sw, cfg->device, err)) goto fail;
    }
    choose_prep(run, cfg, em);
    cfg = run;
    const model_cfg_t *mc = eval_model_cfg(em);
    log_msg('I', "%d case(s), model %s width %d (%d in, %d out) on the %s, window %dx%dx%d overlap %g %s x%d%s",
            n, model_variant_name(mc->variant), mc->width, mc->in_channels, mc->classes, eval_model_device(em),
            cfg->sw.roi[0], cfg->sw.roi[1], cfg->sw.roi[2], cfg->sw.overlap,
            cfg->sw.blend == SW_BLEND_GAUSSIAN ? "gaussian" : "constant", cfg->sw.batch,
            cfg->sw.mirror ? ", mirrored (8 passes a window)" : "");
    if (nm > 1) log_msg('I', "an ensemble of %d models: their logits averaged", nm);
    eval_result_t *rs = xcalloc(n ? (size_t)n : 1, sizeof *rs);
    int failed = 0, scored = 0, kept = 0;
    for (int k = 0; k < n; k++) {
        eval_result_t *r = &rs[k];
        case_t c;
        uint8_t *ref;
        double t0 = now_s();
        if (dsp) snprintf(r->id, sizeof r->id, "%s", ds.cases[idx[k]].id);
        else eval_case_id(cfg, k, r->id, sizeof r->id);
        if (cfg->keep_done && kept_prediction(cfg, dsp, idx, k, mc, r)) {
            kept++;
            if (!r->ok) {
                failed++;
                log_msg('W', "case %s skipped: %s", r->id, r->error);
            } else {
                log_msg('I', "case %s: kept %s/%s.nii.gz (--continue)", r->id, cfg->out_dir, r->id);
            }
            if (r->nfg || !r->ok) eval_print_case(r, &cfg->lab, cfg->hd95);
            scored += r->ok && r->nfg > 0;
            continue;
        }
        r->ok = load_case(cfg, dsp, idx, k, mc, &c, &ref, r->error) == 0;
        if (r->ok) r->ok = run_case(ems, nm, cfg, &c, ref, r, r->error) == 0;
        r->seconds = now_s() - t0;
        case_free(&c);
        if (!r->ok) {
            failed++;
            log_msg('W', "case %s skipped: %s", r->id, r->error);
        } else {
            log_msg('I', "case %s: %.1f s", r->id, r->seconds);
        }
        if (ref && r->ok) { scored++; eval_print_case(r, &cfg->lab, cfg->hd95); }
        else if (!r->ok) eval_print_case(r, &cfg->lab, cfg->hd95);
        free(ref);
    }
    if (kept) log_msg('I', "%d of %d case(s) kept from an earlier run (--continue)", kept, n);
    if (scored) eval_print_summary(rs, n, &cfg->lab, cfg->hd95);
    free(run);
    free(rs);
    free(idx);
    if (dsp) dataset_free(&ds);
    for (int m = 0; m < nm; m++) eval_model_free(&ems[m]);
    if (n > 0 && failed == n) return set_err(err, "every case failed (%d)", n);
    return failed;
fail:
    free(run);
    free(idx);
    if (dsp) dataset_free(&ds);
    for (int m = 0; m < nm; m++) eval_model_free(&ems[m]);
    return -1;
}
