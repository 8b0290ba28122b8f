/*
fuzz_dataset.c -- libFuzzer target for dataset discovery (common/dataset*.c): dataset.json and
splits_final.json parsing, the MSD / nnU-Net layouts, splits, folds and case loading.

A fixed tiny file tree is made once (LLVMFuzzerInitialize) in a private folder: MSD-style single
files, nnU-Net _XXXX channel files, a 4D two-channel image, a test image and a macOS "._" file.
Input: the text of dataset.json; if it holds a NUL byte, the bytes after it are splits_final.json.
Every discovered dataset is queried (select, fold, find); for a quarter of the inputs its first
cases are loaded when their paths stay inside the tree. The contract checked is dataset.h's. Seeds:
tests/fuzz/corpus/dataset (made from the repository's and shared/data's dataset.json files).
*/
#include "dataset.h"
#include "check.h"
#include "labels.h"
#include <math.h>
#include <nifti2_io.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[64], json_path[96], splits_path[96];
static char err[ERR_LEN];

#define FINDING(...) do { fprintf(stderr, "fuzz_dataset: " __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

// A C-channel dims[0]xdims[1]xdims[2] volume with values v(c, i) = (i * 7 + c) % mod.
static void put_volume(const char *rel, int C, int d0, int d1, int d2, int mod, int datatype)
{
    char path[256], e[ERR_LEN];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    volume_t v;
    memset(&v, 0, sizeof v);
    v.C = C;
    v.dim[0] = d0; v.dim[1] = d1; v.dim[2] = d2;
    for (int k = 0; k < 3; k++) { v.affine[k][k] = 1.5; v.spacing[k] = 1.5; }
    v.affine[3][3] = 1;
    size_t n = (size_t)C * volume_voxels(&v);
    v.data = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v.data[i] = (float)((i * 7 + i / volume_voxels(&v)) % (size_t)mod);
    if (nifti_write_volume(path, &v, datatype, e)) { fprintf(stderr, "fuzz_dataset: setup: %s\n", e); exit(1); }
    volume_free(&v);
}

static void put_text(const char *path, const char *text, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(text, 1, n, f) != n) || fclose(f)) { perror(path); exit(1); }
}

static void cleanup(void)
{
    // Only the names this file made: a fixed list, no recursive delete.
    static const char *files[] = {
        "dataset.json", "splits_final.json", "imagesTr/case_000.nii.gz", "labelsTr/case_000.nii.gz",
        "imagesTr/case_001_0000.nii.gz", "imagesTr/case_001_0001.nii.gz", "labelsTr/case_001.nii.gz",
        "imagesTr/case_002.nii", "labelsTr/case_002.nii", "imagesTr/case_004.nii.gz", "labelsTr/case_004.nii.gz",
        "imagesTs/case_003_0000.nii.gz", "imagesTr/._case_000.nii.gz", "imagesTr", "labelsTr", "imagesTs", "", NULL};
    char p[256];
    for (int i = 0; files[i]; i++) {
        snprintf(p, sizeof p, "%s/%s", root, files[i]);
        if (unlink(p) != 0) rmdir(p);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    nifti_set_debug_level(0);           // libnifti's own stderr chatter; our errors say it all
    // TMPDIR when set (the CI test points it at a folder it removes), else tmpfs, which keeps
    // the per-input write cheap.
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(root, sizeof root, "%s/srm-fuzz-dataset-XXXXXX", base);
    if (!mkdtemp(root)) { perror("mkdtemp"); exit(1); }
    atexit(cleanup);
    char p[256];
    const char *subs[] = {"imagesTr", "labelsTr", "imagesTs"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", root, subs[i]);
        if (mkdir(p, 0755)) { perror(p); exit(1); }
    }
    put_volume("imagesTr/case_000.nii.gz", 1, 4, 3, 5, 100, 4);       // int16 image
    put_volume("labelsTr/case_000.nii.gz", 1, 4, 3, 5, 3, 2);         // uint8 labels 0..2
    put_volume("imagesTr/case_001_0000.nii.gz", 1, 4, 3, 5, 50, 16);  // nnU-Net channel 0
    put_volume("imagesTr/case_001_0001.nii.gz", 1, 4, 3, 5, 60, 16);  // nnU-Net channel 1
    put_volume("labelsTr/case_001.nii.gz", 1, 4, 3, 5, 2, 2);
    put_volume("imagesTr/case_002.nii", 2, 3, 3, 3, 40, 16);          // MSD 4D, two channels
    put_volume("labelsTr/case_002.nii", 1, 3, 3, 3, 3, 2);
    put_volume("imagesTr/case_004.nii.gz", 1, 4, 3, 5, 100, 4);
    put_volume("labelsTr/case_004.nii.gz", 1, 4, 3, 4, 3, 2);         // shape mismatch
    put_volume("imagesTs/case_003_0000.nii.gz", 1, 2, 2, 2, 9, 4);
    snprintf(p, sizeof p, "%s/imagesTr/._case_000.nii.gz", root);
    put_text(p, "\0\5\26\7Mac OS X", 12);                            // must never become a case
    snprintf(json_path, sizeof json_path, "%s/dataset.json", root);
    snprintf(splits_path, sizeof splits_path, "%s/splits_final.json", root);
    return 0;
}

// Case files are read only inside the tree: the JSON may name any path on this machine.
static int inside(const char *path)
{
    size_t n = strlen(root);
    return path && !strncmp(path, root, n) && path[n] == '/' && !strstr(path, "/..") && !strstr(path, "/._");
}

static void check_indices(const dataset_t *ds, const int *idx, int n, const char *what)
{
    if (n < 0 || n > ds->n_cases) FINDING("%s: %d indices for %d cases", what, n, ds->n_cases);
    for (int i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= ds->n_cases) FINDING("%s: index %d out of range", what, idx[i]);
}

static void check_case(const dataset_t *ds, int i)
{
    const dataset_case_t *dc = &ds->cases[i];
    for (int k = 0; k < dc->n_images; k++) if (!inside(dc->images[k])) return;
    if (dc->label && !inside(dc->label)) return;
    case_t c;
    err[0] = 0;
    if (dataset_load_case(ds, i, &c, err) == 0) {
        if (c.image.C != ds->n_channels) FINDING("case %s loaded with %d channels, %d declared", dc->id, c.image.C, ds->n_channels);
        if (c.image.C > CASE_MAX_CHANNELS) FINDING("case %s loaded with %d channels", dc->id, c.image.C);
        size_t n = volume_voxels(&c.image);
        for (size_t v = 0; c.label && v < n; v++)
            if (ds->num_classes > 0 && c.label[v] >= ds->num_classes && !(c.label[v] == LABEL_IGNORE && ds->ignore_label >= 0))
                FINDING("case %s: label %d >= %d classes", dc->id, c.label[v], ds->num_classes);
            else if (c.label[v] == LABEL_IGNORE && ds->ignore_label < 0) FINDING("case %s: label 255 without an ignore label", dc->id);
        for (size_t v = 0; v < n * (size_t)c.image.C; v++)
            if (!isfinite(c.image.data[v])) FINDING("case %s: non-finite voxel", dc->id);
        case_free(&c);
    } else if (!err[0]) {
        FINDING("case %s refused without a reason", dc->id);
    }
}

static void query(const dataset_t *ds)
{
    if (ds->n_cases < 1) FINDING("opened with no cases");
    if (ds->n_channels < 1 || ds->n_channels > CASE_MAX_CHANNELS) FINDING("%d channels", ds->n_channels);
    for (int i = 0; i < ds->n_channels; i++)
        if (!ds->channel_names[i]) FINDING("channel %d has no name", i);
    for (int i = 0; i < ds->n_labels; i++) {         // (the "ignore" entry is no class: above them all)
        const int ign = !strcmp(ds->labels[i].name, "ignore");
        for (int j = 0; j < ds->labels[i].n_values; j++)
            if (ign ? ds->labels[i].values[j] != ds->ignore_label || ds->ignore_label < ds->num_classes
                    : ds->labels[i].values[j] < 0 || ds->labels[i].values[j] >= ds->num_classes)
                FINDING("label value out of num_classes");
    }
    if (ds->num_classes > LABEL_MAX_CLASS + 1) FINDING("%d classes", ds->num_classes);
    for (int i = 0; i < ds->n_cases; i++) {
        const dataset_case_t *c = &ds->cases[i];
        if (!c->id) FINDING("case %d has no id", i);
        if (dataset_find(ds, c->id) < 0) FINDING("case %s not found by its own id", c->id);
        if (strcmp(c->split, "train") && strcmp(c->split, "validation") && strcmp(c->split, "test")) FINDING("case %s: split \"%s\"", c->id, c->split);
        if (c->n_images < 0 || c->n_images > CASE_MAX_CHANNELS) FINDING("case %s: %d image files", c->id, c->n_images);
    }
    static const char *sels[] = {"train", "validation", "val", "test", "all", "fold0/train", "fold0/val",
                                 "fold4/val", "fold7/train", "fold-1/val", "fold0/xyz", "nonsense"};
    for (size_t s = 0; s < sizeof sels / sizeof *sels; s++) {
        int *idx = NULL, n = 0;
        err[0] = 0;
        if (dataset_select(ds, sels[s], &idx, &n, err) == 0) { check_indices(ds, idx, n, sels[s]); free(idx); }
        else if (!err[0]) FINDING("select %s refused without a reason", sels[s]);
    }
    for (int k = -1; k <= 5; k++) {
        int *tr = NULL, *va = NULL, ntr = 0, nva = 0;
        if (dataset_fold(ds, k, &tr, &ntr, &va, &nva, err) == 0) {
            check_indices(ds, tr, ntr, "fold train");
            check_indices(ds, va, nva, "fold val");
            free(tr); free(va);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t n = nul ? (size_t)(nul - data) : size;
    put_text(json_path, (const char *)data, n);
    if (nul) put_text(splits_path, (const char *)nul + 1, size - n - 1);
    else unlink(splits_path);
    dataset_t ds;
    err[0] = 0;
    if (dataset_open(root, &ds, err) == 0) {
        query(&ds);
        // Reading NIfTI files costs 10x the JSON work; a quarter of the inputs (by length) also
        // load their first cases (the reader itself is fuzz_nifti's target).
        for (int i = 0; (size & 3) == 0 && i < ds.n_cases && i < 3; i++) check_case(&ds, i);
        dataset_free(&ds);
    } else if (!err[0]) {
        FINDING("dataset_open refused without a reason");
    }
    return 0;
}
