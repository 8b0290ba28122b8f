/*
augment_sample.c -- one training patch from one volume: the order of the steps and of the random
draws. All randomness comes from rng_derive(seed, volume key, sample index), drawn in a fixed
order (every gate is drawn even when its probability is 0), so a patch depends on nothing else.
Steps: crop centre (pos/neg) -> box -> sampling matrix A = R(rotation) * scale * Q(rot90, flips)
(R and the scale turning about the crop centre)
(R and the scale rigid in millimetres, Q on voxel steps; R and the scale in-plane only on a
volume whose coarsest spacing is over 3x its finest: nnU-Net's "dummy 2D" augmentation, see
augment.h)
-> one extraction pass with MONAI scale/shift fused -> nnU-Net intensity steps in
nnUNetTrainer's order: noise, blur, brightness, contrast, low resolution, inverted gamma, gamma.
*/
#include "augment.h"
#include <math.h>
#include <string.h>

static void matmul(double out[3][3], const double a[3][3], const double b[3][3])
{
    double t[3][3];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) t[i][j] = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
    memcpy(out, t, sizeof t);
}

static void identity(double m[3][3])
{
    memset(m, 0, 9 * sizeof(double));
    m[0][0] = m[1][1] = m[2][2] = 1;
}

// Rotation by angle t in the plane of axes (a, b): exact 0/1 entries for multiples of 90 degrees.
static void plane_rotation(double m[3][3], int a, int b, double c, double s)
{
    identity(m);
    m[a][a] = c; m[a][b] = -s;
    m[b][a] = s; m[b][b] = c;
}

static double uniform(rng_t *r, double lo, double hi) { return lo + (hi - lo) * rng_uniform(r); }

int augment_coarse_axis(const double spacing[3])
{
    int a = 0;
    double lo = spacing[0];
    for (int d = 1; d < 3; d++) {
        if (spacing[d] > spacing[a]) a = d;
        if (spacing[d] < lo) lo = spacing[d];
    }
    return spacing[a] > AUG_ANISO_THRESHOLD * lo ? a : -1;
}

// Q: flips of the output axes, then a k*90-degree turn in a plane whose patch sides are equal.
static void draw_permutation(double Q[3][3], rng_t *r, const augment_cfg_t *cfg)
{
    identity(Q);
    for (int d = 0; d < 3; d++)
        if (rng_uniform(r) < cfg->p_flip[d]) Q[d][d] = -1;
    int planes[3][2], np = 0;
    for (int a = 0; a < 3; a++)
        for (int b = a + 1; b < 3; b++)
            if (cfg->patch[a] == cfg->patch[b]) { planes[np][0] = a; planes[np][1] = b; np++; }
    if (rng_uniform(r) < cfg->p_rot90 && np > 0) {
        int pl = (int)rng_below(r, (uint64_t)np), k = 1 + (int)rng_below(r, 3);
        static const double cs[4][2] = { { 1, 0 }, { 0, 1 }, { -1, 0 }, { 0, -1 } };
        double T[3][3];
        plane_rotation(T, planes[pl][0], planes[pl][1], cs[k][0], cs[k][1]);
        matmul(Q, T, Q);
    }
}

// keep: the patch axis along the volume's coarse one (dummy 2D; -1: none), which the
// low-resolution step leaves at full size, as nnU-Net's ignore_axes.
static void intensity_steps(float *img, int C, const int P[3], int keep, const augment_cfg_t *cfg, rng_t *r)
{
    size_t pn = (size_t)P[0] * P[1] * P[2];
    if (rng_uniform(r) < cfg->p_noise) {            // one sigma for all channels
        double sigma = uniform(r, cfg->noise[0], cfg->noise[1]);
        for (int c = 0; c < C; c++) augment_add_noise(img + c * pn, pn, sigma, r);
    }
    if (rng_uniform(r) < cfg->p_blur)
        for (int c = 0; c < C; c++) {
            if (rng_uniform(r) >= cfg->blur_p_channel) continue;
            double s[3];
            for (int d = 0; d < 3; d++) s[d] = uniform(r, cfg->blur_sigma[0], cfg->blur_sigma[1]);
            augment_blur(img + c * pn, P, s);
        }
    if (rng_uniform(r) < cfg->p_brightness)
        for (int c = 0; c < C; c++) {
            float m = (float)augment_draw_around_one(r, cfg->brightness);
            float *x = img + c * pn;
            for (size_t i = 0; i < pn; i++) x[i] *= m;
        }
    if (rng_uniform(r) < cfg->p_contrast)
        for (int c = 0; c < C; c++) augment_contrast(img + c * pn, pn, augment_draw_around_one(r, cfg->contrast));
    if (rng_uniform(r) < cfg->p_lowres)
        for (int c = 0; c < C; c++) {
            if (rng_uniform(r) >= cfg->lowres_p_channel) continue;
            augment_lowres(img + c * pn, P, uniform(r, cfg->lowres[0], cfg->lowres[1]), keep);
        }
    if (rng_uniform(r) < cfg->p_gamma_inv)
        for (int c = 0; c < C; c++) augment_gamma(img + c * pn, pn, augment_draw_around_one(r, cfg->gamma), 1);
    if (rng_uniform(r) < cfg->p_gamma)
        for (int c = 0; c < C; c++) augment_gamma(img + c * pn, pn, augment_draw_around_one(r, cfg->gamma), 0);
}

void augment_sample(float *img, uint8_t *lab, aug_info_t *info, const aug_volume_t *v,
                    const augment_cfg_t *cfg, uint64_t seed, uint64_t sample)
{
    rng_t r = rng_derive(seed, v->key, sample);
    aug_info_t in;
    memset(&in, 0, sizeof in);
    augment_pick_centre(&r, v, cfg->pos_ratio, cfg->class_balanced, in.centre, &in.positive);
    augment_origin(in.centre, v->dim, cfg->patch, in.origin);

    double Q[3][3], R[3][3], T[3][3];
    draw_permutation(Q, &r, cfg);
    int coarse = augment_coarse_axis(v->spacing);
    identity(R);
    if (rng_uniform(&r) < cfg->p_rotation) {
        double lim = (coarse >= 0 ? cfg->rotation_deg_2d : cfg->rotation_deg) * M_PI / 180;
        for (int ax = 0; ax < 3; ax++) {            // about D, H, W in turn: R = Rd * Rh * Rw
            double t = uniform(&r, -lim, lim);      // (drawn for every axis: the stream stays put)
            if (coarse >= 0 && ax != coarse) continue;
            plane_rotation(T, (ax + 1) % 3, (ax + 2) % 3, cos(t), sin(t));
            matmul(R, R, T);
        }
    }
    double scale = 1;
    if (rng_uniform(&r) < cfg->p_scaling) scale = uniform(&r, cfg->scaling[0], cfg->scaling[1]);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            if (coarse < 0 || (i != coarse && j != coarse)) R[i][j] *= scale;
    // R acts on millimetres: in voxel steps it is diag(1/s) R diag(s) (R itself when isotropic)
    if (!(v->spacing[0] == v->spacing[1] && v->spacing[1] == v->spacing[2]))
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) R[i][j] *= v->spacing[j] / v->spacing[i];
    matmul(in.A, R, Q);
    int keep = -1;                                  // the patch axis that reads the coarse one
    for (int j = 0; j < 3 && coarse >= 0; j++)
        if (Q[coarse][j] != 0) keep = j;

    float mul = 1, add = 0;
    if (rng_uniform(&r) < cfg->p_scale) mul = (float)(1 + uniform(&r, -cfg->scale_range, cfg->scale_range));
    if (rng_uniform(&r) < cfg->p_shift) add = (float)uniform(&r, -cfg->shift_range, cfg->shift_range);

    // Rotation and scaling turn about the drawn centre, not the box's: it keeps the patch
    // position flips alone would give it (a foreground voxel near a border, off the box centre,
    // would otherwise be turned out of the patch). The box moves by whole voxels so that p = 0
    // still reads origin + pc + A (0 - pc) exactly (docs/protocol.md `origins`); the centre then
    // lands within half a voxel of that position.
    double bc[3], u[3];
    for (int d = 0; d < 3; d++) u[d] = in.centre[d] - (in.origin[d] + (cfg->patch[d] - 1) * 0.5);
    for (int d = 0; d < 3; d++) {
        double ru = R[d][0] * u[0] + R[d][1] * u[1] + R[d][2] * u[2];
        in.origin[d] = (int)lround(in.centre[d] - ru - (cfg->patch[d] - 1) * 0.5);
        bc[d] = in.origin[d] + (cfg->patch[d] - 1) * 0.5;
    }
    in.resampled = augment_extract(img, lab, v, cfg->patch, in.A, bc, mul, add, 0);
    intensity_steps(img, v->C, cfg->patch, keep, cfg, &r);
    if (info) *info = in;
}
