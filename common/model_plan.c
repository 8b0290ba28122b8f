/*
model_plan.c -- lays out the one workspace of a training step for (batch N, patch D x H x W):
the activations model_backward needs (inputs of convs, norm statistics, ReLU outputs as masks,
Mamba saved tensors), the Mamba scratch (shared by all ToMs), the logits and their gradient,
and the gradient temporaries of the backward pass. Offsets are in elements, so the plan serves
the float and the double model alike. Extents per level follow architecture.md §7.2.
*/
#include "model.h"
#include "check.h"
#include <string.h>

typedef struct {
    size_t used;        // elements handed out
    size_t max_act;     // largest activation tensor, sizes the backward temporaries
} bump_t;

// 16-element alignment keeps every tensor 64-byte aligned in float and double.
static size_t take(bump_t *b, size_t n, int activation)
{
    size_t off = b->used;
    b->used += (n + 15) & ~(size_t)15;
    if (activation && n > b->max_act) b->max_act = n;
    return off;
}

static size_t vox(const int s[3]) { return (size_t)s[0] * s[1] * s[2]; }

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

static mamba_layer_t with_slices(const mamba_layer_t *t, size_t nslices)
{
    mamba_layer_t m = *t;
    m.nslices = nslices;
    return m;
}

int model_plan(model_plan_t *p, const model_t *m, int N, const int dims[3], char *err)
{
    memset(p, 0, sizeof *p);
    if (N < 1) return set_err(err, "batch %d must be >= 1", N);
    for (int a = 0; a < 3; a++)
        if (dims[a] < 16 || dims[a] % 16)
            return set_err(err, "patch size %dx%dx%d: every extent must be a positive multiple of 16 "
                           "(stride-2 stem and three downsamples meet the x2 upsamples)",
                           dims[0], dims[1], dims[2]);
    p->N = N;
    memcpy(p->dims, dims, sizeof p->dims);
    bump_t b = { 0, 0 };
    size_t scratch = 0;
    const int Cin = m->cfg.in_channels, K = m->cfg.classes;
    p->in_numel = (size_t)N * Cin * vox(dims);
    p->out_numel = (size_t)N * K * vox(dims);
    b.max_act = max_sz(p->in_numel, p->out_numel);

    for (int i = 0; i < MODEL_LEVELS; i++) {
        const model_level_t *L = &m->lv[i];
        level_plan_t *P = &p->lv[i];
        size_t nd = (size_t)N * L->d;
        for (int a = 0; a < 3; a++) {
            P->s[a] = i == 0 ? dims[a] / 2 : p->lv[i - 1].s[a] / 2;
            P->h[a] = (P->s[a] - 1) / 2 + 1;                    // Conv3d k5 s2 p2
            P->hp[a] = P->h[a] + (P->h[a] % 2);                 // ToM_A: odd -> pad high end by 1
            if (P->hp[a] != P->h[a]) P->pad_a = 1;
            int diff = P->s[a] - 2 * P->h[a];                   // 0 or -1
            // F.pad(x, [diff // 2, diff - diff // 2]) with Python's floor division:
            // -1 crops the FIRST element (offset +1).
            int fl = diff >= 0 ? diff / 2 : -((-diff + 1) / 2);
            P->crop_off[a] = -fl;
        }
        int h2[3] = { 2 * P->h[0], 2 * P->h[1], 2 * P->h[2] };
        P->numel_s = nd * vox(P->s);
        P->numel_h = nd * vox(P->h);
        P->numel_hp = nd * vox(P->hp);
        P->numel_2h = nd * vox(h2);

        P->X = take(&b, P->numel_s, 1);
        if (i > 0) {
            const level_plan_t *Q = &p->lv[i - 1];
            size_t ndp = (size_t)N * m->lv[i - 1].d;
            P->dn_c = take(&b, Q->numel_s, 1);
            P->dn_c_mean = take(&b, ndp, 0);
            P->dn_c_rstd = take(&b, ndp, 0);
            P->dn_n = take(&b, Q->numel_s, 1);
        }
        P->p1 = take(&b, P->numel_h, 1); P->p1_mean = take(&b, nd, 0); P->p1_rstd = take(&b, nd, 0);
        P->a1 = take(&b, P->numel_h, 1);
        P->p3 = take(&b, P->numel_h, 1); P->p3_mean = take(&b, nd, 0); P->p3_rstd = take(&b, nd, 0);
        P->a3 = take(&b, P->numel_h, 1);
        if (L->has_tom_a) {
            size_t Lt = vox(P->hp);
            mamba_layer_t t = with_slices(&L->tom_a, MODEL_TOM_A_SLICES);
            if (Lt % MODEL_TOM_A_SLICES)
                return set_err(err, "level %d: ToM_A over %zu tokens is not divisible by nslices %d",
                               i, Lt, MODEL_TOM_A_SLICES);
            P->ta_in = P->pad_a ? take(&b, P->numel_hp, 1) : P->a3;
            P->ta_out = take(&b, P->numel_hp, 1);
            P->ta_saved = take(&b, mamba_layer_saved_size(&t, N, Lt), 0);
            P->b = P->pad_a ? take(&b, P->numel_h, 1) : P->ta_out;
            scratch = max_sz(scratch, mamba_layer_scratch_size(&t, N, Lt));
        } else {
            P->b = P->a3;
        }
        P->p4 = take(&b, P->numel_h, 1); P->p4_mean = take(&b, nd, 0); P->p4_rstd = take(&b, nd, 0);
        P->a4 = take(&b, P->numel_h, 1);
        P->p5 = take(&b, P->numel_2h, 1); P->p5_mean = take(&b, nd, 0); P->p5_rstd = take(&b, nd, 0);
        P->a5 = take(&b, P->numel_2h, 1);
        P->Y = take(&b, P->numel_s, 1);
        for (int k = 0; k < L->nstage; k++) {
            P->st_out[k] = take(&b, P->numel_s, 1);
            if (L->stage_kind[k] == STAGE_TOM) {
                mamba_layer_t t = with_slices(&L->stage_tom[k], (size_t)P->s[0]);
                P->st_saved[k] = take(&b, mamba_layer_saved_size(&t, N, vox(P->s)), 0);
                scratch = max_sz(scratch, mamba_layer_scratch_size(&t, N, vox(P->s)));
            }
        }
        P->x = P->st_out[L->nstage - 1];
        P->xn = take(&b, P->numel_s, 1); P->xn_mean = take(&b, nd, 0); P->xn_rstd = take(&b, nd, 0);
        P->h1 = take(&b, 2 * P->numel_s, 1);
        P->g1 = take(&b, 2 * P->numel_s, 1);
        P->skip = take(&b, P->numel_s, 1);
    }
    for (int j = 0; j < 3; j++) {
        const model_dec_t *D = &m->dec[j];
        dec_plan_t *P = &p->dec[j];
        const level_plan_t *coarse = &p->lv[3 - j], *fine = &p->lv[2 - j];
        memcpy(P->s, fine->s, sizeof P->s);
        size_t nc = (size_t)N * D->c, ng = (size_t)N * 8;
        P->numel = nc * vox(P->s);
        P->u = take(&b, nc * vox(coarse->s), 1);
        P->v = take(&b, P->numel, 1);
        P->n1_mean = take(&b, ng, 0); P->n1_rstd = take(&b, ng, 0);
        P->r1 = take(&b, P->numel, 1);
        P->c1 = take(&b, P->numel, 1);
        P->n2_mean = take(&b, ng, 0); P->n2_rstd = take(&b, ng, 0);
        P->r2 = take(&b, P->numel, 1);
        P->out = take(&b, P->numel, 1);
    }
    p->logits = take(&b, p->out_numel, 1);
    p->dlogits = take(&b, p->out_numel, 1);
    p->scratch_numel = scratch;
    p->scratch = take(&b, scratch, 0);
    p->g_numel = b.max_act;
    for (int k = 0; k < 5; k++) p->g[k] = take(&b, p->g_numel, 0);
    for (int i = 0; i < MODEL_LEVELS; i++) p->dskip[i] = take(&b, p->lv[i].numel_s, 0);
    p->total = b.used;
    return 0;
}
