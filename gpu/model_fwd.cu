/*
model_fwd.cu -- SegResMamba forward on the GPU: common/nn/model_forward.c's op sequence, op for
op, channels-last, into the buffers of a gm_plan_t (training plan: model_plan_gpu.cu; inference
plan: infer.cu). Differences in form only: IN -> ReLU and GN -> ReLU are one fused op, and the
activated outputs go to temporaries the backward recomputes (the plan decides what is kept).
Every op is preceded by a profiling boundary (gm_prof, a no-op unless a profile is running).
*/
#include "model_internal.cuh"

static size_t vox(const int s[3]) { return (size_t)s[0] * s[1] * s[2]; }

// y = conv(x) with a cubic kernel; bias fused by conv3d_forward_gpu, except for a norm-fed conv
// (conv_p_t.norm_fed: y feeds only instance norms, which subtract each channel's mean -- the
// bias cannot change the model's output, so its pass over y is skipped; model_bwd.cu's conv_b
// leaves its gradient at 0)
static const float *conv_bias(const gm_params_t *q, const conv_p_t *c)
{
    return c->norm_fed ? NULL : gm_b(q, c->b);
}
static void conv_f(gpu_ctx_t *g, gm_prof_t *pr, void *y, const void *x, const gm_params_t *q,
                   const conv_p_t *c, int N, const int in[3], int stride, int pad)
{
    gm_prof(pr, g, GPU_KIND_CONV);
    conv3d_shape_t s = conv3d_shape(N, c->cin, c->cout, in, c->k, stride, pad);
    conv3d_forward_gpu(g, y, x, gm_w(q, c->w), conv_bias(q, c), s);
}

// 1x1x1 convolution = one GEMM over the N*S tokens.
static void conv1_f(gpu_ctx_t *g, gm_prof_t *pr, void *y, const void *x, const gm_params_t *q,
                    const conv_p_t *c, int N, size_t S)
{
    gm_prof(pr, g, GPU_KIND_GEMM);
    linear_shape_t s = { .N = N, .Cin = c->cin, .Cout = c->cout, .L = S, .x_nstride = 0,
                         .y_nstride = 0 };
    linear_forward_gpu(g, y, x, gm_w(q, c->w), gm_b(q, c->b), s);
}

static void in_f(gpu_ctx_t *g, gm_prof_t *pr, void *y, float *mean, float *rstd, const void *x,
                 int N, int C, size_t S, int relu)
{
    gm_prof(pr, g, GPU_KIND_NORM);
    instancenorm_forward_gpu(g, y, mean, rstd, x, N, C, S, GM_IN_EPS, relu);
}

static void mamba_f(gpu_ctx_t *g, gm_prof_t *pr, void *y, void *saved, void *scratch,
                    const void *x, const gm_params_t *q, const mamba_layer_t *t, int N, size_t L)
{
    gm_prof(pr, g, GPU_KIND_MAMBA);
    mamba_layer_forward_gpu(g, y, saved, scratch, x, q->p, q->pa, t, N, L);
}

static void level_forward(gpu_ctx_t *g, const gm_plan_t *p, const gm_params_t *q,
                          const model_t *m, gm_prof_t *pr, int i)
{
    const model_level_t *ML = &m->lv[i];
    const gm_level_t *A = &p->lv[i];
    const int N = p->N, d = ML->d;
    const size_t Sh = vox(A->h), Ss = vox(A->s);
    const int h2[3] = { 2 * A->h[0], 2 * A->h[1], 2 * A->h[2] };
    static const int zero[3] = { 0, 0, 0 };

    // stem (level 0) or downsample: IN(x) [= xn of the level above] -> conv3 -> IN -> conv2 s2
    if (i == 0) {
        // the stem as a convolution of the input's 2x2x2 blocks (stem_s2d.cu)
        gm_prof(pr, g, GPU_KIND_CONV);
        const conv3d_shape_t st = gm_stem_shape(m, N, p->dims);
        stem_s2d_weight_gpu(g, p->stem_w, gm_w(q, ML->stem.w), st);
        conv3d_forward_gpu(g, A->X, p->x, p->stem_w, gm_b(q, ML->stem.b), stem_s2d_shape(st));
    } else {
        const gm_level_t *B = &p->lv[i - 1];
        conv_f(g, pr, A->dn_c, B->xn, q, &ML->down_conv, N, B->s, 1, 1);
        in_f(g, pr, A->dn_n, A->dn_mean, A->dn_rstd, A->dn_c, N, m->lv[i - 1].d, vox(B->s), 0);
        conv_f(g, pr, A->X, A->dn_n, q, &ML->down_s2, N, B->s, 2, 0);
    }

    // CMMB: conv5 s2 -> conv3 -> ToM_A -> conv3 -> convT5 s2, each IN + ReLU; + X
    conv_f(g, pr, A->p1, A->X, q, &ML->proj, N, A->s, 2, 2);
    in_f(g, pr, A->a1, A->p1_mean, A->p1_rstd, A->p1, N, d, Sh, 1);
    conv_f(g, pr, A->p3, A->a1, q, &ML->proj3, N, A->h, 1, 1);
    in_f(g, pr, A->a3, A->p3_mean, A->p3_rstd, A->p3, N, d, Sh, 1);
    if (ML->has_tom_a) {
        mamba_layer_t t = ML->tom_a;
        t.nslices = MODEL_TOM_A_SLICES;
        if (A->pad_a) {     // odd extents: zero-pad the high end, crop after
            gm_prof(pr, g, GPU_KIND_COPY);
            pad_crop3d_forward_gpu(g, A->ta_in, A->a3, N, d, A->h, A->hp, zero);
        }
        mamba_f(g, pr, A->ta_out, A->ta_saved, gm_scratch(p, A->ta_scratch), A->ta_in, q, &t, N,
                vox(A->hp));
        if (A->pad_a) {
            gm_prof(pr, g, GPU_KIND_COPY);
            pad_crop3d_forward_gpu(g, A->b, A->ta_out, N, d, A->hp, A->h, zero);
        }
    }
    conv_f(g, pr, A->p4, A->b, q, &ML->proj4, N, A->h, 1, 1);
    in_f(g, pr, A->a4, A->p4_mean, A->p4_rstd, A->p4, N, d, Sh, 1);
    {
        gm_prof(pr, g, GPU_KIND_CONV);
        conv3d_shape_t s = conv3d_shape(N, d, d, A->h, 5, 2, 2);
        for (int a = 0; a < 3; a++) s.outpad[a] = 1;
        conv_transpose3d_forward_gpu(g, A->p5, A->a4, gm_w(q, ML->proj5.w), conv_bias(q, &ML->proj5),
                                     s);
    }
    in_f(g, pr, A->a5, A->p5_mean, A->p5_rstd, A->p5, N, d, vox(h2), 1);
    gm_prof(pr, g, GPU_KIND_COPY);
    pad_crop3d_forward_gpu(g, A->Y, A->a5, N, d, h2, A->s, A->crop_off);
    gm_prof(pr, g, GPU_KIND_ELEMENTWISE);
    add_forward_gpu(g, A->Y, A->Y, A->X, A->numel_s);

    // stage: ToM (nslices = D extent of the level) and Conv3 in the variant's order
    const void *in = A->Y;
    for (int k = 0; k < ML->nstage; k++) {
        void *out = A->st_out[k];
        if (ML->stage_kind[k] == STAGE_TOM) {
            mamba_layer_t t = ML->stage_tom[k];
            t.nslices = (size_t)A->s[0];
            mamba_f(g, pr, out, A->st_saved[k], gm_scratch(p, A->st_scratch[k]), in, q, &t, N, Ss);
        } else {
            conv_f(g, pr, out, in, q, &ML->stage_conv[k], N, A->s, 1, 1);
        }
        in = out;
    }

    // skip: fc2(GELU(fc1(IN(x)))); IN(x) also feeds the next downsample
    in_f(g, pr, A->xn, A->xn_mean, A->xn_rstd, A->x, N, d, Ss, 0);
    conv1_f(g, pr, A->h1, A->xn, q, &ML->fc1, N, Ss);
    gm_prof(pr, g, GPU_KIND_ELEMENTWISE);
    gelu_forward_gpu(g, A->g1, A->h1, 2 * A->numel_s);
    conv1_f(g, pr, A->skip, A->g1, q, &ML->fc2, N, Ss);
}

// Decoder stage j: conv1x1 -> trilinear x2 -> + skip -> ResBlock(GN8, ReLU, conv3, no bias).
static void dec_forward(gpu_ctx_t *g, const gm_plan_t *p, const gm_params_t *q, const model_t *m,
                        gm_prof_t *pr, int j)
{
    const model_dec_t *MD = &m->dec[j];
    const gm_dec_t *A = &p->dec[j];
    const gm_level_t *coarse = &p->lv[3 - j], *fine = &p->lv[2 - j];
    const int N = p->N, c = MD->c;
    const size_t S = vox(A->s);
    const void *xin = j == 0 ? coarse->skip : p->dec[j - 1].out;

    conv1_f(g, pr, A->u, xin, q, &MD->up, N, vox(coarse->s));
    gm_prof(pr, g, GPU_KIND_COPY);
    upsample_trilinear2x_forward_gpu(g, A->v, A->u, N, c, coarse->s);
    gm_prof(pr, g, GPU_KIND_ELEMENTWISE);
    add_forward_gpu(g, A->v, A->v, fine->skip, A->numel);
    gm_prof(pr, g, GPU_KIND_NORM);
    groupnorm_forward_gpu(g, A->r1, A->n1_mean, A->n1_rstd, A->v, q->p + MD->gn1_w,
                          q->p + MD->gn1_b, N, c, 8, S, GM_IN_EPS, 1);
    conv_f(g, pr, A->c1, A->r1, q, &MD->conv1, N, A->s, 1, 1);
    gm_prof(pr, g, GPU_KIND_NORM);
    groupnorm_forward_gpu(g, A->r2, A->n2_mean, A->n2_rstd, A->c1, q->p + MD->gn2_w,
                          q->p + MD->gn2_b, N, c, 8, S, GM_IN_EPS, 1);
    conv_f(g, pr, A->out, A->r2, q, &MD->conv2, N, A->s, 1, 1);
    gm_prof(pr, g, GPU_KIND_ELEMENTWISE);
    add_forward_gpu(g, A->out, A->out, A->v, A->numel);
}

void gm_forward(gpu_ctx_t *g, const gm_plan_t *p, const gm_params_t *q, const model_t *m,
                gm_prof_t *pr)
{
    for (int i = 0; i < MODEL_LEVELS; i++) level_forward(g, p, q, m, pr, i);
    for (int j = 0; j < 3; j++) dec_forward(g, p, q, m, pr, j);
    // head: ConvTranspose3d(w, K, 2, s2) + bias -> logits (N, S, K), as a GEMM (head_d2s.cu)
    gm_prof(pr, g, GPU_KIND_CONV);
    const conv3d_shape_t s = gm_head_shape(m, p->N, p->dec[2].s);
    head_d2s_weight_gpu(g, p->head_w, gm_w(q, m->out.w), s);
    head_d2s_forward_gpu(g, p->logits, p->head_yb, p->dec[2].out, p->head_w, gm_b(q, m->out.b), s);
}
