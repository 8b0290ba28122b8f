/*
preprocess_normalize.c -- intensity normalisation of one channel.

CT window (MONAI ScaleIntensityRanged, clip=True): y = (clip(x, lo, hi) - lo) / (hi - lo)
    * (b_max - b_min) + b_min.  CT z-score (nnU-Net CTNormalization with fixed statistics):
y = (clip(x, lo, hi) - mean) / std.  MR z-score (nnU-Net ZScoreNormalization, MONAI
NormalizeIntensity): y = (x - mean) / std with mean/std over the foreground mask or the whole
volume; statistics are accumulated in double.
*/
#include "preprocess.h"
#include "check.h"
#include <math.h>

int preprocess_normalize_ct(volume_t *img, int ch, const preprocess_cfg_t *cfg, char *err)
{
    size_t n = volume_voxels(img);
    float *x = img->data + (size_t)ch * n;
    double lo = cfg->ct_lo, hi = cfg->ct_hi;
    if (cfg->ct_norm == CT_NORM_NONE) return 0;
    if (!(hi > lo)) return set_err(err, "CT window [%g, %g] is empty", lo, hi);
    if (cfg->ct_norm == CT_NORM_ZSCORE && !(cfg->ct_std > 0))
        return set_err(err, "CT z-score std %g is not positive", cfg->ct_std);
    double scale = cfg->ct_norm == CT_NORM_WINDOW ? (cfg->ct_b_max - cfg->ct_b_min) / (hi - lo) : 1.0 / cfg->ct_std;
    double shift = cfg->ct_norm == CT_NORM_WINDOW ? lo : cfg->ct_mean;
    double base = cfg->ct_norm == CT_NORM_WINDOW ? cfg->ct_b_min : 0.0;
    for (size_t i = 0; i < n; i++) {
        double v = x[i] < lo ? lo : x[i] > hi ? hi : x[i];
        x[i] = (float)((v - shift) * scale + base);
    }
    return 0;
}

int preprocess_normalize_mr(volume_t *img, int ch, const uint8_t *mask, mr_norm_t mode, int constant_ok, char *err)
{
    if (mode == MR_NORM_NONE) return 0;
    size_t n = volume_voxels(img), cnt = 0;
    float *x = img->data + (size_t)ch * n;
    if (mode == MR_NORM_ZSCORE_ALL) mask = NULL;
    double sum = 0, sq = 0;
    for (size_t i = 0; i < n; i++)
        if (!mask || mask[i]) { sum += x[i]; cnt++; }
    if (cnt == 0) return set_err(err, "channel %d: z-score over an empty mask", ch);
    double mean = sum / cnt;
    for (size_t i = 0; i < n; i++)
        if (!mask || mask[i]) { double d = x[i] - mean; sq += d * d; }
    double sd = sqrt(sq / cnt);
    // A constant channel has no scale to normalise by (nnU-Net clamps std at 1e-8, which blows
    // rounding noise up to huge values): refused, or with constant_ok set to 0 as MONAI does.
    int constant = !(sd > 1e-8);
    if (constant && !constant_ok)
        return set_err(err, "channel %d: constant intensity %g over the %s (std 0)", ch, mean, mask ? "foreground" : "volume");
    for (size_t i = 0; i < n; i++)
        x[i] = (!constant && (!mask || mask[i])) ? (float)((x[i] - mean) / sd) : 0.0f;
    return constant;
}

int preprocess_normalize_range(volume_t *img, int ch, modality_t mod, char *err)
{
    size_t n = volume_voxels(img);
    float *x = img->data + (size_t)ch * n;
    if (mod == MODALITY_NONORM) return 0;
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) { lo = fminf(lo, x[i]); hi = fmaxf(hi, x[i]); }
    if (mod == MODALITY_RGB01) {
        if (lo < 0 || hi > 255) return set_err(err, "channel %d (rgb_to_0_1): values in [%g, %g], not [0, 255]", ch, lo, hi);
        for (size_t i = 0; i < n; i++) x[i] /= 255.0f;
        return 0;
    }
    if (mod != MODALITY_RESCALE01) return set_err(err, "channel %d: no range normalisation for modality %d", ch, (int)mod);
    double range = (double)hi - lo > 1e-8 ? (double)hi - lo : 1e-8;      // as nnU-Net's RescaleTo01
    for (size_t i = 0; i < n; i++) x[i] = (float)((x[i] - lo) / range);
    return 0;
}
