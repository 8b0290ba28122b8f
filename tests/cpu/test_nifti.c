/*
test_nifti.c -- NIfTI reading/writing (nifti_io.c) and reorientation (orient.c).

  good corpus   every tests/corpus/good file reads; the index-coded file proves the axis order
  bad corpus    every file in tests/corpus/bad/EXPECTED.txt fails with its expected message
  round trips   write + read of float32 (bit-exact data, same affine) as .nii and .nii.gz,
                4D multi-channel, uint8 labels; values that do not fit the datatype are refused
  orientation   axis codes of known affines; to-RAS keeps every voxel's world coordinate and
                gives "RAS"; to-RAS then back is the identity (data, dims, spacing, affine)
  units         a header in microns or metres reads in mm
Run from the repository root (tests/run.sh does).
*/
#include "check.h"
#include "orient.h"
#include "rng.h"
#include "test.h"
#include "volume.h"
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CORPUS "tests/corpus"

static const char *tmpdir(void)  // one folder for the whole run
{
    static const char *dir;
    if (!dir) dir = test_tmpdir("nifti");
    return dir;
}

static void test_good_corpus(void)
{
    DIR *d = opendir(CORPUS "/good");
    EXPECT(d != NULL, "cannot open %s/good (run from the repository root)", CORPUS);
    if (!d) return;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || !(strstr(e->d_name, ".nii") && (e->d_name[len - 1] == 'i' ||
                                                                   e->d_name[len - 1] == 'z')))
            continue;
        char path[1024], err[ERR_LEN] = "";
        snprintf(path, sizeof path, CORPUS "/good/%s", e->d_name);
        volume_t v;
        int rc = nifti_read_volume(path, &v, err);
        EXPECT(rc == 0, "%s: %s", path, err);
        if (rc == 0) {
            EXPECT(v.C >= 1 && v.spacing[0] > 0 && v.spacing[1] > 0 && v.spacing[2] > 0,
                   "%s: C=%d spacing %g %g %g", path, v.C, v.spacing[0], v.spacing[1], v.spacing[2]);
            EXPECT(v.nifti_version == (strstr(path, "nifti2") ? 2 : 1), "%s: version %d", path,
                   v.nifti_version);
        }
        volume_free(&v);
        n++;
    }
    closedir(d);
    EXPECT(n >= 30, "only %d good corpus files", n);
}

// value = c*1000000 + i*10000 + j*100 + k in the file; in memory (C, i, j, k), k fastest
static void test_axis_order(void)
{
    const char *path = CORPUS "/good/index_coded_4d_int32.nii.gz";
    char err[ERR_LEN] = "";
    volume_t v;
    if (nifti_read_volume(path, &v, err)) { EXPECT(0, "%s", err); return; }
    EXPECT(v.C == 3 && v.dim[0] == 7 && v.dim[1] == 6 && v.dim[2] == 5, "shape %d %d %d %d",
           v.C, v.dim[0], v.dim[1], v.dim[2]);
    int wrong = 0;
    size_t p = 0;
    for (int c = 0; c < v.C; c++)
        for (int i = 0; i < v.dim[0]; i++)
            for (int j = 0; j < v.dim[1]; j++)
                for (int k = 0; k < v.dim[2]; k++, p++)
                    wrong += v.data[p] != (float)(c * 1000000 + i * 10000 + j * 100 + k);
    EXPECT(wrong == 0, "%d voxels out of place", wrong);
    volume_free(&v);
}

static void test_bad_corpus(void)
{
    FILE *f = fopen(CORPUS "/bad/EXPECTED.txt", "r");
    EXPECT(f != NULL, "cannot open %s/bad/EXPECTED.txt", CORPUS);
    if (!f) return;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        line[strcspn(line, "\n")] = 0;
        char *sp = strchr(line, ' ');
        if (!sp) { EXPECT(0, "bad EXPECTED.txt line '%s'", line); continue; }
        *sp = 0;
        const char *want = sp + 1;
        char path[1024], err[ERR_LEN] = "";
        snprintf(path, sizeof path, CORPUS "/bad/%s", line);
        volume_t v;
        int rc = nifti_read_volume(path, &v, err);
        EXPECT(rc == -1, "%s was accepted", path);
        EXPECT(strstr(err, want) != NULL, "%s: error '%s' lacks '%s'", path, err, want);
        EXPECT(strncmp(err, path, strlen(path)) == 0, "%s: error '%s' does not name the file", path, err);
        EXPECT(strstr(err + strlen(path), path) == NULL, "%s: error '%s' names the file twice", path, err);
        EXPECT(v.data == NULL, "%s: data left allocated after an error", path);
        n++;
    }
    fclose(f);
    EXPECT(n >= 20, "only %d bad corpus entries", n);
}

// A volume with an oblique-free, float32-exact affine (so the file stores it without rounding).
static volume_t synthetic(int C, int d0, int d1, int d2, uint64_t seed)
{
    volume_t v = {0};
    v.C = C;
    v.dim[0] = d0; v.dim[1] = d1; v.dim[2] = d2;
    size_t n = (size_t)C * d0 * d1 * d2;
    v.data = xmalloc(n * sizeof(float));
    rng_t r = rng_seed(seed);
    for (size_t i = 0; i < n; i++) v.data[i] = (float)(rng_normal(&r) * 300.0 + 40.0);
    double a[4][4] = {{0, 0, -1.5, 10.25}, {-0.75, 0, 0, -3.5}, {0, 2.0, 0, 7.0}, {0, 0, 0, 1}};
    memcpy(v.affine, a, sizeof a);
    v.spacing[0] = 0.75; v.spacing[1] = 2.0; v.spacing[2] = 1.5;
    v.datatype = 16;
    return v;
}

static void test_round_trip(const char *name, int C)
{
    char path[1024], err[ERR_LEN] = "";
    snprintf(path, sizeof path, "%s/%s", tmpdir(), name);
    volume_t v = synthetic(C, 9, 7, 4, 42 + C), w;
    EXPECT(nifti_write_volume(path, &v, 16, err) == 0, "write %s: %s", path, err);
    if (nifti_read_volume(path, &w, err)) { EXPECT(0, "read back %s: %s", path, err); volume_free(&v); return; }
    size_t n = (size_t)C * volume_voxels(&v);
    EXPECT(w.C == C && memcmp(w.dim, v.dim, sizeof v.dim) == 0, "%s: shape changed", name);
    EXPECT(w.C == C && memcmp(w.data, v.data, n * sizeof(float)) == 0, "%s: data not bit-exact", name);
    EXPECT(memcmp(w.affine, v.affine, sizeof v.affine) == 0, "%s: affine changed", name);
    EXPECT(w.xform_source == 2 && w.datatype == 16, "%s: xform %d datatype %d", name,
           w.xform_source, w.datatype);
    for (int d = 0; d < 3; d++)
        EXPECT(w.spacing[d] == v.spacing[d] && w.pixdim[d] == v.spacing[d], "%s: spacing %d", name, d);
    volume_free(&w);
    volume_free(&v);
}

static void test_write_labels(void)
{
    char path[1024], err[ERR_LEN] = "";
    snprintf(path, sizeof path, "%s/labels.nii.gz", tmpdir());
    volume_t v = synthetic(1, 5, 4, 3, 7), w;
    for (size_t i = 0; i < volume_voxels(&v); i++) v.data[i] = (float)(i % 14);
    EXPECT(nifti_write_volume(path, &v, 2, err) == 0, "write uint8: %s", err);
    if (nifti_read_volume(path, &w, err) == 0) {
        EXPECT(w.datatype == 2, "datatype %d", w.datatype);
        EXPECT(memcmp(w.data, v.data, volume_voxels(&v) * sizeof(float)) == 0, "labels changed");
        volume_free(&w);
    } else {
        EXPECT(0, "read back: %s", err);
    }
    v.data[3] = 300;
    EXPECT(nifti_write_volume(path, &v, 2, err) == -1 && strstr(err, "does not fit"),
           "300 written as uint8: '%s'", err);
    EXPECT(nifti_write_volume("/nonexistent-dir/x.nii", &v, 16, err) == -1, "wrote into a missing folder");
    EXPECT(nifti_write_volume("x.img", &v, 16, err) == -1, "accepted a non-NIfTI name");
    volume_free(&v);
}

static void test_axcodes(void)
{
    struct { double a[4][4]; const char *codes; } cases[] = {
        {{{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}}, "RAS"},
        {{{-0.7, 0, 0, 0}, {0, -0.7, 0, 0}, {0, 0, 2.5, 0}, {0, 0, 0, 1}}, "LPS"},
        {{{0, 0, 1.2, 0}, {-1, 0, 0, 0}, {0, 2, 0, 0}, {0, 0, 0, 1}}, "PSR"},
        // 30 degrees about z: still closest to L and P; a skewed one that needs the polar factor
        {{{-0.866, 0.5, 0, 0}, {-0.5, -0.866, 0, 0}, {0, 0, 3, 0}, {0, 0, 0, 1}}, "LPS"},
        {{{1, 0.9, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}}, "RAS"},
    };
    char codes[4], err[ERR_LEN];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        EXPECT(orient_axcodes(cases[c].a, codes, err) == 0, "case %zu: %s", c, err);
        EXPECT(strcmp(codes, cases[c].codes) == 0, "case %zu: %s != %s", c, codes, cases[c].codes);
    }
    double zero[4][4] = {{1, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
    EXPECT(orient_axcodes(zero, codes, err) == -1, "degenerate affine accepted");
}

// world = A (i, j, k, 1)
static void world_of(const double a[4][4], double i, double j, double k, double out[3])
{
    for (int r = 0; r < 3; r++) out[r] = a[r][0] * i + a[r][1] * j + a[r][2] * k + a[r][3];
}

static void test_reorient(const char *file)
{
    char path[1024], err[ERR_LEN] = "";
    snprintf(path, sizeof path, CORPUS "/good/%s", file);
    volume_t src, v, back;
    if (nifti_read_volume(path, &src, err) || nifti_read_volume(path, &v, err)) {
        EXPECT(0, "%s", err);
        return;
    }
    ornt_t o;
    char codes[4];
    EXPECT(orient_to_ras(&v, &o, err) == 0, "%s: %s", file, err);
    EXPECT(orient_axcodes(v.affine, codes, err) == 0 && strcmp(codes, "RAS") == 0,
           "%s: after to_ras codes %s", file, codes);
    // every RAS voxel holds the source value of the voxel at the same world position
    int wrong = 0;
    for (int i = 0; i < v.dim[0]; i++)
        for (int j = 0; j < v.dim[1]; j++)
            for (int k = 0; k < v.dim[2]; k++) {
                double w[3], best = 1e30;
                world_of(v.affine, i, j, k, w);
                size_t at = 0;
                for (size_t p = 0; p < volume_voxels(&src); p++) {  // brute force: tiny volumes
                    int si = (int)(p / ((size_t)src.dim[1] * src.dim[2]));
                    int sj = (int)(p / src.dim[2] % src.dim[1]), sk = (int)(p % src.dim[2]);
                    double s[3];
                    world_of(src.affine, si, sj, sk, s);
                    double d2 = (s[0] - w[0]) * (s[0] - w[0]) + (s[1] - w[1]) * (s[1] - w[1]) +
                                (s[2] - w[2]) * (s[2] - w[2]);
                    if (d2 < best) { best = d2; at = p; }
                }
                size_t q = ((size_t)i * v.dim[1] + j) * v.dim[2] + k;
                for (int c = 0; c < v.C; c++)
                    wrong += best > 1e-12 || v.data[c * volume_voxels(&v) + q] !=
                                                 src.data[c * volume_voxels(&src) + at];
            }
    EXPECT(wrong == 0, "%s: %d RAS voxels moved in world space", file, wrong);
    back = v;
    back.data = xmalloc((size_t)v.C * volume_voxels(&v) * sizeof(float));
    memcpy(back.data, v.data, (size_t)v.C * volume_voxels(&v) * sizeof(float));
    EXPECT(orient_from_ras(&back, &o, err) == 0, "%s: %s", file, err);
    EXPECT(memcmp(back.dim, src.dim, sizeof src.dim) == 0, "%s: dims not restored", file);
    EXPECT(memcmp(back.data, src.data, (size_t)src.C * volume_voxels(&src) * sizeof(float)) == 0,
           "%s: data not restored", file);
    double da = 0, ds = 0;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) da = fmax(da, fabs(back.affine[r][c] - src.affine[r][c]));
    for (int d = 0; d < 3; d++) ds = fmax(ds, fabs(back.spacing[d] - src.spacing[d]));
    EXPECT(da < 1e-9 && ds < 1e-12, "%s: affine off by %g, spacing by %g", file, da, ds);
    volume_free(&back);
    volume_free(&v);
    volume_free(&src);
}

static void test_read_errors(void)
{
    char err[ERR_LEN] = "";
    volume_t v;
    EXPECT(nifti_read_volume(CORPUS "/good", &v, err) == -1 && strstr(err, "not a regular file"),
           "a folder: '%s'", err);
    EXPECT(nifti_read_volume(CORPUS "/bad/EXPECTED.txt", &v, err) == -1 && strstr(err, "EXPECTED.txt"),
           "a text file: '%s'", err);
}

// A header in microns or metres reads in mm (as ITK reads it): the corpus files store the
// oblique and LPS test affines scaled by 1000 and 1/1000 with those units.
static void test_units(void)
{
    static const struct { const char *file; int units; double spacing[3], origin[3]; } cases[] = {
        {"units_micron_sform.nii.gz", 3, {1.1, 0.9, 2.2}, {12.0, -7.0, 33.0}},
        {"units_meter_qform.nii", 1, {0.7, 0.7, 2.5}, {90.0, 110.0, -40.0}},
        {"dtype_int16_lps.nii.gz", 2, {0.7, 0.7, 2.5}, {90.0, 110.0, -40.0}},
    };
    for (size_t n = 0; n < sizeof cases / sizeof cases[0]; n++) {
        char path[1024], err[ERR_LEN] = "";
        snprintf(path, sizeof path, CORPUS "/good/%s", cases[n].file);
        volume_t v;
        if (nifti_read_volume(path, &v, err)) {
            EXPECT(0, "%s", err);
            continue;
        }
        double worst = 0;
        for (int d = 0; d < 3; d++) {
            worst = fmax(worst, fabs(v.spacing[d] - cases[n].spacing[d]));
            worst = fmax(worst, fabs(v.affine[d][3] - cases[n].origin[d]));
        }
        EXPECT(v.xyz_units == cases[n].units && worst < 1e-4, "%s: units %d, spacing %g %g %g, origin %g %g %g",
               cases[n].file, v.xyz_units, v.spacing[0], v.spacing[1], v.spacing[2], v.affine[0][3],
               v.affine[1][3], v.affine[2][3]);
        volume_free(&v);
    }
}

int main(void)
{
    test_good_corpus();
    test_axis_order();
    test_bad_corpus();
    test_read_errors();
    test_round_trip("rt.nii", 1);
    test_round_trip("rt.nii.gz", 1);
    test_round_trip("rt4d.nii.gz", 3);
    test_write_labels();
    test_axcodes();
    test_units();
    const char *files[] = {"dtype_float32_lps.nii.gz", "orient_psr_float32.nii.gz",
                           "orient_oblique_sform.nii", "qform_only_qfac_neg.nii.gz",
                           "nifti2_int16_oblique.nii.gz", "msd_4d_4ch_float32.nii.gz",
                           "no_xform_pixdim_only.nii", "dtype_int16.nii", "index_coded_4d_int32.nii.gz"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) test_reorient(files[i]);
    const char *made[] = {"rt.nii", "rt.nii.gz", "rt4d.nii.gz", "labels.nii.gz"};
    for (size_t i = 0; i < sizeof made / sizeof made[0]; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", tmpdir(), made[i]);
        unlink(path);
    }
    EXPECT(rmdir(tmpdir()) == 0, "temp folder %s not empty: a temp file was left behind", tmpdir());
    return test_summary();
}
