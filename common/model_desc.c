/*
model_desc.c -- the only place that decides where SegResMamba's parameters live.
model_describe() registers every executed tensor with the names and shapes of
params_M_btcv.txt (architecture.md §7.3), in that file's order, and records the offsets in the
layer structs of model.h. Variants (architecture.md, top section):
  M      CMMB with ToM_A; stage = stages.i.0 ToM, .1 Conv3, .2 ToM, .3 Conv3
  P      CMMB with ToM_A; stage = stages.i.0 ToM, .1 Conv3
  R      CMMB without ToM; stage = stages.i.0 Conv3           (the published code)
  no-tom M without any ToM: stages.i.1 and stages.i.3 only    (paper Table 5 ablation)
*/
#include "model.h"
#include "check.h"
#include <stdio.h>
#include <string.h>

model_cfg_t model_cfg_default(void)
{
    return (model_cfg_t){ .variant = MODEL_M, .width = 48, .in_channels = 1, .classes = 14 };
}

int model_cfg_preset(model_cfg_t *cfg, const char *name, char *err)
{
    if (strcmp(name, "tiny") == 0) cfg->width = 8;
    else if (strcmp(name, "demo") == 0) cfg->width = 16;
    else if (strcmp(name, "full") == 0) cfg->width = 48;
    else return set_err(err, "unknown model preset '%s' (tiny, demo, full)", name);
    return 0;
}

static const char *variant_names[] = { "M", "P", "R", "no-tom" };

int model_variant_parse(const char *s, model_variant_t *v, char *err)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, variant_names[i]) == 0) { *v = (model_variant_t)i; return 0; }
    return set_err(err, "unknown model variant '%s' (M, P, R, no-tom)", s);
}

const char *model_variant_name(model_variant_t v)
{
    return (unsigned)v < 4 ? variant_names[v] : "?";
}

int model_cfg_check(const model_cfg_t *c, char *err)
{
    if ((unsigned)c->variant > MODEL_NOTOM) return set_err(err, "bad model variant %d", c->variant);
    if (c->width < 8 || c->width % 8 || c->width > 4096)
        return set_err(err, "width %d must be a positive multiple of 8 (GroupNorm(8) groups)", c->width);
    if (c->in_channels < 1 || c->in_channels > 64)
        return set_err(err, "in_channels %d out of range 1..64", c->in_channels);
    if (c->classes < 1 || c->classes > 255)
        return set_err(err, "classes %d out of range 1..255", c->classes);
    return 0;
}

// ---- registration helpers --------------------------------------------------------

static size_t add(param_table_t *t, const char *name, int ndim, int d0, int d1, int d2, int d3, int d4)
{
    int shape[5] = { d0, d1, d2, d3, d4 };
    return param_table_add(t, name, ndim, shape);
}

// Conv3d (transposed = 0) or ConvTranspose3d (1) named prefix.weight / prefix.bias.
static conv_p_t add_conv(param_table_t *t, const char *prefix, int cin, int cout, int k, int bias,
                         int transposed)
{
    char name[PARAM_NAME_MAX + 32];   // param_table_add ASSERTs the real limit
    conv_p_t c = { .b = PARAM_NONE, .cin = cin, .cout = cout, .k = k };
    snprintf(name, sizeof name, "%s.weight", prefix);
    c.w = transposed ? add(t, name, 5, cin, cout, k, k, k) : add(t, name, 5, cout, cin, k, k, k);
    if (bias) {
        snprintf(name, sizeof name, "%s.bias", prefix);
        c.b = add(t, name, 1, cout, 0, 0, 0, 0);
    }
    return c;
}

// MambaLayer(d): norm.* then the v3 Mamba in nn.Module registration order (§5.2).
static void add_mamba(param_table_t *t, const char *prefix, int d, size_t nslices, mamba_layer_t *m)
{
    static const char *sfx[3] = { "", "_b", "_s" };
    char n[PARAM_NAME_MAX + 32];      // param_table_add ASSERTs the real limit
    memset(m, 0, sizeof *m);
    m->C = d; m->E = 2 * d; m->R = (d + 15) / 16; m->NS = 16; m->K = 4; m->nslices = nslices;
    int E = m->E, R = m->R;
    snprintf(n, sizeof n, "%s.norm.weight", prefix); m->norm_w = add(t, n, 1, d, 0, 0, 0, 0);
    snprintf(n, sizeof n, "%s.norm.bias", prefix);   m->norm_b = add(t, n, 1, d, 0, 0, 0, 0);
    for (int k = 0; k < 3; k++) {
        if (k == 0) snprintf(n, sizeof n, "%s.mamba.A_log", prefix);
        else snprintf(n, sizeof n, "%s.mamba.A%s_log", prefix, sfx[k]);
        m->A_log[k] = add(t, n, 2, E, 16, 0, 0, 0);
        snprintf(n, sizeof n, "%s.mamba.D%s", prefix, sfx[k]);
        m->D[k] = add(t, n, 1, E, 0, 0, 0, 0);
    }
    snprintf(n, sizeof n, "%s.mamba.in_proj.weight", prefix); m->in_proj = add(t, n, 2, 2 * E, d, 0, 0, 0);
    for (int k = 0; k < 3; k++) {
        snprintf(n, sizeof n, "%s.mamba.conv1d%s.weight", prefix, sfx[k]);
        m->conv_w[k] = add(t, n, 3, E, 1, 4, 0, 0);
        snprintf(n, sizeof n, "%s.mamba.conv1d%s.bias", prefix, sfx[k]);
        m->conv_b[k] = add(t, n, 1, E, 0, 0, 0, 0);
        snprintf(n, sizeof n, "%s.mamba.x_proj%s.weight", prefix, sfx[k]);
        m->x_proj[k] = add(t, n, 2, R + 32, E, 0, 0, 0);
        snprintf(n, sizeof n, "%s.mamba.dt_proj%s.weight", prefix, sfx[k]);
        m->dt_w[k] = add(t, n, 2, E, R, 0, 0, 0);
        snprintf(n, sizeof n, "%s.mamba.dt_proj%s.bias", prefix, sfx[k]);
        m->dt_b[k] = add(t, n, 1, E, 0, 0, 0, 0);
    }
    snprintf(n, sizeof n, "%s.mamba.out_proj.weight", prefix); m->out_proj = add(t, n, 2, d, E, 0, 0, 0);
}

// The stage layout per variant: kinds and the index each op has in the name stages.i.<idx>.
static int stage_layout(model_variant_t v, stage_kind_t kind[MODEL_STAGE_MAX], int idx[MODEL_STAGE_MAX])
{
    switch (v) {
    case MODEL_M:
        kind[0] = STAGE_TOM; kind[1] = STAGE_CONV; kind[2] = STAGE_TOM; kind[3] = STAGE_CONV;
        idx[0] = 0; idx[1] = 1; idx[2] = 2; idx[3] = 3;
        return 4;
    case MODEL_P:
        kind[0] = STAGE_TOM; kind[1] = STAGE_CONV; idx[0] = 0; idx[1] = 1;
        return 2;
    case MODEL_R:
        kind[0] = STAGE_CONV; idx[0] = 0;
        return 1;
    case MODEL_NOTOM:
        kind[0] = STAGE_CONV; kind[1] = STAGE_CONV; idx[0] = 1; idx[1] = 3;
        return 2;
    }
    return 0;
}

int model_describe(model_t *m, const model_cfg_t *cfg, char *err)
{
    if (model_cfg_check(cfg, err)) return -1;
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    param_table_t *t = &m->table;
    param_table_init(t);
    char n[PARAM_NAME_MAX];
    int w = cfg->width;
    for (int i = 0; i < MODEL_LEVELS; i++) m->lv[i].d = w << i;

    // encoder downsample layers (stem at level 0)
    m->lv[0].stem = add_conv(t, "vit.downsample_layers.0.0", cfg->in_channels, w, 7, 1, 0);
    for (int i = 1; i < MODEL_LEVELS; i++) {
        int dp = m->lv[i - 1].d, d = m->lv[i].d;
        snprintf(n, sizeof n, "vit.downsample_layers.%d.1", i);
        m->lv[i].down_conv = add_conv(t, n, dp, dp, 3, 1, 0);
        m->lv[i].down_conv.norm_fed = 1;            // -> the downsample's instance norm
        snprintf(n, sizeof n, "vit.downsample_layers.%d.3", i);
        m->lv[i].down_s2 = add_conv(t, n, dp, d, 2, 1, 0);
    }
    // stages
    for (int i = 0; i < MODEL_LEVELS; i++) {
        model_level_t *L = &m->lv[i];
        int idx[MODEL_STAGE_MAX];
        L->nstage = stage_layout(cfg->variant, L->stage_kind, idx);
        for (int k = 0; k < L->nstage; k++) {
            snprintf(n, sizeof n, "vit.stages.%d.%d", i, idx[k]);
            if (L->stage_kind[k] == STAGE_TOM) add_mamba(t, n, L->d, 0, &L->stage_tom[k]);
            else L->stage_conv[k] = add_conv(t, n, L->d, L->d, 3, 1, 0);
        }
        // the last stage op's output feeds only the level's instance norm IN(x)
        if (L->nstage > 0 && L->stage_kind[L->nstage - 1] == STAGE_CONV)
            L->stage_conv[L->nstage - 1].norm_fed = 1;
    }
    // CMMBs
    for (int i = 0; i < MODEL_LEVELS; i++) {
        model_level_t *L = &m->lv[i];
        int d = L->d;
        snprintf(n, sizeof n, "vit.gscs.%d.proj", i);  L->proj = add_conv(t, n, d, d, 5, 1, 0);
        snprintf(n, sizeof n, "vit.gscs.%d.proj3", i); L->proj3 = add_conv(t, n, d, d, 3, 1, 0);
        L->has_tom_a = cfg->variant == MODEL_M || cfg->variant == MODEL_P;
        if (L->has_tom_a) {
            snprintf(n, sizeof n, "vit.gscs.%d.mamba_layer", i);
            add_mamba(t, n, d, MODEL_TOM_A_SLICES, &L->tom_a);
        }
        snprintf(n, sizeof n, "vit.gscs.%d.proj4", i); L->proj4 = add_conv(t, n, d, d, 3, 1, 0);
        snprintf(n, sizeof n, "vit.gscs.%d.proj5", i); L->proj5 = add_conv(t, n, d, d, 5, 1, 1);
        // each CMMB conv feeds one of its instance norms only
        L->proj.norm_fed = L->proj3.norm_fed = L->proj4.norm_fed = L->proj5.norm_fed = 1;
    }
    // skip MLPs
    for (int i = 0; i < MODEL_LEVELS; i++) {
        model_level_t *L = &m->lv[i];
        snprintf(n, sizeof n, "vit.mlps.%d.fc1", i); L->fc1 = add_conv(t, n, L->d, 2 * L->d, 1, 1, 0);
        snprintf(n, sizeof n, "vit.mlps.%d.fc2", i); L->fc2 = add_conv(t, n, 2 * L->d, L->d, 1, 1, 0);
    }
    // decoder: ResBlocks, then the 1x1 up-convs (params_M_btcv.txt order)
    for (int j = 0; j < 3; j++) {
        model_dec_t *D = &m->dec[j];
        D->cin = m->lv[3 - j].d;
        D->c = m->lv[2 - j].d;
        snprintf(n, sizeof n, "segresnet.up_layers.%d.0.norm1.weight", j); D->gn1_w = add(t, n, 1, D->c, 0, 0, 0, 0);
        snprintf(n, sizeof n, "segresnet.up_layers.%d.0.norm1.bias", j);   D->gn1_b = add(t, n, 1, D->c, 0, 0, 0, 0);
        snprintf(n, sizeof n, "segresnet.up_layers.%d.0.norm2.weight", j); D->gn2_w = add(t, n, 1, D->c, 0, 0, 0, 0);
        snprintf(n, sizeof n, "segresnet.up_layers.%d.0.norm2.bias", j);   D->gn2_b = add(t, n, 1, D->c, 0, 0, 0, 0);
        snprintf(n, sizeof n, "segresnet.up_layers.%d.0.conv1.conv", j);
        D->conv1 = add_conv(t, n, D->c, D->c, 3, 0, 0);
        snprintf(n, sizeof n, "segresnet.up_layers.%d.0.conv2.conv", j);
        D->conv2 = add_conv(t, n, D->c, D->c, 3, 0, 0);
    }
    for (int j = 0; j < 3; j++) {
        snprintf(n, sizeof n, "segresnet.up_samples.%d.0.conv", j);
        m->dec[j].up = add_conv(t, n, m->dec[j].cin, m->dec[j].c, 1, 0, 0);
    }
    m->out = add_conv(t, "out", w, cfg->classes, 2, 1, 1);
    return 0;
}

void model_free(model_t *m)
{
    param_table_free(&m->table);
    memset(m, 0, sizeof *m);
}

// ---- import rule --------------------------------------------------------------------

// The never-executed MONAI SegResNet encoder built inside the authors' model (params_M_btcv.txt
// "[unused]" rows): convInit, down_layers (blocks_down = 1, 2, 2, 4) and conv_final.
static int is_unused_segresnet(const char *name)
{
    static const char *resblock[] = { "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
                                      "conv1.conv.weight", "conv2.conv.weight" };
    static const int blocks_down[4] = { 1, 2, 2, 4 };
    char n[PARAM_NAME_MAX];
    if (strcmp(name, "segresnet.convInit.conv.weight") == 0) return 1;
    if (strcmp(name, "segresnet.conv_final.0.weight") == 0) return 1;
    if (strcmp(name, "segresnet.conv_final.0.bias") == 0) return 1;
    if (strcmp(name, "segresnet.conv_final.2.conv.weight") == 0) return 1;
    if (strcmp(name, "segresnet.conv_final.2.conv.bias") == 0) return 1;
    for (int i = 0; i < 4; i++) {
        if (i > 0) {
            snprintf(n, sizeof n, "segresnet.down_layers.%d.0.conv.weight", i);
            if (strcmp(name, n) == 0) return 1;
        }
        for (int b = 1; b <= blocks_down[i]; b++)
            for (int r = 0; r < 6; r++) {
                snprintf(n, sizeof n, "segresnet.down_layers.%d.%d.%s", i, b, resblock[r]);
                if (strcmp(name, n) == 0) return 1;
            }
    }
    return 0;
}

int model_name_ignored_on_import(const model_t *m, const char *name)
{
    if (is_unused_segresnet(name)) return 1;
    if (m->cfg.variant == MODEL_R) {
        // the authors' CMMB builds MambaLayer(d) as gscs.i.mamba_layer but never calls it
        for (int i = 0; i < MODEL_LEVELS; i++) {
            char prefix[64];
            int n = snprintf(prefix, sizeof prefix, "vit.gscs.%d.mamba_layer.", i);
            if (strncmp(name, prefix, (size_t)n) == 0) return 1;
        }
    }
    return 0;
}

train_cfg_t train_cfg_default(void)
{
    train_cfg_t c;
    memset(&c, 0, sizeof c);
    c.loss = LOSS_DICE;
    c.dice = (dice_cfg_t){ .include_background = 1, .squared_pred = 0, .smooth_nr = 1e-5, .smooth_dr = 1e-5 };
    c.ce_weight = 1.0;
    c.adam = (adam_cfg_t){ .lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                           .weight_decay = 1e-5f, .decoupled = 0 };
    return c;
}
