/*
test_case_cache.c -- the preprocessed-case cache: miss -> build, hit, invalidation when a source
file is touched or a setting changes, corrupt and truncated files detected and rebuilt, the
compact dtypes (int16 exact, float16 within its precision, float32 exact), float16 conversion,
and the sweep of temp files left by a loader killed while writing.
Uses a small synthetic MSD dataset written to a temp folder.
*/
#define _GNU_SOURCE
#include "test.h"
#include "case_cache.h"
#include "check.h"
#include "rng.h"
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void write_case(const char *root, modality_t mod)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/imagesTr", root); mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/labelsTr", root); mkdir(p, 0755);
    volume_t v;
    memset(&v, 0, sizeof v);
    v.C = 1; v.dim[0] = 18; v.dim[1] = 14; v.dim[2] = 10;
    for (int d = 0; d < 3; d++) { v.affine[d][d] = d == 2 ? 2.5 : 1.25; v.spacing[d] = v.affine[d][d]; }
    v.affine[0][0] = -1.25;
    v.affine[3][3] = 1;
    size_t n = volume_voxels(&v);
    v.data = xmalloc(n * sizeof(float));
    float *lab = xcalloc(n, sizeof(float));
    rng_t r = rng_seed(5);
    for (int a = 0; a < 18; a++)
        for (int b = 0; b < 14; b++)
            for (int k = 0; k < 10; k++) {
                size_t i = ((size_t)a * 14 + b) * 10 + k;
                int body = a > 2 && a < 16 && b > 1 && b < 12 && k > 0;
                v.data[i] = body ? (float)rint(41 + fabs(60 * rng_normal(&r))) : (mod == MODALITY_CT ? -1024 : 0);
                lab[i] = body && a > 6 && a < 12 && b > 4 ? 1 + (k > 5) : 0;
            }
    char err[ERR_LEN];
    snprintf(p, sizeof p, "%s/imagesTr/c1.nii.gz", root);
    if (nifti_write_volume(p, &v, 4, err) < 0) DIE("%s", err);
    memcpy(v.data, lab, n * sizeof(float));
    snprintf(p, sizeof p, "%s/labelsTr/c1.nii.gz", root);
    if (nifti_write_volume(p, &v, 2, err) < 0) DIE("%s", err);
    free(v.data); free(lab);
    snprintf(p, sizeof p, "%s/dataset.json", root);
    FILE *f = fopen(p, "w");
    if (!f) DIE("%s", p);
    fprintf(f, "{\"modality\": {\"0\": \"%s\"}, \"labels\": {\"0\": \"bg\", \"1\": \"a\", \"2\": \"b\"},"
               " \"training\": [{\"image\": \"./imagesTr/c1.nii.gz\", \"label\": \"./labelsTr/c1.nii.gz\"}]}",
            mod == MODALITY_CT ? "CT" : "T2");
    if (fclose(f) != 0) DIE("%s", p);
}

// Compare a cached case with preprocessing done directly; returns the worst image error.
static double compare_direct(const dataset_t *ds, const preprocess_cfg_t *cfg, const cached_case_t *cc, int *label_eq)
{
    case_t c;
    preprocess_record_t rec;
    char err[ERR_LEN];
    if (dataset_load_case(ds, 0, &c, err) < 0 || preprocess_case(&c, cfg, &rec, err) < 0) DIE("%s", err);
    size_t n = (size_t)c.image.C * volume_voxels(&c.image);
    double worst = memcmp(c.image.dim, cc->dim, sizeof cc->dim) ? 1e9 : 0;
    *label_eq = worst == 0 && memcmp(c.label, cc->label, volume_voxels(&c.image)) == 0 &&
                memcmp(rec.out_affine, cc->rec.out_affine, sizeof rec.out_affine) == 0 &&
                memcmp(rec.src_dim, cc->rec.src_dim, sizeof rec.src_dim) == 0 && rec.src_ornt.flip[0] == cc->rec.src_ornt.flip[0];
    if (worst == 0) {
        float *x = xmalloc(n * sizeof(float));
        cached_case_image_f32(cc, x);
        for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(x[i] - c.image.data[i]) / fmax(1.0, fabs(c.image.data[i])));
        free(x);
    }
    case_free(&c);
    return worst;
}

static void flip_byte(const char *path, off_t at)
{
    int fd = open(path, O_RDWR);
    unsigned char b;
    if (fd < 0 || pread(fd, &b, 1, at) != 1) DIE("open %s", path);
    b ^= 0x40;
    if (pwrite(fd, &b, 1, at) != 1 || close(fd) < 0) DIE("write %s", path);
}

static const char *root;   // temp folder (test_tmpdir's string lives as long as the program)

static void test_cache(void)
{
    root = test_tmpdir("cache");
    char cache[1100], file[1200], img[1200], err[ERR_LEN];
    snprintf(cache, sizeof cache, "%s/cache", root);
    snprintf(file, sizeof file, "%s/c1.srmcase", cache);
    snprintf(img, sizeof img, "%s/imagesTr/c1.nii.gz", root);
    write_case(root, MODALITY_MR);
    dataset_t ds;
    if (dataset_open(root, &ds, err) < 0) DIE("%s", err);
    preprocess_cfg_t cfg;
    preprocess_cfg_default(&cfg);
    cfg.target_spacing[2] = 1.25;
    cached_case_t cc;
    cache_status_t st;
    int rc = case_cache_get(cache, &ds, 0, &cfg, &cc, &st, err), leq;
    EXPECT(rc == 0 && st == CACHE_MISSING, "first get builds: rc %d status %d %s", rc, st, err);
    if (rc) return;
    EXPECT(cc.image_dtype == CACHE_DTYPE_F16 && cc.label && cc.C == 1, "z-scored MR stored as float16");
    double w = compare_direct(&ds, &cfg, &cc, &leq);
    EXPECT(w < 1e-3 && leq, "cached = direct preprocessing (f16 rel err %.2g)", w);
    cached_case_close(&cc);

    rc = case_cache_get(cache, &ds, 0, &cfg, &cc, &st, err);
    EXPECT(rc == 0 && st == CACHE_HIT, "second get hits (status %d)", st);
    if (rc == 0) cached_case_close(&cc);

    cfg.target_spacing[2] = 2.0;      // a setting changed
    rc = case_cache_get(cache, &ds, 0, &cfg, &cc, &st, err);
    EXPECT(rc == 0 && st == CACHE_STALE && cc.dim[2] == 11, "new spacing rebuilds (status %d, k %d)", st, rc ? 0 : cc.dim[2]);
    if (rc == 0) cached_case_close(&cc);

    struct timespec ts[2] = {{.tv_sec = 1700000000}, {.tv_sec = 1700000000}};
    if (utimensat(AT_FDCWD, img, ts, 0) < 0) DIE("utimensat %s", img);
    rc = case_cache_get(cache, &ds, 0, &cfg, &cc, &st, err);
    EXPECT(rc == 0 && st == CACHE_STALE, "touched source rebuilds (status %d)", st);
    if (rc == 0) cached_case_close(&cc);
    rc = case_cache_get(cache, &ds, 0, &cfg, &cc, &st, err);
    EXPECT(rc == 0 && st == CACHE_HIT, "then hits again");
    if (rc == 0) cached_case_close(&cc);

    setenv("SRM_QUIET", "1", 1);
    struct stat sb;
    stat(file, &sb);
    flip_byte(file, sb.st_size - 3);       // payload byte
    uint64_t key;
    case_cache_key(&ds, 0, &cfg, &key, err);
    EXPECT(case_cache_open(file, key, &cc, err) == CACHE_CORRUPT && strstr(err, "payload checksum"), "flipped payload byte: %s", err);
    rc = case_cache_get(cache, &ds, 0, &cfg, &cc, &st, err);
    EXPECT(rc == 0 && st == CACHE_CORRUPT, "corrupt file rebuilt (status %d)", st);
    if (rc == 0) cached_case_close(&cc);
    flip_byte(file, 100);                   // header byte (inside the case id)
    EXPECT(case_cache_open(file, key, &cc, err) == CACHE_CORRUPT && strstr(err, "header checksum"), "flipped header byte: %s", err);
    if (truncate(file, 2000) < 0) DIE("truncate");
    EXPECT(case_cache_open(file, key, &cc, err) == CACHE_CORRUPT, "truncated file: %s", err);
    rc = case_cache_get(cache, &ds, 0, &cfg, &cc, &st, err);
    EXPECT(rc == 0 && st == CACHE_CORRUPT, "truncated file rebuilt");
    if (rc == 0) cached_case_close(&cc);

    cfg.allow_f16 = 0;                       // float32: exact
    rc = case_cache_get(cache, &ds, 0, &cfg, &cc, &st, err);
    EXPECT(rc == 0 && st == CACHE_STALE && cc.image_dtype == CACHE_DTYPE_F32, "allow_f16=0 -> float32");
    if (rc == 0) {
        w = compare_direct(&ds, &cfg, &cc, &leq);
        EXPECT(w == 0 && leq, "float32 cache is exact (%g)", w);
        cached_case_close(&cc);
    }
    dataset_free(&ds);

    // CT without normalisation keeps integer HU: int16, exact (nearest-free: no resampling).
    char ctroot[1100];
    snprintf(ctroot, sizeof ctroot, "%s/ct", root);
    mkdir(ctroot, 0755);
    write_case(ctroot, MODALITY_CT);
    if (dataset_open(ctroot, &ds, err) < 0) DIE("%s", err);
    preprocess_cfg_default(&cfg);
    cfg.ct_norm = CT_NORM_NONE;
    rc = case_cache_get(cache, &ds, 0, &cfg, &cc, &st, err);
    EXPECT(rc == 0 && cc.image_dtype == CACHE_DTYPE_I16, "raw CT as int16 (%s)", err);
    if (rc == 0) {
        w = compare_direct(&ds, &cfg, &cc, &leq);
        EXPECT(w == 0 && leq, "int16 cache is exact (%g)", w);
        cached_case_close(&cc);
    }
    // A cache that cannot be written (its folder is a file here; a full or read-only disk alike)
    // is no fault of the case: -2, not the -1 that makes the loader drop the case for good.
    char notdir[1200];
    snprintf(notdir, sizeof notdir, "%s/notadir", root);
    FILE *f = fopen(notdir, "w");
    if (f) fclose(f);
    rc = case_cache_get(notdir, &ds, 0, &cfg, &cc, &st, err);
    EXPECT(rc == -2 && strstr(err, "notadir"), "unwritable cache: -2 naming it (rc %d: %s)", rc, err);
    if (rc == 0) cached_case_close(&cc);
    dataset_free(&ds);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) printf("note: could not remove %s\n", root);
}

static void test_f16(void)
{
    EXPECT(cache_f32_to_f16(1.0f) == 0x3c00 && cache_f32_to_f16(-2.0f) == 0xc000 && cache_f32_to_f16(65504.0f) == 0x7bff,
           "f16 encodings");
    EXPECT(cache_f32_to_f16(1e6f) == 0x7c00 && cache_f32_to_f16(5.9604645e-8f) == 0x0001 && cache_f32_to_f16(0.0f) == 0,
           "f16 overflow, smallest subnormal, zero");
    EXPECT(cache_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00 && cache_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02, "round to nearest even");
    rng_t r = rng_seed(9);
    double worst = 0;
    for (int i = 0; i < 100000; i++) {
        float x = (float)(rng_normal(&r) * 10);
        if (fabsf(x) < 6.2e-5f) continue;     // normal range: relative bound 2^-11
        worst = fmax(worst, fabs(cache_f16_to_f32(cache_f32_to_f16(x)) - x) / fabs(x));
    }
    EXPECT(worst <= 1.0 / 2048, "f16 round trip relative error %.3g <= 2^-11", worst);
    int exact = 1;
    for (int h = 0; h < 0x7c00; h++) exact &= cache_f32_to_f16(cache_f16_to_f32((uint16_t)h)) == h;
    EXPECT(exact, "every finite half survives f16 -> f32 -> f16");
}

static int touch(const char *dir, const char *name, double age_s)
{
    char p[1400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) return -1;
    fputs("partial", f);
    fclose(f);
    struct timeval tv[2];
    gettimeofday(&tv[0], NULL);
    tv[0].tv_sec -= (time_t)age_s;
    tv[1] = tv[0];
    return utimes(p, tv);
}

static int present(const char *dir, const char *name)
{
    char p[1400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

// Temp files of killed loaders go; a live writer's, another host's recent one and the entries stay.
static void test_sweep(void)
{
    const char *dir = test_tmpdir("cache-sweep");
    char me[64], dead[128], live[128], mine_old_live[128];
    case_cache_host(me, sizeof me);
    pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0);                        // a pid that is gone
    snprintf(dead, sizeof dead, "a.srmcase.tmp.%s.%d", me, (int)child);
    snprintf(live, sizeof live, "b.srmcase.tmp.%s.%d", me, (int)getppid());
    snprintf(mine_old_live, sizeof mine_old_live, "c.srmcase.tmp.%s.%d", me, (int)getppid());
    EXPECT(touch(dir, dead, 0) == 0 && touch(dir, live, 0) == 0 && touch(dir, mine_old_live, 2 * 86400) == 0 &&
           touch(dir, "d.srmcase.tmp.otherhost.12345", 60) == 0 && touch(dir, "e.srmcase.tmp.otherhost.12345", 2 * 86400) == 0 &&
           touch(dir, "f.srmcase.tmp.777", 60) == 0 && touch(dir, "g.srmcase.tmp.777", 2 * 86400) == 0 &&
           touch(dir, "h.srmcase", 3 * 86400) == 0 && touch(dir, "notes.tmp.1", 3 * 86400) == 0, "set-up");
    int n = case_cache_sweep(dir);
    EXPECT(n == 4, "4 removed, got %d", n);
    EXPECT(!present(dir, dead), "this host's temp file of a dead writer is removed at once");
    EXPECT(present(dir, live), "a live writer's temp file stays");
    EXPECT(!present(dir, mine_old_live), "a day-old one goes whoever wrote it");
    EXPECT(present(dir, "d.srmcase.tmp.otherhost.12345"), "another host's recent temp file stays (its writer may be alive)");
    EXPECT(!present(dir, "e.srmcase.tmp.otherhost.12345"), "another host's day-old temp file goes");
    EXPECT(present(dir, "f.srmcase.tmp.777") && !present(dir, "g.srmcase.tmp.777"), "the old name form: only by age");
    EXPECT(present(dir, "h.srmcase") && present(dir, "notes.tmp.1"), "entries and other files stay");
    EXPECT(case_cache_sweep("/nonexistent/cache") == 0, "no cache folder: nothing to do");
}

int main(void)
{
    test_f16();
    test_cache();
    test_sweep();
    return test_summary();
}
