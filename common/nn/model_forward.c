/*
model_forward.c -- SegResMamba forward on the CPU (architecture.md §2.2, §4, §7.2), plus the loss
and the whole training step. Built twice (float and double, see ops.h). One linear sequence of op
calls, like llm.c's gpt2_forward; every activation the backward needs goes to its fixed place in
the workspace planned by model_plan() (model.h), so nothing is allocated here.
Partner: model_backward.c walks the same sequence in reverse.
*/
#include "model.h"       // before real.h: model.h/mamba_layer.h define and undefine `real`
#include "check.h"
#include "real.h"
#include <string.h>

#define IN_EPS 1e-5   // InstanceNorm3d / GroupNorm default eps

// y = conv(x) over (N, cin, in) with a cubic kernel; stride and pad per call.
static void conv_fwd(real *y, const real *x, const real *P, const conv_p_t *c, int N,
                     const int in[3], int stride, int pad)
{
    conv3d_shape_t s = conv3d_shape(N, c->cin, c->cout, in, c->k, stride, pad);
    OP(conv3d_forward)(y, x, P + c->w, c->b == PARAM_NONE ? NULL : P + c->b, s);
}

// 1x1x1 convolution as a linear map over channels: (N, cin, S) -> (N, cout, S).
static void conv1_fwd(real *y, const real *x, const real *P, const conv_p_t *c, int N, size_t S)
{
    linear_shape_t s = { .N = N, .Cin = c->cin, .Cout = c->cout, .L = S };
    OP(linear_forward)(y, x, P + c->w, c->b == PARAM_NONE ? NULL : P + c->b, s);
}

// a = ReLU(IN(p)), stats saved for the backward.
static void in_relu_fwd(real *a, real *mean, real *rstd, const real *p, int N, int C, size_t S)
{
    OP(instancenorm_forward)(a, mean, rstd, p, N, C, S, IN_EPS);
    OP(relu_forward)(a, a, (size_t)N * C * S);
}

static size_t vox(const int s[3]) { return (size_t)s[0] * s[1] * s[2]; }

// One encoder level: stem/downsample, CMMB, stage, IN + skip MLP.
static void level_forward(real *ws, const real *P, const real *xin, const model_t *m,
                          const model_plan_t *p, int i)
{
    const model_level_t *L = &m->lv[i];
    const level_plan_t *A = &p->lv[i];
    const int N = p->N, d = L->d;
    const size_t Sh = vox(A->h), Ss = vox(A->s);
    int h2[3] = { 2 * A->h[0], 2 * A->h[1], 2 * A->h[2] };
    real *scratch = ws + p->scratch;

    // stem (level 0) or downsample: IN(x) [= xn of the level above] -> conv3 -> IN -> conv2 s2
    if (i == 0) {
        conv_fwd(ws + A->X, xin, P, &L->stem, N, p->dims, 2, 3);
    } else {
        const level_plan_t *B = &p->lv[i - 1];
        int dp = m->lv[i - 1].d;
        conv_fwd(ws + A->dn_c, ws + B->xn, P, &L->down_conv, N, B->s, 1, 1);
        OP(instancenorm_forward)(ws + A->dn_n, ws + A->dn_c_mean, ws + A->dn_c_rstd, ws + A->dn_c,
                                 N, dp, vox(B->s), IN_EPS);
        conv_fwd(ws + A->X, ws + A->dn_n, P, &L->down_s2, N, B->s, 2, 0);
    }

    // CMMB (gscs.i): conv5 s2 -> conv3 -> ToM_A -> conv3 -> convT5 s2, each IN + ReLU; + X
    conv_fwd(ws + A->p1, ws + A->X, P, &L->proj, N, A->s, 2, 2);
    in_relu_fwd(ws + A->a1, ws + A->p1_mean, ws + A->p1_rstd, ws + A->p1, N, d, Sh);
    conv_fwd(ws + A->p3, ws + A->a1, P, &L->proj3, N, A->h, 1, 1);
    in_relu_fwd(ws + A->a3, ws + A->p3_mean, ws + A->p3_rstd, ws + A->p3, N, d, Sh);
    if (L->has_tom_a) {
        static const int zero[3] = { 0, 0, 0 };
        mamba_layer_t t = L->tom_a;
        t.nslices = MODEL_TOM_A_SLICES;
        if (A->pad_a)   // odd extents: zero-pad the high end so L % nslices == 0, crop after
            OP(pad_crop3d_forward)(ws + A->ta_in, ws + A->a3, N, d, A->h, A->hp, zero);
        OP(mamba_layer_forward)(ws + A->ta_out, ws + A->ta_saved, scratch, ws + A->ta_in, P, &t,
                                N, vox(A->hp));
        if (A->pad_a)
            OP(pad_crop3d_forward)(ws + A->b, ws + A->ta_out, N, d, A->hp, A->h, zero);
    }
    conv_fwd(ws + A->p4, ws + A->b, P, &L->proj4, N, A->h, 1, 1);
    in_relu_fwd(ws + A->a4, ws + A->p4_mean, ws + A->p4_rstd, ws + A->p4, N, d, Sh);
    {
        conv3d_shape_t s = conv3d_shape(N, d, d, A->h, 5, 2, 2);
        for (int a = 0; a < 3; a++) s.outpad[a] = 1;
        OP(conv_transpose3d_forward)(ws + A->p5, ws + A->a4, P + L->proj5.w, P + L->proj5.b, s);
    }
    in_relu_fwd(ws + A->a5, ws + A->p5_mean, ws + A->p5_rstd, ws + A->p5, N, d, vox(h2));
    OP(pad_crop3d_forward)(ws + A->Y, ws + A->a5, N, d, h2, A->s, A->crop_off);
    OP(add_forward)(ws + A->Y, ws + A->Y, ws + A->X, A->numel_s);

    // stage: ToM (nslices = D extent of this level) and Conv3 in the variant's order
    const real *in = ws + A->Y;
    for (int k = 0; k < L->nstage; k++) {
        real *out = ws + A->st_out[k];
        if (L->stage_kind[k] == STAGE_TOM) {
            mamba_layer_t t = L->stage_tom[k];
            t.nslices = (size_t)A->s[0];
            OP(mamba_layer_forward)(out, ws + A->st_saved[k], scratch, in, P, &t, N, Ss);
        } else {
            conv_fwd(out, in, P, &L->stage_conv[k], N, A->s, 1, 1);
        }
        in = out;
    }

    // skip: fc2(GELU(fc1(IN(x)))); IN(x) is also the first step of the next downsample
    OP(instancenorm_forward)(ws + A->xn, ws + A->xn_mean, ws + A->xn_rstd, ws + A->x, N, d, Ss, IN_EPS);
    conv1_fwd(ws + A->h1, ws + A->xn, P, &L->fc1, N, Ss);
    OP(gelu_forward)(ws + A->g1, ws + A->h1, 2 * A->numel_s);
    conv1_fwd(ws + A->skip, ws + A->g1, P, &L->fc2, N, Ss);
}

// Decoder stage j: conv1x1 -> trilinear x2 -> + skip -> ResBlock(GN8, ReLU, conv3, no bias).
static void dec_forward(real *ws, const real *P, const model_t *m, const model_plan_t *p, int j)
{
    const model_dec_t *D = &m->dec[j];
    const dec_plan_t *A = &p->dec[j];
    const level_plan_t *coarse = &p->lv[3 - j], *fine = &p->lv[2 - j];
    const int N = p->N, c = D->c;
    const size_t S = vox(A->s);
    const real *xin = j == 0 ? ws + coarse->skip : ws + p->dec[j - 1].out;

    conv1_fwd(ws + A->u, xin, P, &D->up, N, vox(coarse->s));
    OP(upsample_trilinear2x_forward)(ws + A->v, ws + A->u, N, c, coarse->s);
    OP(add_forward)(ws + A->v, ws + A->v, ws + fine->skip, A->numel);

    OP(groupnorm_forward)(ws + A->r1, ws + A->n1_mean, ws + A->n1_rstd, ws + A->v,
                          P + D->gn1_w, P + D->gn1_b, N, c, 8, S, IN_EPS);
    OP(relu_forward)(ws + A->r1, ws + A->r1, A->numel);
    conv_fwd(ws + A->c1, ws + A->r1, P, &D->conv1, N, A->s, 1, 1);
    OP(groupnorm_forward)(ws + A->r2, ws + A->n2_mean, ws + A->n2_rstd, ws + A->c1,
                          P + D->gn2_w, P + D->gn2_b, N, c, 8, S, IN_EPS);
    OP(relu_forward)(ws + A->r2, ws + A->r2, A->numel);
    conv_fwd(ws + A->out, ws + A->r2, P, &D->conv2, N, A->s, 1, 1);
    OP(add_forward)(ws + A->out, ws + A->out, ws + A->v, A->numel);
}

void OP(model_forward)(real *ws, const real *params, const real *x, const model_t *m,
                       const model_plan_t *p)
{
    for (int i = 0; i < MODEL_LEVELS; i++)
        level_forward(ws, params, x, m, p, i);
    for (int j = 0; j < 3; j++)
        dec_forward(ws, params, m, p, j);
    // head: ConvTranspose3d(w, K, 2, s2) + bias -> logits (N, K, D, H, W)
    conv3d_shape_t s = conv3d_shape(p->N, m->out.cin, m->out.cout, p->dec[2].s, 2, 2, 0);
    OP(conv_transpose3d_forward)(ws + p->logits, ws + p->dec[2].out, params + m->out.w,
                                 params + m->out.b, s);
}

double OP(model_loss)(real *ws, const uint8_t *labels, const train_cfg_t *tc, const model_t *m,
                      const model_plan_t *p)
{
    const real *lg = ws + p->logits;
    real *dl = ws + p->dlogits;
    const int N = p->N, K = m->cfg.classes;
    const size_t S = vox(p->dims);
    double loss = 0;
    memset(dl, 0, p->out_numel * sizeof *dl);
    switch (tc->loss) {
    case LOSS_DICE_CE:
        loss += tc->ce_weight * OP(cross_entropy_forward)(lg, labels, N, K, S);
        OP(cross_entropy_backward)(dl, lg, labels, N, K, S, tc->ce_weight);
        __attribute__((fallthrough));     // plus the softmax Dice
    case LOSS_DICE:
        loss += OP(dice_softmax_forward)(lg, labels, N, K, S, tc->dice);
        OP(dice_softmax_backward)(dl, lg, labels, N, K, S, tc->dice, 1.0);
        break;
    case LOSS_DICE_SIGMOID:
        ASSERT(tc->regions && tc->regions->R == K);
        loss = OP(dice_sigmoid_forward)(lg, labels, N, S, tc->regions, tc->dice);
        OP(dice_sigmoid_backward)(dl, lg, labels, N, S, tc->regions, tc->dice, 1.0);
        break;
    }
    return loss;
}

double OP(model_train_step)(real *params, real *grads, real *adam_m, real *adam_v, real *ws,
                            const real *x, const uint8_t *labels, const train_cfg_t *tc,
                            float lr, long step, const model_t *m, const model_plan_t *p)
{
    memset(grads, 0, m->table.numel * sizeof *grads);
    OP(model_forward)(ws, params, x, m, p);
    double loss = OP(model_loss)(ws, labels, tc, m, p);
    OP(model_backward)(grads, NULL, ws, params, x, m, p);
    adam_cfg_t a = tc->adam;
    a.lr = lr;
    OP(adam_update)(params, adam_m, adam_v, grads, m->table.numel, a, step);
    return loss;
}
