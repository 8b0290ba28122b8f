/*
dataset.c -- dataset discovery: MSD, nnU-Net v2 raw and plain imagesTr/labelsTr folders.

Reads dataset.json with jansson and lists the image folders; it never opens an image (that is
dataset_case.c), so opening a large dataset is instant and a missing file shows up as a per-case
problem when the case is loaded or reported. Splits and folds are in dataset_folds.c.
*/
#define _GNU_SOURCE
#include "dataset.h"
#include "check.h"
#include "labels.h"
#include <dirent.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// dataset_folds.c
int dataset_apply_split_key(dataset_t *ds, json_t *root);
int dataset_read_splits_final(dataset_t *ds, char *err);

void dataset_add_problem(dataset_t *ds, const char *fmt, ...)
{
    char buf[ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ds->problems = xrealloc(ds->problems, (size_t)(ds->n_problems + 1) * sizeof *ds->problems);
    ds->problems[ds->n_problems++] = xstrdup(buf);
}

static char *join(const char *dir, const char *rel)
{
    while (rel[0] == '.' && rel[1] == '/') rel += 2;   // MSD writes "./imagesTr/x.nii.gz"
    char *p;
    if (rel[0] == '/') return xstrdup(rel);
    if (asprintf(&p, "%s/%s", dir, rel) < 0) DIE("out of memory");
    return p;
}

static int is_file(const char *path) { struct stat st; return stat(path, &st) == 0 && S_ISREG(st.st_mode); }
static int is_dir(const char *path) { struct stat st; return stat(path, &st) == 0 && S_ISDIR(st.st_mode); }

// Length of name without its NIfTI ending (".nii.gz" or ".nii"), or -1 if it has neither.
static int strip_ending(const char *name)
{
    size_t n = strlen(name);
    if (n > 7 && strcmp(name + n - 7, ".nii.gz") == 0) return (int)(n - 7);
    if (n > 4 && strcmp(name + n - 4, ".nii") == 0) return (int)(n - 4);
    return -1;
}

// Channel index of "<id>_XXXX" (4 digits) or -1.
static int channel_suffix(const char *stem, int len)
{
    if (len < 6 || stem[len - 5] != '_') return -1;
    int c = 0;
    for (int i = len - 4; i < len; i++) {
        if (stem[i] < '0' || stem[i] > '9') return -1;
        c = c * 10 + (stem[i] - '0');
    }
    return c;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// NIfTI file stems in dir/sub, sorted; dot-files skipped. With ending (a dataset.json's
// file_ending) only files of that ending, the others named in ds's problems. Returns count (0
// if no folder).
static int list_stems(dataset_t *ds, const char *dir, const char *sub, const char *ending, char ***out)
{
    char *path = join(dir, sub);
    DIR *d = opendir(path);
    free(path);
    *out = NULL;
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;     // ".", "..", macOS "._x.nii.gz"
        int len = strip_ending(e->d_name);
        if (len <= 0) continue;
        if (ending && strcmp(e->d_name + len, ending)) {
            dataset_add_problem(ds, "%s/%s/%s: not of the dataset's file_ending %s; skipped", dir, sub, e->d_name, ending);
            continue;
        }
        *out = xrealloc(*out, (size_t)(n + 1) * sizeof **out);
        (*out)[n++] = strndup(e->d_name, (size_t)len);
    }
    closedir(d);
    if (n) qsort(*out, (size_t)n, sizeof **out, cmp_str);
    return n;
}

// base + ".nii.gz" when that file exists, else base + ".nii" when that exists, else ".nii.gz".
static char *nifti_path(const char *base)
{
    char *p;
    if (asprintf(&p, "%s.nii", base) < 0) DIE("out of memory");
    if (is_file(p)) {
        char *gz;
        if (asprintf(&gz, "%s.gz", p) < 0) DIE("out of memory");
        if (is_file(gz)) { free(p); return gz; }
        free(gz);
        return p;
    }
    free(p);
    if (asprintf(&p, "%s.nii.gz", base) < 0) DIE("out of memory");
    return p;
}

static void free_list(char **l, int n) { for (int i = 0; i < n; i++) free(l[i]); free(l); }

static dataset_case_t *add_case(dataset_t *ds, const char *id, const char *split)
{
    ds->cases = xrealloc(ds->cases, (size_t)(ds->n_cases + 1) * sizeof *ds->cases);
    dataset_case_t *c = &ds->cases[ds->n_cases++];
    memset(c, 0, sizeof *c);
    c->id = xstrdup(id);
    c->fold = -1;
    snprintf(c->split, sizeof c->split, "%s", split);
    return c;
}

static void case_set_images(dataset_case_t *c, int n)
{
    c->n_images = n;
    c->images = xcalloc((size_t)n, sizeof *c->images);
}

// ---- dataset.json fields --------------------------------------------------------------------

// "modality" (MSD) or "channel_names" (nnU-Net): {"0": "CT", "1": ...} with keys 0..n-1.
static const char *const MODALITY_NAMES[MODALITY_COUNT] = { "MR", "CT", "noNorm", "rescale_to_0_1", "rgb_to_0_1" };

modality_t modality_of_name(const char *name)
{
    for (int m = 1; m < MODALITY_COUNT; m++)
        if (!strcasecmp(name, MODALITY_NAMES[m])) return (modality_t)m;
    return MODALITY_MR;
}

const char *modality_name(modality_t m)
{
    return (unsigned)m < MODALITY_COUNT ? MODALITY_NAMES[m] : "MR";
}

static int parse_channels(dataset_t *ds, json_t *obj, const char *where, char *err)
{
    int n = (int)json_object_size(obj);
    if (n < 1 || n > CASE_MAX_CHANNELS)
        return set_err(err, "%s: %d channels declared (need 1..%d)", where, n, CASE_MAX_CHANNELS);
    ds->n_channels = n;
    ds->channel_names = xcalloc((size_t)n, sizeof(char *));
    ds->modality = xcalloc((size_t)n, sizeof(modality_t));
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        char *end;
        long k = strtol(key, &end, 10);
        if (*end || k < 0 || k >= n || !json_is_string(v) || ds->channel_names[k])
            return set_err(err, "%s: bad channel entry \"%s\" (keys must be 0..%d, values names)",
                           where, key, n - 1);
        ds->channel_names[k] = xstrdup(json_string_value(v));
        ds->modality[k] = modality_of_name(json_string_value(v));
    }
    return 0;
}

// "labels": MSD {"0": "background", ...} or nnU-Net {"background": 0, "tumour": [1, 2]}, with
// nnU-Net v2's optional "ignore": V (unannotated voxels; V above every class, labels.h).
static int parse_labels(dataset_t *ds, json_t *obj, const char *where, char *err)
{
    int n = (int)json_object_size(obj), i = 0, maxv = -1;
    ds->ignore_label = -1;
    if (n < 1) return set_err(err, "%s: \"labels\" is empty", where);
    ds->n_labels = n;
    ds->labels = xcalloc((size_t)n, sizeof *ds->labels);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        dataset_label_t *l = &ds->labels[i++];
        if (json_is_string(v)) {                      // MSD: value string -> key is the int
            char *end;
            long k = strtol(key, &end, 10);
            if (*end || k < 0 || k > 255)
                return set_err(err, "%s: label key \"%s\" is not an integer in [0, 255]", where, key);
            l->name = xstrdup(json_string_value(v));
            l->values[l->n_values++] = (int)k;
        } else if (json_is_integer(v)) {              // nnU-Net: name -> int
            l->name = xstrdup(key);
            l->values[l->n_values++] = (int)json_integer_value(v);
        } else if (json_is_array(v) && json_array_size(v) >= 1 && json_array_size(v) <= 16) {
            // nnU-Net region: name -> [ints]. As nnU-Net's LabelManager, only a list of more
            // than one value makes the dataset region-based ([3] is label 3), and background
            // is not a list.
            if (!strcmp(key, "background"))
                return set_err(err, "%s: label \"background\" must be the integer 0, not a list (as nnU-Net requires)", where);
            l->name = xstrdup(key);
            size_t j;
            json_t *x;
            json_array_foreach(v, j, x) {
                if (!json_is_integer(x)) return set_err(err, "%s: region \"%s\" holds a non-integer", where, key);
                l->values[l->n_values++] = (int)json_integer_value(x);
            }
            if (l->n_values > 1) ds->has_regions = 1;
        } else {
            return set_err(err, "%s: label \"%s\" is neither a name, an integer nor a region", where, key);
        }
        if (!strcmp(l->name, "ignore")) {
            if (l->n_values != 1)
                return set_err(err, "%s: label \"ignore\" must be one integer, not a region", where);
            if (l->values[0] < 0 || l->values[0] > 255)
                return set_err(err, "%s: label \"ignore\" value %d outside [0, 255]", where, l->values[0]);
            ds->ignore_label = l->values[0];
            continue;
        }
        for (int j = 0; j < l->n_values; j++) {
            if (l->values[j] < 0 || l->values[j] > LABEL_MAX_CLASS)
                return set_err(err, "%s: label \"%s\" value %d outside [0, %d] (%d is kept for \"ignore\")", where,
                               key, l->values[j], LABEL_MAX_CLASS, LABEL_IGNORE);
            if (l->values[j] > maxv) maxv = l->values[j];
        }
    }
    if (ds->ignore_label >= 0 && ds->ignore_label <= maxv)       // nnU-Net's rule too
        return set_err(err, "%s: label \"ignore\" (%d) must be larger than every class (largest %d)", where,
                       ds->ignore_label, maxv);
    if (maxv < 0) return set_err(err, "%s: \"labels\" declares no class besides \"ignore\"", where);
    ds->num_classes = maxv + 1;
    return 0;
}

// ---- layouts ----------------------------------------------------------------------------

char *dataset_id_of_path(const char *path, int strip_channel)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    int len = strip_ending(base);
    if (len < 0) len = (int)strlen(base);
    if (strip_channel && channel_suffix(base, len) >= 0) len -= 5;
    return strndup(base, (size_t)len);
}

int dataset_channel_of_path(const char *path, size_t *stem_len)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    int len = strip_ending(base), ch = len < 0 ? -1 : channel_suffix(base, len);
    if (ch >= 0) *stem_len = (size_t)(base - path) + (size_t)len - 5;
    return ch;
}

// nnU-Net v1 task folders list ./imagesTr/X.nii.gz where the disk holds one file a channel,
// X_0000.nii.gz, X_0001.nii.gz, ...: those, when the listed file is absent and every declared
// channel's file is there. 1 taken, 0 not.
static int msd_channel_files(dataset_t *ds, dataset_case_t *c, const char *path)
{
    int len = strip_ending(path);
    if (len < 0 || access(path, F_OK) == 0) return 0;
    char **p = xcalloc((size_t)ds->n_channels, sizeof *p);
    int all = 1;
    for (int k = 0; k < ds->n_channels && all; k++) {
        if (asprintf(&p[k], "%.*s_%04d%s", len, path, k, path + len) < 0) DIE("out of memory");
        all = access(p[k], F_OK) == 0;
    }
    if (all) {
        case_set_images(c, ds->n_channels);
        for (int k = 0; k < ds->n_channels; k++) c->images[k] = p[k];
    } else {
        for (int k = 0; k < ds->n_channels; k++) free(p[k]);
    }
    free(p);
    return all;
}

// A "training"/"validation"/"test" entry's image field: a string or a list of strings (MONAI
// style).
static int msd_images(dataset_t *ds, dataset_case_t *c, json_t *img)
{
    if (json_is_string(img)) {
        char *path = join(ds->dir, json_string_value(img));
        if (msd_channel_files(ds, c, path)) {
            free(path);
            return 0;
        }
        case_set_images(c, 1);
        c->images[0] = path;
        return 0;
    }
    if (!json_is_array(img) || json_array_size(img) < 1 || json_array_size(img) > CASE_MAX_CHANNELS) return -1;
    case_set_images(c, (int)json_array_size(img));
    for (int i = 0; i < c->n_images; i++) {
        json_t *p = json_array_get(img, (size_t)i);
        if (!json_is_string(p)) return -1;
        c->images[i] = join(ds->dir, json_string_value(p));
    }
    return 0;
}

// How an MSD dataset's entries are named (the ids name splits, results and predictions): by the
// label file as always (MSD's own layout gives image and label one name; "split" keys and
// splits_final.json written for a dataset use these ids), else -- when those names repeat --
// by the image file, else by the image's folder (KiTS' case_*/imaging.nii.gz +
// segmentation.nii.gz: case_00001). The scheme with the fewest repeats wins, the earlier on a
// tie; entries it cannot name (no label, a bad image) are named by their image.
typedef enum { ID_LABEL, ID_IMAGE, ID_FOLDER } msd_id_t;

static char *msd_entry_id(json_t *e, msd_id_t how)
{
    json_t *img = json_is_object(e) ? json_object_get(e, "image") : e, *lab = json_object_get(e, "label");
    const char *first = json_is_string(img) ? json_string_value(img) : json_string_value(json_array_get(img, 0));
    if (!first) return NULL;
    if (how == ID_LABEL) return json_is_string(lab) ? dataset_id_of_path(json_string_value(lab), 0) : NULL;
    if (how == ID_IMAGE) return dataset_id_of_path(first, !json_is_string(img));
    const char *end = strrchr(first, '/'), *start = end;
    while (start && start > first && start[-1] != '/') start--;
    if (!end || end == start || (end - start == 1 && *start == '.')) return NULL;
    return strndup(start, (size_t)(end - start));
}

static msd_id_t msd_id_scheme(json_t *tr)
{
    size_t n = json_array_size(tr);
    msd_id_t best = ID_LABEL;
    size_t fewest = (size_t)-1;
    for (msd_id_t how = ID_LABEL; how <= ID_FOLDER; how++) {
        char **ids = xcalloc(n ? n : 1, sizeof *ids);
        size_t repeats = 0;
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(tr, i);
            if (!json_is_object(e) || !json_object_get(e, "image")) continue;     // named later
            if (!(ids[i] = msd_entry_id(e, how))) { repeats++; continue; }     // cannot name it so
            for (size_t j = 0; j < i; j++)
                if (ids[j] && !strcmp(ids[j], ids[i])) { repeats++; break; }
        }
        for (size_t i = 0; i < n; i++) free(ids[i]);
        free(ids);
        if (repeats < fewest) { fewest = repeats; best = how; }
        if (!repeats) break;
    }
    return best;
}

// Entry e's id under scheme how, else by its image; NULL when it has no usable image path.
static char *msd_id(json_t *e, msd_id_t how)
{
    char *id = msd_entry_id(e, how);
    return id ? id : msd_entry_id(e, ID_IMAGE);
}

// The labelled entries of list `key` ("training", or MONAI's "validation") as cases of split.
static void msd_labelled(dataset_t *ds, json_t *list, const char *key, const char *split, msd_id_t how,
                         const char *where)
{
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *e = json_array_get(list, i), *img = json_object_get(e, "image");
        json_t *lab = json_object_get(e, "label");
        if (!json_is_object(e) || !img) {
            dataset_add_problem(ds, "%s: %s entry %zu has no \"image\"", where, key, i);
            continue;
        }
        const char *first = json_is_string(img) ? json_string_value(img)
                          : json_string_value(json_array_get(img, 0));
        if (!first) { dataset_add_problem(ds, "%s: %s entry %zu: bad \"image\"", where, key, i); continue; }
        char *id = msd_id(e, how);
        if (dataset_find(ds, id) >= 0) {   // splits, results and predictions are named by the id
            dataset_add_problem(ds, "%s: %s entry %zu (%s): case id %s is already taken by an earlier entry; "
                                "skipped (give the files distinct names)", where, key, i, first, id);
            free(id);
            continue;
        }
        dataset_case_t *c = add_case(ds, id, split);
        free(id);
        if (msd_images(ds, c, img) < 0) dataset_add_problem(ds, "%s: case %s: bad \"image\"", where, c->id);
        if (json_is_string(lab)) c->label = join(ds->dir, json_string_value(lab));
        else dataset_add_problem(ds, "%s: case %s: %s entry has no \"label\"", where, c->id, key);
        if (json_is_integer(json_object_get(e, "fold"))) c->fold = (int)json_integer_value(json_object_get(e, "fold"));
    }
}

// MSD / MONAI datalists: "training" (and MONAI's "validation": held-out labelled cases, split
// "validation") and "test" (Auto3DSeg: "testing").
static int open_msd(dataset_t *ds, json_t *root, const char *where, char *err)
{
    json_t *tr = json_object_get(root, "training"), *va = json_object_get(root, "validation");
    json_t *ts = json_object_get(root, "test");
    if (!ts) ts = json_object_get(root, "testing");
    if (!json_is_array(tr)) return set_err(err, "%s: \"training\" is not a list", where);
    if (va && !json_is_array(va)) return set_err(err, "%s: \"validation\" is not a list", where);
    msd_id_t how = msd_id_scheme(tr);
    msd_labelled(ds, tr, "training", "train", how, where);
    msd_labelled(ds, va, "validation", "validation", how, where);
    for (size_t i = 0; json_is_array(ts) && i < json_array_size(ts); i++) {
        json_t *e = json_array_get(ts, i);
        json_t *img = json_is_object(e) ? json_object_get(e, "image") : e;
        const char *first = json_is_string(img) ? json_string_value(img) : json_string_value(json_array_get(img, 0));
        if (!first) { dataset_add_problem(ds, "%s: test entry %zu: bad image path", where, i); continue; }
        // named as the training entries are (test entries have no label: by image, or folder)
        char *id = msd_id(e, how == ID_FOLDER ? ID_FOLDER : ID_IMAGE);
        if (dataset_find(ds, id) >= 0) {
            char *folder = msd_entry_id(e, ID_FOLDER);     // a repeat: named by its folder
            if (folder && dataset_find(ds, folder) < 0) { free(id); id = folder; }
            else free(folder);
        }
        if (dataset_find(ds, id) >= 0) {
            dataset_add_problem(ds, "%s: test entry %zu (%s): case id %s is already taken by an earlier entry; "
                                "skipped (give the files distinct names)", where, i, first, id);
            free(id);
            continue;
        }
        dataset_case_t *c = add_case(ds, id, "test");
        free(id);
        if (msd_images(ds, c, img) < 0) dataset_add_problem(ds, "%s: test case %s: bad image", where, c->id);
    }
    // (MONAI's datalists count "validation" in numTraining, the MSD's have none)
    json_t *nt = json_object_get(root, "numTraining");
    size_t ntr = json_array_size(tr), nva = json_array_size(va);
    if (json_is_integer(nt) && json_integer_value(nt) != (json_int_t)ntr && json_integer_value(nt) != (json_int_t)(ntr + nva))
        dataset_add_problem(ds, "%s: numTraining is %lld but \"training\" lists %zu cases%s", where,
                            (long long)json_integer_value(nt), ntr, nva ? " (and \"validation\" more)" : "");
    return 0;
}

// nnU-Net v2 and the plain layout with _XXXX channel files: one case per distinct id.
// nnU-Net's imagesTr / imagesTs: <id>_XXXX<ending> files, one a channel. A case needs every
// declared channel's file, else it is skipped; one in imagesTr without its labelsTr file is taken
// as a test case (in no fold); an imagesTs id that imagesTr has too is skipped (ids are unique);
// a labelsTr file without images is named. Each named in ds's problems.
static void add_channel_cases(dataset_t *ds, const char *imgdir, const char *labdir,
                              const char *ending, const char *split)
{
    char **stems;
    int n = list_stems(ds, ds->dir, imgdir, ending, &stems), first = ds->n_cases;
    char skipped[512] = "";             // the stem last skipped: its other channel files say nothing new
    for (int i = 0; i < n; i++) {
        int len = (int)strlen(stems[i]), ch = channel_suffix(stems[i], len);
        if (ch < 0) { dataset_add_problem(ds, "%s/%s/%s%s: no _XXXX channel suffix; skipped", ds->dir, imgdir, stems[i], ending); continue; }
        if (ch >= ds->n_channels) { dataset_add_problem(ds, "%s/%s/%s%s: channel %d but %d declared; skipped", ds->dir, imgdir, stems[i], ending, ch, ds->n_channels); continue; }
        stems[i][len - 5] = 0;
        if (!strcmp(stems[i], skipped)) continue;
        int known = dataset_find(ds, stems[i]);
        if (known >= first) continue;                   // already made from another channel file
        snprintf(skipped, sizeof skipped, "%s", stems[i]);  // (skipped below, or made: never seen again)
        if (known >= 0) {
            dataset_add_problem(ds, "%s/%s/%s_%04d%s: case %s is a case of %s too (ids must be unique); skipped",
                                ds->dir, imgdir, stems[i], ch, ending, stems[i], ds->cases[known].images[0]);
            continue;
        }
        char *missing = NULL;
        for (int k = 0; k < ds->n_channels && !missing; k++) {
            if (asprintf(&missing, "%s/%s/%s_%04d%s", ds->dir, imgdir, stems[i], k, ending) < 0) DIE("out of memory");
            if (is_file(missing)) { free(missing); missing = NULL; }
        }
        if (missing) {
            dataset_add_problem(ds, "%s: missing (case %s has %d channels); case skipped", missing, stems[i], ds->n_channels);
            free(missing);
            continue;
        }
        dataset_case_t *c = add_case(ds, stems[i], split);
        case_set_images(c, ds->n_channels);
        for (int k = 0; k < ds->n_channels; k++)
            if (asprintf(&c->images[k], "%s/%s/%s_%04d%s", ds->dir, imgdir, c->id, k, ending) < 0) DIE("out of memory");
        if (labdir && asprintf(&c->label, "%s/%s/%s%s", ds->dir, labdir, c->id, ending) < 0) DIE("out of memory");
        if (c->label && !is_file(c->label)) {
            dataset_add_problem(ds, "%s: missing; case %s taken as a test case (in no fold)", c->label, c->id);
            free(c->label);
            c->label = NULL;
            snprintf(c->split, sizeof c->split, "test");
        }
    }
    free_list(stems, n);
    if (!labdir) return;
    n = list_stems(ds, ds->dir, labdir, ending, &stems);
    for (int i = 0; i < n; i++)
        if (dataset_find(ds, stems[i]) < 0)
            dataset_add_problem(ds, "%s/%s/%s%s: label without images in %s; skipped", ds->dir, labdir, stems[i], ending, imgdir);
    free_list(stems, n);
}

// nnU-Net v2's "dataset": {"ID": {"images": [one path a channel], "label": path}, ...}, the
// training cases listed instead of found in imagesTr (paths relative to the dataset folder, or
// absolute; nnU-Net also expands $VARIABLES in them, which is not done here). A case missing a
// file is named and skipped, as in imagesTr.
static void listed_cases(dataset_t *ds, json_t *list, const char *where)
{
    const char *id;
    json_t *e;
    json_object_foreach(list, id, e) {
        json_t *imgs = json_object_get(e, "images"), *lab = json_object_get(e, "label");
        if (!json_is_array(imgs) || json_array_size(imgs) != (size_t)ds->n_channels || !json_is_string(lab)) {
            dataset_add_problem(ds, "%s: \"dataset\" entry %s needs \"images\" (%d paths) and \"label\"; skipped", where,
                                id, ds->n_channels);
            continue;
        }
        char *missing = NULL;
        for (int k = 0; k <= ds->n_channels && !missing; k++) {
            json_t *p = k < ds->n_channels ? json_array_get(imgs, (size_t)k) : lab;
            missing = json_is_string(p) ? join(ds->dir, json_string_value(p)) : xstrdup("(not a path)");
            if (is_file(missing)) { free(missing); missing = NULL; }
        }
        if (missing) {
            dataset_add_problem(ds, "%s: \"dataset\" entry %s: %s is missing; skipped", where, id, missing);
            free(missing);
            continue;
        }
        dataset_case_t *c = add_case(ds, id, "train");
        case_set_images(c, ds->n_channels);
        for (int k = 0; k < ds->n_channels; k++) c->images[k] = join(ds->dir, json_string_value(json_array_get(imgs, (size_t)k)));
        c->label = join(ds->dir, json_string_value(lab));
    }
}

static int open_nnunet(dataset_t *ds, json_t *root, char *err)
{
    const char *ending = json_string_value(json_object_get(root, "file_ending"));
    if (!ending) ending = ".nii.gz";
    if (strcmp(ending, ".nii.gz") && strcmp(ending, ".nii"))
        return set_err(err, "%s/dataset.json: file_ending \"%s\" is not a NIfTI ending", ds->dir, ending);
    json_t *list = json_object_get(root, "dataset");
    char *where = join(ds->dir, "dataset.json");
    if (json_is_object(list)) listed_cases(ds, list, where);
    else if (list) dataset_add_problem(ds, "%s: \"dataset\" is not an object of cases; imagesTr used", where);
    free(where);
    if (!json_is_object(list)) add_channel_cases(ds, "imagesTr", "labelsTr", ending, "train");
    add_channel_cases(ds, "imagesTs", NULL, ending, "test");
    json_t *nt = json_object_get(root, "numTraining");
    int ntr = 0;
    for (int i = 0; i < ds->n_cases; i++) ntr += ds->cases[i].label != NULL;
    if (json_is_integer(nt) && json_integer_value(nt) != ntr)
        dataset_add_problem(ds, "%s/dataset.json: numTraining is %lld but %s holds %d labelled cases",
                            ds->dir, (long long)json_integer_value(nt), json_is_object(list) ? "\"dataset\"" : "imagesTr", ntr);
    return 0;
}

// No dataset.json: imagesTr/<id>.nii.gz (or <id>_XXXX channel files) + labelsTr/<id>.nii.gz.
static int open_plain(dataset_t *ds, char *err)
{
    char *p = join(ds->dir, "imagesTr");
    int ok = is_dir(p);
    free(p);
    if (!ok) return set_err(err, "%s: no dataset.json and no imagesTr/ folder", ds->dir);
    char **img, **lab;
    int ni = list_stems(ds, ds->dir, "imagesTr", NULL, &img), nl = list_stems(ds, ds->dir, "labelsTr", NULL, &lab);
    int chan = 0, maxch = -1;
    for (int i = 0; i < ni; i++) {
        int c = channel_suffix(img[i], (int)strlen(img[i]));
        if (c >= 0) chan++;
        if (c > maxch) maxch = c;
    }
    // Channel files (nnU-Net's <id>_XXXX) only when every image has the suffix, every id has its
    // _0000, and no label is named after a whole image stem: labelled single files whose ids
    // happen to end in four digits (patient_0001 + labelsTr/patient_0001) are cases, not channels.
    int channel_files = ni > 0 && chan == ni;
    for (int i = 0; channel_files && i < ni; i++) {
        for (int j = 0; j < nl && channel_files; j++) channel_files = strcmp(lab[j], img[i]) != 0;
        size_t len = strlen(img[i]);
        int has0 = 0;
        for (int j = 0; j < ni && !has0; j++)
            has0 = strlen(img[j]) == len && !strncmp(img[j], img[i], len - 4) && !strcmp(img[j] + len - 4, "0000");
        channel_files = channel_files && has0;
    }
    ds->n_channels = channel_files ? maxch + 1 : 1;
    if (!channel_files && ni > 0) {     // single files: 4D ones hold the channels (MSD without JSON)
        char *first = NULL, e2[ERR_LEN];
        if (asprintf(&first, "%s/imagesTr/%s", ds->dir, img[0]) < 0) DIE("out of memory");
        char *path = nifti_path(first);
        if (nifti_read_channels(path, &ds->n_channels, e2)) {
            dataset_add_problem(ds, "%s; taking 1 channel", e2);
            ds->n_channels = 1;
        }
        free(path);
        free(first);
    }
    if (ds->n_channels > CASE_MAX_CHANNELS) {
        free_list(img, ni); free_list(lab, nl);
        return set_err(err, "%s/imagesTr: %d channels (at most %d)", ds->dir, ds->n_channels, CASE_MAX_CHANNELS);
    }
    ds->channel_names = xcalloc((size_t)ds->n_channels, sizeof(char *));
    ds->modality = xcalloc((size_t)ds->n_channels, sizeof(modality_t));
    for (int k = 0; k < ds->n_channels; k++)
        if (asprintf(&ds->channel_names[k], "%d", k) < 0) DIE("out of memory");
    for (int i = 0; i < ni; i++) {
        char *id = xstrdup(img[i]);
        if (channel_files) id[strlen(id) - 5] = 0;
        if (dataset_find(ds, id) >= 0) { free(id); continue; }
        dataset_case_t *c = add_case(ds, id, "train");
        case_set_images(c, channel_files ? ds->n_channels : 1);
        char base[1024];
        for (int k = 0; k < c->n_images; k++) {
            if (channel_files) snprintf(base, sizeof base, "%s/imagesTr/%s_%04d", ds->dir, id, k);
            else snprintf(base, sizeof base, "%s/imagesTr/%s", ds->dir, id);
            c->images[k] = nifti_path(base);
        }
        for (int j = 0; j < nl; j++)
            if (strcmp(lab[j], id) == 0) {
                snprintf(base, sizeof base, "%s/labelsTr/%s", ds->dir, id);
                c->label = nifti_path(base);
            }
        if (!c->label) {   // an unlabelled image can only be a test case
            snprintf(c->split, sizeof c->split, "test");
            dataset_add_problem(ds, "%s/labelsTr: no label for case %s; taken as a test case", ds->dir, id);
        }
        free(id);
    }
    for (int j = 0; j < nl; j++)
        if (dataset_find(ds, lab[j]) < 0)
            dataset_add_problem(ds, "%s/labelsTr/%s: label without an image; skipped", ds->dir, lab[j]);
    free_list(img, ni); free_list(lab, nl);
    return 0;
}

// With regions declared, nnU-Net trains every label but background and "ignore" as a region.
static int is_region(const dataset_t *ds, const dataset_label_t *l)
{
    return !(l->n_values == 1 && (l->values[0] == 0 || l->values[0] == ds->ignore_label));
}

static int count_regions(const dataset_t *ds)
{
    int n = 0;
    for (int i = 0; ds->has_regions && i < ds->n_labels; i++) n += is_region(ds, &ds->labels[i]);
    return n;
}

int dataset_regions_spec(const dataset_t *ds, char *out, size_t cap)
{
    out[0] = 0;
    int n = count_regions(ds), with_out = n && ds->n_region_order == n;
    size_t len = 0;
    for (int i = 0, r = 0; i < ds->n_labels && n; i++) {
        const dataset_label_t *l = &ds->labels[i];
        if (!is_region(ds, l)) continue;
        char name[32];
        snprintf(name, sizeof name, "%s", l->name);
        for (char *p = name; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-')) *p = '_';
        len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, "%s%s=", r ? ";" : "", name);
        for (int j = 0; j < l->n_values; j++)
            len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, "%s%d", j ? "," : "", l->values[j]);
        if (with_out) len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, ":%d", ds->region_order[r]);
        r++;
    }
    if (len >= cap) { out[0] = 0; return -1; }
    return n;
}

// ---- entry points ----------------------------------------------------------------------------

static int open_json(dataset_t *ds, char *err)
{
    char *where = join(ds->dir, "dataset.json");
    json_error_t je;
    json_t *root = json_load_file(where, 0, &je);
    int rc = 0;
    if (!root) { rc = set_err(err, "%s:%d: %s", where, je.line, je.text); goto done; }
    if (!json_is_object(root)) { rc = set_err(err, "%s: not a JSON object", where); goto done; }
    json_t *ch = json_object_get(root, "channel_names");
    if (!json_is_object(ch)) ch = json_object_get(root, "modality");
    if (!json_is_object(ch)) { rc = set_err(err, "%s: neither \"channel_names\" nor \"modality\"", where); goto done; }
    json_t *labels = json_object_get(root, "labels");
    if (!json_is_object(labels)) { rc = set_err(err, "%s: \"labels\" missing or not an object", where); goto done; }
    if (parse_channels(ds, ch, where, err) < 0 || parse_labels(ds, labels, where, err) < 0) { rc = -1; goto done; }
    json_t *order = json_object_get(root, "regions_class_order");
    for (size_t i = 0; json_is_array(order) && i < json_array_size(order) && i < 16; i++) {
        json_t *x = json_array_get(order, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > LABEL_MAX_CLASS) {
            dataset_add_problem(ds, "%s: regions_class_order[%zu] is not a label 0..%d; ignored", where, i, LABEL_MAX_CLASS);
            ds->n_region_order = 0;
            break;
        }
        ds->region_order[ds->n_region_order++] = (int)json_integer_value(x);
    }

    if (json_object_get(root, "training")) {
        ds->layout = DATASET_MSD;
        rc = open_msd(ds, root, where, err);
    } else {
        ds->layout = DATASET_NNUNET;
        rc = open_nnunet(ds, root, err);
    }
    if (rc == 0) rc = dataset_apply_split_key(ds, root);
    int nreg = count_regions(ds);
    if (nreg && ds->n_region_order != nreg && ds->n_cases)     // (no cases: that is the problem to name)
        dataset_add_problem(ds, "%s: regions_class_order %s (%d entries for %d regions): each region's output label "
                            "by the smallest-value rule", where, ds->n_region_order ? "does not fit" : "is absent",
                            ds->n_region_order, nreg);
done:
    json_decref(root);
    free(where);
    return rc;
}

// Case ids longer than DATASET_ID_MAX, or not UTF-8 (a file name of other bytes), are named and
// their cases dropped: the id names a case on the wire (WIRE_ID_LEN; msgpack and JSON text are
// UTF-8: metrics.jsonl lists the ids) and its prediction file, and a cut one would name no case
// or two.
static void drop_unusable_ids(dataset_t *ds)
{
    int kept = 0;
    for (int i = 0; i < ds->n_cases; i++) {
        dataset_case_t *c = &ds->cases[i];
        json_t *utf8 = json_string(c->id);          // NULL: not valid UTF-8
        json_decref(utf8);
        if (strlen(c->id) <= DATASET_ID_MAX && utf8) { ds->cases[kept++] = *c; continue; }
        if (!utf8)
            dataset_add_problem(ds, "%s: case id is not UTF-8 text; skipped (rename the files)",
                                c->n_images ? c->images[0] : c->id);
        else
            dataset_add_problem(ds, "%s: case id of %zu characters (at most %d); skipped (give the files shorter names)",
                                c->n_images ? c->images[0] : c->id, strlen(c->id), DATASET_ID_MAX);
        free_list(c->images, c->n_images);
        free(c->id);
        free(c->label);
    }
    ds->n_cases = kept;
}

int dataset_open(const char *dir, dataset_t *ds, char *err)
{
    memset(ds, 0, sizeof *ds);
    ds->ignore_label = -1;
    if (!is_dir(dir)) return set_err(err, "%s: not a folder", dir);
    size_t n = strlen(dir);
    ds->dir = strndup(dir, n > 1 && dir[n - 1] == '/' ? n - 1 : n);
    char *json = join(ds->dir, "dataset.json");
    int has_json = is_file(json), rc;
    free(json);
    if (has_json) rc = open_json(ds, err);
    else { ds->layout = DATASET_PLAIN; rc = open_plain(ds, err); }
    if (rc == 0) drop_unusable_ids(ds);
    if (rc == 0) rc = dataset_read_splits_final(ds, err);
    if (rc == 0 && ds->n_cases == 0)        // the entries' problems are why: name the first
        rc = set_err(err, "%s: no cases found%s%s%s", ds->dir, ds->n_problems ? " (" : "",
                     ds->n_problems ? ds->problems[0] : "", ds->n_problems > 1 ? ", ...)" : ds->n_problems ? ")" : "");
    if (rc < 0) dataset_free(ds);
    return rc;
}

int dataset_find(const dataset_t *ds, const char *id)
{
    for (int i = 0; i < ds->n_cases; i++)
        if (strcmp(ds->cases[i].id, id) == 0) return i;
    return -1;
}

static void free_ids(char **l)
{
    for (char **p = l; p && *p; p++) free(*p);
    free(l);
}

void dataset_free(dataset_t *ds)
{
    for (int i = 0; i < ds->n_cases; i++) {
        dataset_case_t *c = &ds->cases[i];
        free_list(c->images, c->n_images);
        free(c->id); free(c->label);
    }
    free(ds->cases);
    if (ds->channel_names) free_list(ds->channel_names, ds->n_channels);
    free(ds->modality);
    for (int i = 0; i < ds->n_labels; i++) free(ds->labels[i].name);
    free(ds->labels);
    for (int k = 0; k < ds->n_folds; k++) { free_ids(ds->fold_val[k]); free_ids(ds->fold_train[k]); }
    free(ds->fold_val); free(ds->fold_train);
    free_list(ds->problems, ds->n_problems);
    free(ds->dir);
    memset(ds, 0, sizeof *ds);
}
