/*
augment_cfg.c -- the augmentation options: defaults, the nnU-Net switch and the flag table that
srm-augmenter (and the tests) parse. Defaults: MONAI's BraTS recipe as in the SegResMamba paper
(flips p 0.5 per axis, RandScaleIntensity 0.1 p 1, RandShiftIntensity 0.1 p 1) with MONAI's
RandCropByPosNegLabeld centres at pos:neg 1:1 (its BTCV / spleen recipes; the paper's BraTS
script crops uniformly at random, which small structures would rarely see);
the nnU-Net ranges are nnUNetTrainer.get_training_transforms' (anchors.md §A4) with their
probabilities at 0 until --nnunet (which also turns MONAI's scale / shift off) or an individual
--p-* switch turns them on.
*/
#include "augment.h"
#include "check.h"
#include "cli.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void augment_cfg_default(augment_cfg_t *c)
{
    memset(c, 0, sizeof *c);
    c->patch[0] = c->patch[1] = c->patch[2] = 128;
    c->pos_ratio = 0.5;
    c->p_flip[0] = c->p_flip[1] = c->p_flip[2] = 0.5;
    c->p_scale = 1.0; c->scale_range = 0.1;
    c->p_shift = 1.0; c->shift_range = 0.1;
    c->rotation_deg = 30;
    c->rotation_deg_2d = 180;
    c->scaling[0] = 0.7; c->scaling[1] = 1.4;
    c->noise[0] = 0; c->noise[1] = 0.1;
    c->blur_sigma[0] = 0.5; c->blur_sigma[1] = 1.0; c->blur_p_channel = 0.5;
    c->brightness[0] = 0.75; c->brightness[1] = 1.25;
    c->contrast[0] = 0.75; c->contrast[1] = 1.25;
    c->lowres[0] = 0.5; c->lowres[1] = 1.0; c->lowres_p_channel = 0.5;
    c->gamma[0] = 0.7; c->gamma[1] = 1.5;
}

// nnU-Net's set in place of MONAI's intensity scale / shift (nnU-Net has its own brightness and
// contrast); flags after --nnunet change it.
void augment_cfg_nnunet(augment_cfg_t *c)
{
    c->p_scale = c->p_shift = 0;
    c->class_balanced = 1;
    c->p_rotation = 0.2;
    c->p_scaling = 0.2;
    c->p_noise = 0.1;
    c->p_blur = 0.2;
    c->p_brightness = 0.15;
    c->p_contrast = 0.15;
    c->p_lowres = 0.25;
    c->p_gamma_inv = 0.1;
    c->p_gamma = 0.3;
}

static int num(const char *flag, const char *s, double lo, double hi, double *out, char *err)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !isfinite(v) || v < lo || v > hi)
        return set_err(err, "%s: '%s' is not a number in [%g, %g]", flag, s, lo, hi);
    *out = v;
    return 0;
}

// "a,b" with lo <= a <= b <= hi
static int pair(const char *flag, const char *s, double lo, double hi, double out[2], char *err)
{
    char a[64];
    const char *comma = strchr(s, ',');
    if (!comma || (size_t)(comma - s) >= sizeof a) return set_err(err, "%s: expected A,B, got '%s'", flag, s);
    memcpy(a, s, (size_t)(comma - s));
    a[comma - s] = 0;
    if (num(flag, a, lo, hi, &out[0], err) || num(flag, comma + 1, lo, hi, &out[1], err)) return -1;
    if (out[0] > out[1]) return set_err(err, "%s: %g > %g", flag, out[0], out[1]);
    return 0;
}

typedef enum { K_PROB, K_POS, K_RANGE, K_PAIR } kind_t;
typedef struct { const char *flag; kind_t kind; size_t off; double lo, hi; const char *help; } opt_t;
#define OFF(f) offsetof(augment_cfg_t, f)

static const opt_t opts[] = {
    { "--pos-ratio", K_PROB, OFF(pos_ratio), 0, 1, "share of crops centred on foreground (0.5)" },
    { "--p-rot90", K_PROB, OFF(p_rot90), 0, 1, "90-degree rotation in a plane of equal patch sizes (0)" },
    { "--p-scale", K_PROB, OFF(p_scale), 0, 1, "intensity scale x*(1+f) (1)" },
    { "--scale-range", K_RANGE, OFF(scale_range), 0, 10, "f ~ U(-r, r) (0.1)" },
    { "--p-shift", K_PROB, OFF(p_shift), 0, 1, "intensity shift x+o (1)" },
    { "--shift-range", K_RANGE, OFF(shift_range), 0, 1e6, "o ~ U(-r, r) (0.1)" },
    { "--p-rotation", K_PROB, OFF(p_rotation), 0, 1, "nnU-Net rotation (0; --nnunet 0.2)" },
    { "--rotation-deg", K_RANGE, OFF(rotation_deg), 0, 180, "angles ~ U(-deg, deg) per axis (30)" },
    { "--rotation-deg-2d", K_RANGE, OFF(rotation_deg_2d), 0, 180, "in-plane angle in dummy 2D (180)" },
    { "--p-scaling", K_PROB, OFF(p_scaling), 0, 1, "nnU-Net scaling (0; 0.2)" },
    { "--scaling-range", K_PAIR, OFF(scaling), 0.05, 20, "(0.7,1.4)" },
    { "--p-noise", K_PROB, OFF(p_noise), 0, 1, "Gaussian noise (0; 0.1)" },
    { "--noise-range", K_PAIR, OFF(noise), 0, 1e6, "sigma range (0,0.1)" },
    { "--p-blur", K_PROB, OFF(p_blur), 0, 1, "Gaussian blur (0; 0.2)" },
    { "--blur-sigma", K_PAIR, OFF(blur_sigma), 0.01, 10, "(0.5,1)" },
    { "--blur-p-channel", K_PROB, OFF(blur_p_channel), 0, 1, "(0.5)" },
    { "--p-brightness", K_PROB, OFF(p_brightness), 0, 1, "multiplicative brightness (0; 0.15)" },
    { "--brightness-range", K_PAIR, OFF(brightness), 0, 100, "(0.75,1.25)" },
    { "--p-contrast", K_PROB, OFF(p_contrast), 0, 1, "contrast (0; 0.15)" },
    { "--contrast-range", K_PAIR, OFF(contrast), 0, 100, "(0.75,1.25)" },
    { "--p-lowres", K_PROB, OFF(p_lowres), 0, 1, "low-resolution simulation (0; 0.25)" },
    { "--lowres-range", K_PAIR, OFF(lowres), 0.05, 1, "zoom (0.5,1)" },
    { "--lowres-p-channel", K_PROB, OFF(lowres_p_channel), 0, 1, "(0.5)" },
    { "--p-gamma", K_PROB, OFF(p_gamma), 0, 1, "gamma (0; 0.3)" },
    { "--p-gamma-inv", K_PROB, OFF(p_gamma_inv), 0, 1, "gamma of the inverted image (0; 0.1)" },
    { "--gamma-range", K_PAIR, OFF(gamma), 0.01, 100, "(0.7,1.5)" },
};

int augment_cfg_flag(augment_cfg_t *c, const char *flag, const char *val, int *used, char *err)
{
    *used = 0;
    if (!strcmp(flag, "--nnunet")) { augment_cfg_nnunet(c); return 1; }
    if (!strcmp(flag, "--class-balanced")) { c->class_balanced = 1; return 1; }
    int known = !strcmp(flag, "--patch") || !strcmp(flag, "--p-flip") || !strcmp(flag, "--pad");
    for (size_t i = 0; !known && i < sizeof opts / sizeof *opts; i++) known = !strcmp(flag, opts[i].flag);
    if (!known) return 0;
    if (!val) return set_err(err, "%s: missing value", flag);
    *used = 1;
    if (!strcmp(flag, "--patch")) return cli_dims3(flag, val, 1, 1024, 1, c->patch, err) ? -1 : 1;
    if (!strcmp(flag, "--p-flip")) {            // one probability for all axes, or three
        double v[3];
        char buf[128];
        if (snprintf(buf, sizeof buf, "%s", val) >= (int)sizeof buf) return set_err(err, "--p-flip: '%s' is too long", val);
        int n = 0;
        for (char *t = buf, *comma;; t = comma + 1) {       // every field, empty ones too
            if ((comma = strchr(t, ','))) *comma = 0;
            if (n == 3) return set_err(err, "--p-flip: '%s': 1 or 3 values", val);
            if (num(flag, t, 0, 1, &v[n++], err)) return -1;
            if (!comma) break;
        }
        if (n != 1 && n != 3) return set_err(err, "--p-flip: '%s': 1 or 3 values", val);
        for (int d = 0; d < 3; d++) c->p_flip[d] = v[n == 1 ? 0 : d];
        return 1;
    }
    if (!strcmp(flag, "--pad")) {               // a number, or "min"
        if (!strcmp(val, "min")) { c->pad_min = 1; return 1; }
        double v;
        if (num(flag, val, -1e30, 1e30, &v, err)) return -1;
        c->pad_min = 0;
        c->pad_value = (float)v;
        return 1;
    }
    for (size_t i = 0; i < sizeof opts / sizeof *opts; i++) {
        const opt_t *o = &opts[i];
        if (strcmp(flag, o->flag)) continue;
        double *dst = (double *)((char *)c + o->off);
        if (o->kind == K_PAIR) return pair(flag, val, o->lo, o->hi, dst, err) ? -1 : 1;
        return num(flag, val, o->lo, o->hi, dst, err) ? -1 : 1;
    }
    return 0;
}

int augment_cfg_check(const augment_cfg_t *c, char *err)
{
    for (int d = 0; d < 3; d++)
        if (c->patch[d] < 1 || c->patch[d] > 1024) return set_err(err, "patch size %d out of [1, 1024]", c->patch[d]);
    if (!(c->pos_ratio >= 0 && c->pos_ratio <= 1)) return set_err(err, "pos ratio %g out of [0, 1]", c->pos_ratio);
    if (c->p_rot90 > 0 && c->patch[0] != c->patch[1] && c->patch[1] != c->patch[2] && c->patch[0] != c->patch[2])
        return set_err(err, "--p-rot90: a 90-degree turn needs two equal patch sides (patch %d,%d,%d)",
                       c->patch[0], c->patch[1], c->patch[2]);
    return 0;
}

void augment_cfg_usage(void *file)
{
    FILE *f = file;
    fprintf(f, "augmentation:\n"
               "  --patch D,H,W|N             patch size (128)\n"
               "  --p-flip P|P0,P1,P2         flip probability per axis (0.5)\n"
               "  --pad V|min                 image value outside the volume (0; min: channel minimum)\n"
               "  --class-balanced            positive centres: a label value present first (uniform),\n"
               "                              then one of its voxels, so small structures are centred\n"
               "                              as often as large ones (nnU-Net; MONAI RandCropByLabelClasses)\n"
               "  --nnunet                    nnU-Net's set at nnU-Net's probabilities, class-balanced\n"
               "                              centres, MONAI's scale / shift off (flags after it change\n"
               "                              it); rotation and\n"
               "                              scaling are rigid in mm, in-plane on volumes whose\n"
               "                              coarsest spacing is over 3x the finest (nnU-Net's\n"
               "                              dummy-2D augmentation)\n");
    for (size_t i = 0; i < sizeof opts / sizeof *opts; i++)
        fprintf(f, "  %-18s %-8s %s\n", opts[i].flag, opts[i].kind == K_PAIR ? "A,B" : "V", opts[i].help);
}
