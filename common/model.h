/*
model.h -- SegResMamba as data: the configuration (variant, width, channels, classes), the
parameter table (params.h) and, for every layer, the offsets of its tensors in the one parameter
buffer (architecture.md, top section and §7). Precision-independent, built once
(model_desc.c, model_plan.c, model_init.c). The math lives in common/nn/model_forward.c and
model_backward.c, built in float and double (declarations: model_decl.h, included twice below).

A model_plan_t sizes one workspace for a (batch, patch) pair up front: every activation the
backward needs and every temporary has a fixed offset in it, so a training step allocates nothing.
*/
#ifndef SRM_MODEL_H
#define SRM_MODEL_H
#include <math.h>
#include <stdint.h>
#include "ops.h"
#include "params.h"
#include "mamba_layer.h"

typedef enum { MODEL_M = 0, MODEL_P = 1, MODEL_R = 2, MODEL_NOTOM = 3 } model_variant_t;

typedef struct {
    model_variant_t variant;
    int width;              // w: levels use w, 2w, 4w, 8w; multiple of 8 (GroupNorm(8) in the decoder)
    int in_channels;
    int classes;            // output channels (softmax classes, or regions for sigmoid Dice)
} model_cfg_t;

#define MODEL_LEVELS 4
#define MODEL_STAGE_MAX 4
#define MODEL_TOM_A_SLICES 4   // ToM_A inside the CMMB: nslices = 4 (authors' spleen_slices)

// A convolution's tensors: w is (cout, cin, k, k, k), or (cin, cout, k, k, k) when transposed.
typedef struct {
    size_t w, b;            // b == PARAM_NONE: no bias
    int cin, cout, k;
    int norm_fed;           // the output feeds instance norms without affine and nothing else:
                            // the bias cannot change the model's output (each norm removes
                            // its channel's mean) and its true gradient is 0. The GPU model
                            // neither adds it nor forms that gradient (gpu/model_fwd.cu,
                            // model_bwd.cu); the CPU reference does both, so the tests see
                            // the gradient come out as rounding noise around 0
} conv_p_t;

typedef enum { STAGE_TOM = 0, STAGE_CONV = 1 } stage_kind_t;

// One encoder level i: downsample, CMMB (gscs.i), stage (stages.i.*), skip MLP (mlps.i).
typedef struct {
    int d;                          // channels of this level
    conv_p_t stem;                  // level 0: Conv3d(in, w, 7, s2, p3)
    conv_p_t down_conv, down_s2;    // levels 1..3: IN -> Conv3d(d', d', 3) -> IN -> Conv3d(d', d, 2, s2)
    conv_p_t proj, proj3, proj4, proj5;   // CMMB; proj5 is the transposed conv
    int has_tom_a;
    mamba_layer_t tom_a;            // gscs.i.mamba_layer (nslices = 4)
    int nstage;
    stage_kind_t stage_kind[MODEL_STAGE_MAX];
    conv_p_t stage_conv[MODEL_STAGE_MAX];
    mamba_layer_t stage_tom[MODEL_STAGE_MAX];   // nslices set per patch (D extent of the level)
    conv_p_t fc1, fc2;              // skip MLP
} model_level_t;

// Decoder stage j (MONAI SegResNet up path): Conv1(cin -> c, no bias) -> trilinear x2 -> + skip
// -> ResBlock(c): x + conv2(ReLU(GN2(conv1(ReLU(GN1(x)))))).
typedef struct {
    int cin, c;
    conv_p_t up;
    size_t gn1_w, gn1_b, gn2_w, gn2_b;
    conv_p_t conv1, conv2;
} model_dec_t;

typedef struct {
    model_cfg_t cfg;
    param_table_t table;
    model_level_t lv[MODEL_LEVELS];
    model_dec_t dec[3];
    conv_p_t out;                   // ConvTranspose3d(w, classes, 2, s2) + bias
} model_t;

// ---- configuration -----------------------------------------------------------
// Defaults: variant M, width 48, 1 input channel, 14 classes.
model_cfg_t model_cfg_default(void);
// "tiny" (width 8), "demo" (width 16), "full" (width 48); other fields untouched. -1 if unknown.
int model_cfg_preset(model_cfg_t *cfg, const char *name, char *err);
int model_variant_parse(const char *s, model_variant_t *v, char *err);   // "M", "P", "R", "no-tom"
const char *model_variant_name(model_variant_t v);
int model_cfg_check(const model_cfg_t *cfg, char *err);

// Fill m (table + layer offsets) for cfg. -1 with err for an invalid configuration.
int model_describe(model_t *m, const model_cfg_t *cfg, char *err);
void model_free(model_t *m);

// Import rule (architecture.md): names of the authors' never-executed SegResNet encoder (the
// "[unused]" rows of params_M_btcv.txt) are ignored; for variant R also the constructed but
// never-called CMMB ToM (vit.gscs.i.mamba_layer.*), so the authors' checkpoint imports into R.
int model_name_ignored_on_import(const model_t *m, const char *name);

// ---- initialisation (§5.3): PyTorch defaults + Mamba dt bias, A_log, D; deterministic -----
void model_init_params(const model_t *m, float *params, uint64_t seed);

// ---- workspace plan ----------------------------------------------------------
// Offsets (elements) into the workspace for one level's activations.
typedef struct {
    int s[3], h[3], hp[3];          // level extents, CMMB half extents, ToM_A (padded) extents
    int pad_a;                      // ToM_A input zero-padded at the high end
    int crop_off[3];                // centre pad/crop of the CMMB output to s (§2.2 step 6)
    size_t X;                       // level input after stem/downsample (d, s)
    size_t dn_c, dn_c_mean, dn_c_rstd, dn_n;   // downsample: conv3 output, its IN stats, IN output
    size_t p1, p1_mean, p1_rstd, a1;           // CMMB proj -> IN -> ReLU (p* raw, a* activated;
                                               // the IN output itself is not kept: a* is its mask)
    size_t p3, p3_mean, p3_rstd, a3;
    size_t ta_in, ta_out, ta_saved;            // ToM_A on hp (ta_in == a3 when not padded)
    size_t b;                                  // ToM_A output cropped to h (== ta_out when not padded)
    size_t p4, p4_mean, p4_rstd, a4;
    size_t p5, p5_mean, p5_rstd, a5;           // on 2h
    size_t Y;                                  // X + centre_crop(a5)
    size_t st_out[MODEL_STAGE_MAX], st_saved[MODEL_STAGE_MAX];
    size_t x;                                  // level output (== last stage output)
    size_t xn, xn_mean, xn_rstd;               // IN(x): shared by mlps.i and downsample i+1
    size_t h1, g1, skip;                       // fc1 output, GELU output, fc2 output
    size_t numel_s, numel_h, numel_hp, numel_2h;   // N*d*voxels at s, h, hp, 2h
} level_plan_t;

typedef struct {
    int s[3];                                  // output extents of this decoder stage
    size_t u;                                  // conv1x1 output at the coarse level
    size_t v;                                  // upsample(u) + skip
    size_t n1_mean, n1_rstd, r1;               // GN1 stats, ReLU(GN1(v)) (GN output kept only as r1)
    size_t c1, n2_mean, n2_rstd, r2;           // conv1 output, GN2 stats, ReLU(GN2(c1))
    size_t out;                                // c2 + v
    size_t numel;                              // N*c*voxels
} dec_plan_t;

typedef struct {
    int N, dims[3];
    size_t in_numel, out_numel;                // N*Cin*S, N*K*S
    level_plan_t lv[MODEL_LEVELS];
    dec_plan_t dec[3];
    size_t logits, dlogits;
    size_t scratch, scratch_numel;             // shared Mamba scratch
    size_t g[5], g_numel;                      // backward gradient temporaries (largest tensor each)
    size_t dskip[MODEL_LEVELS];
    size_t total;                              // workspace elements
} model_plan_t;

// Plan the workspace for batch N and patch dims (D, H, W). -1 with err unless every extent is a
// positive multiple of 16.
int model_plan(model_plan_t *p, const model_t *m, int N, const int dims[3], char *err);

// Cosine annealing (torch CosineAnnealingLR, eta_min 0): base * (1 + cos(pi * step / total)) / 2.
static inline float lr_cosine(float base, long step, long total)
{
    if (total <= 0) return base;
    if (step > total) step = total;
    return (float)(0.5 * base * (1.0 + cos(M_PI * (double)step / (double)total)));
}

// ---- loss and training-step settings ------------------------------------------
typedef enum { LOSS_DICE = 0, LOSS_DICE_CE = 1, LOSS_DICE_SIGMOID = 2 } loss_kind_t;
typedef struct {
    loss_kind_t loss;
    dice_cfg_t dice;
    double ce_weight;               // LOSS_DICE_CE: loss = dice + ce_weight * CE
    const regions_t *regions;       // LOSS_DICE_SIGMOID: classes == regions->R
    adam_cfg_t adam;
} train_cfg_t;
// Paper defaults: softmax Dice with background, smooth 1e-5 both, Adam(1e-4, 0.9, 0.999, 1e-8, wd 1e-5).
train_cfg_t train_cfg_default(void);

#define PRECISION_DECL "model_decl.h"
#include "both_precisions.h"

#endif
