/*
test_dataset.c -- dataset discovery, splits, folds, case loading checks and the JSON report.

Builds small synthetic datasets in a temp folder in all three layouts (MSD with 4D images and
fold keys, nnU-Net v2 with splits_final.json / generated folds / a split key and regions, a plain
imagesTr+labelsTr folder), each with a macOS "._" stray file; a dataset of bad cases whose load
must fail with a message naming the file; then opens the real datasets under ../shared/data.
*/
#define _GNU_SOURCE
#include "test.h"
#include "dataset.h"
#include "check.h"
#include "labels.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *T;   // temp root

static void put_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) == EOF || fclose(f) != 0) DIE("cannot write %s", path);
}

static void mkdirs(const char *root, const char *sub)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", root, sub);
    if (mkdir(p, 0755) < 0) DIE("mkdir %s", p);
}

// Write a (C, d0, d1, d2) volume: intensity ramp + offset, spacing sp, translation shift.
static void write_vol(const char *path, int C, const int dim[3], double sp, double shift, float base, int dt)
{
    volume_t v;
    memset(&v, 0, sizeof v);
    v.C = C;
    memcpy(v.dim, dim, sizeof v.dim);
    for (int d = 0; d < 3; d++) { v.affine[d][d] = sp; v.spacing[d] = sp; v.affine[d][3] = shift; }
    v.affine[3][3] = 1;
    size_t n = (size_t)C * dim[0] * dim[1] * dim[2];
    v.data = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v.data[i] = base + (float)(i % 7);
    char err[ERR_LEN];
    if (nifti_write_volume(path, &v, dt, err) < 0) DIE("%s", err);
    free(v.data);
}

// Label map with values cycling through 0..nlab-1 (or a given constant when nlab < 0).
static void write_lab(const char *path, const int dim[3], double sp, double shift, int nlab, float extra, int dt)
{
    volume_t v;
    memset(&v, 0, sizeof v);
    v.C = 1;
    memcpy(v.dim, dim, sizeof v.dim);
    for (int d = 0; d < 3; d++) { v.affine[d][d] = sp; v.spacing[d] = sp; v.affine[d][3] = shift; }
    v.affine[3][3] = 1;
    size_t n = (size_t)dim[0] * dim[1] * dim[2];
    v.data = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v.data[i] = (float)(i % (size_t)nlab);
    v.data[n / 2] = extra >= 0 ? extra : v.data[n / 2];
    char err[ERR_LEN];
    if (nifti_write_volume(path, &v, dt, err) < 0) DIE("%s", err);
    free(v.data);
}

static const int DIM[3] = {6, 5, 4};

static void make_msd(const char *root)
{
    mkdir(root, 0755);
    mkdirs(root, "imagesTr"); mkdirs(root, "labelsTr"); mkdirs(root, "imagesTs");
    char p[1200];
    const char *ids[3] = {"la_001", "la_002", "la_003"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/imagesTr/%s.nii.gz", root, ids[i]); write_vol(p, 2, DIM, 1.5, 0, 10, 16);
        snprintf(p, sizeof p, "%s/labelsTr/%s.nii.gz", root, ids[i]); write_lab(p, DIM, 1.5, 0, 3, -1, 2);
    }
    snprintf(p, sizeof p, "%s/imagesTs/la_009.nii.gz", root); write_vol(p, 2, DIM, 1.5, 0, 10, 16);
    snprintf(p, sizeof p, "%s/imagesTr/._la_001.nii.gz", root); put_text(p, "\x00\x05\x16\x07 mac resource fork");
    snprintf(p, sizeof p, "%s/dataset.json", root);
    put_text(p, "{\"name\": \"synthetic\", \"tensorImageSize\": \"4D\",\n"
                " \"modality\": {\"0\": \"FLAIR\", \"1\": \"T1w\"},\n"
                " \"labels\": {\"0\": \"background\", \"1\": \"edema\", \"2\": \"tumour\"},\n"
                " \"numTraining\": 3, \"numTest\": 1,\n"
                " \"training\": [{\"image\": \"./imagesTr/la_001.nii.gz\", \"label\": \"./labelsTr/la_001.nii.gz\", \"fold\": 0},\n"
                "  {\"image\": \"./imagesTr/la_002.nii.gz\", \"label\": \"./labelsTr/la_002.nii.gz\", \"fold\": 1},\n"
                "  {\"image\": \"./imagesTr/la_003.nii.gz\", \"label\": \"./labelsTr/la_003.nii.gz\", \"fold\": 0}],\n"
                " \"test\": [\"./imagesTs/la_009.nii.gz\"]}\n");
}

static void test_msd(void)
{
    char root[1024], err[ERR_LEN];
    snprintf(root, sizeof root, "%s/msd", T);
    make_msd(root);
    dataset_t ds;
    int rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0, "open msd: %s", err);
    if (rc) return;
    EXPECT(ds.layout == DATASET_MSD, "layout %d", ds.layout);
    EXPECT(ds.n_cases == 4, "msd cases %d (the ._ file must not count)", ds.n_cases);
    EXPECT(ds.n_channels == 2 && ds.modality[0] == MODALITY_MR && strcmp(ds.channel_names[1], "T1w") == 0, "channels");
    EXPECT(ds.n_labels == 3 && ds.num_classes == 3 && !ds.has_regions, "labels %d classes %d", ds.n_labels, ds.num_classes);
    EXPECT(ds.n_problems == 0, "msd problems %d: %s", ds.n_problems, ds.n_problems ? ds.problems[0] : "");
    int t = dataset_find(&ds, "la_009");
    EXPECT(t >= 0 && strcmp(ds.cases[t].split, "test") == 0 && ds.cases[t].label == NULL, "test case");
    EXPECT(strcmp(ds.cases[0].images[0] + strlen(root), "/imagesTr/la_001.nii.gz") == 0, "./ stripped: %s", ds.cases[0].images[0]);
    int *tr, *va, ntr, nva;
    rc = dataset_fold(&ds, 0, &tr, &ntr, &va, &nva, err);
    EXPECT(rc == 0 && ntr == 1 && nva == 2 && va[0] == 0 && va[1] == 2 && tr[0] == 1, "MSD fold keys: fold 0 val = la_001, la_003");
    if (rc == 0) { free(tr); free(va); }
    EXPECT(dataset_fold(&ds, 2, &tr, &ntr, &va, &nva, err) < 0, "fold 2 has no cases");
    case_t c;
    rc = dataset_load_case(&ds, 1, &c, err);
    EXPECT(rc == 0, "load 4D: %s", err);
    if (rc == 0) {
        EXPECT(c.image.C == 2 && c.image.dim[0] == 6 && c.image.dim[2] == 4 && c.label, "stacked 4D case");
        EXPECT(c.label[1] == 1 && c.label[2] == 2 && c.label[3] == 0, "labels as uint8");
        case_free(&c);
    }
    dataset_free(&ds);
}

// MONAI's datalists (load_decathlon_datalist): a "validation" list of held-out labelled cases
// (split "validation", counted in numTraining) and Auto3DSeg's "testing"; an nnU-Net v1 task,
// whose dataset.json lists X.nii.gz for the channel files X_0000.nii.gz, X_0001.nii.gz.
static void test_monai_datalist_and_v1_task(void)
{
    char root[1024], p[1200], err[ERR_LEN];
    snprintf(root, sizeof root, "%s/monai", T);
    mkdir(root, 0755);
    mkdirs(root, "imagesTr"); mkdirs(root, "labelsTr");
    const char *ids[4] = {"a1", "a2", "v1", "t1"};
    for (int i = 0; i < 4; i++) {
        for (int k = 0; k < 2; k++) {
            snprintf(p, sizeof p, "%s/imagesTr/%s_%04d.nii.gz", root, ids[i], k);
            write_vol(p, 1, DIM, 1.5, 0, 10 + k, 16);
        }
        snprintf(p, sizeof p, "%s/labelsTr/%s.nii.gz", root, ids[i]); write_lab(p, DIM, 1.5, 0, 3, -1, 2);
    }
    snprintf(p, sizeof p, "%s/dataset.json", root);
    put_text(p, "{\"modality\": {\"0\": \"T2\", \"1\": \"ADC\"}, \"labels\": {\"0\": \"bg\", \"1\": \"a\", \"2\": \"b\"},"
                " \"numTraining\": 3,"
                " \"training\": [{\"image\": \"./imagesTr/a1.nii.gz\", \"label\": \"./labelsTr/a1.nii.gz\"},"
                "  {\"image\": \"./imagesTr/a2.nii.gz\", \"label\": \"./labelsTr/a2.nii.gz\"}],"
                " \"validation\": [{\"image\": \"./imagesTr/v1.nii.gz\", \"label\": \"./labelsTr/v1.nii.gz\"}],"
                " \"testing\": [{\"image\": \"./imagesTr/t1.nii.gz\"}]}\n");
    dataset_t ds;
    int rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0, "open MONAI datalist: %s", err);
    if (rc) return;
    int v = dataset_find(&ds, "v1"), t = dataset_find(&ds, "t1");
    EXPECT(ds.n_cases == 4 && v >= 0 && !strcmp(ds.cases[v].split, "validation") && ds.cases[v].label &&
           t >= 0 && !strcmp(ds.cases[t].split, "test"), "training 2, validation 1 (labelled), testing 1: %d cases", ds.n_cases);
    EXPECT(ds.n_problems == 0, "no problem (numTraining counts the validation list): %s", ds.n_problems ? ds.problems[0] : "");
    case_t c;
    rc = v >= 0 ? dataset_load_case(&ds, v, &c, err) : -1;
    EXPECT(rc == 0, "the listed v1.nii.gz reads as its two channel files: %s", err);
    if (rc == 0) {
        EXPECT(c.image.C == 2 && c.image.data[0] == 10 && c.image.data[volume_voxels(&c.image)] == 11,
               "channel 0 from v1_0000, channel 1 from v1_0001 (C %d)", c.image.C);
        case_free(&c);
    }
    dataset_free(&ds);

    // one channel (a v1 liver / spleen task): liver_0.nii.gz listed, liver_0_0000.nii.gz on disk
    snprintf(root, sizeof root, "%s/v1one", T);
    mkdir(root, 0755);
    mkdirs(root, "imagesTr"); mkdirs(root, "labelsTr");
    snprintf(p, sizeof p, "%s/imagesTr/liver_0_0000.nii.gz", root); write_vol(p, 1, DIM, 1.5, 0, -100, 4);
    snprintf(p, sizeof p, "%s/labelsTr/liver_0.nii.gz", root); write_lab(p, DIM, 1.5, 0, 2, -1, 2);
    snprintf(p, sizeof p, "%s/dataset.json", root);
    put_text(p, "{\"modality\": {\"0\": \"CT\"}, \"labels\": {\"0\": \"bg\", \"1\": \"liver\"}, \"numTraining\": 1,"
                " \"training\": [{\"image\": \"./imagesTr/liver_0.nii.gz\", \"label\": \"./labelsTr/liver_0.nii.gz\"}]}\n");
    rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0, "open one-channel v1 task: %s", err);
    if (rc) return;
    rc = dataset_load_case(&ds, 0, &c, err);
    EXPECT(rc == 0 && ds.n_problems == 0, "the listed liver_0.nii.gz reads as liver_0_0000.nii.gz: %s", err);
    if (rc == 0) case_free(&c);
    dataset_free(&ds);

    // a file name that is not UTF-8 cannot name a case on the wire or in metrics.jsonl
    snprintf(root, sizeof root, "%s/latin1", T);
    mkdir(root, 0755);
    mkdirs(root, "imagesTr"); mkdirs(root, "labelsTr");
    const char *names[2] = {"ok", "caf\xe9"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/imagesTr/%s.nii.gz", root, names[i]); write_vol(p, 1, DIM, 1, 0, 5, 4);
        snprintf(p, sizeof p, "%s/labelsTr/%s.nii.gz", root, names[i]); write_lab(p, DIM, 1, 0, 2, -1, 2);
    }
    rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0 && ds.n_cases == 1 && !strcmp(ds.cases[0].id, "ok") && ds.n_problems == 1 &&
           strstr(ds.problems[0], "not UTF-8"), "a non-UTF-8 case id is named and skipped: %s",
           rc ? err : ds.n_problems ? ds.problems[0] : "no problem");
    if (rc == 0) dataset_free(&ds);
}

// Two MSD entries whose files share a name in different folders (KiTS' case_*/imaging.nii.gz)
// would share a case id (splits, results and predictions go by it): they are named by their
// folders; an entry listed twice is skipped the second time, with a problem naming it.
static void test_msd_duplicate_ids(void)
{
    char root[1024], p[1200], err[ERR_LEN];
    snprintf(root, sizeof root, "%s/msd_dup", T);
    mkdir(root, 0755);
    mkdirs(root, "imagesTr"); mkdirs(root, "labelsTr"); mkdirs(root, "imagesTr/a"); mkdirs(root, "imagesTr/b");
    mkdirs(root, "labelsTr/a"); mkdirs(root, "labelsTr/b");
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/imagesTr/%c/case.nii.gz", root, 'a' + k); write_vol(p, 1, DIM, 1.5, 0, 10, 16);
        snprintf(p, sizeof p, "%s/labelsTr/%c/case.nii.gz", root, 'a' + k); write_lab(p, DIM, 1.5, 0, 2, -1, 2);
    }
    snprintf(p, sizeof p, "%s/dataset.json", root);
    put_text(p, "{\"modality\": {\"0\": \"MR\"}, \"labels\": {\"0\": \"background\", \"1\": \"x\"},\n"
                " \"training\": [{\"image\": \"./imagesTr/a/case.nii.gz\", \"label\": \"./labelsTr/a/case.nii.gz\"},\n"
                "  {\"image\": \"./imagesTr/b/case.nii.gz\", \"label\": \"./labelsTr/b/case.nii.gz\"}]}\n");
    dataset_t ds;
    int rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0, "open msd_dup: %s", err);
    if (rc) return;
    // the image (and label) names repeat: the entries are named by their folders (KiTS' layout)
    EXPECT(ds.n_cases == 2 && !strcmp(ds.cases[0].id, "a") && !strcmp(ds.cases[1].id, "b") && ds.n_problems == 0,
           "both entries kept, named a and b by their folders (%d cases, %d problems)", ds.n_cases, ds.n_problems);
    dataset_free(&ds);
    // one entry listed twice among KiTS-like ones: still named by folders (the fewest repeats),
    // the copy skipped; a test entry of that layout is named by its folder too
    mkdirs(root, "imagesTr/c");
    snprintf(p, sizeof p, "%s/imagesTr/c/case.nii.gz", root); write_vol(p, 1, DIM, 1.5, 0, 10, 16);
    snprintf(p, sizeof p, "%s/dataset.json", root);
    put_text(p, "{\"modality\": {\"0\": \"MR\"}, \"labels\": {\"0\": \"background\", \"1\": \"x\"},\n"
                " \"training\": [{\"image\": \"./imagesTr/a/case.nii.gz\", \"label\": \"./labelsTr/a/case.nii.gz\"},\n"
                "  {\"image\": \"./imagesTr/b/case.nii.gz\", \"label\": \"./labelsTr/b/case.nii.gz\"},\n"
                "  {\"image\": \"./imagesTr/a/case.nii.gz\", \"label\": \"./labelsTr/a/case.nii.gz\"}],\n"
                " \"test\": [\"./imagesTr/c/case.nii.gz\"]}\n");
    rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0 && ds.n_cases == 3 && !strcmp(ds.cases[0].id, "a") && !strcmp(ds.cases[1].id, "b") &&
           !strcmp(ds.cases[2].id, "c") && !strcmp(ds.cases[2].split, "test") && ds.n_problems == 1 &&
           strstr(ds.problems[0], "already taken"), "KiTS-like with a repeated entry: a, b, test c; the copy named: %s",
           rc ? err : ds.n_problems ? ds.problems[0] : "(none)");
    if (rc == 0) dataset_free(&ds);
    // an entry listed twice repeats under every name: the second copy is named and skipped
    put_text(p, "{\"modality\": {\"0\": \"MR\"}, \"labels\": {\"0\": \"background\", \"1\": \"x\"},\n"
                " \"training\": [{\"image\": \"./imagesTr/a/case.nii.gz\", \"label\": \"./labelsTr/a/case.nii.gz\"},\n"
                "  {\"image\": \"./imagesTr/a/case.nii.gz\", \"label\": \"./labelsTr/a/case.nii.gz\"}]}\n");
    rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0 && ds.n_cases == 1 && ds.n_problems == 1 && strstr(ds.problems[0], "already taken"),
           "an entry listed twice: the first kept, the second named: %s", rc ? err : ds.n_problems ? ds.problems[0] : "(none)");
    if (rc == 0) dataset_free(&ds);
}

static void make_nnunet(const char *root, const char *labels_json, const char *extra_json, int ncase)
{
    mkdir(root, 0755);
    mkdirs(root, "imagesTr"); mkdirs(root, "labelsTr"); mkdirs(root, "imagesTs");
    char p[1200], id[32];
    for (int i = 1; i <= ncase; i++) {
        snprintf(id, sizeof id, "c%02d", i);
        for (int k = 0; k < 2; k++) {
            snprintf(p, sizeof p, "%s/imagesTr/%s_%04d.nii.gz", root, id, k);
            write_vol(p, 1, DIM, 2.0, 0, -1000 + 100 * k, 4);
        }
        snprintf(p, sizeof p, "%s/labelsTr/%s.nii.gz", root, id); write_lab(p, DIM, 2.0, 0, 3, -1, 2);
    }
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/imagesTs/t01_%04d.nii.gz", root, k); write_vol(p, 1, DIM, 2.0, 0, 0, 4);
    }
    snprintf(p, sizeof p, "%s/imagesTr/._c01_0000.nii.gz", root); put_text(p, "junk");
    snprintf(p, sizeof p, "%s/dataset.json", root);
    char json[2048];
    snprintf(json, sizeof json, "{\"channel_names\": {\"0\": \"CT\", \"1\": \"PET\"}, \"labels\": %s,"
             " \"numTraining\": %d, \"file_ending\": \".nii.gz\"%s}\n", labels_json, ncase, extra_json);
    put_text(p, json);
}

static void test_nnunet(void)
{
    char root[1024], p[1100], err[ERR_LEN];
    snprintf(root, sizeof root, "%s/nnunet", T);
    make_nnunet(root, "{\"background\": 0, \"liver\": 1, \"tumour\": 2}", "", 7);
    snprintf(p, sizeof p, "%s/splits_final.json", root);
    put_text(p, "[{\"train\": [\"c01\", \"c02\", \"c03\", \"c04\"], \"val\": [\"c05\", \"c06\", \"c07\"]},"
                " {\"train\": [\"c04\", \"c05\", \"c06\", \"c07\"], \"val\": [\"c01\", \"c02\", \"c03\"]}]");
    dataset_t ds;
    int rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0, "open nnunet: %s", err);
    if (rc) return;
    EXPECT(ds.layout == DATASET_NNUNET && ds.n_cases == 8, "nnunet layout %d cases %d", ds.layout, ds.n_cases);
    EXPECT(ds.n_channels == 2 && ds.modality[0] == MODALITY_CT && ds.modality[1] == MODALITY_MR, "CT + PET channels");
    EXPECT(ds.num_classes == 3 && ds.n_problems == 0, "classes %d problems %d %s", ds.num_classes, ds.n_problems, ds.n_problems ? ds.problems[0] : "");
    EXPECT(ds.n_folds == 2, "splits_final folds %d", ds.n_folds);
    int *idx, n;
    rc = dataset_select(&ds, "fold1/val", &idx, &n, err);
    EXPECT(rc == 0 && n == 3 && strcmp(ds.cases[idx[0]].id, "c01") == 0 && strcmp(ds.cases[idx[2]].id, "c03") == 0, "fold1/val from splits_final");
    if (rc == 0) free(idx);
    // past the declared folds: nnU-Net's seeded 80:20 split of the 7 training cases (5 + 2; the
    // exact draw is checked against numpy in test_folds_nnunet.py); "all": all 7, both ways
    int *tr7, *va7, ntr7, nva7;
    rc = dataset_fold(&ds, 2, &tr7, &ntr7, &va7, &nva7, err);
    int apart = rc == 0;
    for (int i = 0; apart && i < ntr7; i++)
        for (int j = 0; j < nva7; j++) apart &= tr7[i] != va7[j] && strcmp(ds.cases[va7[j]].id, "t01") != 0;
    EXPECT(rc == 0 && ntr7 == 5 && nva7 == 2 && apart && dataset_fold_is_random(&ds, 2) && !dataset_fold_is_random(&ds, 1),
           "fold 2 of 2 declared: a random 80:20 split, 5 training and 2 other validation cases (%d, %d): %s", ntr7, nva7, err);
    if (rc == 0) { free(tr7); free(va7); }
    rc = dataset_select(&ds, "foldall/val", &idx, &n, err);
    int *idx2 = NULL, n2 = 0, rc2 = dataset_select(&ds, "foldall/train", &idx2, &n2, err);
    EXPECT(rc == 0 && rc2 == 0 && n == 7 && n2 == 7 && memcmp(idx, idx2, 7 * sizeof *idx) == 0,
           "fold all: the 7 training cases train and validate (%d, %d)", n, n2);
    if (rc == 0) free(idx);
    if (rc2 == 0) free(idx2);
    EXPECT(dataset_select(&ds, "fold-1/val", &idx, &n, err) < 0 && dataset_select(&ds, "foldx/val", &idx, &n, err) < 0,
           "fold -1 and fold x are no selections");
    rc = dataset_select(&ds, "test", &idx, &n, err);
    EXPECT(rc == 0 && n == 1 && strcmp(ds.cases[idx[0]].id, "t01") == 0 && ds.cases[idx[0]].n_images == 2, "imagesTs test case");
    if (rc == 0) free(idx);
    case_t c;
    rc = dataset_load_case(&ds, 0, &c, err);
    EXPECT(rc == 0 && c.image.C == 2 && c.image.data[0] == -1000 && c.image.data[volume_voxels(&c.image)] == -900,
           "channel files stacked in order: %s", err);
    if (rc == 0) case_free(&c);
    dataset_free(&ds);

    // No splits_final.json: generated 5 folds over the 7 training cases.
    if (unlink(p) < 0) DIE("unlink %s", p);
    rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0 && ds.n_folds == 0, "reopen without splits");
    if (rc) return;
    int seen[8] = {0}, sizes[5], total = 0, deterministic = 1;
    for (int k = 0; k < 5; k++) {
        int *tr, *va, ntr, nva, *tr2, *va2, ntr2, nva2;
        rc = dataset_fold(&ds, k, &tr, &ntr, &va, &nva, err);
        EXPECT(rc == 0 && ntr + nva == 7, "generated fold %d: %s", k, err);
        if (rc) continue;
        sizes[k] = nva;
        total += nva;
        for (int j = 0; j < nva; j++) seen[va[j]]++;
        dataset_fold(&ds, k, &tr2, &ntr2, &va2, &nva2, err);
        deterministic &= nva2 == nva && memcmp(va, va2, (size_t)nva * sizeof(int)) == 0;
        free(tr); free(va); free(tr2); free(va2);
    }
    int once = 1;
    for (int i = 0; i < 8; i++) once &= strcmp(ds.cases[i].id, "t01") == 0 ? seen[i] == 0 : seen[i] == 1;
    EXPECT(total == 7 && once, "every training case validates exactly once, test case never");
    EXPECT(sizes[0] == 2 && sizes[1] == 2 && sizes[2] == 1 && sizes[4] == 1, "KFold sizes 2,2,1,1,1");
    EXPECT(deterministic, "same folds on every call");
    dataset_free(&ds);

    // Regions + a split key (with one unknown id, which becomes a problem).
    snprintf(root, sizeof root, "%s/nnunet_regions", T);
    make_nnunet(root, "{\"background\": 0, \"whole\": [1, 2], \"core\": 2}",
                ", \"split\": {\"train\": [\"c01\", \"c02\"], \"validation\": [\"c03\"], \"test\": [\"c04\", \"nope\"]}", 4);
    rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0, "open regions: %s", err);
    if (rc) return;
    EXPECT(ds.has_regions && ds.num_classes == 3 && ds.labels[1].n_values == 2, "region labels");
    EXPECT(ds.n_problems == 2 && strstr(ds.problems[0], "nope") && strstr(ds.problems[1], "regions_class_order is absent"),
           "no regions_class_order and the unknown split id reported");
    rc = dataset_select(&ds, "validation", &idx, &n, err);
    EXPECT(rc == 0 && n == 1 && strcmp(ds.cases[idx[0]].id, "c03") == 0, "split key: validation = c03");
    if (rc == 0) free(idx);
    rc = dataset_select(&ds, "test", &idx, &n, err);
    EXPECT(rc == 0 && n == 2, "split key test + imagesTs: %d", n);
    if (rc == 0) free(idx);
    dataset_free(&ds);
}

// nnU-Net's LabelManager: a one-value list is a plain label ([1] is 1: no region training), and
// background must be the integer 0.
static void test_label_lists(void)
{
    char root[1024], err[ERR_LEN];
    snprintf(root, sizeof root, "%s/single", T);
    make_nnunet(root, "{\"background\": 0, \"a\": [1], \"b\": [2]}", "", 2);
    dataset_t ds;
    int rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0 && !ds.has_regions && ds.num_classes == 3, "[1], [2]: classes, not regions: %s", rc ? err : "");
    char spec[256];
    if (rc == 0) {
        EXPECT(dataset_regions_spec(&ds, spec, sizeof spec) == 0 && !spec[0], "no --regions spec: '%s'", spec);
        dataset_free(&ds);
    }
    snprintf(root, sizeof root, "%s/bglist", T);
    make_nnunet(root, "{\"background\": [0], \"a\": 1, \"b\": 2}", "", 2);
    rc = dataset_open(root, &ds, err);
    EXPECT(rc < 0 && strstr(err, "background") && strstr(err, "dataset.json"), "background as a list refused: %s", err);
    if (rc == 0) dataset_free(&ds);
}

// nnU-Net v2's "ignore" label: not a class, loaded as LABEL_IGNORE; the rules of its
// declaration (one integer above every class) and of the values kept for it.
static void test_ignore_label(void)
{
    char root[1024], p[1200], err[ERR_LEN];
    snprintf(root, sizeof root, "%s/nnunet_ignore", T);
    make_nnunet(root, "{\"background\": 0, \"liver\": 1, \"ignore\": 2}", "", 2);   // labels cycle 0, 1, 2
    dataset_t ds;
    int rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0 && ds.num_classes == 2 && ds.ignore_label == 2, "ignore 2: %d classes, ignore %d (%s)",
           ds.num_classes, ds.ignore_label, err);
    if (rc) return;
    case_t c;
    rc = dataset_load_case(&ds, 0, &c, err);
    EXPECT(rc == 0 && c.label[0] == 0 && c.label[1] == 1 && c.label[2] == LABEL_IGNORE && c.label[5] == LABEL_IGNORE,
           "label 2 loads as LABEL_IGNORE: %s", err);
    if (rc == 0) case_free(&c);
    dataset_free(&ds);

    static const struct { const char *labels, *want; } bad[] = {
        { "{\"background\": 0, \"a\": 1, \"b\": 3, \"ignore\": 2}", "larger than every class" },
        { "{\"background\": 0, \"a\": 1, \"ignore\": [2, 3]}", "not a region" },
        { "{\"background\": 0, \"a\": 255}", "255 is kept for \"ignore\"" },
        { "{\"ignore\": 4}", "no class besides" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(p, sizeof p, "%s/dataset.json", root);
        char json[512];
        snprintf(json, sizeof json, "{\"channel_names\": {\"0\": \"CT\", \"1\": \"PET\"}, \"labels\": %s,"
                 " \"numTraining\": 2, \"file_ending\": \".nii.gz\"}\n", bad[i].labels);
        put_text(p, json);
        rc = dataset_open(root, &ds, err);
        EXPECT(rc < 0 && strstr(err, "dataset.json") && strstr(err, bad[i].want), "refused %s: %s", bad[i].labels,
               rc < 0 ? err : "(opened)");
        if (rc == 0) dataset_free(&ds);
    }

    // Without dataset.json 255 is no class: the file and the way out are named.
    snprintf(root, sizeof root, "%s/plain255", T);
    mkdir(root, 0755);
    mkdirs(root, "imagesTr"); mkdirs(root, "labelsTr");
    snprintf(p, sizeof p, "%s/imagesTr/q.nii.gz", root); write_vol(p, 1, DIM, 1, 0, 0, 4);
    snprintf(p, sizeof p, "%s/labelsTr/q.nii.gz", root); write_lab(p, DIM, 1, 0, 2, 255, 2);
    rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0 && ds.ignore_label == -1, "open plain255 (no ignore label without dataset.json): %s", err);
    if (rc) return;
    rc = dataset_load_case(&ds, 0, &c, err);
    EXPECT(rc < 0 && strstr(err, "labelsTr/q.nii.gz") && strstr(err, "255") && strstr(err, "ignore"),
           "plain label 255 refused: %s", rc < 0 ? err : "(loaded)");
    if (rc == 0) case_free(&c);
    dataset_free(&ds);
}

static void test_plain(void)
{
    char root[1024], p[1100], err[ERR_LEN];
    snprintf(root, sizeof root, "%s/plain", T);
    mkdir(root, 0755);
    mkdirs(root, "imagesTr"); mkdirs(root, "labelsTr");
    snprintf(p, sizeof p, "%s/imagesTr/p1.nii.gz", root); write_vol(p, 1, DIM, 1, 0, 0, 4);
    snprintf(p, sizeof p, "%s/labelsTr/p1.nii.gz", root); write_lab(p, DIM, 1, 0, 4, -1, 2);
    snprintf(p, sizeof p, "%s/imagesTr/p2.nii", root); write_vol(p, 1, DIM, 1, 0, 0, 4);
    snprintf(p, sizeof p, "%s/labelsTr/p2.nii", root); write_lab(p, DIM, 1, 0, 2, -1, 16);
    snprintf(p, sizeof p, "%s/imagesTr/p3.nii.gz", root); write_vol(p, 1, DIM, 1, 0, 0, 4);
    snprintf(p, sizeof p, "%s/imagesTr/._p1.nii.gz", root); put_text(p, "junk");
    dataset_t ds;
    int rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0, "open plain: %s", err);
    if (rc) return;
    EXPECT(ds.layout == DATASET_PLAIN && ds.n_cases == 3 && ds.n_channels == 1 && ds.n_labels == 0, "plain: %d cases", ds.n_cases);
    int i2 = dataset_find(&ds, "p2"), i3 = dataset_find(&ds, "p3");
    EXPECT(i2 >= 0 && strstr(ds.cases[i2].images[0], "p2.nii") && !strstr(ds.cases[i2].images[0], ".gz") &&
           strstr(ds.cases[i2].label, "labelsTr/p2.nii"), "uncompressed pair");
    EXPECT(i3 >= 0 && ds.cases[i3].label == NULL && strcmp(ds.cases[i3].split, "test") == 0 && ds.n_problems == 1,
           "unlabelled image is a test case and a problem");
    case_t c;
    rc = dataset_load_case(&ds, i2, &c, err);   // float32 labels holding integers
    EXPECT(rc == 0 && c.label[1] == 1, "float labels accepted: %s", err);
    if (rc == 0) case_free(&c);
    dataset_free(&ds);
}

// A plain folder T/name with n image + label pairs imagesTr/<id>, labelsTr/<id> (id = fmt % i,
// i = 1..n), images of C channels; root receives its path.
static void plain_pairs(char *root, size_t cap, const char *name, const char *fmt, int n, int C)
{
    char id[64], p[1200];
    snprintf(root, cap, "%s/%s", T, name);
    mkdir(root, 0755);
    mkdirs(root, "imagesTr"); mkdirs(root, "labelsTr");
    for (int i = 1; i <= n; i++) {
        snprintf(id, sizeof id, fmt, i);
        snprintf(p, sizeof p, "%s/imagesTr/%s.nii.gz", root, id); write_vol(p, C, DIM, 1, 0, 0, 16);
        snprintf(p, sizeof p, "%s/labelsTr/%s.nii.gz", root, id); write_lab(p, DIM, 1, 0, 4, -1, 2);
    }
}

// How a folder without dataset.json is read: ids ending in four digits with labels named after
// them are single files, not the channels of one case "patient"; real channel files (x1_0000,
// x1_0001 + labelsTr/x1) stay channels; 4D single files (MSD BraTS with the JSON left out) take
// their channel count from the first image's header, and their cases load.
static void test_plain_layouts(void)
{
    char root[1024], p[1100], err[ERR_LEN];
    dataset_t ds;
    plain_pairs(root, sizeof root, "plain_digits", "patient_%04d", 3, 1);
    int rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0 && ds.n_cases == 3 && ds.n_channels == 1 && dataset_find(&ds, "patient_0002") >= 0 &&
           ds.cases[dataset_find(&ds, "patient_0002")].label != NULL && ds.n_problems == 0,
           "patient_000N + labels: 3 labelled cases, one channel (%d cases, %d channels): %s", ds.n_cases, ds.n_channels, err);
    if (rc == 0) dataset_free(&ds);

    plain_pairs(root, sizeof root, "plain_channels", "x%d", 0, 1);   // the folders only
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/imagesTr/x1_%04d.nii.gz", root, k);
        write_vol(p, 1, DIM, 1, 0, 0, 4);
    }
    snprintf(p, sizeof p, "%s/labelsTr/x1.nii.gz", root);
    write_lab(p, DIM, 1, 0, 4, -1, 2);
    rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0 && ds.n_cases == 1 && ds.n_channels == 2 && ds.cases[0].label != NULL, "x1_0000/x1_0001 + x1: one 2-channel case: %s", err);
    if (rc == 0) dataset_free(&ds);

    plain_pairs(root, sizeof root, "plain_4d", "b%d", 2, 3);
    rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0 && ds.n_cases == 2 && ds.n_channels == 3, "plain 4D: 3 channels from the header (%d): %s", ds.n_channels, err);
    if (rc == 0) {
        case_t c;
        rc = dataset_load_case(&ds, 0, &c, err);
        EXPECT(rc == 0 && c.image.C == 3 && c.label, "plain 4D case loads: %s", err);
        if (rc == 0) case_free(&c);
        dataset_free(&ds);
    }
}

// Bad cases: each load fails naming the file; the report lists them all.
// A label whose origin is off by under half a voxel (another tool's rewrite) is the image's grid,
// as nnU-Net trains on it with a warning; a voxel off is still a geometry mismatch.
static void test_origin_drift(void)
{
    char root[1024], p[1100], err[ERR_LEN];
    snprintf(root, sizeof root, "%s/drift", T);
    mkdir(root, 0755);
    mkdirs(root, "imagesTr"); mkdirs(root, "labelsTr");
    const char *ids[2] = {"near", "far"};
    const double shift[2] = {0.3, 1.2};            // on every axis, spacing 2: 0.26 and 1.04 voxels away
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/imagesTr/%s.nii.gz", root, ids[i]); write_vol(p, 1, DIM, 2, 0, 5, 4);
        snprintf(p, sizeof p, "%s/labelsTr/%s.nii.gz", root, ids[i]); write_lab(p, DIM, 2, shift[i], 2, -1, 2);
    }
    dataset_t ds;
    int rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0 && ds.n_cases == 2, "open drift: %s", err);
    if (rc) return;
    case_t c;
    rc = dataset_load_case(&ds, dataset_find(&ds, "near"), &c, err);
    EXPECT(rc == 0, "origin 0.26 voxel off: loads on the image's grid (%s)", rc ? err : "ok");
    if (rc == 0) case_free(&c);
    rc = dataset_load_case(&ds, dataset_find(&ds, "far"), &c, err);
    EXPECT(rc < 0 && strstr(err, "geometry mismatch"), "origin 1.04 voxels off: refused (%s)", err);
    if (rc == 0) case_free(&c);
    dataset_free(&ds);
}

static void test_bad(void)
{
    char root[1024], p[1100], err[ERR_LEN];
    snprintf(root, sizeof root, "%s/bad", T);
    mkdir(root, 0755);
    mkdirs(root, "imagesTr"); mkdirs(root, "labelsTr");
    const int other[3] = {6, 5, 3};
    const char *ids[6] = {"shape", "geom", "outside", "fraction", "missing", "good"};
    for (int i = 0; i < 6; i++) {
        snprintf(p, sizeof p, "%s/imagesTr/%s.nii.gz", root, ids[i]);
        if (i != 4) write_vol(p, 1, DIM, 1, 0, 5, 4);
    }
    snprintf(p, sizeof p, "%s/labelsTr/shape.nii.gz", root); write_lab(p, other, 1, 0, 2, -1, 2);
    snprintf(p, sizeof p, "%s/labelsTr/geom.nii.gz", root); write_lab(p, DIM, 1, 4.0, 2, -1, 2);
    snprintf(p, sizeof p, "%s/labelsTr/outside.nii.gz", root); write_lab(p, DIM, 1, 0, 2, 5, 2);
    snprintf(p, sizeof p, "%s/labelsTr/fraction.nii.gz", root); write_lab(p, DIM, 1, 0, 2, 0.5f, 16);
    snprintf(p, sizeof p, "%s/labelsTr/missing.nii.gz", root); write_lab(p, DIM, 1, 0, 2, -1, 2);
    snprintf(p, sizeof p, "%s/labelsTr/good.nii.gz", root); write_lab(p, DIM, 1, 0, 2, -1, 2);
    snprintf(p, sizeof p, "%s/dataset.json", root);
    char json[4096] = "{\"modality\": {\"0\": \"MRI\"}, \"labels\": {\"0\": \"bg\", \"1\": \"fg\"}, \"training\": [";
    for (int i = 0; i < 6; i++) {
        char e[300];
        snprintf(e, sizeof e, "%s{\"image\": \"./imagesTr/%s.nii.gz\", \"label\": \"./labelsTr/%s.nii.gz\"}", i ? ", " : "", ids[i], ids[i]);
        strcat(json, e);
    }
    strcat(json, "]}");
    put_text(p, json);
    dataset_t ds;
    int rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0 && ds.n_cases == 6, "open bad: %s", err);
    if (rc) return;
    const char *want[5] = {"dims", "geometry mismatch", "outside the declared classes", "non-integer label", "missing.nii.gz"};
    for (int i = 0; i < 5; i++) {
        case_t c;
        err[0] = 0;
        rc = dataset_load_case(&ds, i, &c, err);
        EXPECT(rc < 0 && strstr(err, want[i]) && strstr(err, ids[i]), "%s: got \"%s\"", ids[i], err);
        if (rc == 0) case_free(&c);
        else printf("ok   %s -> %s\n", ids[i], err);
    }
    case_t c;
    rc = dataset_load_case(&ds, 5, &c, err);
    EXPECT(rc == 0, "good case loads: %s", err);
    if (rc == 0) case_free(&c);
    dataset_free(&ds);

    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    rc = dataset_print_report(root, mem, err);
    fclose(mem);
    json_error_t je;
    json_t *r = rc == 0 ? json_loads(buf, 0, &je) : NULL;
    EXPECT(r != NULL, "report is JSON: %s", rc ? err : je.text);
    if (r) {
        json_t *cases = json_object_get(r, "cases");
        EXPECT(json_integer_value(json_object_get(r, "num_problems")) == 5, "5 problems in report");
        EXPECT(json_array_size(json_object_get(json_array_get(cases, 5), "problems")) == 0 &&
               json_array_size(json_object_get(json_array_get(cases, 1), "problems")) == 1, "per-case problems");
        EXPECT(json_integer_value(json_object_get(json_object_get(json_array_get(cases, 5), "label_voxels"), "1")) == 60,
               "label voxel counts");
        json_decref(r);
    }
    free(buf);
}

// Real data declared under ../shared/data (repo-relative), else /work/shared/data.
static const char *data_root(void)
{
    return access("../shared/data/brats2013-6/dataset.json", R_OK) == 0 ? "../shared/data" : "/work/shared/data";
}

static void test_real(void)
{
    char root[1024], err[ERR_LEN];
    dataset_t ds;
    snprintf(root, sizeof root, "%s/abdomen-ct-btcv13", data_root());
    int rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0 && ds.layout == DATASET_MSD && ds.n_cases == 2 && ds.modality[0] == MODALITY_CT &&
           ds.num_classes == 14 && ds.n_problems == 0, "btcv13: %s", err);
    if (rc == 0) dataset_free(&ds);

    snprintf(root, sizeof root, "%s/brats2013-6", data_root());
    rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0 && ds.layout == DATASET_NNUNET && ds.n_cases == 6 && ds.n_channels == 2 && ds.num_classes == 5 &&
           ds.n_problems == 0, "brats: %s", err);
    if (rc == 0) {
        const char *split[3] = {"train", "validation", "test"};
        const char *first[3] = {"BRATS_pat0005", "BRATS_pat0003", "BRATS_pat0001"};
        for (int s = 0; s < 3; s++) {
            int *idx, n;
            int r2 = dataset_select(&ds, split[s], &idx, &n, err);
            EXPECT(r2 == 0 && n == 2 && strcmp(ds.cases[idx[0]].id, first[s]) == 0, "brats %s", split[s]);
            if (r2 == 0) free(idx);
        }
        EXPECT(strcmp(ds.channel_names[1], "T1c") == 0 && ds.modality[1] == MODALITY_MR, "brats channels");
        dataset_free(&ds);
    }

    snprintf(root, sizeof root, "%s/mri-tumour-3", data_root());
    rc = dataset_open(root, &ds, err);
    EXPECT(rc == 0 && ds.n_cases == 3 && ds.modality[0] == MODALITY_MR && ds.num_classes == 2, "mri-tumour-3: %s", err);
    if (rc == 0) dataset_free(&ds);

    // The report on a small real dataset: no problems, int32 labels accepted.
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    rc = dataset_print_report(root, mem, err);
    fclose(mem);
    json_t *r = rc == 0 ? json_loads(buf, 0, NULL) : NULL;
    EXPECT(r && json_integer_value(json_object_get(r, "num_problems")) == 0 &&
           json_array_size(json_object_get(r, "cases")) == 3, "mri-tumour-3 report clean");
    json_decref(r);
    free(buf);
}

int main(void)
{
    setenv("SRM_QUIET", "1", 1);
    T = test_tmpdir("dataset");
    test_msd();
    test_msd_duplicate_ids();
    test_nnunet();
    test_monai_datalist_and_v1_task();
    test_label_lists();
    test_ignore_label();
    test_plain();
    test_plain_layouts();
    test_bad();
    test_origin_drift();
    test_real();
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", T);
    if (system(cmd) != 0) printf("note: could not remove %s\n", T);
    return test_summary();
}
