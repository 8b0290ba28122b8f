/*
model_backward.c -- SegResMamba backward on the CPU: model_forward.c's sequence in reverse.
Built twice (float and double). Reads the activations model_forward saved in the workspace and
ACCUMULATES parameter gradients into grads (same layout as params); activation gradients live
in the plan's temporaries g[0..4] and dskip[0..3]. Every op backward accumulates (ops.h), so a
temporary is zeroed right before the op that fills it.
Buffer use: g[0..2] rotate as temporaries; g[3 + (i & 1)] holds d IN(x_i) of level i, which both
the skip MLP i and the downsample of level i+1 feed.
*/
#include "model.h"       // before real.h: model.h/mamba_layer.h define and undefine `real`
#include "check.h"
#include "real.h"
#include <string.h>

static size_t vox(const int s[3]) { return (size_t)s[0] * s[1] * s[2]; }

static void zero(real *x, size_t n) { memset(x, 0, n * sizeof *x); }

static void swap(real **a, real **b) { real *t = *a; *a = *b; *b = t; }

// dx += d conv(x)/dx . dy; G (grads) += dW, db. dx may be NULL.
static void conv_bwd(real *dx, real *G, const real *dy, const real *x, const real *P,
                     const conv_p_t *c, int N, const int in[3], int stride, int pad)
{
    conv3d_shape_t s = conv3d_shape(N, c->cin, c->cout, in, c->k, stride, pad);
    OP(conv3d_backward)(dx, G + c->w, c->b == PARAM_NONE ? NULL : G + c->b, dy, x, P + c->w, s);
}

static void conv1_bwd(real *dx, real *G, const real *dy, const real *x, const real *P,
                      const conv_p_t *c, int N, size_t S)
{
    linear_shape_t s = { .N = N, .Cin = c->cin, .Cout = c->cout, .L = S };
    OP(linear_backward)(dx, G + c->w, c->b == PARAM_NONE ? NULL : G + c->b, dy, x, P + c->w, s);
}

// a = ReLU(IN(p)): dp += IN'(ReLU'(da)). tmp: N*C*S scratch. a serves as the ReLU mask.
static void in_relu_bwd(real *dp, real *tmp, const real *da, const real *a, const real *p,
                        const real *mean, const real *rstd, int N, int C, size_t S)
{
    size_t n = (size_t)N * C * S;
    zero(tmp, n);
    OP(relu_backward)(tmp, da, a, n);
    OP(instancenorm_backward)(dp, tmp, p, mean, rstd, N, C, S);
}

// Decoder stage j, entering with *cur = d out_j; leaves d out_{j-1} in *cur (j > 0) or
// d skip_3 in dskip[3] (j == 0), and d skip_{2-j} in dskip[2-j].
static void dec_backward(real *G, real *ws, const real *P, real **cur, real **ta, real **tb,
                         const model_t *m, const model_plan_t *p, int j)
{
    const model_dec_t *D = &m->dec[j];
    const dec_plan_t *A = &p->dec[j];
    const level_plan_t *coarse = &p->lv[3 - j];
    const int N = p->N, c = D->c;
    const size_t S = vox(A->s), n = A->numel;
    real *Ta = *ta, *Tb = *tb, *dout = *cur;

    // out = conv2(ReLU(GN2(c1))) + v,  c1 = conv1(ReLU(GN1(v)))
    zero(Ta, n); conv_bwd(Ta, G, dout, ws + A->r2, P, &D->conv2, N, A->s, 1, 1);
    zero(Tb, n); OP(relu_backward)(Tb, Ta, ws + A->r2, n);
    zero(Ta, n);
    OP(groupnorm_backward)(Ta, G + D->gn2_w, G + D->gn2_b, Tb, ws + A->c1, ws + A->n2_mean,
                           ws + A->n2_rstd, P + D->gn2_w, N, c, 8, S);
    zero(Tb, n); conv_bwd(Tb, G, Ta, ws + A->r1, P, &D->conv1, N, A->s, 1, 1);
    zero(Ta, n); OP(relu_backward)(Ta, Tb, ws + A->r1, n);
    // the residual already put d out into dout: accumulate the GN1 path on top -> d v
    OP(groupnorm_backward)(dout, G + D->gn1_w, G + D->gn1_b, Ta, ws + A->v, ws + A->n1_mean,
                           ws + A->n1_rstd, P + D->gn1_w, N, c, 8, S);
    // v = up(u) + skip_{2-j}
    memcpy(ws + p->dskip[2 - j], dout, n * sizeof *dout);
    size_t nu = (size_t)N * c * vox(coarse->s);
    zero(Ta, nu); OP(upsample_trilinear2x_backward)(Ta, dout, N, c, coarse->s);
    // u = conv1x1(x_in), x_in = skip_3 (j == 0) or out_{j-1}
    if (j == 0) {
        real *dskip3 = ws + p->dskip[3];
        zero(dskip3, coarse->numel_s);
        conv1_bwd(dskip3, G, Ta, ws + coarse->skip, P, &D->up, N, vox(coarse->s));
    } else {
        zero(Tb, p->dec[j - 1].numel);
        conv1_bwd(Tb, G, Ta, ws + p->dec[j - 1].out, P, &D->up, N, vox(coarse->s));
        *cur = Tb; *tb = dout;      // rotate: d out_{j-1} becomes current
    }
}

// Encoder level i. Needs dskip[i] and, in g[3 + (i & 1)], d IN(x_i) from the level below
// (zero for level 3). Leaves d IN(x_{i-1}) in g[3 + ((i-1) & 1)], or accumulates dx (i == 0).
static void level_backward(real *G, real *dx, real *ws, const real *P, const real *x,
                           const model_t *m, const model_plan_t *p, int i)
{
    const model_level_t *L = &m->lv[i];
    const level_plan_t *A = &p->lv[i];
    const int N = p->N, d = L->d;
    const size_t Ss = vox(A->s), Sh = vox(A->h), ns = A->numel_s, nh = A->numel_h;
    int h2[3] = { 2 * A->h[0], 2 * A->h[1], 2 * A->h[2] };
    real *scratch = ws + p->scratch;
    real *DX = ws + p->g[0], *Ta = ws + p->g[1], *Tb = ws + p->g[2];
    real *XN = ws + p->g[3 + (i & 1)];

    // skip MLP: skip = fc2(GELU(fc1(xn)))  -> XN += d xn
    zero(Ta, 2 * ns); conv1_bwd(Ta, G, ws + p->dskip[i], ws + A->g1, P, &L->fc2, N, Ss);
    zero(Tb, 2 * ns); OP(gelu_backward)(Tb, Ta, ws + A->h1, 2 * ns);
    conv1_bwd(XN, G, Tb, ws + A->xn, P, &L->fc1, N, Ss);
    // xn = IN(x)
    zero(DX, ns);
    OP(instancenorm_backward)(DX, XN, ws + A->x, ws + A->xn_mean, ws + A->xn_rstd, N, d, Ss);
    real *Tc = XN;      // consumed: free as a temporary from here on

    // stage, in reverse
    for (int k = L->nstage - 1; k >= 0; k--) {
        const real *in = ws + (k ? A->st_out[k - 1] : A->Y);
        zero(Ta, ns);
        if (L->stage_kind[k] == STAGE_TOM) {
            mamba_layer_t t = L->stage_tom[k];
            t.nslices = (size_t)A->s[0];
            OP(mamba_layer_backward)(Ta, G, scratch, DX, in, ws + A->st_saved[k], P, &t, N, Ss);
        } else {
            conv_bwd(Ta, G, DX, in, P, &L->stage_conv[k], N, A->s, 1, 1);
        }
        swap(&DX, &Ta);
    }
    // DX = dY. Y = X + crop(a5): DX is also d X's residual share.
    zero(Ta, A->numel_2h);
    OP(pad_crop3d_backward)(Ta, DX, N, d, h2, A->s, A->crop_off);
    zero(Tb, A->numel_2h);
    in_relu_bwd(Tb, Tc, Ta, ws + A->a5, ws + A->p5, ws + A->p5_mean, ws + A->p5_rstd, N, d, vox(h2));
    zero(Ta, nh);
    {
        conv3d_shape_t s = conv3d_shape(N, d, d, A->h, 5, 2, 2);
        for (int a = 0; a < 3; a++) s.outpad[a] = 1;
        OP(conv_transpose3d_backward)(Ta, G + L->proj5.w, G + L->proj5.b, Tb, ws + A->a4,
                                      P + L->proj5.w, s);
    }
    zero(Tb, nh);
    in_relu_bwd(Tb, Tc, Ta, ws + A->a4, ws + A->p4, ws + A->p4_mean, ws + A->p4_rstd, N, d, Sh);
    zero(Ta, nh); conv_bwd(Ta, G, Tb, ws + A->b, P, &L->proj4, N, A->h, 1, 1);     // Ta = d b
    if (L->has_tom_a) {
        static const int zero3[3] = { 0, 0, 0 };
        mamba_layer_t t = L->tom_a;
        t.nslices = MODEL_TOM_A_SLICES;
        if (A->pad_a) {
            zero(Tb, A->numel_hp);
            OP(pad_crop3d_backward)(Tb, Ta, N, d, A->hp, A->h, zero3);         // d ta_out
            zero(Tc, A->numel_hp);
            OP(mamba_layer_backward)(Tc, G, scratch, Tb, ws + A->ta_in, ws + A->ta_saved, P, &t,
                                     N, vox(A->hp));
            zero(Ta, nh);
            OP(pad_crop3d_backward)(Ta, Tc, N, d, A->h, A->hp, zero3);         // d a3
        } else {
            zero(Tb, nh);
            OP(mamba_layer_backward)(Tb, G, scratch, Ta, ws + A->ta_in, ws + A->ta_saved, P, &t,
                                     N, Sh);
            swap(&Ta, &Tb);
        }
    }
    zero(Tb, nh);
    in_relu_bwd(Tb, Tc, Ta, ws + A->a3, ws + A->p3, ws + A->p3_mean, ws + A->p3_rstd, N, d, Sh);
    zero(Ta, nh); conv_bwd(Ta, G, Tb, ws + A->a1, P, &L->proj3, N, A->h, 1, 1);
    zero(Tb, nh);
    in_relu_bwd(Tb, Tc, Ta, ws + A->a1, ws + A->p1, ws + A->p1_mean, ws + A->p1_rstd, N, d, Sh);
    conv_bwd(DX, G, Tb, ws + A->X, P, &L->proj, N, A->s, 2, 2);                   // DX = d X

    if (i == 0) {
        conv_bwd(dx, G, DX, x, P, &L->stem, N, p->dims, 2, 3);
        return;
    }
    // X = conv2s2(IN(conv3(xn_{i-1})))
    const level_plan_t *B = &p->lv[i - 1];
    const int dp = m->lv[i - 1].d;
    real *XNp = ws + p->g[3 + ((i - 1) & 1)];
    zero(Ta, B->numel_s); conv_bwd(Ta, G, DX, ws + A->dn_n, P, &L->down_s2, N, B->s, 2, 0);
    zero(Tb, B->numel_s);
    OP(instancenorm_backward)(Tb, Ta, ws + A->dn_c, ws + A->dn_c_mean, ws + A->dn_c_rstd, N, dp,
                              vox(B->s));
    zero(XNp, B->numel_s); conv_bwd(XNp, G, Tb, ws + B->xn, P, &L->down_conv, N, B->s, 1, 1);
}

void OP(model_backward)(real *grads, real *dx, real *ws, const real *params, const real *x,
                        const model_t *m, const model_plan_t *p)
{
    real *cur = ws + p->g[0], *ta = ws + p->g[1], *tb = ws + p->g[2];
    // head: logits = convT2s2(out_2)
    zero(cur, p->dec[2].numel);
    conv3d_shape_t s = conv3d_shape(p->N, m->out.cin, m->out.cout, p->dec[2].s, 2, 2, 0);
    OP(conv_transpose3d_backward)(cur, grads + m->out.w, grads + m->out.b, ws + p->dlogits,
                                  ws + p->dec[2].out, params + m->out.w, s);
    for (int j = 2; j >= 0; j--)
        dec_backward(grads, ws, params, &cur, &ta, &tb, m, p, j);
    zero(ws + p->g[3 + (3 & 1)], p->lv[3].numel_s);     // nothing below level 3 feeds IN(x_3)
    for (int i = MODEL_LEVELS - 1; i >= 0; i--)
        level_backward(grads, dx, ws, params, x, m, p, i);
}
