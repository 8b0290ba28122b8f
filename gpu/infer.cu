/*
infer.cu -- forward-only SegResMamba on the GPU for a batch of windows, and sliding-window
inference over a whole volume. Runs gm_forward (model_fwd.cu) over an inference plan that keeps
nothing for a backward: only what later ops read survives a level (skip_i, IN(x_i), decoder
outputs); every other tensor of a level lives in one region reused by the next level (and the
decoder), and one Mamba "saved" buffer serves every ToM layer (written, never read back).

Sliding window (MONAI sliding_window_inference semantics, constant weights): windows of the
plan's dims start every int(dim * (1 - overlap)) voxels, the last one flush with the end; a
volume smaller than the window is zero-padded. Windows are gathered on the device from the
uploaded volume straight into the stem's 2x2x2-block input layout (stem_s2d.cu), N per batch;
their logits are added into
an fp32 accumulator one window per launch (no two threads add to one voxel in a launch: the sum
order is fixed, so the result is deterministic), then divided by the count and argmaxed.
*/
#include "model_internal.cuh"
#include <stdlib.h>
#include <string.h>

#define INFER_MAX_BATCH 64

static size_t vox(const int s[3]) { return (size_t)s[0] * s[1] * s[2]; }
static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }

struct gpu_infer {
    gpu_ctx_t *g;
    const model_t *m;
    int N, dims[3];
    gm_plan_t plan;
    gpu_arena_t *arena;
    float *own_p;
    void *own_p16;
    gm_params_t q;
    float *x_stage;             // (N, Cin, S) f32
    // sliding-window buffers, grown on demand (outside any step)
    float *vol, *acc, *cnt;
    uint8_t *lab;
    size_t vol_cap, vox_cap;
};

static mamba_layer_t with_slices(const mamba_layer_t *t, size_t nslices)
{
    mamba_layer_t r = *t;
    r.nslices = nslices;
    return r;
}

// Lay out the inference plan from base (NULL: count). Returns total bytes.
static size_t infer_layout(gm_plan_t *p, gpu_ctx_t *g, const model_t *m, char *base)
{
    const size_t es = gpu_dtype_size(gpu_act_dtype(g));
    const int N = p->N;
    gm_bump_t b = { base, 0, 0 };
    size_t scratch = 0, msaved = 0;
    for (int i = 0; i < MODEL_LEVELS; i++) {
        const model_level_t *ML = &m->lv[i];
        const gm_level_t *L = &p->lv[i];
        if (ML->has_tom_a) {
            mamba_layer_t t = with_slices(&ML->tom_a, MODEL_TOM_A_SLICES);
            scratch = zmax(scratch, mamba_layer_gpu_scratch_bytes(g, &t, N, vox(L->hp)));
            msaved = zmax(msaved, mamba_layer_gpu_saved_bytes(g, &t, N, vox(L->hp)));
        }
        for (int k = 0; k < ML->nstage; k++)
            if (ML->stage_kind[k] == STAGE_TOM) {
                mamba_layer_t t = with_slices(&ML->stage_tom[k], (size_t)L->s[0]);
                scratch = zmax(scratch, mamba_layer_gpu_scratch_bytes(g, &t, N, vox(L->s)));
                msaved = zmax(msaved, mamba_layer_gpu_saved_bytes(g, &t, N, vox(L->s)));
            }
    }
    // persistent
    p->x = gm_take(&b, gm_x_numel(m, p) * es);
    p->stem_w = gm_take(&b, gm_stem_w_numel(m, p) * es);
    p->stem_dw = NULL;
    p->head_w = gm_take(&b, (size_t)8 * m->out.cout * m->out.cin * es);
    p->head_dw = NULL;
    p->head_dyb = NULL;
    p->logits = gm_take(&b, p->out_numel * es);
    p->scratch = scratch ? gm_take(&b, scratch) : NULL;
    void *ms = msaved ? gm_take(&b, msaved) : NULL;
    for (int i = 0; i < MODEL_LEVELS; i++) {
        gm_level_t *L = &p->lv[i];
        const size_t st = (size_t)N * m->lv[i].d * sizeof(float);
        L->skip = gm_take(&b, L->numel_s * es);
        L->xn = gm_take(&b, L->numel_s * es);
        L->xn_mean = (float *)gm_take(&b, st);
        L->xn_rstd = (float *)gm_take(&b, st);
    }
    for (int j = 0; j < 3; j++) p->dec[j].out = gm_take(&b, p->dec[j].numel * es);
    const size_t region = b.off;

    // per-level temporaries, all starting at `region`
    for (int i = 0; i < MODEL_LEVELS; i++) {
        gm_level_t *L = &p->lv[i];
        const model_level_t *ML = &m->lv[i];
        const size_t st = (size_t)N * ML->d * sizeof(float);
        b.off = region;
        L->X = gm_take(&b, L->numel_s * es);
        if (i > 0) {
            const size_t ndp = (size_t)N * m->lv[i - 1].d;
            L->dn_c = gm_take(&b, p->lv[i - 1].numel_s * es);
            L->dn_n = gm_take(&b, p->lv[i - 1].numel_s * es);
            L->dn_mean = (float *)gm_take(&b, ndp * sizeof(float));
            L->dn_rstd = (float *)gm_take(&b, ndp * sizeof(float));
        }
        float **stats[8] = { &L->p1_mean, &L->p1_rstd, &L->p3_mean, &L->p3_rstd,
                             &L->p4_mean, &L->p4_rstd, &L->p5_mean, &L->p5_rstd };
        for (int k = 0; k < 8; k++) *stats[k] = (float *)gm_take(&b, st);
        L->p1 = gm_take(&b, L->numel_h * es);
        L->a1 = gm_take(&b, L->numel_h * es);
        L->p3 = gm_take(&b, L->numel_h * es);
        L->a3 = gm_take(&b, L->numel_h * es);
        L->ta_in = L->pad_a ? gm_take(&b, L->numel_hp * es) : L->a3;
        L->ta_out = ML->has_tom_a ? gm_take(&b, L->numel_hp * es) : NULL;
        L->b = !ML->has_tom_a ? L->a3 : L->pad_a ? gm_take(&b, L->numel_h * es) : L->ta_out;
        L->ta_saved = ms;
        L->p4 = gm_take(&b, L->numel_h * es);
        L->a4 = gm_take(&b, L->numel_h * es);
        L->p5 = gm_take(&b, L->numel_2h * es);
        L->a5 = gm_take(&b, L->numel_2h * es);
        L->Y = gm_take(&b, L->numel_s * es);
        void *ping[2] = { gm_take(&b, L->numel_s * es), gm_take(&b, L->numel_s * es) };
        for (int k = 0; k < ML->nstage; k++) {
            L->st_out[k] = ping[k & 1];
            L->st_saved[k] = ms;
        }
        L->x = L->st_out[ML->nstage - 1];
        L->h1 = gm_take(&b, 2 * L->numel_s * es);
        L->g1 = gm_take(&b, 2 * L->numel_s * es);
    }
    for (int j = 0; j < 3; j++) {
        gm_dec_t *D = &p->dec[j];
        const size_t ng = (size_t)N * 8 * sizeof(float);
        b.off = region;
        D->u = gm_take(&b, (size_t)N * m->dec[j].c * vox(p->lv[3 - j].s) * es);
        D->v = gm_take(&b, D->numel * es);
        D->r1 = gm_take(&b, D->numel * es);
        D->c1 = gm_take(&b, D->numel * es);
        D->r2 = gm_take(&b, D->numel * es);
        D->n1_mean = (float *)gm_take(&b, ng); D->n1_rstd = (float *)gm_take(&b, ng);
        D->n2_mean = (float *)gm_take(&b, ng); D->n2_rstd = (float *)gm_take(&b, ng);
    }
    b.off = region;                                 // the head runs after every temporary
    p->head_yb = gm_take(&b, p->out_numel * es);
    return b.high;
}

gpu_infer_t *gpu_infer_new(gpu_ctx_t *g, const model_t *m, int N, const int dims[3],
                           gpu_model_t *share, char *err)
{
    if (N < 1 || N > INFER_MAX_BATCH) {
        set_err(err, "inference batch %d out of range 1..%d", N, INFER_MAX_BATCH);
        return NULL;
    }
    gm_plan_t p;
    if (gm_plan_geometry(&p, m, N, dims, err)) return NULL;
    if (share && share->m->table.numel != m->table.numel) {
        set_err(err, "shared training model has %zu parameters, this model %zu",
                share->m->table.numel, m->table.numel);
        return NULL;
    }
    gpu_infer_t *gi = (gpu_infer_t *)xcalloc(1, sizeof *gi);
    gi->g = g;
    gi->m = m;
    gi->N = N;
    memcpy(gi->dims, dims, sizeof gi->dims);
    const size_t bytes = infer_layout(&p, g, m, NULL);
    gi->arena = gpu_arena_new(g, bytes, "inference arena");
    gi->plan = p;
    ASSERT(infer_layout(&gi->plan, g, m, (char *)gpu_arena_alloc(gi->arena, bytes)) == bytes);
    gi->plan.bytes = bytes;
    if (share) {
        gi->q = share->q;
    } else {
        gm_params_alloc(g, m->table.numel, "inference parameters", "inference bf16 weights",
                        &gi->own_p, &gi->own_p16, &gi->q);
    }
    gi->x_stage = (float *)gpu_malloc(g, p.in_numel * sizeof(float), "inference input staging");
    // Build the forward conv and GEMM plans now (one forward on a zero input), then freeze.
    gpu_memset(g, gi->plan.x, 0, gm_x_numel(m, &p) * gi->q.es);
    gpu_conv_freeze(g, 0);
    gm_forward(g, &gi->plan, &gi->q, m, NULL);
    gpu_conv_freeze(g, 1);
    gpu_sync(g);
    return gi;
}

void gpu_infer_free(gpu_infer_t **gip)
{
    gpu_infer_t *gi = *gip;
    if (!gi) return;
    gpu_ctx_t *g = gi->g;
    gpu_sync(g);
    gpu_free(g, gi->lab);
    gpu_free(g, gi->cnt);
    gpu_free(g, gi->acc);
    gpu_free(g, gi->vol);
    gpu_free(g, gi->x_stage);
    gpu_free(g, gi->own_p16);
    gpu_free(g, gi->own_p);
    gpu_arena_destroy(&gi->arena);
    free(gi);
    *gip = NULL;
}

size_t gpu_infer_arena_bytes(const gpu_infer_t *gi) { return gi->plan.bytes; }

void gpu_infer_set_params(gpu_infer_t *gi, const float *params)
{
    ASSERT(gi->own_p);          // a shared model's parameters are set through it
    gm_params_upload(gi->g, gi->m, gi->own_p, gi->own_p16, params);
    gpu_sync(gi->g);
}

static void forward_uploaded(gpu_infer_t *gi)
{
    stem_s2d_input_gpu(gi->g, gi->plan.x, gi->x_stage, gm_stem_shape(gi->m, gi->N, gi->dims));
    gm_forward(gi->g, &gi->plan, &gi->q, gi->m, NULL);
}

void gpu_infer_run(gpu_infer_t *gi, const float *x, float *logits)
{
    gpu_upload(gi->g, gi->x_stage, x, gi->plan.in_numel * sizeof(float));
    forward_uploaded(gi);
    if (!logits) { gpu_sync(gi->g); return; }
    const size_t n = gi->plan.out_numel, es = gi->q.es, S = vox(gi->dims);
    const size_t K = (size_t)gi->m->cfg.classes;
    char *raw = (char *)xmalloc(n * es);
    gpu_download(gi->g, raw, gi->plan.logits, n * es);
    for (int b = 0; b < gi->N; b++)
        for (size_t s = 0; s < S; s++)
            for (size_t k = 0; k < K; k++) {
                size_t src = ((size_t)b * S + s) * K + k;
                logits[((size_t)b * K + k) * S + s] =
                    es == 4 ? ((const float *)raw)[src]
                            : gm_bf16_to_f32(((const uint16_t *)raw)[src]);
            }
    free(raw);
}

void gpu_infer_time(gpu_infer_t *gi, const float *x, int warm, int n, float *ms)
{
    gpu_upload(gi->g, gi->x_stage, x, gi->plan.in_numel * sizeof(float));
    for (int i = 0; i < warm; i++) forward_uploaded(gi);
    gpu_timer_t *t = gpu_timer_new(gi->g);
    for (int i = 0; i < n; i++) {
        gpu_timer_start(t);
        forward_uploaded(gi);
        gpu_timer_stop(t);
        ms[i] = gpu_timer_ms(t);
    }
    gpu_timer_free(&t);
}

// ---- sliding window ----------------------------------------------------------------------------
typedef struct { int n; int start[INFER_MAX_BATCH][3]; } win_batch_t;
typedef struct { int d[3]; } dims3_t;

// x (the stem's 2x2x2-block input of N windows, s2d_source) act <- vol (Cin, V) f32 at each
// window's start; zero outside the volume and for batch slots past w.n.
template <typename T>
__global__ void gather_kernel(T *x, const float *vol, win_batch_t w, dims3_t wd, dims3_t vd,
                              int Cin, size_t total)
{
    const size_t V = (size_t)vd.d[0] * vd.d[1] * vd.d[2];
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const s2d_src s = s2d_source(i, Cin, wd.d[0] / 2, wd.d[1] / 2, wd.d[2] / 2, 1);
        const int b = (int)s.n;
        float v = 0.0f;
        if (b < w.n && s.in) {
            const int gz = w.start[b][0] + s.z, gy = w.start[b][1] + s.y, gx = w.start[b][2] + s.x;
            if (gz < vd.d[0] && gy < vd.d[1] && gx < vd.d[2])
                v = vol[(size_t)s.c * V + ((size_t)gz * vd.d[1] + gy) * vd.d[2] + gx];
        }
        x[i] = from_f<T>(v);
    }
}

// acc (K, V) += logits of window b (S, K); cnt (V) += 1 where the window covers the volume.
template <typename T>
__global__ void accumulate_kernel(float *acc, float *cnt, const T *logits, dims3_t wd, dims3_t vd,
                                  int z0, int y0, int x0, int K)
{
    const size_t S = (size_t)wd.d[0] * wd.d[1] * wd.d[2];
    const size_t V = (size_t)vd.d[0] * vd.d[1] * vd.d[2];
    for (size_t s = (size_t)blockIdx.x * blockDim.x + threadIdx.x; s < S;
         s += (size_t)gridDim.x * blockDim.x) {
        const int z = (int)(s / ((size_t)wd.d[1] * wd.d[2]));
        const int y = (int)((s / wd.d[2]) % wd.d[1]);
        const int xx = (int)(s % wd.d[2]);
        const int gz = z0 + z, gy = y0 + y, gx = x0 + xx;
        if (gz >= vd.d[0] || gy >= vd.d[1] || gx >= vd.d[2]) continue;
        const size_t v = ((size_t)gz * vd.d[1] + gy) * vd.d[2] + gx;
        for (int k = 0; k < K; k++) acc[(size_t)k * V + v] += to_f(logits[s * K + k]);
        cnt[v] += 1.0f;
    }
}

__global__ void finalize_kernel(float *acc, uint8_t *lab, const float *cnt, size_t V, int K)
{
    for (size_t v = (size_t)blockIdx.x * blockDim.x + threadIdx.x; v < V;
         v += (size_t)gridDim.x * blockDim.x) {
        const float inv = 1.0f / cnt[v];
        int best = 0;
        float bv = 0.0f;
        for (int k = 0; k < K; k++) {
            float a = acc[(size_t)k * V + v] * inv;
            acc[(size_t)k * V + v] = a;
            if (k == 0 || a > bv) { bv = a; best = k; }
        }
        lab[v] = (uint8_t)best;
    }
}

// MONAI's scan: start i * step, the last flush with the end; one window when the volume fits.
static int axis_starts(int vol, int win, double overlap, int *starts, int cap)
{
    if (vol <= win) { starts[0] = 0; return 1; }
    int step = (int)((double)win * (1.0 - overlap));
    if (step < 1) step = 1;
    int n = (vol - win + step - 1) / step + 1;
    if (n > cap) return -1;
    for (int i = 0; i < n; i++) starts[i] = i * step + win > vol ? vol - win : i * step;
    return n;
}

int gpu_infer_sliding(gpu_infer_t *gi, const float *vol, const int vdims[3], double overlap,
                      float *logits, uint8_t *labels, int *nwindows, char *err)
{
    gpu_ctx_t *g = gi->g;
    const int Cin = gi->m->cfg.in_channels, K = gi->m->cfg.classes;
    if (!(overlap >= 0.0 && overlap < 1.0))
        return set_err(err, "sliding window: overlap %g outside [0, 1)", overlap);
    for (int a = 0; a < 3; a++)
        if (vdims[a] < 1 || vdims[a] > 4096)
            return set_err(err, "sliding window: volume extent %d out of range", vdims[a]);
    int *st[3], ns[3];
    for (int a = 0; a < 3; a++) {
        st[a] = (int *)xmalloc(sizeof(int) * (size_t)vdims[a]);    // at most one start per voxel
        ns[a] = axis_starts(vdims[a], gi->dims[a], overlap, st[a], vdims[a]);
        ASSERT(ns[a] >= 1);
    }
    const size_t V = vox(vdims);
    if ((size_t)Cin * V * sizeof(float) > gi->vol_cap) {      // grown outside any step
        gpu_free(g, gi->vol);
        gi->vol_cap = (size_t)Cin * V * sizeof(float);
        gi->vol = (float *)gpu_malloc(g, gi->vol_cap, "sliding volume");
    }
    if (V > gi->vox_cap) {
        gpu_free(g, gi->acc); gpu_free(g, gi->cnt); gpu_free(g, gi->lab);
        gi->acc = (float *)gpu_malloc(g, (size_t)K * V * sizeof(float), "sliding logits sum");
        gi->cnt = (float *)gpu_malloc(g, V * sizeof(float), "sliding counts");
        gi->lab = (uint8_t *)gpu_malloc(g, V, "sliding labels");
        gi->vox_cap = V;
    }
    gpu_upload(g, gi->vol, vol, (size_t)Cin * V * sizeof(float));
    gpu_memset(g, gi->acc, 0, (size_t)K * V * sizeof(float));
    gpu_memset(g, gi->cnt, 0, V * sizeof(float));

    dims3_t wd, vd;
    memcpy(wd.d, gi->dims, sizeof wd.d);
    memcpy(vd.d, vdims, sizeof vd.d);
    const int total = ns[0] * ns[1] * ns[2];
    const size_t S = vox(gi->dims), xn = gm_x_numel(gi->m, &gi->plan);
    for (int w0 = 0; w0 < total; w0 += gi->N) {
        win_batch_t wb;
        memset(&wb, 0, sizeof wb);
        wb.n = total - w0 < gi->N ? total - w0 : gi->N;
        for (int b = 0; b < wb.n; b++) {
            int w = w0 + b;
            wb.start[b][0] = st[0][w / (ns[1] * ns[2])];
            wb.start[b][1] = st[1][(w / ns[2]) % ns[1]];
            wb.start[b][2] = st[2][w % ns[2]];
        }
        ACT_DISPATCH(g->act, T, {
            gather_kernel<T><<<grid_for(g, xn, 256), 256, 0, g->stream>>>(
                (T *)gi->plan.x, gi->vol, wb, wd, vd, Cin, xn);
            KERNEL_CHECK();
        });
        gm_forward(g, &gi->plan, &gi->q, gi->m, NULL);
        for (int b = 0; b < wb.n; b++) {
            ACT_DISPATCH(g->act, T, {
                const T *lg = (const T *)gi->plan.logits + (size_t)b * S * K;
                accumulate_kernel<T><<<grid_for(g, S, 256), 256, 0, g->stream>>>(
                    gi->acc, gi->cnt, lg, wd, vd, wb.start[b][0], wb.start[b][1],
                    wb.start[b][2], K);
                KERNEL_CHECK();
            });
        }
    }
    finalize_kernel<<<grid_for(g, V, 256), 256, 0, g->stream>>>(gi->acc, gi->lab, gi->cnt, V, K);
    KERNEL_CHECK();
    if (logits) gpu_download(g, logits, gi->acc, (size_t)K * V * sizeof(float));
    if (labels) gpu_download(g, labels, gi->lab, V);
    gpu_sync(g);
    if (nwindows) *nwindows = total;
    for (int a = 0; a < 3; a++) free(st[a]);
    return 0;
}
