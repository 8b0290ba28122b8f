/*
model_bwd.cu -- SegResMamba backward on the GPU: common/nn/model_backward.c walked op for op,
channels-last, over the training plan of model_plan_gpu.cu. Parameter gradients ACCUMULATE into
G (fp32, device layout); activation gradients live in the plan's temporaries, each zeroed right
before the op that accumulates into it (every _gpu backward accumulates).
Recomputed here instead of kept: ReLU(IN(.)) / ReLU(GN(.)) outputs that are conv inputs (into
Tr, statistics into tmean/trstd: the same kernel on the same input gives the same values), the
downsample IN output and GELU(h1). The fused norm backward (relu = 1) rebuilds the ReLU mask
from the pre-norm tensor, so no mask is kept either.
Buffers: Ta, Tg rotate as temporaries (Tg, Tr overlap the Mamba scratch: never live during a
Mamba call; and each Mamba layer's scratch overlaps the saved tensors of everything after it in
the forward, all consumed before its backward runs); DX carries the level's running gradient; XN[i & 1] holds d IN(x_i), which the skip
MLP i and the downsample of level i+1 both feed; dskip[i] = d skip_i, which is also where the
decoder keeps d out of its stage 2-i (the two are the same tensor after the residual add).
*/
#include "model_internal.cuh"

static size_t vox(const int s[3]) { return (size_t)s[0] * s[1] * s[2]; }

typedef struct {
    gpu_ctx_t *g;
    const gm_plan_t *p;
    const gm_params_t *q;
    float *G;
    const model_t *m;
    gm_prof_t *pr;
} bctx_t;

static void zero(const bctx_t *c, void *x, size_t n)
{
    gm_prof(c->pr, c->g, GPU_KIND_ELEMENTWISE);
    gpu_memset(c->g, x, 0, n * c->q->es);
}

// A norm-fed conv's (conv_p_t.norm_fed) bias gradient is exactly zero -- each instance norm
// subtracts its channel's mean, and the gradient it passes back sums to zero over the voxels.
// Computed, it would be the bf16 rounding noise of that sum (which Adam, dividing by the
// gradient's running magnitude, turns into lr-sized steps of a bias the output does not depend
// on), so it is not computed and stays 0.
static float *conv_bias_grad(const bctx_t *c, const conv_p_t *cp)
{
    return cp->norm_fed ? NULL : gm_gb(c->G, cp->b);
}
static void conv_b(const bctx_t *c, void *dx, const void *dy, const void *x, const conv_p_t *cp,
                   int N, const int in[3], int stride, int pad)
{
    gm_prof(c->pr, c->g, GPU_KIND_CONV);
    conv3d_shape_t s = conv3d_shape(N, cp->cin, cp->cout, in, cp->k, stride, pad);
    conv3d_backward_gpu(c->g, dx, c->G + cp->w, conv_bias_grad(c, cp), dy, x, gm_w(c->q, cp->w), s);
}

static void conv1_b(const bctx_t *c, void *dx, const void *dy, const void *x, const conv_p_t *cp,
                    int N, size_t S)
{
    gm_prof(c->pr, c->g, GPU_KIND_GEMM);
    linear_shape_t s = { .N = N, .Cin = cp->cin, .Cout = cp->cout, .L = S, .x_nstride = 0,
                         .y_nstride = 0 };
    linear_backward_gpu(c->g, dx, c->G + cp->w, gm_gb(c->G, cp->b), dy, x, gm_w(c->q, cp->w), s);
}

// dx += d IN(x)[+ReLU]/dx . dy with the saved statistics.
static void in_b(const bctx_t *c, void *dx, const void *dy, const void *x, const float *mean,
                 const float *rstd, int N, int C, size_t S, int relu)
{
    gm_prof(c->pr, c->g, GPU_KIND_NORM);
    instancenorm_backward_gpu(c->g, dx, dy, x, mean, rstd, N, C, S, relu);
}

// Tr = IN(x)[+ReLU], recomputed (statistics into the plan's temporaries).
static void in_re(const bctx_t *c, const void *x, int N, int C, size_t S, int relu)
{
    gm_prof(c->pr, c->g, GPU_KIND_NORM);
    instancenorm_forward_gpu(c->g, c->p->Tr, c->p->tmean, c->p->trstd, x, N, C, S, GM_IN_EPS, relu);
}

static void mamba_b(const bctx_t *c, void *dx, const void *dy, const void *x, const void *saved,
                    void *scratch, const mamba_layer_t *t, int N, size_t L)
{
    gm_prof(c->pr, c->g, GPU_KIND_MAMBA);
    mamba_layer_backward_gpu(c->g, dx, c->G, gm_scratch(c->p, scratch), dy, x, saved, c->q->p,
                             c->q->pa, t, N, L);
}

// Decoder stage j, entering with d out_j in dskip[2-j]; leaves d skip_{2-j} there and
// d out_{j-1} (or d skip_3 for j = 0) in dskip[3-j].
static void dec_backward(const bctx_t *c, int j)
{
    gpu_ctx_t *g = c->g;
    const gm_plan_t *p = c->p;
    const model_dec_t *MD = &c->m->dec[j];
    const gm_dec_t *A = &p->dec[j];
    const gm_level_t *coarse = &p->lv[3 - j];
    const int N = p->N, ch = MD->c;
    const size_t S = vox(A->s), n = A->numel;
    const float *P = c->q->p;
    void *dout = p->dskip[2 - j];

    // out = conv2(ReLU(GN2(c1))) + v, c1 = conv1(ReLU(GN1(v)))
    gm_prof(c->pr, g, GPU_KIND_NORM);
    groupnorm_forward_gpu(g, p->Tr, p->tmean, p->trstd, A->c1, P + MD->gn2_w, P + MD->gn2_b, N,
                          ch, 8, S, GM_IN_EPS, 1);                              // r2
    zero(c, p->Ta, n);
    conv_b(c, p->Ta, dout, p->Tr, &MD->conv2, N, A->s, 1, 1);
    zero(c, p->Tg, n);
    gm_prof(c->pr, g, GPU_KIND_NORM);
    groupnorm_backward_gpu(g, p->Tg, c->G + MD->gn2_w, c->G + MD->gn2_b, p->Ta, A->c1,
                           A->n2_mean, A->n2_rstd, P + MD->gn2_w, P + MD->gn2_b, N, ch, 8, S, 1);
    gm_prof(c->pr, g, GPU_KIND_NORM);
    groupnorm_forward_gpu(g, p->Tr, p->tmean, p->trstd, A->v, P + MD->gn1_w, P + MD->gn1_b, N,
                          ch, 8, S, GM_IN_EPS, 1);                              // r1
    zero(c, p->Ta, n);
    conv_b(c, p->Ta, p->Tg, p->Tr, &MD->conv1, N, A->s, 1, 1);
    // the residual already put d out into dout: the GN1 path on top gives d v = d skip_{2-j}
    gm_prof(c->pr, g, GPU_KIND_NORM);
    groupnorm_backward_gpu(g, dout, c->G + MD->gn1_w, c->G + MD->gn1_b, p->Ta, A->v, A->n1_mean,
                           A->n1_rstd, P + MD->gn1_w, P + MD->gn1_b, N, ch, 8, S, 1);
    // v = up(u) + skip: d u = up^T(d v)
    const size_t nu = (size_t)N * ch * vox(coarse->s);
    zero(c, p->Ta, nu);
    gm_prof(c->pr, g, GPU_KIND_COPY);
    upsample_trilinear2x_backward_gpu(g, p->Ta, dout, N, ch, coarse->s);
    // u = conv1x1(x_in), x_in = skip_3 (j == 0) or out_{j-1}
    void *dnext = p->dskip[3 - j];
    zero(c, dnext, coarse->numel_s);
    conv1_b(c, dnext, p->Ta, j == 0 ? coarse->skip : p->dec[j - 1].out, &MD->up, N,
            vox(coarse->s));
}

// Encoder level i: needs dskip[i] and d IN(x_i) in XN[i & 1]; leaves d IN(x_{i-1}) in
// XN[(i-1) & 1] (i > 0).
static void level_backward(const bctx_t *c, int i)
{
    gpu_ctx_t *g = c->g;
    const gm_plan_t *p = c->p;
    const model_level_t *ML = &c->m->lv[i];
    const gm_level_t *A = &p->lv[i];
    const int N = p->N, d = ML->d;
    const size_t Ss = vox(A->s), Sh = vox(A->h), ns = A->numel_s, nh = A->numel_h;
    const int h2[3] = { 2 * A->h[0], 2 * A->h[1], 2 * A->h[2] };
    static const int zero3[3] = { 0, 0, 0 };
    void *XN = p->XN[i & 1], *Ta = p->Ta, *Tg = p->Tg, *Tr = p->Tr, *DX = p->DX;

    // skip MLP: skip = fc2(GELU(fc1(xn))) -> XN += d xn
    gm_prof(c->pr, g, GPU_KIND_ELEMENTWISE);
    gelu_forward_gpu(g, Tg, A->h1, 2 * ns);                                     // g1
    zero(c, Ta, 2 * ns);
    conv1_b(c, Ta, p->dskip[i], Tg, &ML->fc2, N, Ss);
    zero(c, Tg, 2 * ns);
    gm_prof(c->pr, g, GPU_KIND_ELEMENTWISE);
    gelu_backward_gpu(g, Tg, Ta, A->h1, 2 * ns);
    conv1_b(c, XN, Tg, A->xn, &ML->fc1, N, Ss);

    // xn = IN(x); then the stage in reverse, ping-ponging so that dY ends in DX
    void *dcur = (ML->nstage & 1) ? Ta : DX, *dnext = (ML->nstage & 1) ? DX : Ta;
    zero(c, dcur, ns);
    in_b(c, dcur, XN, A->x, A->xn_mean, A->xn_rstd, N, d, Ss, 0);
    for (int k = ML->nstage - 1; k >= 0; k--) {
        const void *in = k ? A->st_out[k - 1] : A->Y;
        zero(c, dnext, ns);
        if (ML->stage_kind[k] == STAGE_TOM) {
            mamba_layer_t t = ML->stage_tom[k];
            t.nslices = (size_t)A->s[0];
            mamba_b(c, dnext, dcur, in, A->st_saved[k], A->st_scratch[k], &t, N, Ss);
        } else {
            // the last stage op's output x feeds only IN(x)
            conv_b(c, dnext, dcur, in, &ML->stage_conv[k], N, A->s, 1, 1);
        }
        void *t = dcur; dcur = dnext; dnext = t;
    }
    ASSERT(dcur == DX);
    // DX = dY. Y = X + crop(a5): DX is also d X's residual share.
    zero(c, Ta, A->numel_2h);
    gm_prof(c->pr, g, GPU_KIND_COPY);
    pad_crop3d_backward_gpu(g, Ta, DX, N, d, h2, A->s, A->crop_off);              // d a5
    zero(c, Tg, A->numel_2h);
    in_b(c, Tg, Ta, A->p5, A->p5_mean, A->p5_rstd, N, d, vox(h2), 1);           // d p5
    in_re(c, A->p4, N, d, Sh, 1);                                               // a4
    zero(c, Ta, nh);
    {
        gm_prof(c->pr, g, GPU_KIND_CONV);
        conv3d_shape_t s = conv3d_shape(N, d, d, A->h, 5, 2, 2);
        for (int a = 0; a < 3; a++) s.outpad[a] = 1;
        conv_transpose3d_backward_gpu(g, Ta, c->G + ML->proj5.w, conv_bias_grad(c, &ML->proj5),
                                      Tg, Tr, gm_w(c->q, ML->proj5.w), s);        // d a4
    }
    zero(c, Tg, nh);
    in_b(c, Tg, Ta, A->p4, A->p4_mean, A->p4_rstd, N, d, Sh, 1);                // d p4
    zero(c, Ta, nh);
    conv_b(c, Ta, Tg, A->b, &ML->proj4, N, A->h, 1, 1);                         // d b
    const void *da3 = Ta;
    if (ML->has_tom_a) {          // XN is free again (d xn consumed above)
        mamba_layer_t t = ML->tom_a;
        t.nslices = MODEL_TOM_A_SLICES;
        if (A->pad_a) {
            zero(c, XN, A->numel_hp);
            gm_prof(c->pr, g, GPU_KIND_COPY);
            pad_crop3d_backward_gpu(g, XN, Ta, N, d, A->hp, A->h, zero3);       // d ta_out
            zero(c, Ta, A->numel_hp);
            mamba_b(c, Ta, XN, A->ta_in, A->ta_saved, A->ta_scratch, &t, N, vox(A->hp));
            zero(c, XN, nh);
            gm_prof(c->pr, g, GPU_KIND_COPY);
            pad_crop3d_backward_gpu(g, XN, Ta, N, d, A->h, A->hp, zero3);       // d a3
        } else {
            zero(c, XN, nh);
            mamba_b(c, XN, Ta, A->ta_in, A->ta_saved, A->ta_scratch, &t, N, Sh);
        }
        da3 = XN;
    }
    zero(c, Tg, nh);
    in_b(c, Tg, da3, A->p3, A->p3_mean, A->p3_rstd, N, d, Sh, 1);               // d p3
    in_re(c, A->p1, N, d, Sh, 1);                                               // a1
    zero(c, Ta, nh);
    conv_b(c, Ta, Tg, Tr, &ML->proj3, N, A->h, 1, 1);                           // d a1
    zero(c, Tg, nh);
    in_b(c, Tg, Ta, A->p1, A->p1_mean, A->p1_rstd, N, d, Sh, 1);                // d p1
    conv_b(c, DX, Tg, A->X, &ML->proj, N, A->s, 2, 2);                          // DX = d X

    if (i == 0) {
        // the stem's weight gradient through its block form (stem_s2d.cu); no input gradient
        gm_prof(c->pr, c->g, GPU_KIND_CONV);
        const conv3d_shape_t st = gm_stem_shape(c->m, N, p->dims);
        gpu_memset(c->g, p->stem_dw, 0, gm_stem_w_numel(c->m, p) * sizeof(float));
        conv3d_backward_gpu(c->g, NULL, p->stem_dw, gm_gb(c->G, ML->stem.b), DX, p->x, p->stem_w,
                            stem_s2d_shape(st));
        stem_s2d_grad_fold_gpu(c->g, c->G + ML->stem.w, p->stem_dw, st);
        return;
    }
    // X = conv2s2(IN(conv3(xn_{i-1})))
    const gm_level_t *B = &p->lv[i - 1];
    const int dp = c->m->lv[i - 1].d;
    in_re(c, A->dn_c, N, dp, vox(B->s), 0);                                     // dn_n
    zero(c, Ta, B->numel_s);
    conv_b(c, Ta, DX, Tr, &ML->down_s2, N, B->s, 2, 0);
    zero(c, Tg, B->numel_s);
    in_b(c, Tg, Ta, A->dn_c, A->dn_mean, A->dn_rstd, N, dp, vox(B->s), 0);
    void *XNp = p->XN[(i - 1) & 1];
    zero(c, XNp, B->numel_s);
    conv_b(c, XNp, Tg, B->xn, &ML->down_conv, N, B->s, 1, 1);
}

void gm_backward(gpu_ctx_t *g, const gm_plan_t *p, const gm_params_t *q, float *G,
                 const model_t *m, gm_prof_t *pr)
{
    const bctx_t c = { g, p, q, G, m, pr };
    // head: logits = convT2s2(out_2) -> d out_2 into dskip[0]
    zero(&c, p->dskip[0], p->dec[2].numel);
    gm_prof(pr, g, GPU_KIND_CONV);
    head_d2s_backward_gpu(g, p->dskip[0], G + m->out.w, p->head_dw, G + m->out.b, p->head_dyb,
                          p->dlogits, p->dec[2].out, p->head_w, gm_head_shape(m, p->N, p->dec[2].s));
    for (int j = 2; j >= 0; j--) dec_backward(&c, j);
    zero(&c, p->XN[3 & 1], p->lv[3].numel_s);     // nothing below level 3 feeds IN(x_3)
    for (int i = MODEL_LEVELS - 1; i >= 0; i--) level_backward(&c, i);
}
