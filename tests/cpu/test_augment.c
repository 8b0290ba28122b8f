/*
test_augment.c -- the augmentation of srm-augmenter (common/augment*.c) on small synthetic volumes:
pos/neg crop ratio and positive centres, class-balanced centres, exact voxel movement of flips and rot90 on an
index-coded volume, image/label alignment under rotation + scaling (labels stay a subset, an
image equal to a binary label map agrees with it), gather == trilinear at integer positions,
padding of patches larger than the volume, determinism, and the intensity steps' statistics;
rotation and scaling rigid in mm (in-plane on anisotropic volumes); option parsing;
also the loader's preprocessing-record JSON round trip (the `prep` array of served cases).
*/
#include "augment.h"
#include "labels.h"
#include "loader.h"
#include "test.h"
#include "check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

// A volume of C channels: channel c voxel i = f(c, i); labels from lab_fn.
static void make_volume(aug_volume_t *v, int C, int D, int H, int W, float (*f)(int, size_t),
                        uint8_t (*lab_fn)(const int *, const int *), const augment_cfg_t *cfg)
{
    int dim[3] = { D, H, W };
    size_t n = (size_t)D * H * W;
    float *img = xmalloc((size_t)C * n * sizeof(float));
    uint8_t *lab = xmalloc(n);
    for (int c = 0; c < C; c++)
        for (size_t i = 0; i < n; i++) img[c * n + i] = f(c, i);
    for (int z = 0; z < D; z++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int p[3] = { z, y, x };
                lab[((size_t)z * H + y) * W + x] = lab_fn(p, dim);
            }
    char err[ERR_LEN];
    int rc = aug_volume_init(v, "synthetic", 3, C, dim, WIRE_F32, img, lab, cfg, err);
    ASSERT(rc == 0);
    free(img);
    free(lab);
}

static float f_index(int c, size_t i) { return (float)i + 100000.0f * c; }
static float f_const(int c, size_t i) { (void)i; return c == 0 ? 2.0f : -1.0f; }
static uint8_t lab_mod(const int *p, const int *dim) { return (uint8_t)((((size_t)p[0] * dim[1] + p[1]) * dim[2] + p[2]) % 251); }
// a cube of foreground [15, 25)^3 with labels 1..3 by octant-ish slabs
static uint8_t lab_cube(const int *p, const int *dim)
{
    (void)dim;
    for (int d = 0; d < 3; d++) if (p[d] < 15 || p[d] >= 25) return 0;
    return (uint8_t)(1 + (p[0] + p[1]) % 3);
}
// binary: a ball and a slab, so rotations move non-trivial shapes
static uint8_t lab_ball(const int *p, const int *dim)
{
    double r2 = 0;
    for (int d = 0; d < 3; d++) r2 += (p[d] - dim[d] / 2.0) * (p[d] - dim[d] / 2.0);
    return r2 < 64 || (p[0] > 3 && p[0] < 7);
}
static uint8_t lab_multi(const int *p, const int *dim) { return (uint8_t)(lab_ball(p, dim) ? 1 + (p[1] * 7 / dim[1]) % 4 : 0); }

static void quiet_cfg(augment_cfg_t *c, int P)
{
    augment_cfg_default(c);
    c->patch[0] = c->patch[1] = c->patch[2] = P;
    c->p_flip[0] = c->p_flip[1] = c->p_flip[2] = 0;
    c->p_scale = c->p_shift = 0;
}

// labels: value 1 in a 12^3 block (1728 voxels), value 3 in 2 voxels, value 7 in 30
static uint8_t lab_unbalanced(const int *p, const int *dim)
{
    (void)dim;
    if (p[0] == 30 && p[1] == 30 && (p[2] == 30 || p[2] == 31)) return 3;
    if (p[0] == 5 && p[1] < 30 && p[2] == 35) return 7;
    return p[0] >= 4 && p[0] < 16 && p[1] >= 4 && p[1] < 16 && p[2] >= 4 && p[2] < 16;
}

// --class-balanced: each present label value centres about a third of the positive crops;
// without it the centres follow the voxel counts (value 3: 2 of 1760 voxels)
static void test_class_balanced(void)
{
    augment_cfg_t cfg;
    quiet_cfg(&cfg, 8);
    aug_volume_t v;
    make_volume(&v, 1, 40, 40, 40, f_index, lab_unbalanced, &cfg);
    EXPECT(v.n_cls == 3 && v.cls_present[0] == 1 && v.cls_present[1] == 3 && v.cls_present[2] == 7 &&
           v.cls_start[2] - v.cls_start[1] == 1728 && v.cls_start[4] - v.cls_start[3] == 2 &&
           v.cls_start[8] - v.cls_start[7] == 30 && v.n_fg == 1760, "class groups: %d present, fg %zu", v.n_cls, v.n_fg);
    int bad_group = 0;
    for (int c = 1; c < 256; c++)
        for (uint32_t k = v.cls_start[c]; k < v.cls_start[c + 1]; k++) bad_group += v.labels[v.fg[k]] != c;
    EXPECT(bad_group == 0, "%d foreground voxels filed under another label value", bad_group);
    for (int balanced = 0; balanced < 2; balanced++) {
        int hits[256] = { 0 }, n = 3000, pos = 0;
        rng_t r = rng_derive(11, 0, (uint64_t)balanced);
        for (int s = 0; s < n; s++) {
            int centre[3], positive;
            augment_pick_centre(&r, &v, 0.8, balanced, centre, &positive);
            pos += positive;
            hits[v.labels[((size_t)centre[0] * 40 + centre[1]) * 40 + centre[2]]]++;
        }
        EXPECT(fabs(pos / (double)n - 0.8) < 0.03, "balanced %d: positive share %.3f, want 0.8", balanced, pos / (double)n);
        if (balanced)   // 2400 positives: a third each, 4 sigma ~ 0.04
            for (int c = 1; c < 8; c += c == 1 ? 2 : 4)
                EXPECT(fabs(hits[c] / (double)pos - 1.0 / 3) < 0.04, "balanced: value %d centres %.3f of positives, want 1/3",
                       c, hits[c] / (double)pos);
        else
            EXPECT(hits[3] < 20 && hits[1] > 0.9 * pos, "uniform: value 3 centred %d times, value 1 %d of %d", hits[3], hits[1], pos);
    }
    aug_volume_free(&v);
}

// lab_cube with the slab d < 10 ignored (nnU-Net's ignore label, LABEL_IGNORE), or everything
static uint8_t lab_cube_ignored(const int *p, const int *dim)
{
    return p[0] < 10 ? LABEL_IGNORE : lab_cube(p, dim);
}
static uint8_t lab_all_ignored(const int *p, const int *dim)
{
    (void)p; (void)dim;
    return LABEL_IGNORE;
}

// Ignored voxels are neither foreground nor background: no crop is centred on one, plain or
// class-balanced; a volume with nothing else still gives crops (centres anywhere).
static void test_ignored_voxels(void)
{
    augment_cfg_t cfg;
    quiet_cfg(&cfg, 8);
    aug_volume_t v;
    make_volume(&v, 1, 40, 40, 40, f_index, lab_cube_ignored, &cfg);
    EXPECT(v.n_fg == 1000 && v.n_bg == 30 * 1600 - 1000 && v.n_cls == 3 && v.cls_present[2] == 3,
           "ignored slab: fg %zu bg %zu, %d classes", v.n_fg, v.n_bg, v.n_cls);
    int on_ignored = 0, pos = 0;
    for (int balanced = 0; balanced < 2; balanced++) {
        rng_t r = rng_derive(12, 0, (uint64_t)balanced);
        for (int s = 0; s < 2000; s++) {
            int centre[3], positive;
            augment_pick_centre(&r, &v, 0.5, balanced, centre, &positive);
            on_ignored += v.labels[((size_t)centre[0] * 40 + centre[1]) * 40 + centre[2]] == LABEL_IGNORE;
            pos += positive;
        }
    }
    EXPECT(on_ignored == 0 && pos > 1800 && pos < 2200, "%d of 4000 centres on ignored voxels, %d positive", on_ignored,
           pos);
    aug_volume_free(&v);
    make_volume(&v, 1, 12, 12, 12, f_index, lab_all_ignored, &cfg);
    rng_t r = rng_derive(13, 0, 0);
    int inside = 1, positives = 0;
    for (int s = 0; s < 500; s++) {
        int centre[3], positive;
        augment_pick_centre(&r, &v, 0.9, 1, centre, &positive);
        for (int d = 0; d < 3; d++) inside &= centre[d] >= 0 && centre[d] < 12;
        positives += positive;
    }
    EXPECT(v.n_fg == 0 && v.n_bg == 0 && inside && positives == 0, "all ignored: centres inside %d, positive %d",
           inside, positives);
    aug_volume_free(&v);
}

static void test_pos_ratio(void)
{
    augment_cfg_t cfg;
    quiet_cfg(&cfg, 8);
    cfg.pos_ratio = 0.3;
    aug_volume_t v;
    make_volume(&v, 1, 40, 40, 40, f_index, lab_cube, &cfg);
    EXPECT(v.n_fg == 1000 && v.n_bg == 64000 - 1000, "fg %zu bg %zu", v.n_fg, v.n_bg);
    float img[512];
    uint8_t lab[512];
    int npos = 0, n = 4000, bad_centre = 0;
    for (int s = 0; s < n; s++) {
        aug_info_t in;
        augment_sample(img, lab, &in, &v, &cfg, 7, (uint64_t)s);
        npos += in.positive;
        uint8_t at_centre = lab[(4 * 8 + 4) * 8 + 4];          // centre voxel P/2: no clamp here
        size_t ci = ((size_t)in.centre[0] * 40 + in.centre[1]) * 40 + in.centre[2];
        if (in.positive != (at_centre > 0) || in.positive != (v.labels[ci] > 0)) bad_centre++;
    }
    double share = (double)npos / n;
    EXPECT(fabs(share - 0.3) < 0.03, "positive share %.3f, want 0.3 (4 sigma = 0.03)", share);
    EXPECT(bad_centre == 0, "%d crops whose centre label disagrees with the positive flag", bad_centre);

    // with flips on and a centre near the border (clamped boxes): a positive crop still holds fg
    cfg.p_flip[0] = cfg.p_flip[1] = cfg.p_flip[2] = 0.5;
    cfg.patch[0] = cfg.patch[1] = cfg.patch[2] = 32;
    cfg.pos_ratio = 1;
    float *big = xmalloc(32 * 32 * 32 * sizeof(float));
    uint8_t *bl = xmalloc(32 * 32 * 32);
    int nofg = 0;
    for (int s = 0; s < 50; s++) {
        aug_info_t in;
        augment_sample(big, bl, &in, &v, &cfg, 9, (uint64_t)s);
        int any = 0;
        for (int i = 0; i < 32 * 32 * 32; i++) any |= bl[i];
        nofg += !any || !in.positive;
    }
    EXPECT(nofg == 0, "%d of 50 positive crops without foreground", nofg);
    free(big);
    free(bl);
    aug_volume_free(&v);
}

// s = bc + A (p - pc), compared voxel by voxel against the source
static int check_moved(const float *img, const uint8_t *lab, const aug_volume_t *v, const int P[3],
                       const int origin[3], const double A[3][3])
{
    int bad = 0;
    size_t vn = (size_t)v->dim[0] * v->dim[1] * v->dim[2], pn = (size_t)P[0] * P[1] * P[2];
    for (int z = 0; z < P[0]; z++)
        for (int y = 0; y < P[1]; y++)
            for (int x = 0; x < P[2]; x++) {
                int p[3] = { z, y, x }, s[3], in = 1;
                for (int i = 0; i < 3; i++) {
                    double t = origin[i] + (P[i] - 1) * 0.5;
                    for (int j = 0; j < 3; j++) t += A[i][j] * (p[j] - (P[j] - 1) * 0.5);
                    s[i] = (int)lround(t);
                    in &= s[i] >= 0 && s[i] < v->dim[i];
                }
                size_t o = ((size_t)z * P[1] + y) * P[2] + x;
                size_t si = in ? ((size_t)s[0] * v->dim[1] + s[1]) * v->dim[2] + s[2] : 0;
                for (int c = 0; c < v->C; c++) {
                    float want = in ? v->image[c * vn + si] : v->pad[c];
                    if (img[c * pn + o] != want) bad++;
                }
                if (lab[o] != (in ? v->labels[si] : 0)) bad++;
            }
    return bad;
}

static void test_flip_rot90_exact(void)
{
    augment_cfg_t cfg;
    quiet_cfg(&cfg, 8);
    aug_volume_t v;
    make_volume(&v, 2, 20, 24, 28, f_index, lab_mod, &cfg);
    int P[3] = { 8, 8, 8 };
    float img[2 * 512];
    uint8_t lab[512];
    // hand-written cases: W flip, and a quarter turn in the (D, H) plane
    int o[3] = { 3, 5, 7 };
    double bc[3] = { 3 + 3.5, 5 + 3.5, 7 + 3.5 };
    double Fw[3][3] = { { 1, 0, 0 }, { 0, 1, 0 }, { 0, 0, -1 } };
    EXPECT(augment_extract(img, lab, &v, P, Fw, bc, 1, 0, 0) == 0, "a flip must take the exact path");
    int bad = 0;
    for (int z = 0; z < 8; z++)
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++)
                bad += img[(z * 8 + y) * 8 + x] != (float)(((o[0] + z) * 24 + o[1] + y) * 28 + o[2] + 7 - x);
    EXPECT(bad == 0, "W flip: %d voxels misplaced", bad);
    double R01[3][3] = { { 0, -1, 0 }, { 1, 0, 0 }, { 0, 0, 1 } };
    augment_extract(img, lab, &v, P, R01, bc, 1, 0, 0);
    bad = 0;
    for (int z = 0; z < 8; z++)
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++)
                bad += img[(z * 8 + y) * 8 + x] != (float)(((o[0] + 7 - y) * 24 + o[1] + z) * 28 + o[2] + x);
    EXPECT(bad == 0, "rot90 (D,H): %d voxels misplaced", bad);
    double R12[3][3] = { { 1, 0, 0 }, { 0, 0, -1 }, { 0, 1, 0 } };     // brings H into the rows
    augment_extract(img, lab, &v, P, R12, bc, 1, 0, 0);
    bad = 0;
    for (int z = 0; z < 8; z++)
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++)
                bad += img[512 + (z * 8 + y) * 8 + x] != 100000.0f + (float)(((o[0] + z) * 24 + o[1] + 7 - x) * 28 + o[2] + y);
    EXPECT(bad == 0, "rot90 (H,W), channel 1: %d voxels misplaced", bad);

    // random flips + rot90 through augment_sample, near borders too (clamped and padded boxes)
    cfg.p_flip[0] = cfg.p_flip[1] = cfg.p_flip[2] = 0.5;
    cfg.p_rot90 = 0.7;
    int seen_rot = 0, seen_flip = 0, total_bad = 0, resampled = 0;
    for (int s = 0; s < 300; s++) {
        aug_info_t in;
        augment_sample(img, lab, &in, &v, &cfg, 11, (uint64_t)s);
        resampled += in.resampled;
        total_bad += check_moved(img, lab, &v, P, in.origin, in.A);
        seen_rot += in.A[0][0] == 0 || in.A[1][1] == 0 || in.A[2][2] == 0;
        seen_flip += in.A[0][0] < 0 || in.A[1][1] < 0 || in.A[2][2] < 0;
    }
    EXPECT(total_bad == 0 && resampled == 0, "%d misplaced voxels, %d resampled", total_bad, resampled);
    EXPECT(seen_rot > 100 && seen_flip > 100, "rotations %d, flips %d of 300", seen_rot, seen_flip);
    // the trilinear pass at integer positions is the same gather (geometry of the resampler)
    float img2[2 * 512];
    uint8_t lab2[512];
    double Q[3][3] = { { 0, 0, -1 }, { 0, -1, 0 }, { 1, 0, 0 } };
    double edge[3] = { 1.5, 20.5, 2.5 };                // partly outside: pads must agree too
    int r1 = augment_extract(img, lab, &v, P, Q, edge, 1.5f, 0.25f, 0);
    int r2 = augment_extract(img2, lab2, &v, P, Q, edge, 1.5f, 0.25f, 1);
    EXPECT(r1 == 0 && r2 == 1, "paths %d %d", r1, r2);
    EXPECT(!memcmp(img, img2, sizeof img) && !memcmp(lab, lab2, sizeof lab), "gather and trilinear differ");
    aug_volume_free(&v);
}

static void test_rotation_alignment(void)
{
    augment_cfg_t cfg;
    quiet_cfg(&cfg, 16);
    cfg.p_rotation = cfg.p_scaling = 1;
    cfg.p_flip[0] = cfg.p_flip[1] = cfg.p_flip[2] = 0.5;
    cfg.p_rot90 = 0.5;
    cfg.pos_ratio = 0.7;
    aug_volume_t v;
    // channel 0 = the binary label map itself
    make_volume(&v, 1, 24, 26, 22, f_const, lab_ball, &cfg);
    for (size_t i = 0; i < 24 * 26 * 22; i++) v.image[i] = v.labels[i];
    size_t pn = 16 * 16 * 16;
    float *img = xmalloc(pn * sizeof(float));
    uint8_t *lab = xmalloc(pn);
    long agree = 0, total = 0, contradictions = 0, resampled = 0, mixed = 0;
    for (int s = 0; s < 40; s++) {
        aug_info_t in;
        augment_sample(img, lab, &in, &v, &cfg, 5, (uint64_t)s);
        resampled += in.resampled;
        int ones = 0;
        for (size_t i = 0; i < pn; i++) {
            if (lab[i] > 1) contradictions++;
            if ((img[i] == 1.0f && lab[i] != 1) || (img[i] == 0.0f && lab[i] != 0)) contradictions++;
            agree += (img[i] >= 0.5f) == (lab[i] == 1);
            ones += lab[i];
            total++;
        }
        mixed += ones > 0 && ones < (int)pn;
    }
    EXPECT(resampled == 40, "%ld of 40 went through the resampler", resampled);
    EXPECT(contradictions == 0, "%ld voxels where image and nearest label contradict", contradictions);
    EXPECT(agree > 0.93 * total, "only %.3f of voxels agree", (double)agree / total);
    EXPECT(mixed > 20, "only %ld patches hold both labels", mixed);
    aug_volume_free(&v);
    // multi-label: nearest keeps the label set
    make_volume(&v, 1, 24, 26, 22, f_const, lab_multi, &cfg);
    int present[256] = { 0 }, badlab = 0;
    for (size_t i = 0; i < 24 * 26 * 22; i++) present[v.labels[i]] = 1;
    for (int s = 0; s < 20; s++) {
        augment_sample(img, lab, NULL, &v, &cfg, 6, (uint64_t)s);
        for (size_t i = 0; i < pn; i++) badlab += !present[lab[i]];
    }
    EXPECT(badlab == 0, "%d labels not in the source", badlab);
    aug_volume_free(&v);
    free(img);
    free(lab);
}

static void test_padding(void)
{
    augment_cfg_t cfg;
    quiet_cfg(&cfg, 8);
    cfg.patch[1] = 10;
    cfg.patch[2] = 12;
    aug_volume_t v;
    make_volume(&v, 2, 5, 6, 7, f_index, lab_mod, &cfg);
    size_t pn = 8 * 10 * 12;
    float *img = xmalloc(2 * pn * sizeof(float));
    uint8_t *lab = xmalloc(pn);
    int bad = 0, inside_neg = 0;
    for (int s = 0; s < 30; s++) {
        aug_info_t in;
        augment_sample(img, lab, &in, &v, &cfg, 3, (uint64_t)s);
        for (int d = 0; d < 3; d++) inside_neg += in.origin[d] <= 0 && in.origin[d] >= v.dim[d] - cfg.patch[d];
        bad += check_moved(img, lab, &v, cfg.patch, in.origin, in.A);
        // every source voxel appears: the volume is inside the box
        int cnt = 0;
        for (size_t i = 0; i < pn; i++) cnt += img[i] < 100000.0f && img[i] != 0.0f;
        bad += cnt != 5 * 6 * 7 - 1;                // voxel 0 has value 0 = the pad value
    }
    EXPECT(bad == 0, "padding: %d mismatches", bad);
    EXPECT(inside_neg == 90, "origins must be <= 0 and keep the volume inside (%d of 90)", inside_neg);
    aug_volume_free(&v);
    cfg.pad_min = 1;                                // --pad min: each channel's minimum
    make_volume(&v, 2, 5, 6, 7, f_index, lab_mod, &cfg);
    EXPECT(v.pad[0] == 0.0f && v.pad[1] == 100000.0f, "pad min %g %g", v.pad[0], v.pad[1]);
    aug_info_t in;
    augment_sample(img, lab, &in, &v, &cfg, 3, 0);
    EXPECT(img[pn] == 100000.0f && lab[0] == 0, "corner of channel 1 %g", img[pn]);
    aug_volume_free(&v);
    free(img);
    free(lab);
}

static void test_determinism(void)
{
    augment_cfg_t cfg;
    quiet_cfg(&cfg, 16);
    augment_cfg_nnunet(&cfg);
    cfg.p_flip[0] = cfg.p_flip[1] = cfg.p_flip[2] = 0.5;
    cfg.p_scale = cfg.p_shift = 1;
    aug_volume_t v;
    make_volume(&v, 2, 30, 30, 30, f_index, lab_cube, &cfg);
    size_t pn = 16 * 16 * 16;
    float *a = xmalloc(2 * pn * sizeof(float)), *b = xmalloc(2 * pn * sizeof(float));
    uint8_t *la = xmalloc(pn), *lb = xmalloc(pn);
    int same = 0, differ = 0, finite = 1;
    for (int s = 0; s < 20; s++) {
        augment_sample(a, la, NULL, &v, &cfg, 42, (uint64_t)s);
        augment_sample(b, lb, NULL, &v, &cfg, 42, (uint64_t)s);
        same += !memcmp(a, b, 2 * pn * sizeof(float)) && !memcmp(la, lb, pn);
        augment_sample(b, lb, NULL, &v, &cfg, 42, (uint64_t)s + 1);
        differ += memcmp(a, b, 2 * pn * sizeof(float)) != 0;
        for (size_t i = 0; i < 2 * pn; i++) finite &= isfinite(a[i]);
    }
    EXPECT(same == 20, "same seed/volume/sample: %d of 20 identical", same);
    EXPECT(differ == 20, "different sample: %d of 20 differ", differ);
    EXPECT(finite, "non-finite values with the nnU-Net set");
    augment_sample(b, lb, NULL, &v, &cfg, 43, 0);
    augment_sample(a, la, NULL, &v, &cfg, 42, 0);
    EXPECT(memcmp(a, b, 2 * pn * sizeof(float)) != 0, "different seed gave the same patch");
    EXPECT(aug_volume_key("x", 1) != aug_volume_key("x", 2) && aug_volume_key("x", 1) != aug_volume_key("y", 1), "keys");
    aug_volume_free(&v);
    free(a); free(b); free(la); free(lb);
}

static void stats(const float *x, size_t n, double *m, double *sd)
{
    double s = 0, ss = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    *m = s / n;
    for (size_t i = 0; i < n; i++) ss += (x[i] - *m) * (x[i] - *m);
    *sd = sqrt(ss / n);
}

static void test_intensity(void)
{
    // MONAI scale/shift: constant channels 2 and -1 give back (mul, add) of each sample
    augment_cfg_t cfg;
    quiet_cfg(&cfg, 4);
    cfg.p_scale = cfg.p_shift = 1;
    cfg.scale_range = 0.2;
    cfg.shift_range = 0.1;
    aug_volume_t v;
    make_volume(&v, 2, 10, 10, 10, f_const, lab_cube, &cfg);
    float img[2 * 64];
    uint8_t lab[64];
    double ms = 0, mss = 0, as = 0, ass = 0;
    int out_of_range = 0, n = 2000;
    for (int s = 0; s < n; s++) {
        augment_sample(img, lab, NULL, &v, &cfg, 1, (uint64_t)s);
        double m = (img[0] - img[64]) / 3.0, a = img[0] - 2 * m;
        out_of_range += m < 0.8 - 1e-5 || m > 1.2 + 1e-5 || fabs(a) > 0.1 + 1e-5;
        ms += m; mss += m * m; as += a; ass += a * a;
    }
    ms /= n; as /= n;
    double msd = sqrt(mss / n - ms * ms), asd = sqrt(ass / n - as * as);
    EXPECT(out_of_range == 0, "%d draws outside the ranges", out_of_range);
    EXPECT(fabs(ms - 1) < 0.01 && fabs(msd - 0.2 / sqrt(3)) < 0.01, "scale mean %.4f sd %.4f", ms, msd);
    EXPECT(fabs(as) < 0.005 && fabs(asd - 0.1 / sqrt(3)) < 0.005, "shift mean %.4f sd %.4f", as, asd);
    aug_volume_free(&v);

    size_t N = 32 * 32 * 32;
    int dim[3] = { 32, 32, 32 };
    float *x = xmalloc(N * sizeof(float)), *y = xmalloc(N * sizeof(float));
    rng_t r = rng_seed(99);
    rng_fill_uniform(&r, x, N, -1, 3);
    double m0, s0, m1, s1;
    stats(x, N, &m0, &s0);
    for (int inv = 0; inv < 2; inv++) {
        memcpy(y, x, N * sizeof(float));
        augment_gamma(y, N, 1.4, inv);
        stats(y, N, &m1, &s1);
        int order = 1;
        for (size_t i = 1; i < 1000; i++) order &= (x[i] < x[i - 1]) == (y[i] < y[i - 1]) || x[i] == x[i - 1];
        EXPECT(fabs(m1 - m0) < 1e-4 && fabs(s1 - s0) < 1e-4 && order, "gamma inv=%d: mean %g->%g sd %g->%g order %d",
               inv, m0, m1, s0, s1, order);
        EXPECT(fabs(y[5] - x[5]) > 1e-3 || fabs(y[6] - x[6]) > 1e-3, "gamma changed nothing");
    }
    memcpy(y, x, N * sizeof(float));
    augment_contrast(y, N, 0.8);
    stats(y, N, &m1, &s1);
    EXPECT(fabs(m1 - m0) < 1e-4 && fabs(s1 - 0.8 * s0) < 1e-4, "contrast 0.8: mean %g sd %g (want %g %g)", m1, s1, m0, 0.8 * s0);
    augment_contrast(y, N, 1.25 * 1.25);
    float lo = y[0], hi = y[0];
    for (size_t i = 0; i < N; i++) { lo = y[i] < lo ? y[i] : lo; hi = y[i] > hi ? y[i] : hi; }
    EXPECT(lo >= -1 - 1e-5 && hi <= 3 + 1e-5, "contrast must preserve the range: [%g, %g]", lo, hi);
    memset(y, 0, N * sizeof(float));
    augment_add_noise(y, N, 0.5, &r);
    stats(y, N, &m1, &s1);
    EXPECT(fabs(m1) < 0.01 && fabs(s1 - 0.5) < 0.005, "noise sigma 0.5: mean %g sd %g", m1, s1);
    // blur: white noise variance shrinks by prod_d sum(w^2) ~ (1/(2 sqrt(pi)))^3 for sigma 1
    double sg[3] = { 1, 1, 1 };
    augment_blur(y, dim, sg);
    double m2, s2;                                  // interior only: reflected borders correlate
    float *core = xmalloc(24 * 24 * 24 * sizeof(float));
    for (int z = 0; z < 24; z++)
        for (int yy = 0; yy < 24; yy++)
            memcpy(core + (z * 24 + yy) * 24, y + ((size_t)(z + 4) * 32 + yy + 4) * 32 + 4, 24 * sizeof(float));
    stats(core, 24 * 24 * 24, &m2, &s2);
    free(core);
    double ratio = (s2 * s2) / (s1 * s1), want = pow(1 / (2 * sqrt(M_PI)), 3);
    EXPECT(fabs(ratio / want - 1) < 0.1 && fabs(m2 - m1) < 0.01, "blur variance ratio %g want %g", ratio, want);
    for (size_t i = 0; i < N; i++) y[i] = 4.5f;
    augment_blur(y, dim, sg);
    augment_lowres(y, dim, 0.5, -1);
    int flat = 1;
    for (size_t i = 0; i < N; i++) flat &= fabsf(y[i] - 4.5f) < 1e-5f;
    EXPECT(flat, "blur + lowres must keep a constant image constant");
    memcpy(y, x, N * sizeof(float));
    augment_lowres(y, dim, 0.5, -1);
    stats(y, N, &m1, &s1);
    EXPECT(fabs(m1 - m0) < 0.05 && s1 < 0.8 * s0 && s1 > 0.2 * s0, "lowres 0.5: mean %g->%g sd %g->%g", m0, m1, s0, s1);
    int below = 0;
    double rng2[2] = { 0.7, 1.5 };
    for (int i = 0; i < 4000; i++) {
        double g = augment_draw_around_one(&r, rng2);
        below += g < 1;
        if (g < 0.7 || g > 1.5) below = -100000;
    }
    EXPECT(below > 1800 && below < 2200, "around-one draw: %d of 4000 below 1", below);
    free(x);
    free(y);
}

static void test_options(void)
{
    augment_cfg_t c;
    augment_cfg_default(&c);
    char err[ERR_LEN];
    int used;
    EXPECT(augment_cfg_flag(&c, "--patch", "64,32,16", &used, err) == 1 && c.patch[1] == 32 && used, "patch");
    EXPECT(augment_cfg_flag(&c, "--patch", "96,64,32,7", &used, err) == -1 && strstr(err, "96,64,32,7") &&
           c.patch[0] == 64, "a fourth size is refused, not dropped: %s", err);
    EXPECT(augment_cfg_flag(&c, "--patch", "48", &used, err) == 1 && c.patch[0] == 48 && c.patch[2] == 48, "one N");
    EXPECT(augment_cfg_flag(&c, "--nnunet", NULL, &used, err) == 1 && c.p_lowres == 0.25 && !used &&
           c.p_scale == 0 && c.p_shift == 0 && c.class_balanced == 1, "--nnunet: nnU-Net's set, class-balanced, MONAI's scale / shift off");
    augment_cfg_default(&c);
    EXPECT(c.class_balanced == 0 && augment_cfg_flag(&c, "--class-balanced", "x", &used, err) == 1 && !used &&
           c.class_balanced == 1, "--class-balanced (no value)");
    EXPECT(augment_cfg_flag(&c, "--patch", "48", &used, err) == 1, "patch 48");
    EXPECT(augment_cfg_flag(&c, "--p-scale", "0.5", &used, err) == 1 && c.p_scale == 0.5, "a flag after --nnunet wins");
    EXPECT(augment_cfg_flag(&c, "--scaling-range", "0.8,1.2", &used, err) == 1 && c.scaling[0] == 0.8, "pair");
    EXPECT(augment_cfg_flag(&c, "--p-flip", "0.1,0.2,0.3", &used, err) == 1 && c.p_flip[2] == 0.3, "flip");
    const char *bad_flips[] = { "0.5,,0.5,0.5", "0,1,0,", ",0.5,0.5,0.5", "0.5,0.5", "", "0.5,0.5,0.5,0.5", "0.1,,0.3" };
    for (size_t i = 0; i < sizeof bad_flips / sizeof *bad_flips; i++)
        EXPECT(augment_cfg_flag(&c, "--p-flip", bad_flips[i], &used, err) == -1 && c.p_flip[2] == 0.3,
               "--p-flip '%s' accepted (empty fields must not be skipped)", bad_flips[i]);
    // --p-rot90 needs two equal patch sides; 64,32,16 has none
    EXPECT(augment_cfg_flag(&c, "--patch", "64,32,16", &used, err) == 1 && augment_cfg_flag(&c, "--p-rot90", "1", &used, err) == 1 &&
           augment_cfg_check(&c, err) == -1 && strstr(err, "--p-rot90"), "--p-rot90 with no two equal patch sides accepted");
    EXPECT(augment_cfg_flag(&c, "--patch", "64,32,32", &used, err) == 1 && augment_cfg_check(&c, err) == 0, "--p-rot90 on 64,32,32: %s", err);
    EXPECT(augment_cfg_flag(&c, "--pos-ratio", "1.5", &used, err) == -1, "range check");
    EXPECT(augment_cfg_flag(&c, "--scaling-range", "1.2,0.8", &used, err) == -1, "order check");
    EXPECT(augment_cfg_flag(&c, "--batch-size", "2", &used, err) == 0, "not ours");
}

static void test_prep_json(void)
{
    preprocess_record_t r, q;
    memset(&r, 0, sizeof r);
    for (int d = 0; d < 3; d++) {
        r.src_dim[d] = 100 + d; r.ras_dim[d] = 100 + d; r.crop_lo[d] = d; r.crop_dim[d] = 50;
        r.out_dim[d] = 77; r.out_spacing[d] = 1.0 / 3 + d;
        r.src_ornt.axis[d] = 2 - d; r.src_ornt.flip[d] = d == 1 ? -1 : 1;
    }
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) { r.src_affine[i][j] = 0.1 * i - j / 7.0; r.ras_affine[i][j] = i == j; r.out_affine[i][j] = 1e-3 * (i + 4 * j); }
    r.reoriented = 1;
    char *js = prep_record_to_json(&r), err[ERR_LEN];
    int rc = prep_record_from_json(js, strlen(js), &q, err);
    EXPECT(rc == 0 && !memcmp(&r, &q, sizeof r), "prep JSON round trip: %s", rc ? err : "fields differ");
    js[strlen(js) / 2] = 0;
    EXPECT(prep_record_from_json(js, strlen(js), &q, err) < 0, "truncated prep JSON accepted");
    free(js);
    EXPECT(prep_record_from_json("{\"version\": 1}", 14, &q, err) < 0, "incomplete prep JSON accepted");
}

// Rotation and scaling are rigid in millimetres: with spacing s, M = diag(s) A diag(1/s) is
// scale x rotation (M^T M = scale^2 I). On a volume whose coarse spacing is over 3x the finest,
// they act in the plane of the fine axes only: A leaves the coarse axis alone.
static void test_rotation_in_mm(void)
{
    augment_cfg_t cfg;
    quiet_cfg(&cfg, 16);
    cfg.p_rotation = cfg.p_scaling = 1;
    aug_volume_t v;
    make_volume(&v, 1, 24, 26, 22, f_const, lab_ball, &cfg);
    static const double spacings[][3] = { { 1, 1, 1 }, { 2.0, 1.0, 1.0 }, { 0.8, 1.3, 2.1 }, { 1, 1, 3.0 },
                                          { 5.0, 0.8, 0.8 }, { 0.7, 3.5, 0.7 } };
    for (size_t k = 0; k < sizeof spacings / sizeof *spacings; k++) {
        memcpy(v.spacing, spacings[k], sizeof v.spacing);
        int coarse = augment_coarse_axis(v.spacing);
        EXPECT(coarse == (k == 4 ? 0 : k == 5 ? 1 : -1), "spacing %zu: coarse axis %d", k, coarse);
        double worst = 0, leak = 0;
        for (int s = 0; s < 30; s++) {
            aug_info_t in;
            float img[16 * 16 * 16];
            uint8_t lab[16 * 16 * 16];
            augment_sample(img, lab, &in, &v, &cfg, 9, (uint64_t)s);
            double M[3][3], MtM[3][3];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) M[i][j] = v.spacing[i] * in.A[i][j] / v.spacing[j];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) MtM[i][j] = M[0][i] * M[0][j] + M[1][i] * M[1][j] + M[2][i] * M[2][j];
            int a = coarse >= 0 ? (coarse + 1) % 3 : 0;           // an axis the scale acts on
            double sc2 = MtM[a][a];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) {
                    double want = i != j ? 0 : (coarse == i ? 1 : sc2);
                    worst = fmax(worst, fabs(MtM[i][j] - want));
                }
            if (coarse >= 0)
                for (int j = 0; j < 3; j++)
                    leak = fmax(leak, fabs(in.A[coarse][j] - (j == coarse)) + fabs(in.A[j][coarse] - (j == coarse)));
        }
        EXPECT(worst < 1e-9, "spacing %g,%g,%g: not rigid in mm (|M^T M - s^2 I| %g)", spacings[k][0], spacings[k][1],
               spacings[k][2], worst);
        EXPECT(leak < 1e-12, "spacing %g,%g,%g: the coarse axis is mixed (%g)", spacings[k][0], spacings[k][1],
               spacings[k][2], leak);
    }
    aug_volume_free(&v);
}

// a 3^3 lesion two voxels from the D = 0 face and near the H end: the crop box is clamped, so
// the lesion sits far off the box centre
static uint8_t lab_edge(const int *p, const int *dim)
{
    int c[3] = { 2, dim[1] - 3, dim[2] / 2 };
    for (int d = 0; d < 3; d++) if (abs(p[d] - c[d]) > 1) return 0;
    return 1;
}

// Rotation and scaling turn about the crop centre: a foreground-centred crop keeps its
// foreground however the box was clamped (turning about the box centre lost it in 8 of these 100
// rotated and 10 of these 100 scaled patches; 57 % and 35 % with a 64^3 patch in a 90x90x70 volume).
static void test_centre_kept(void)
{
    augment_cfg_t cfg;
    quiet_cfg(&cfg, 32);
    cfg.pos_ratio = 1;
    aug_volume_t v;
    make_volume(&v, 1, 45, 45, 35, f_const, lab_edge, &cfg);
    const size_t pn = 32 * 32 * 32;
    float *img = xmalloc(pn * sizeof(float));
    uint8_t *lab = xmalloc(pn);
    for (int mode = 0; mode < 2; mode++) {
        cfg.p_rotation = mode == 0;
        cfg.p_scaling = mode == 1;
        cfg.p_flip[0] = cfg.p_flip[1] = cfg.p_flip[2] = 0.5;
        int empty = 0, turned = 0;
        for (int s = 0; s < 100; s++) {
            aug_info_t in;
            augment_sample(img, lab, &in, &v, &cfg, 5, (uint64_t)s);
            size_t fg = 0;
            for (size_t i = 0; i < pn; i++) fg += lab[i] == 1;
            empty += fg == 0;
            turned += in.resampled;
        }
        EXPECT(empty == 0 && turned == 100, "%s: %d of 100 foreground-centred patches without foreground (%d resampled)",
               mode ? "scaling" : "rotation", empty, turned);
    }
    free(img);
    free(lab);
    aug_volume_free(&v);
}

// nnU-Net's dummy-2D details and the v2 scaling draw: the in-plane angle spans +-180 degrees
// (nnU-Net's rotation_for_DA then), the low-resolution step leaves the coarse axis alone
// (ignore_axes), and the scale is U(0.7, 1.4): 3/7 of the draws below 1 (not half, the older
// two-sided draw).
static void test_nnunet_draws(void)
{
    augment_cfg_t cfg;
    quiet_cfg(&cfg, 16);
    cfg.p_rotation = 1;
    aug_volume_t v;
    make_volume(&v, 1, 24, 26, 22, f_const, lab_ball, &cfg);
    v.spacing[0] = 4; v.spacing[1] = v.spacing[2] = 1;
    double widest = 0;
    for (int s = 0; s < 200; s++) {
        aug_info_t in;
        float img[16 * 16 * 16];
        uint8_t lab[16 * 16 * 16];
        augment_sample(img, lab, &in, &v, &cfg, 4, (uint64_t)s);
        widest = fmax(widest, fabs(atan2(in.A[2][1], in.A[1][1])) * 180 / M_PI);
    }
    EXPECT(widest > 150 && widest <= 180, "dummy 2D: widest in-plane angle %.1f degrees (want up to 180)", widest);
    cfg.p_rotation = 0;
    cfg.p_scaling = 1;
    v.spacing[0] = 1;
    int below = 0, out = 0;
    for (int s = 0; s < 2000; s++) {
        aug_info_t in;
        float img[16 * 16 * 16];
        uint8_t lab[16 * 16 * 16];
        augment_sample(img, lab, &in, &v, &cfg, 4, (uint64_t)s);
        double sc = fabs(in.A[0][0]);
        below += sc < 1;
        out += sc < 0.7 - 1e-12 || sc > 1.4 + 1e-12;
    }
    EXPECT(out == 0 && below > 780 && below < 935, "scale U(0.7, 1.4): %d of 2000 below 1 (want ~857), %d outside", below, out);
    aug_volume_free(&v);

    const int dim[3] = { 6, 8, 10 };
    float x[6 * 8 * 10], y[6 * 8 * 10];
    for (int i = 0; i < 6 * 8 * 10; i++) x[i] = (float)(i / 80);      // a ramp along axis 0 only
    memcpy(y, x, sizeof x);
    augment_lowres(y, dim, 0.5, 0);
    EXPECT(!memcmp(x, y, sizeof x), "lowres keeping axis 0 leaves a ramp along it untouched");
    augment_lowres(y, dim, 0.5, -1);
    EXPECT(memcmp(x, y, sizeof x) != 0, "lowres on every axis changes it");
}

int main(void)
{
    test_prep_json();
    test_options();
    test_pos_ratio();
    test_ignored_voxels();
    test_class_balanced();
    test_flip_rot90_exact();
    test_rotation_alignment();
    test_rotation_in_mm();
    test_centre_kept();
    test_nnunet_draws();
    test_padding();
    test_determinism();
    test_intensity();
    return test_summary();
}
