/*
dataset_folds.c -- which cases train, validate and test: the "split" key, splits_final.json
folds, MSD "fold" keys, and a generated 5-fold split when the dataset declares none.

The generated split is nnU-Net v2's (generate_crossval_split: sklearn's KFold(5, shuffle=True,
random_state=12345) over the sorted training ids), case for case: the ids are shuffled with
numpy's RandomState(12345) stream (mt19937.h) and cut into KFold's consecutive folds. A fold
beyond the split's folds is nnU-Net's too (nnUNetTrainer.do_split): a seeded random 80:20 split;
fold "all" trains and validates on every training case, as nnU-Net's fold "all".
*/
#define _GNU_SOURCE
#include "dataset.h"
#include "check.h"
#include "mt19937.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define GENERATED_FOLDS 5
#define FOLD_SEED 12345

void dataset_add_problem(dataset_t *ds, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// "split": {"train": [ids], "validation": [ids], "test": [ids]} retags the listed cases.
int dataset_apply_split_key(dataset_t *ds, json_t *root)
{
    json_t *split = json_object_get(root, "split");
    if (!split) return 0;
    if (!json_is_object(split)) {
        dataset_add_problem(ds, "%s/dataset.json: \"split\" is not an object; ignored", ds->dir);
        return 0;
    }
    const char *name;
    json_t *list;
    json_object_foreach(split, name, list) {
        const char *tag = strcmp(name, "val") == 0 ? "validation" : name;
        if (strcmp(tag, "train") && strcmp(tag, "validation") && strcmp(tag, "test")) {
            dataset_add_problem(ds, "%s/dataset.json: split \"%s\" is not train/validation/test; ignored", ds->dir, name);
            continue;
        }
        for (size_t i = 0; i < json_array_size(list); i++) {
            const char *id = json_string_value(json_array_get(list, i));
            int c = id ? dataset_find(ds, id) : -1;
            if (c < 0) {
                dataset_add_problem(ds, "%s/dataset.json: split \"%s\" names unknown case \"%s\"", ds->dir, name, id ? id : "?");
                continue;
            }
            snprintf(ds->cases[c].split, sizeof ds->cases[c].split, "%s", tag);
        }
    }
    return 0;
}

static char **id_list(json_t *a)
{
    size_t n = json_array_size(a);
    char **l = xcalloc(n + 1, sizeof *l);
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        l[i] = xstrdup(s ? s : "");
    }
    return l;
}

static void free_folds(dataset_t *ds)
{
    for (int k = 0; k < ds->n_folds; k++) {
        for (char **p = ds->fold_train[k]; p && *p; p++) free(*p);
        for (char **p = ds->fold_val[k]; p && *p; p++) free(*p);
        free(ds->fold_train[k]);
        free(ds->fold_val[k]);
    }
    free(ds->fold_train);
    free(ds->fold_val);
    ds->fold_train = ds->fold_val = NULL;
    ds->n_folds = 0;
}

// A splits_final.json: [{"train": [ids], "val": [ids]}, ...] (path: malloc'd, taken).
static int read_splits(dataset_t *ds, char *path, char *err)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    int rc = 0;
    if (!root) { rc = set_err(err, "%s:%d: %s", path, je.line, je.text); goto done; }
    if (!json_is_array(root) || json_array_size(root) == 0) { rc = set_err(err, "%s: not a list of folds", path); goto done; }
    int n = (int)json_array_size(root);
    ds->fold_val = xcalloc((size_t)n, sizeof *ds->fold_val);
    ds->fold_train = xcalloc((size_t)n, sizeof *ds->fold_train);
    ds->n_folds = n;
    for (int k = 0; k < n; k++) {
        json_t *e = json_array_get(root, (size_t)k);
        json_t *tr = json_object_get(e, "train"), *va = json_object_get(e, "val");
        if (!json_is_array(tr) || !json_is_array(va)) { rc = set_err(err, "%s: fold %d lacks \"train\"/\"val\" lists", path, k); goto done; }
        ds->fold_train[k] = id_list(tr);
        ds->fold_val[k] = id_list(va);
        for (char **p = ds->fold_train[k]; *p; p++)
            if (dataset_find(ds, *p) < 0) dataset_add_problem(ds, "%s: fold %d names unknown case \"%s\"", path, k, *p);
        for (char **p = ds->fold_val[k]; *p; p++)
            if (dataset_find(ds, *p) < 0) dataset_add_problem(ds, "%s: fold %d names unknown case \"%s\"", path, k, *p);
    }
done:
    json_decref(root);
    free(path);
    return rc;
}

// splits_final.json next to dataset.json, when there is one.
int dataset_read_splits_final(dataset_t *ds, char *err)
{
    char *path;
    if (asprintf(&path, "%s/splits_final.json", ds->dir) < 0) DIE("out of memory");
    FILE *f = fopen(path, "r");
    if (!f) { free(path); return 0; }
    fclose(f);
    return read_splits(ds, path, err);
}

int dataset_read_splits_file(dataset_t *ds, const char *path, char *err)
{
    free_folds(ds);
    int rc = read_splits(ds, xstrdup(path), err);
    if (rc) free_folds(ds);
    return rc;
}

// ---- selection ----------------------------------------------------------------------------

static int in_pool(const dataset_case_t *c) { return c->label && strcmp(c->split, "test") != 0; }

static int cmp_id(const void *a, const void *b, void *ds)
{
    const dataset_t *d = ds;
    return strcmp(d->cases[*(const int *)a].id, d->cases[*(const int *)b].id);
}

static int ids_to_idx(const dataset_t *ds, char **ids, int **idx, int *n, char *err)
{
    int m = 0;
    for (char **p = ids; *p; p++) m++;
    *idx = xmalloc((size_t)(m ? m : 1) * sizeof **idx);
    *n = 0;
    for (char **p = ids; *p; p++) {
        int c = dataset_find(ds, *p);
        if (c < 0) { free(*idx); *idx = NULL; return set_err(err, "%s/splits_final.json: unknown case \"%s\"", ds->dir, *p); }
        (*idx)[(*n)++] = c;
    }
    return 0;
}

// The fold count dataset_fold's fold numbers run over before its random 80:20 splits begin (0:
// none); MSD fold keys have no such end (*keys set: a fold is the cases with that key).
static int declared_folds(const dataset_t *ds, int *keys, int *pool)
{
    *keys = 0;
    *pool = 0;
    for (int i = 0; i < ds->n_cases; i++) {
        *keys |= ds->cases[i].fold >= 0;
        *pool += in_pool(&ds->cases[i]);
    }
    if (ds->n_folds > 0) return ds->n_folds;
    return *pool < 2 ? 0 : *pool < GENERATED_FOLDS ? *pool : GENERATED_FOLDS;
}

const char *dataset_fold_source(const dataset_t *ds, int *n_folds)
{
    int keys, pool, nf = declared_folds(ds, &keys, &pool);
    if (ds->n_folds > 0) { *n_folds = nf; return "splits_final.json"; }
    if (keys) {
        int max_key = -1;
        for (int i = 0; i < ds->n_cases; i++) if (ds->cases[i].fold > max_key) max_key = ds->cases[i].fold;
        *n_folds = max_key + 1;
        return "fold keys";
    }
    *n_folds = nf;
    return "generated";
}

int dataset_fold_is_random(const dataset_t *ds, int k)
{
    int keys, pool, nf = declared_folds(ds, &keys, &pool);
    return k >= nf && (ds->n_folds > 0 || !keys);
}

int dataset_fold(const dataset_t *ds, int k, int **train, int *n_train, int **val, int *n_val, char *err)
{
    *train = *val = NULL;
    *n_train = *n_val = 0;
    int keys, pool, nf = declared_folds(ds, &keys, &pool);
    if (k < 0 && k != DATASET_FOLD_ALL) return set_err(err, "%s: fold %d requested", ds->dir, k);
    if (ds->n_folds > 0 && k >= 0 && k < nf) {
        if (ids_to_idx(ds, ds->fold_train[k], train, n_train, err) < 0) return -1;
        if (ids_to_idx(ds, ds->fold_val[k], val, n_val, err) < 0) { free(*train); *train = NULL; return -1; }
        return 0;
    }
    int *order = xmalloc((size_t)(pool ? pool : 1) * sizeof *order), m = 0;
    for (int i = 0; i < ds->n_cases; i++) if (in_pool(&ds->cases[i])) order[m++] = i;
    // nnU-Net sorts the ids (np.sort: by code point, as strcmp) before drawing from them
    qsort_r(order, (size_t)m, sizeof *order, cmp_id, (void *)ds);
    int *is_val = xcalloc((size_t)ds->n_cases, sizeof *is_val), *is_train = xcalloc((size_t)ds->n_cases, sizeof *is_train);
    mt19937_t r;
    if (k == DATASET_FOLD_ALL) {                    // nnU-Net's fold "all": every case, both ways
        for (int i = 0; i < m; i++) is_val[order[i]] = is_train[order[i]] = 1;
    } else if (keys && ds->n_folds == 0) {          // MSD fold keys: any k that has cases
        for (int i = 0; i < m; i++) is_val[order[i]] = !(is_train[order[i]] = ds->cases[order[i]].fold != k);
    } else if (k >= nf) {
        // nnU-Net's fold beyond its split's: RandomState(12345 + k).choice(m, int(m * 0.8),
        // replace=False) -- legacy choice is permutation(m)[:size] -- trains, the rest validate
        int ntr = (int)(m * 0.8);
        if (ntr == 0) {
            free(order); free(is_val); free(is_train);
            return set_err(err, "%s: fold %d: %d labelled non-test cases%s", ds->dir, k, m,
                           nf ? " make no 80:20 split" : "; folds need 2");
        }
        int *perm = xmalloc((size_t)m * sizeof *perm);
        for (int i = 0; i < m; i++) perm[i] = i;
        mt19937_seed(&r, FOLD_SEED + (uint32_t)k);
        mt19937_shuffle(&r, perm, m);
        for (int i = 0; i < m; i++) is_val[order[perm[i]]] = !(is_train[order[perm[i]]] = i < ntr);
        free(perm);
    } else {
        // the generated split: shuffled as sklearn's KFold shuffles np.arange(m), cut into
        // consecutive folds, the first m % K one case longer
        mt19937_seed(&r, FOLD_SEED);
        mt19937_shuffle(&r, order, m);
        int start = 0;
        for (int f = 0; f < k; f++) start += m / nf + (f < m % nf);
        int len = m / nf + (k < m % nf);
        for (int i = 0; i < m; i++) is_val[order[i]] = !(is_train[order[i]] = i < start || i >= start + len);
    }
    *train = xmalloc((size_t)(ds->n_cases ? ds->n_cases : 1) * sizeof **train);
    *val = xmalloc((size_t)(ds->n_cases ? ds->n_cases : 1) * sizeof **val);
    for (int i = 0; i < ds->n_cases; i++) {         // dataset order in the output lists
        if (is_val[i]) (*val)[(*n_val)++] = i;
        if (is_train[i]) (*train)[(*n_train)++] = i;
    }
    free(order); free(is_val); free(is_train);
    if (*n_val == 0 || *n_train == 0) {
        free(*train); free(*val); *train = *val = NULL;
        if (k == DATASET_FOLD_ALL) return set_err(err, "%s: fold all: no labelled non-test case", ds->dir);
        return set_err(err, "%s: fold %d has no %s cases", ds->dir, k, *n_val == 0 ? "validation" : "training");
    }
    return 0;
}

int dataset_select(const dataset_t *ds, const char *sel, int **idx, int *n, char *err)
{
    int k = DATASET_FOLD_ALL, used = 0;
    char part[8] = "";
    if ((sscanf(sel, "foldall/%7s%n", part, &used) == 1 || sscanf(sel, "fold%d/%7s%n", &k, part, &used) == 2) &&
        sel[used] == 0 && (k >= 0 || !strncmp(sel, "foldall/", 8))) {
        int *tr, *va, ntr, nva;
        if (strcmp(part, "train") && strcmp(part, "val"))
            return set_err(err, "selection \"%s\": expected foldK/train or foldK/val (K a number or all)", sel);
        if (dataset_fold(ds, k, &tr, &ntr, &va, &nva, err) < 0) return -1;
        int want_val = strcmp(part, "val") == 0;
        *idx = want_val ? va : tr;
        *n = want_val ? nva : ntr;
        free(want_val ? tr : va);
        return 0;
    }
    const char *tag = strcmp(sel, "val") == 0 ? "validation" : sel;
    int all = strcmp(tag, "all") == 0;
    if (!all && strcmp(tag, "train") && strcmp(tag, "validation") && strcmp(tag, "test"))
        return set_err(err, "selection \"%s\": expected train, validation, test, all or foldK/train|val (K a number or all)", sel);
    *idx = xmalloc((size_t)ds->n_cases * sizeof **idx);
    *n = 0;
    for (int i = 0; i < ds->n_cases; i++)
        if (all || strcmp(ds->cases[i].split, tag) == 0) (*idx)[(*n)++] = i;
    return 0;
}
