/*
model_plan_gpu.cu -- the whole model's device state: the training buffer plan (one arena, sized
by running the same layout function in counting mode first), conv plan preparation, the
parameter / gradient / Adam buffers and their host I/O, where the ONE layout conversion of the
conv weights happens (PyTorch (A, B, k) <-> channels-last (A, k, B), gm_params_layout).

What the training plan keeps (bf16 in bf16 mode) and what it recomputes, against the CPU plan
(common/model_plan.c): conv outputs BEFORE their norm are kept, the ReLU(IN(.)) / ReLU(GN(.))
outputs are recomputed in the backward (a1, a4, a5, dn_n, r1, r2), GELU(h1) too. Saved tensors
form a stack in forward order and every Mamba layer's scratch starts at the stack top behind its
own saved tensors (lay_out below); the temporaries Tg and Tr sit at the arena's end, inside the
largest Mamba scratch (never live at the same time); dlogits lives in Ta and the logits in Tg.
SRM_GPU_PLAN_VERBOSE=1 logs where the arena's bytes go (gm_plan_log).
*/
#include "model_internal.cuh"
#include <stdlib.h>
#include <string.h>

static size_t vox(const int s[3]) { return (size_t)s[0] * s[1] * s[2]; }
static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }

int gm_plan_geometry(gm_plan_t *p, const model_t *m, int N, const int dims[3], char *err)
{
    memset(p, 0, sizeof *p);
    model_plan_t cp;
    if (model_plan(&cp, m, N, dims, err)) return -1;
    p->N = N;
    memcpy(p->dims, dims, sizeof p->dims);
    p->in_numel = cp.in_numel;
    p->out_numel = cp.out_numel;
    for (int i = 0; i < MODEL_LEVELS; i++) {
        const level_plan_t *c = &cp.lv[i];
        gm_level_t *L = &p->lv[i];
        memcpy(L->s, c->s, sizeof L->s);
        memcpy(L->h, c->h, sizeof L->h);
        memcpy(L->hp, c->hp, sizeof L->hp);
        memcpy(L->crop_off, c->crop_off, sizeof L->crop_off);
        L->pad_a = c->pad_a;
        L->numel_s = c->numel_s; L->numel_h = c->numel_h;
        L->numel_hp = c->numel_hp; L->numel_2h = c->numel_2h;
        if (m->lv[i].has_tom_a && vox(c->hp) % MODEL_TOM_A_SLICES)
            return set_err(err, "level %d: ToM_A over %zu tokens is not divisible by %d", i,
                           vox(c->hp), MODEL_TOM_A_SLICES);
    }
    for (int j = 0; j < 3; j++) {
        memcpy(p->dec[j].s, cp.dec[j].s, sizeof p->dec[j].s);
        p->dec[j].numel = cp.dec[j].numel;
    }
    return 0;
}

// Add `bytes` to the accounting item `what` (a static string; same pointer = same item).
static void acct(gm_plan_t *p, const char *what, size_t bytes)
{
    for (int i = 0; i < p->nacct; i++)
        if (p->acct[i].what == what) { p->acct[i].bytes += bytes; return; }
    ASSERT(p->nacct < GM_ACCT_MAX);
    p->acct[p->nacct].what = what;
    p->acct[p->nacct++].bytes = bytes;
}

void gm_plan_log(const gm_plan_t *p)
{
    const double MiB = 1024.0 * 1024.0;
    log_msg('I', "training plan, batch %d, %dx%dx%d: arena %.1f MiB", p->N, p->dims[0],
            p->dims[1], p->dims[2], (double)p->bytes / MiB);
    for (int i = 0; i < p->nacct; i++)
        log_msg('I', "  %-52s %9.1f MiB", p->acct[i].what, (double)p->acct[i].bytes / MiB);
}

static mamba_layer_t with_slices(const mamba_layer_t *t, size_t nslices)
{
    mamba_layer_t r = *t;
    r.nslices = nslices;
    return r;
}

// Sizes (elements) of the backward's shared temporaries.
typedef struct { size_t nTa, nTg, nTr, nDX, nXN[2], nstat; } gm_tmp_sizes_t;

static gm_tmp_sizes_t tmp_sizes(const gm_plan_t *p, const model_t *m)
{
    gm_tmp_sizes_t z = { p->out_numel, p->out_numel, 0, 0, { 0, 0 }, 0 };
    for (int i = 0; i < MODEL_LEVELS; i++) {
        const gm_level_t *L = &p->lv[i];
        z.nTa = zmax(z.nTa, zmax(zmax(2 * L->numel_s, L->numel_hp), L->numel_2h));
        z.nTg = zmax(z.nTg, zmax(2 * L->numel_s, L->numel_2h));
        z.nTr = zmax(z.nTr, zmax(zmax(L->numel_s, L->numel_2h), L->numel_hp));
        if (i > 0) z.nTr = zmax(z.nTr, p->lv[i - 1].numel_s);
        z.nDX = zmax(z.nDX, L->numel_s);
        z.nXN[i & 1] = zmax(z.nXN[i & 1], zmax(L->numel_s, L->numel_hp));
        z.nstat = zmax(z.nstat, (size_t)p->N * m->lv[i].d);
    }
    for (int j = 0; j < 3; j++) {
        const gm_level_t *coarse = &p->lv[3 - j];
        z.nTa = zmax(z.nTa, (size_t)p->N * m->dec[j].c * vox(coarse->s));
        z.nTg = zmax(z.nTg, p->dec[j].numel);
        z.nTr = zmax(z.nTr, p->dec[j].numel);
    }
    return z;
}

/*
One pass of the training layout. Three kinds of memory:
  fixed    x, Ta, DX, XN[2], statistics, dskip: live across Mamba calls, at the bottom.
  saved    every tensor the backward reads, bump-allocated in forward order above the fixed
           part. The backward consumes them in reverse order, so they form a stack: while a
           layer runs (forward or backward) everything allocated after it is dead -- not yet
           written in the forward, already consumed in the backward.
  scratch  each Mamba layer's scratch starts at the stack top right after its own saved
           tensors (so it overlaps only tensors of later layers, levels and the decoder);
           `reach` is the highest byte any of them touches.
Tg | Tr (the backward's and forward's other temporaries) sit at `top`, the last tgtr bytes of
the arena: above every saved tensor, overlapping only Mamba scratch -- and no Mamba call runs
while anything in Tg or Tr is live (model_fwd.cu / model_bwd.cu use them between calls only).
With base NULL nothing is written but the accounting and the two extents.
*/
static void lay_out(gm_plan_t *p, gpu_ctx_t *g, const model_t *m, const gm_tmp_sizes_t *z,
                    char *base, size_t top, size_t *saved_end, size_t *reach)
{
    static const char *lv_act[MODEL_LEVELS] = {
        "level 0: saved conv outputs, stats, stage outputs, MLP",
        "level 1: saved conv outputs, stats, stage outputs, MLP",
        "level 2: saved conv outputs, stats, stage outputs, MLP",
        "level 3: saved conv outputs, stats, stage outputs, MLP" };
    static const char *lv_mamba[MODEL_LEVELS] = {
        "level 0: Mamba saved (G, chunk states)", "level 1: Mamba saved (G, chunk states)",
        "level 2: Mamba saved (G, chunk states)", "level 3: Mamba saved (G, chunk states)" };
    const int N = p->N;
    const size_t es = gpu_dtype_size(gpu_act_dtype(g));
    const size_t tg = gpu_arena_round(z->nTg * es);
    gm_bump_t b = { base, 0, 0 };
    size_t mark = 0, hi = 0;
    p->nacct = 0;
#define GM_ACCT(what) do { acct(p, what, b.off - mark); mark = b.off; } while (0)
    // The Mamba scratch of one layer: at the stack top, not taken.
#define GM_SCRATCH(dst, bytes) do { (dst) = base ? base + b.off : NULL; \
                                    hi = zmax(hi, b.off + (bytes)); } while (0)
    p->scratch = NULL;
    p->Tg = base ? base + top : NULL;
    p->Tr = base ? base + top + tg : NULL;
    p->logits = p->Tg;

    p->x = gm_take(&b, gm_x_numel(m, p) * es);
    p->stem_w = gm_take(&b, gm_stem_w_numel(m, p) * es);
    p->stem_dw = (float *)gm_take(&b, gm_stem_w_numel(m, p) * sizeof(float));
    p->head_w = gm_take(&b, (size_t)8 * m->out.cout * m->out.cin * es);
    p->head_dw = (float *)gm_take(&b, (size_t)8 * m->out.cout * m->out.cin * sizeof(float));
    GM_ACCT("input x (2x2x2 blocks), the stem's and head's GEMM-form weights and gradients");
    p->Ta = gm_take(&b, z->nTa * es);
    p->dlogits = p->Ta;
    p->head_yb = p->Ta;                             // decoder u is dead by the head
    p->head_dyb = p->Tg;                            // logits are dead once dlogits exist
    GM_ACCT("Ta (backward temporary; dlogits, decoder u)");
    p->DX = gm_take(&b, z->nDX * es);
    p->XN[0] = gm_take(&b, z->nXN[0] * es);
    p->XN[1] = gm_take(&b, (z->nXN[1] ? z->nXN[1] : 1) * es);
    p->tmean = (float *)gm_take(&b, z->nstat * sizeof(float));
    p->trstd = (float *)gm_take(&b, z->nstat * sizeof(float));
    GM_ACCT("DX, XN[2], recomputed-norm statistics");
    for (int i = 0; i < MODEL_LEVELS; i++) p->dskip[i] = gm_take(&b, p->lv[i].numel_s * es);
    GM_ACCT("dskip[4] (d skip_i / d decoder outputs)");

    // Saved tensors, in forward order.
    for (int i = 0; i < MODEL_LEVELS; i++) {
        gm_level_t *L = &p->lv[i];
        const model_level_t *ML = &m->lv[i];
        const size_t nd = (size_t)N * ML->d, st = nd * sizeof(float);
        L->X = gm_take(&b, L->numel_s * es);
        if (i > 0) {
            size_t ndp = (size_t)N * m->lv[i - 1].d;
            L->dn_c = gm_take(&b, p->lv[i - 1].numel_s * es);
            L->dn_mean = (float *)gm_take(&b, ndp * sizeof(float));
            L->dn_rstd = (float *)gm_take(&b, ndp * sizeof(float));
            L->dn_n = p->Tr;
        }
        L->p1 = gm_take(&b, L->numel_h * es);
        L->p1_mean = (float *)gm_take(&b, st); L->p1_rstd = (float *)gm_take(&b, st);
        L->a1 = p->Tr;
        L->p3 = gm_take(&b, L->numel_h * es);
        L->p3_mean = (float *)gm_take(&b, st); L->p3_rstd = (float *)gm_take(&b, st);
        if (ML->has_tom_a) {
            mamba_layer_t t = with_slices(&ML->tom_a, MODEL_TOM_A_SLICES);
            L->ta_in = gm_take(&b, L->numel_hp * es);
            L->a3 = L->pad_a ? p->Tr : L->ta_in;
            L->ta_out = gm_take(&b, L->numel_hp * es);
            GM_ACCT(lv_act[i]);
            L->ta_saved = gm_take(&b, mamba_layer_gpu_saved_bytes(g, &t, N, vox(L->hp)));
            GM_ACCT(lv_mamba[i]);
            GM_SCRATCH(L->ta_scratch, mamba_layer_gpu_scratch_bytes(g, &t, N, vox(L->hp)));
            // b is written after the ToM_A call and read before its backward: it may sit in
            // the layer's scratch
            L->b = L->pad_a ? gm_take(&b, L->numel_h * es) : L->ta_out;
        } else {
            L->a3 = L->b = gm_take(&b, L->numel_h * es);
        }
        L->p4 = gm_take(&b, L->numel_h * es);
        L->p4_mean = (float *)gm_take(&b, st); L->p4_rstd = (float *)gm_take(&b, st);
        L->a4 = p->Tr;
        L->p5 = gm_take(&b, L->numel_2h * es);
        L->p5_mean = (float *)gm_take(&b, st); L->p5_rstd = (float *)gm_take(&b, st);
        L->a5 = p->Tr;
        L->Y = gm_take(&b, L->numel_s * es);
        for (int k = 0; k < ML->nstage; k++) {
            L->st_out[k] = gm_take(&b, L->numel_s * es);
            if (ML->stage_kind[k] == STAGE_TOM) {
                mamba_layer_t t = with_slices(&ML->stage_tom[k], (size_t)L->s[0]);
                GM_ACCT(lv_act[i]);
                L->st_saved[k] = gm_take(&b, mamba_layer_gpu_saved_bytes(g, &t, N, vox(L->s)));
                GM_ACCT(lv_mamba[i]);
                GM_SCRATCH(L->st_scratch[k], mamba_layer_gpu_scratch_bytes(g, &t, N, vox(L->s)));
            }
        }
        L->x = L->st_out[ML->nstage - 1];
        L->xn = gm_take(&b, L->numel_s * es);
        L->xn_mean = (float *)gm_take(&b, st); L->xn_rstd = (float *)gm_take(&b, st);
        L->h1 = gm_take(&b, 2 * L->numel_s * es);
        L->g1 = p->Tg;
        L->skip = gm_take(&b, L->numel_s * es);
        GM_ACCT(lv_act[i]);
    }
    for (int j = 0; j < 3; j++) {
        gm_dec_t *D = &p->dec[j];
        const size_t ng = (size_t)N * 8 * sizeof(float);
        D->u = p->Ta;
        D->v = gm_take(&b, D->numel * es);
        D->n1_mean = (float *)gm_take(&b, ng); D->n1_rstd = (float *)gm_take(&b, ng);
        D->r1 = p->Tr;
        D->c1 = gm_take(&b, D->numel * es);
        D->n2_mean = (float *)gm_take(&b, ng); D->n2_rstd = (float *)gm_take(&b, ng);
        D->r2 = p->Tr;
        D->out = gm_take(&b, D->numel * es);
    }
    GM_ACCT("decoder: v, c1, out, GN statistics");
#undef GM_SCRATCH
#undef GM_ACCT
    *saved_end = b.off;
    *reach = hi;
}

int gm_plan_training(gm_plan_t *p, gpu_ctx_t *g, const model_t *m, int N, const int dims[3],
                     char *base, char *err)
{
    if (gm_plan_geometry(p, m, N, dims, err)) return -1;
    const size_t es = gpu_dtype_size(gpu_act_dtype(g));
    const gm_tmp_sizes_t z = tmp_sizes(p, m);
    const size_t tgtr = gpu_arena_round(z.nTg * es) + gpu_arena_round(z.nTr * es);
    size_t saved_end = 0, reach = 0;
    lay_out(p, g, m, &z, NULL, 0, &saved_end, &reach);
    // Tg | Tr: the arena's last bytes, above every saved tensor
    const size_t total = zmax(reach, saved_end + tgtr), top = total - tgtr;
    if (base) {
        size_t s2 = 0, r2 = 0;
        lay_out(p, g, m, &z, base, top, &s2, &r2);
        ASSERT(s2 == saved_end && r2 == reach);
    }
    acct(p, "above the saved stack: Mamba scratch reach, Tg | Tr inside", total - saved_end);
    p->bytes = total;
    return 0;
}

size_t gpu_model_arena_bytes(gpu_ctx_t *g, const model_t *m, int N, const int dims[3], char *err)
{
    gm_plan_t p;
    if (gm_plan_training(&p, g, m, N, dims, NULL, err)) return 0;
    return p.bytes;
}

// ---- conv plans ----------------------------------------------------------------------------------
static void prep_conv(gpu_ctx_t *g, const conv_p_t *c, int N, const int in[3], int stride, int pad)
{
    conv3d_prepare_gpu(g, conv3d_shape(N, c->cin, c->cout, in, c->k, stride, pad), 1);
}

void gm_prepare_convs(gpu_ctx_t *g, const model_t *m, const gm_plan_t *p)
{
    const int N = p->N;
    gpu_conv_freeze(g, 0);
    for (int i = 0; i < MODEL_LEVELS; i++) {
        const model_level_t *ML = &m->lv[i];
        const gm_level_t *L = &p->lv[i];
        if (i == 0) {
            conv3d_prepare_gpu(g, stem_s2d_shape(gm_stem_shape(m, N, p->dims)), 0);
        } else {
            prep_conv(g, &ML->down_conv, N, p->lv[i - 1].s, 1, 1);
            prep_conv(g, &ML->down_s2, N, p->lv[i - 1].s, 2, 0);
        }
        prep_conv(g, &ML->proj, N, L->s, 2, 2);
        prep_conv(g, &ML->proj3, N, L->h, 1, 1);
        prep_conv(g, &ML->proj4, N, L->h, 1, 1);
        conv3d_shape_t s = conv3d_shape(N, ML->d, ML->d, L->h, 5, 2, 2);
        for (int a = 0; a < 3; a++) s.outpad[a] = 1;
        conv_transpose3d_prepare_gpu(g, s);
        for (int k = 0; k < ML->nstage; k++)
            if (ML->stage_kind[k] == STAGE_CONV) prep_conv(g, &ML->stage_conv[k], N, L->s, 1, 1);
    }
    for (int j = 0; j < 3; j++) {
        prep_conv(g, &m->dec[j].conv1, N, p->dec[j].s, 1, 1);
        prep_conv(g, &m->dec[j].conv2, N, p->dec[j].s, 1, 1);
    }
    gpu_conv_freeze(g, 1);
}

// ---- parameter layout ----------------------------------------------------------------------------
// Every 5-D tensor of the table is a conv weight: (A, B, k0, k1, k2) with A = Cout, B = Cin
// (conv) or A = Cin, B = Cout (convT). The device keeps (A, k, B).
void gm_params_layout(const model_t *m, float *dst, const float *src, int dir)
{
    memcpy(dst, src, m->table.numel * sizeof *dst);
    for (int t = 0; t < m->table.count; t++) {
        const param_t *P = &m->table.items[t];
        if (P->ndim != 5) continue;
        const size_t A = (size_t)P->shape[0], B = (size_t)P->shape[1];
        const size_t S = (size_t)P->shape[2] * P->shape[3] * P->shape[4];
        if (S == 1) continue;
        const float *s = src + P->offset;
        float *d = dst + P->offset;
        for (size_t a = 0; a < A; a++)
            for (size_t c = 0; c < B; c++)
                for (size_t k = 0; k < S; k++) {
                    size_t pt = (a * B + c) * S + k, cl = (a * S + k) * B + c;
                    if (dir > 0) d[cl] = s[pt];
                    else d[pt] = s[cl];
                }
    }
}

float gm_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// ---- the model state -----------------------------------------------------------------------------
gpu_model_t *gpu_model_new(gpu_ctx_t *g, const model_t *m, const train_cfg_t *tc, int N,
                           const int dims[3], char *err)
{
    gm_plan_t probe;
    if (gm_plan_training(&probe, g, m, N, dims, NULL, err)) return NULL;
    if (m->cfg.classes > 32) {
        set_err(err, "%d classes: the GPU losses keep at most 32 in registers", m->cfg.classes);
        return NULL;
    }
    if (tc->loss == LOSS_DICE_SIGMOID && (!tc->regions || tc->regions->R != m->cfg.classes)) {
        set_err(err, "sigmoid Dice needs regions with R == classes (%d)", m->cfg.classes);
        return NULL;
    }
    // cuDNN reads weights 16-byte aligned: every conv weight offset must be a multiple of 8.
    for (int t = 0; t < m->table.count; t++)
        if (m->table.items[t].ndim == 5 && m->table.items[t].offset % 8) {
            set_err(err, "parameter %s at offset %zu is not 16-byte aligned in bf16",
                    m->table.items[t].name, m->table.items[t].offset);
            return NULL;
        }
    gpu_model_t *gm = (gpu_model_t *)xcalloc(1, sizeof *gm);
    gm->g = g;
    gm->m = m;
    gm->tc = tc;
    gm->N = N;
    memcpy(gm->dims, dims, sizeof gm->dims);
    gm->numel = m->table.numel;
    const size_t pb = gm->numel * sizeof(float);
    gm->param_bytes = gm_params_alloc(g, gm->numel, "model parameters", "bf16 weight copy",
                                      &gm->params, &gm->params16, &gm->q);
    gm->grads = (float *)gpu_malloc(g, pb, "model gradients");
    gm->adam_m = (float *)gpu_malloc(g, pb, "Adam m");
    gm->adam_v = (float *)gpu_malloc(g, pb, "Adam v");
    gm->param_bytes += 3 * pb;
    gpu_memset(g, gm->grads, 0, pb);
    gpu_memset(g, gm->adam_m, 0, pb);
    gpu_memset(g, gm->adam_v, 0, pb);

    const size_t S = (size_t)dims[0] * dims[1] * dims[2];
    gm->x_stage = (float *)gpu_malloc(g, probe.in_numel * sizeof(float), "input staging");
    gm->labels = (uint8_t *)gpu_malloc(g, (size_t)N * S, "labels");
    gm->loss = (float *)gpu_malloc(g, 4 * sizeof(float), "loss");
    gm->adam_dev = (gm_adam_scalars_t *)gpu_malloc(g, sizeof *gm->adam_dev, "Adam scalars");
    gpu_memset(g, gm->loss, 0, 4 * sizeof(float));

    gm->arena = gpu_arena_new(g, probe.bytes, "model activation arena");
    char *base = (char *)gpu_arena_alloc(gm->arena, probe.bytes);
    if (gm_plan_training(&gm->plan, g, m, N, dims, base, err)) ASSERT(0);   // passed above
    ASSERT(gm->plan.bytes == probe.bytes);
    // Conv autotuning may time its candidates on the arena: nothing in it is live yet.
    gpu_conv_tune_scratch(g, base, probe.bytes);
    gm_prepare_convs(g, m, &gm->plan);
    gpu_conv_tune_scratch(g, NULL, 0);
    const char *pv = getenv("SRM_GPU_PLAN_VERBOSE");
    if (pv && *pv && *pv != '0') gm_plan_log(&gm->plan);

    const char *ng = getenv("SRM_GPU_NO_GRAPH");
    gm->use_graph = !(ng && *ng && *ng != '0');
    gpu_sync(g);
    return gm;
}

void gpu_model_free(gpu_model_t **gmp)
{
    gpu_model_t *gm = *gmp;
    if (!gm) return;
    gpu_ctx_t *g = gm->g;
    gpu_sync(g);
    if (gm->graph) CUDA_CHECK(cudaGraphExecDestroy(gm->graph));
    gpu_timer_free(&gm->step_timer);
    gpu_arena_destroy(&gm->arena);
    gpu_free(g, gm->adam_dev);
    gpu_free(g, gm->loss);
    gpu_free(g, gm->labels);
    gpu_free(g, gm->x_stage);
    gpu_free(g, gm->params16);
    gpu_free(g, gm->adam_v);
    gpu_free(g, gm->adam_m);
    gpu_free(g, gm->grads);
    gpu_free(g, gm->params);
    free(gm);
    *gmp = NULL;
}

size_t gpu_model_param_bytes(const gpu_model_t *gm) { return gm->param_bytes; }

void gpu_model_use_graph(gpu_model_t *gm, int on) { gm->use_graph = on; }

size_t gm_params_alloc(gpu_ctx_t *g, size_t n, const char *what, const char *what16, float **p,
                       void **p16, gm_params_t *q)
{
    size_t bytes = n * sizeof(float);
    *p = (float *)gpu_malloc(g, bytes, what);
    gpu_memset(g, *p, 0, bytes);
    *p16 = NULL;
    if (gpu_act_dtype(g) == GPU_BF16) {
        *p16 = gpu_malloc(g, n * 2, what16);
        gpu_memset(g, *p16, 0, n * 2);
        bytes += n * 2;
    }
    q->p = *p;
    q->pa = *p16 ? *p16 : (const void *)*p;
    q->es = gpu_dtype_size(gpu_act_dtype(g));
    return bytes;
}

void gm_params_upload(gpu_ctx_t *g, const model_t *m, float *dev, void *dev16, const float *host)
{
    const size_t n = m->table.numel;
    float *tmp = (float *)xmalloc(n * sizeof(float));
    gm_params_layout(m, tmp, host, +1);
    gpu_upload(g, dev, tmp, n * sizeof(float));
    free(tmp);
    if (dev16) gpu_convert(g, dev16, GPU_BF16, dev, GPU_F32, n);
}

static void get(gpu_model_t *gm, float *host, const float *dev)
{
    float *tmp = (float *)xmalloc(gm->numel * sizeof(float));
    gpu_download(gm->g, tmp, dev, gm->numel * sizeof(float));
    gm_params_layout(gm->m, host, tmp, -1);
    free(tmp);
}

void gpu_model_set_params(gpu_model_t *gm, const float *params)
{
    gm_params_upload(gm->g, gm->m, gm->params, gm->params16, params);
    gpu_sync(gm->g);
}

void gpu_model_get_params(gpu_model_t *gm, float *params) { get(gm, params, gm->params); }
void gpu_model_get_grads(gpu_model_t *gm, float *grads) { get(gm, grads, gm->grads); }

void gpu_model_set_adam(gpu_model_t *gm, const float *m, const float *v)
{
    gm_params_upload(gm->g, gm->m, gm->adam_m, NULL, m);
    gm_params_upload(gm->g, gm->m, gm->adam_v, NULL, v);
}

void gpu_model_get_adam(gpu_model_t *gm, float *m, float *v)
{
    get(gm, m, gm->adam_m);
    get(gm, v, gm->adam_v);
}

// ---- profiling hook ----------------------------------------------------------------------------
void gm_prof(gm_prof_t *pr, gpu_ctx_t *g, int kind)
{
    if (!pr) return;
    if (pr->n == pr->cap) DIE("profiling: more than %d ops in one step", pr->cap);
    CUDA_CHECK(cudaEventRecord(pr->ev[pr->n], g->stream));
    pr->kind[pr->n++] = kind;
}

const char *gpu_kind_name(int kind)
{
    static const char *names[GPU_KIND_COUNT] = {
        "convolutions (cuDNN)", "Mamba layers (scans, their GEMMs, conv1d, LN)",
        "norms (IN/GN, fused ReLU)", "GEMMs (1x1 convs: skip MLP, up)",
        "element-wise (GELU, adds, memsets)", "copies, layout (pad/crop, upsample, input to blocks)",
        "loss (Dice fwd + bwd)", "Adam (fused, + bf16 copy)" };
    return kind >= 0 && kind < GPU_KIND_COUNT ? names[kind] : "?";
}
