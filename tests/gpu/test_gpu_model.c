/*
test_gpu_model.c -- the whole SegResMamba on the GPU against the CPU model (common/nn), needs a
GPU (`make test-gpu`):
  1. one training step's loss, logits and EVERY parameter gradient, by name, GPU vs CPU, at 64^3:
     the tiny configuration (width 8) of M, P, R and no-tom, M at full width 48, plus tiny M at
     48^3 (odd extents: the ToM_A pad/crop path) and tiny P with Dice + CE at batch 2; in strict
     fp32 (rtol 1e-4 per tensor) and in bf16 (rtol 2e-2). The reference is the CPU model in
     double precision. The absolute floor of a tensor is rtol * (RMS of all gradient elements)
     * sqrt(numel): the error a tensor of typical magnitude may have; for a conv's bias, at
     least rtol * the norm of the same conv's weight gradient. That matters for biases of convs
     followed by a norm, whose true gradient is zero (the norm removes a per-channel constant),
     and of convs feeding a conv, whose gradient is a boundary effect of a cancelling sum: the
     computed value is rounding noise of the dy the weight gradient sums (ref_floors).
     Conditioning band: an implementation in another arithmetic cannot be held closer to the
     reference than the reference itself moves when its inputs carry that arithmetic's
     rounding. So the CPU float model is also run on DRAWS copies of the input AND the
     parameters multiplied by (1 + eps n), n ~ N(0, 1): eps 1e-6 for fp32 (the size of fp32
     accumulation error over a conv's reduction), 2e-3 for bf16 (the rounding of a bf16 weight
     or activation, which the bf16 mode really applies to both). Per tensor, and for the logits
     and the loss, the band is the largest relative error of those runs (and of the unperturbed
     float model) against the double model; the GPU may be up to 2x the band, and never held
     tighter than rtol. For R and no-tom the band is ~1e-5 (fp32), so their 1e-4 bar is the
     plain one; for M and P at random init the reference is ill-conditioned (the 1e-6
     perturbation moves its gradients by ~1e-2), which the band measures instead of guessing.
     Kinks: gradients are discontinuous where a ReLU input sits within rounding of zero, and at
     64^3 (4^3 voxels per instance norm at the deepest level) such inputs are everywhere: for
     tiny no-tom and R at most seeds three of four fp32-sized draws flip one, each flip moving
     ~70 tensors by 5e-3 to 2e-2 (tests/tools/grad_conditioning, BENCHMARKS.md). The draws'
     eps (1e-6 on input and parameters) is ~5x the GPU's measured fp32 error (its logits are
     2e-6 off where the draws move them 1e-5), so the draws flip at least as often as the GPU
     and the band covers a GPU flip; tensors no flip reaches keep the plain rtol. The test
     prints, per case, how many tensors each draw put outside the plain bar.
  2. inference (gpu_infer, no saved tensors) gives the training forward's logits.
  3. three training steps (Adam, cosine lr through the device scalar, CUDA graph replay) match
     GPU gradients + the CPU Adam, and the graph replay equals eager steps bit for bit.
  4. determinism: with the deterministic switch, two bf16 runs of 10 steps from one seed give
     bit-identical parameters.
SRM_TEST_SEED=n repeats a run's random inputs; SRM_TEST_TINY_ONLY=1 runs only the tiny M step;
SRM_TEST_CASE=TEXT only the cases whose name contains TEXT.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "check.h"
#include "gpu.h"
#include "model.h"
#include "rng.h"
#include "test.h"

static uint64_t seed;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct {
    const char *name;
    model_variant_t v;
    int width, N, dims[3];
    loss_kind_t loss;
} case_t;

#define FP32_DRAWS 4       // perturbed float-model runs per case, fp32-sized
#define BF16_DRAWS 3       // and bf16-sized

// The reference's own spread under one precision's rounding (see the header): per tensor, for
// the logits and for the loss, the largest relative error against the double model over the
// unperturbed float model and the perturbed runs; dirty[k]: tensors of run k (0 = unperturbed)
// outside the plain rtol bar.
typedef struct {
    double *tensor, logits, loss;
    int dirty[1 + FP32_DRAWS];
} band_t;

// A model with initialised parameters, a random input and random labels, and the CPU reference
// of one step: loss, logits (N, K, S), gradients.
typedef struct {
    model_t m;
    model_plan_t p;
    train_cfg_t tc;
    float *params, *x, *grads, *logits;     // CPU float model
    float *grads64, *logits64;              // CPU double model (the reference), as float
    band_t band[2];                         // [0] fp32-sized, [1] bf16-sized perturbations
    uint8_t *labels;
    double loss, loss64;
    double *fscale;                         // per tensor: its floor / rtol (see grad_floor)
} ref_t;

static size_t vox(const int d[3]) { return (size_t)d[0] * d[1] * d[2]; }

static void ref_init(ref_t *r, const case_t *c, uint64_t s)
{
    char err[ERR_LEN];
    memset(r, 0, sizeof *r);
    model_cfg_t cfg = model_cfg_default();
    cfg.variant = c->v;
    cfg.width = c->width;
    if (model_describe(&r->m, &cfg, err) || model_plan(&r->p, &r->m, c->N, c->dims, err))
        DIE("%s: %s", c->name, err);
    r->tc = train_cfg_default();
    r->tc.loss = c->loss;
    const size_t np = r->m.table.numel, S = vox(c->dims);
    r->params = xmalloc(np * sizeof(float));
    model_init_params(&r->m, r->params, s);
    rng_t R = rng_derive(s, 17, 0);
    r->x = xmalloc(r->p.in_numel * sizeof(float));
    for (size_t i = 0; i < r->p.in_numel; i++) r->x[i] = (float)rng_normal(&R);
    r->labels = xmalloc((size_t)c->N * S);
    for (size_t i = 0; i < (size_t)c->N * S; i++)
        r->labels[i] = (uint8_t)rng_below(&R, (uint64_t)cfg.classes);
    r->grads = xcalloc(np, sizeof(float));
    r->logits = xmalloc(r->p.out_numel * sizeof(float));
    r->grads64 = xcalloc(np, sizeof(float));
    for (int k = 0; k < 2; k++) r->band[k].tensor = xcalloc((size_t)r->m.table.count, sizeof(double));
    r->logits64 = xmalloc(r->p.out_numel * sizeof(float));
}

static double *to_f64(const float *x, size_t n)
{
    double *d = xmalloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

// The absolute floor of tensor t: rtol * fscale[t] (set by ref_floors).
static double grad_floor(const ref_t *r, int t, double rtol) { return rtol * r->fscale[t]; }

// fscale[t] = RMS(all reference gradients) * sqrt(numel): what a tensor of typical magnitude
// holds; for "X.bias" with a sibling "X.weight", at least the norm of the weight's gradient.
// The bias gradient of a conv followed by a norm is exactly zero (the norm removes any
// per-channel constant), and that of a conv feeding another conv is only a boundary effect
// (zero padding) of a sum whose terms cancel: the computed value is rounding noise of the
// same dy the weight gradient sums, so its error is judged at the scale of the layer's
// gradient -- as if weight and bias were one tensor.
static void ref_floors(ref_t *r, const double *G)
{
    const param_table_t *T = &r->m.table;
    double ss = 0;
    for (size_t i = 0; i < T->numel; i++) ss += G[i] * G[i];
    const double grms = sqrt(ss / (double)T->numel);
    r->fscale = xmalloc((size_t)T->count * sizeof(double));
    for (int t = 0; t < T->count; t++) {
        const param_t *P = &T->items[t];
        r->fscale[t] = grms * sqrt((double)P->numel);
        const size_t n = strlen(P->name);
        if (n < 5 || strcmp(P->name + n - 5, ".bias") != 0 || n + 2 > 256) continue;
        char wname[256];
        snprintf(wname, sizeof wname, "%.*sweight", (int)(n - 4), P->name);
        const param_t *W = param_table_find(T, wname);
        if (!W) continue;
        double w = 0;
        for (size_t i = 0; i < W->numel; i++) w += G[W->offset + i] * G[W->offset + i];
        if (sqrt(w) > r->fscale[t]) r->fscale[t] = sqrt(w);
    }
}

static void ref_step_cpu64(ref_t *r)
{
    const size_t np = r->m.table.numel;
    double *ws = xcalloc(r->p.total, sizeof(double)), *P = to_f64(r->params, np);
    double *X = to_f64(r->x, r->p.in_numel), *G = xcalloc(np, sizeof(double));
    model_forward_cpu_f64(ws, P, X, &r->m, &r->p);
    r->loss64 = model_loss_cpu_f64(ws, r->labels, &r->tc, &r->m, &r->p);
    for (size_t i = 0; i < r->p.out_numel; i++) r->logits64[i] = (float)ws[r->p.logits + i];
    model_backward_cpu_f64(G, NULL, ws, P, X, &r->m, &r->p);
    for (size_t i = 0; i < np; i++) r->grads64[i] = (float)G[i];
    ref_floors(r, G);
    free(ws); free(P); free(X); free(G);
}

static void ref_step_cpu(ref_t *r)
{
    float *ws = xcalloc(r->p.total, sizeof(float));
    model_forward_cpu(ws, r->params, r->x, &r->m, &r->p);
    r->loss = model_loss_cpu(ws, r->labels, &r->tc, &r->m, &r->p);
    memcpy(r->logits, ws + r->p.logits, r->p.out_numel * sizeof(float));
    memset(r->grads, 0, r->m.table.numel * sizeof(float));
    model_backward_cpu(r->grads, NULL, ws, r->params, r->x, &r->m, &r->p);
    free(ws);
}

static double rel_err(const float *a, const float *b, size_t n)
{
    double d = 0, w = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)a[i] - (double)b[i];
        d += e * e;
        w += (double)b[i] * b[i];
    }
    return w > 0 ? sqrt(d / w) : sqrt(d);
}

// Widens band b by one float-model run (gradients g, logits lg, loss l); returns the number of
// tensors outside the plain rtol bar.
static int band_add(band_t *b, const ref_t *r, const float *g, const float *lg, double l,
                    double rtol)
{
    int dirty = 0;
    for (int t = 0; t < r->m.table.count; t++) {
        const param_t *P = &r->m.table.items[t];
        const float *a = g + P->offset, *w = r->grads64 + P->offset;
        double d = 0, n = 0;
        for (size_t i = 0; i < P->numel; i++) {
            d += ((double)a[i] - w[i]) * ((double)a[i] - w[i]);
            n += (double)w[i] * w[i];
        }
        dirty += sqrt(d) > rtol * sqrt(n) + grad_floor(r, t, rtol);
        const double e = n > 0 ? sqrt(d / n) : sqrt(d);
        if (e > b->tensor[t]) b->tensor[t] = e;
    }
    const double el = rel_err(lg, r->logits64, r->p.out_numel);
    const double ep = fabs(l - r->loss64) / fabs(r->loss64);
    if (el > b->logits) b->logits = el;
    if (ep > b->loss) b->loss = ep;
    return dirty;
}

// The float CPU model with its input and parameters multiplied by (1 + eps n), n ~ N(0, 1),
// fresh per draw; each run widens band b (draw 0: the unperturbed float model, already run).
static void ref_band(ref_t *r, band_t *b, double eps, int draws, double rtol, uint64_t s)
{
    const size_t np = r->m.table.numel;
    float *xp = xmalloc(r->p.in_numel * sizeof(float)), *pp = xmalloc(np * sizeof(float));
    float *ws = xmalloc(r->p.total * sizeof(float)), *g = xmalloc(np * sizeof(float));
    b->dirty[0] = band_add(b, r, r->grads, r->logits, r->loss, rtol);
    for (int k = 1; k <= draws; k++) {
        rng_t R = rng_derive(s, 23, (uint64_t)k);
        for (size_t i = 0; i < r->p.in_numel; i++)
            xp[i] = (float)((double)r->x[i] * (1.0 + eps * rng_normal(&R)));
        for (size_t i = 0; i < np; i++)
            pp[i] = (float)((double)r->params[i] * (1.0 + eps * rng_normal(&R)));
        memset(ws, 0, r->p.total * sizeof(float));
        model_forward_cpu(ws, pp, xp, &r->m, &r->p);
        const double l = model_loss_cpu(ws, r->labels, &r->tc, &r->m, &r->p);
        memset(g, 0, np * sizeof(float));
        model_backward_cpu(g, NULL, ws, pp, xp, &r->m, &r->p);
        b->dirty[k] = band_add(b, r, g, ws + r->p.logits, l, rtol);
    }
    free(g); free(ws); free(pp); free(xp);
}

static void ref_free(ref_t *r)
{
    free(r->params); free(r->x); free(r->grads); free(r->logits); free(r->labels);
    free(r->grads64); free(r->logits64); free(r->band[0].tensor); free(r->band[1].tensor);
    free(r->fscale);
    model_free(&r->m);
}

// Every gradient tensor by name against the double reference; b: the reference's band for
// this precision. Returns failing tensors.
static int compare_grads(const char *tag, const ref_t *r, const float *got, const band_t *b,
                         double rtol)
{
    const model_t *m = &r->m;
    int bad = 0, widened = 0;
    double worst = 0, worst_band = 0, use_most = 0, use_floor = 0;
    const char *worst_name = "", *use_name = "";
    for (int t = 0; t < m->table.count; t++) {
        const param_t *P = &m->table.items[t];
        char label[200];
        snprintf(label, sizeof label, "%.60s grad %.95s", tag, P->name);
        const double atol = grad_floor(r, t, rtol);
        const double tol = 2 * b->tensor[t] > rtol ? 2 * b->tensor[t] : rtol;
        widened += tol > rtol;
        int ok = tensor_close(label, got + P->offset, r->grads64 + P->offset, P->numel, tol, atol);
        EXPECT(ok, "%s (reference band %.2e, floor %.2e)", label, b->tensor[t], atol);
        bad += !ok;
        const float *w = r->grads64 + P->offset;
        double nrm = 0, dif = 0;
        for (size_t i = 0; i < P->numel; i++) {
            nrm += (double)w[i] * w[i];
            dif += ((double)got[P->offset + i] - w[i]) * ((double)got[P->offset + i] - w[i]);
        }
        // the share of its allowance (tensor_close: |a - b| <= tol |b| + atol) a tensor uses
        const double use = sqrt(dif) / (tol * sqrt(nrm) + atol);
        if (use > use_most) { use_most = use; use_name = P->name; use_floor = atol; }
        const double e = rel_err(got + P->offset, w, P->numel);
        if (sqrt(nrm) > atol && e > worst) {   // tensors above their floor: a relative error
            worst = e;                         // of a zero-gradient bias says nothing
            worst_name = P->name;
            worst_band = b->tensor[t];
        }
    }
    printf("%s: %d tensors, %d failing (rtol %.0e; %d tensors where the reference's band is wider, "
           "allowed 2x the band); largest relative error vs double among tensors above their floor "
           "%.2e (%s; band there %.2e); closest to its bar: %s at %.2f of its allowance (floor "
           "%.2e)\n", tag, m->table.count, bad, rtol, widened, worst, worst_name, worst_band,
           use_name, use_most, use_floor);
    return bad;
}

// One step's loss, logits and gradients on the GPU context g against the CPU reference r.
static void check_step(gpu_ctx_t *g, const case_t *c, const ref_t *r, double rtol,
                       int check_infer)
{
    const band_t *b = &r->band[gpu_act_dtype(g) == GPU_F32 ? 0 : 1];
    const double ltol = 2 * b->logits > rtol ? 2 * b->logits : rtol;
    const double losstol = 2 * b->loss > rtol ? 2 * b->loss : rtol;
    char err[ERR_LEN], tag[128];
    snprintf(tag, sizeof tag, "%s %s", c->name, gpu_act_dtype(g) == GPU_F32 ? "fp32" : "bf16");
    gpu_model_t *gm = gpu_model_new(g, &r->m, &r->tc, c->N, c->dims, err);
    EXPECT(gm != NULL, "%s: gpu_model_new: %s", tag, err);
    if (!gm) return;
    gpu_model_set_params(gm, r->params);
    const size_t np = r->m.table.numel, no = r->p.out_numel;
    float *lg = xmalloc(no * sizeof(float)), *gr = xmalloc(np * sizeof(float));

    double lf = gpu_model_forward_loss(gm, r->x, r->labels);
    gpu_model_get_logits(gm, lg);
    char label[200];
    snprintf(label, sizeof label, "%s logits", tag);
    EXPECT(tensor_close(label, lg, r->logits64, no, ltol, 1e-6), "%s (band %.2e)", label,
           b->logits);
    printf("%s: logits relative error vs the double model %.2e (CPU float model %.2e, the "
           "reference's band %.2e: bar %.2e)\n", tag, rel_err(lg, r->logits64, no),
           rel_err(r->logits, r->logits64, no), b->logits, ltol);
    EXPECT(fabs(lf - r->loss64) <= losstol * fabs(r->loss64) + 1e-6,
           "%s loss %.8f vs CPU %.8f (band %.2e)", tag, lf, r->loss64, b->loss);

    if (check_infer) {
        gpu_infer_t *gi = gpu_infer_new(g, &r->m, c->N, c->dims, gm, err);
        EXPECT(gi != NULL, "%s: gpu_infer_new: %s", tag, err);
        if (gi) {
            float *li = xmalloc(no * sizeof(float));
            gpu_infer_run(gi, r->x, li);
            size_t same = 0;
            for (size_t i = 0; i < no; i++) same += li[i] == lg[i];
            snprintf(label, sizeof label, "%s inference vs training forward", tag);
            EXPECT(tensor_close(label, li, lg, no, 1e-6, 0), "%s", label);
            printf("%s: inference logits equal the training forward's in %zu of %zu elements\n",
                   tag, same, no);
            // sliding window over sample 0 alone, a volume of the window's size: one window,
            // gathered on the device into the stem's block layout (infer.cu), so its logits
            // are sample 0's of the batch run
            const size_t S = (size_t)c->dims[0] * c->dims[1] * c->dims[2];
            const size_t ns = (size_t)r->m.cfg.classes * S;
            float *ls = xmalloc(ns * sizeof(float));
            uint8_t *lab = xmalloc(S);
            int nw = 0;
            EXPECT(!gpu_infer_sliding(gi, r->x, c->dims, 0.5, ls, lab, &nw, err),
                   "%s: gpu_infer_sliding: %s", tag, err);
            EXPECT(nw == 1, "%s: sliding window over one window's volume ran %d windows", tag, nw);
            snprintf(label, sizeof label, "%s sliding window vs inference", tag);
            EXPECT(tensor_close(label, ls, li, ns, 1e-6, 0), "%s", label);
            free(ls);
            free(lab);
            free(li);
            gpu_infer_free(&gi);
        }
        // the evaluator's and srm-bench's way: a context that owns its parameters (fp32, and
        // the bf16 copy in bf16 mode), uploaded from the host, gives the training forward's logits
        gpu_infer_t *go = gpu_infer_new(g, &r->m, c->N, c->dims, NULL, err);
        EXPECT(go != NULL, "%s: gpu_infer_new (own parameters): %s", tag, err);
        if (go) {
            float *lo = xmalloc(no * sizeof(float));
            gpu_infer_set_params(go, r->params);
            gpu_infer_run(go, r->x, lo);
            snprintf(label, sizeof label, "%s inference with its own parameters vs training forward",
                     tag);
            EXPECT(tensor_close(label, lo, lg, no, 1e-6, 0), "%s", label);
            free(lo);
            gpu_infer_free(&go);
        }
    }

    double t0 = now_s();
    double lg2 = gpu_model_grads(gm, r->x, r->labels);
    double t1 = now_s();
    EXPECT(lg2 == lf, "%s: loss of the gradient pass %.9g differs from the forward's %.9g", tag,
           lg2, lf);
    gpu_model_get_grads(gm, gr);
    compare_grads(tag, r, gr, b, rtol);
    printf("%s: loss GPU %.6f CPU %.6f, gradient pass %.1f ms (first, eager)\n", tag, lf, r->loss,
           1e3 * (t1 - t0));
    free(lg);
    free(gr);
    gpu_model_free(&gm);
}

// Prints how many tensors each run of band b put outside the plain bar (0: unperturbed).
static void print_dirty(const char *name, const char *what, const band_t *b, int draws)
{
    printf("%s: tensors outside the %s bar: float model %d, perturbed draws", name, what,
           b->dirty[0]);
    for (int k = 1; k <= draws; k++) printf(" %d", b->dirty[k]);
    printf("\n");
}

static void run_case(gpu_ctx_t *g32, gpu_ctx_t *g16, const case_t *c, int check_infer)
{
    ref_t r;
    ref_init(&r, c, seed);
    double t0 = now_s();
    ref_step_cpu(&r);
    ref_step_cpu64(&r);
    ref_band(&r, &r.band[0], 1e-6, FP32_DRAWS, 1e-4, seed);
    ref_band(&r, &r.band[1], 2e-3, BF16_DRAWS, 2e-2, seed + 1);
    printf("%s: CPU steps (float + double + %d perturbed) %.1f s, %d tensors, %zu parameters\n",
           c->name, FP32_DRAWS + BF16_DRAWS, now_s() - t0, r.m.table.count, r.m.table.numel);
    print_dirty(c->name, "fp32", &r.band[0], FP32_DRAWS);
    print_dirty(c->name, "bf16", &r.band[1], BF16_DRAWS);
    check_step(g32, c, &r, 1e-4, check_infer);
    check_step(g16, c, &r, 2e-2, check_infer);
    ref_free(&r);
}

// Three steps with Adam and a cosine lr. The reference of the step machinery (zero grads,
// Adam, lr through the device scalar, graph capture and replay) is built, step by step, from the
// GPU's own gradients at the graph model's current parameters (gpu_model_grads on a second model
// given those parameters) and the CPU Adam (adam_update_cpu) with its own m and v: the network's
// numerics are checked by the gradient comparisons above. Each step starts both sides from the
// same parameters, so they differ only by the float GPU Adam against the CPU's rounding. (Run
// three steps apart, a last-bit difference after step 1 changes the next gradients by rounding,
// and parameters whose gradient is ~0 -- directions an InstanceNorm cancels -- take updates of
// either sign, up to lr each: noise of ~1e-4 in norm that moved with any summation order.)
static void check_training(gpu_ctx_t *g32)
{
    const case_t c = { "tiny M train", MODEL_M, 8, 1, { 64, 64, 64 }, LOSS_DICE };
    char err[ERR_LEN];
    ref_t r;
    ref_init(&r, &c, seed + 1);
    const size_t np = r.m.table.numel;
    float *ph = xmalloc(np * sizeof(float)), *m = xcalloc(np, sizeof(float));
    float *v = xcalloc(np, sizeof(float)), *gr = xcalloc(np, sizeof(float));
    float *prev = xmalloc(np * sizeof(float)), *ug = xmalloc(np * sizeof(float));
    float *uh = xmalloc(np * sizeof(float));
    float *pg[2];
    gpu_model_t *gm[3];
    for (int k = 0; k < 3; k++) {       // 0: graph steps, 1: eager steps, 2: gradients only
        gm[k] = gpu_model_new(g32, &r.m, &r.tc, c.N, c.dims, err);
        if (!gm[k]) DIE("gpu_model_new: %s", err);
        gpu_model_set_params(gm[k], r.params);
        gpu_model_use_graph(gm[k], k == 0);
    }
    for (int k = 0; k < 2; k++) pg[k] = xmalloc(np * sizeof(float));
    const float base = 1e-3f;      // larger than the default so that the steps move visibly
    r.tc.adam.lr = base;
    double worst = 0.0;
    for (long s = 1; s <= 3; s++) {
        float lr = lr_cosine(base, s - 1, 10);
        gpu_model_get_params(gm[0], ph);
        memcpy(prev, ph, np * sizeof(float));
        gpu_model_set_params(gm[2], ph);
        double lh = gpu_model_grads(gm[2], r.x, r.labels);
        gpu_model_get_grads(gm[2], gr);
        adam_cfg_t a = r.tc.adam;
        a.lr = lr;
        adam_update_cpu(ph, m, v, gr, np, a, s);
        double l0 = gpu_model_step(gm[0], r.x, r.labels, lr, s);
        double l1 = gpu_model_step(gm[1], r.x, r.labels, lr, s);
        EXPECT(fabs(l0 - lh) <= 1e-6 * fabs(lh), "step %ld: step loss %.9g vs reference %.9g", s,
               l0, lh);
        EXPECT(l0 == l1, "step %ld: graph loss %.9g vs eager %.9g", s, l0, l1);
        gpu_model_get_params(gm[0], pg[0]);
        // the step's update, graph model against the reference (the parameters themselves are
        // ~400x larger than one step moves them: a bar on them would let a wrong update pass).
        // 1e-4: float Adam on the GPU against the CPU's from the same parameters and gradients,
        // plus one rounding of p + update (measured ~7e-7 of the update)
        for (size_t i = 0; i < np; i++) { ug[i] = pg[0][i] - prev[i]; uh[i] = ph[i] - prev[i]; }
        EXPECT(tensor_close("update of a step, graph vs GPU grads + CPU Adam", ug, uh, np, 1e-4, 0),
               "update of Adam step %ld", s);
        const double e = rel_err(ug, uh, np);
        if (e > worst) worst = e;
    }
    gpu_model_get_params(gm[1], pg[1]);
    EXPECT(memcmp(pg[0], pg[1], np * sizeof(float)) == 0,
           "graph replay and eager steps give different parameters");
    double moved = rel_err(pg[0], r.params, np);
    EXPECT(moved > 1e-4, "parameters moved by only %.2e (relative)", moved);
    printf("training: 3 steps, parameters moved %.2e relative; a graph step's update vs the "
           "reference's at most %.2e\n", moved, worst);
    for (int k = 0; k < 3; k++) gpu_model_free(&gm[k]);
    for (int k = 0; k < 2; k++) free(pg[k]);
    free(ph); free(m); free(v); free(gr); free(prev); free(ug); free(uh);
    ref_free(&r);
}

static void check_determinism(void)
{
    gpu_cfg_t cfg = GPU_CFG_DEFAULT;
    cfg.deterministic = 1;
    gpu_ctx_t *g = gpu_ctx_new(cfg);
    const case_t c = { "tiny M det", MODEL_M, 8, 1, { 64, 64, 64 }, LOSS_DICE };
    char err[ERR_LEN];
    ref_t r;
    ref_init(&r, &c, seed + 2);
    const size_t np = r.m.table.numel;
    float *out[2];
    for (int k = 0; k < 2; k++) {
        gpu_model_t *gm = gpu_model_new(g, &r.m, &r.tc, c.N, c.dims, err);
        if (!gm) DIE("gpu_model_new: %s", err);
        gpu_model_set_params(gm, r.params);
        for (long s = 1; s <= 10; s++)
            gpu_model_step(gm, r.x, r.labels, lr_cosine(1e-3f, s - 1, 10), s);
        out[k] = xmalloc(np * sizeof(float));
        gpu_model_get_params(gm, out[k]);
        gpu_model_free(&gm);
    }
    size_t diff = 0;
    for (size_t i = 0; i < np; i++) diff += memcmp(&out[0][i], &out[1][i], sizeof(float)) != 0;
    EXPECT(diff == 0, "deterministic bf16: %zu of %zu parameters differ after 10 steps", diff, np);
    printf("determinism: %zu of %zu parameters differ after 10 bf16 steps\n", diff, np);
    free(out[0]); free(out[1]);
    ref_free(&r);
    gpu_ctx_destroy(&g);
}

int main(void)
{
    const char *s = getenv("SRM_TEST_SEED");
    seed = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
    printf("seed %llu (SRM_TEST_SEED to repeat)\n", (unsigned long long)seed);
    gpu_cfg_t c32 = GPU_CFG_DEFAULT, c16 = GPU_CFG_DEFAULT;
    c32.act = GPU_F32;
    c32.deterministic = 1;
    gpu_ctx_t *g32 = gpu_ctx_new(c32), *g16 = gpu_ctx_new(c16);
    char desc[512];
    gpu_describe(g16, desc, sizeof desc);
    printf("%s\n", desc);

    const case_t cases[] = {
        { "tiny M 64^3", MODEL_M, 8, 1, { 64, 64, 64 }, LOSS_DICE },
        { "tiny P 64^3 N2 dice+ce", MODEL_P, 8, 2, { 64, 64, 64 }, LOSS_DICE_CE },
        { "tiny R 64^3", MODEL_R, 8, 1, { 64, 64, 64 }, LOSS_DICE },
        { "tiny no-tom 64^3", MODEL_NOTOM, 8, 1, { 64, 64, 64 }, LOSS_DICE },
        { "tiny M 48^3 (pad/crop)", MODEL_M, 8, 1, { 48, 48, 48 }, LOSS_DICE },
        { "full M 64^3", MODEL_M, 48, 1, { 64, 64, 64 }, LOSS_DICE },
    };
    // SRM_TEST_TINY_ONLY=1: the tiny M step alone (compute-sanitizer runs), at D^3 with
    // SRM_TEST_TINY_DIMS=D (default 64; racecheck runs it at 32: the same kernels and code
    // paths on smaller grids, since racecheck's instrumentation of the library kernels makes
    // 64^3 take over 4 minutes).
    const int tiny_only = getenv("SRM_TEST_TINY_ONLY") != NULL;
    const char *td = getenv("SRM_TEST_TINY_DIMS");
    case_t tiny = cases[0];
    if (td) {
        const int D = atoi(td);
        if (D < 16 || D % 16) DIE("SRM_TEST_TINY_DIMS=%s: a multiple of 16 is needed", td);
        tiny.dims[0] = tiny.dims[1] = tiny.dims[2] = D;
        tiny.name = "tiny M (SRM_TEST_TINY_DIMS)";
    }
    // SRM_TEST_CASE=TEXT: only the cases whose name contains TEXT (repeating one case over seeds)
    const char *only = getenv("SRM_TEST_CASE");
    const size_t ncase = tiny_only ? 1 : sizeof cases / sizeof *cases;
    for (size_t i = 0; i < ncase; i++)
        if (!only || strstr(cases[i].name, only))
            run_case(g32, g16, i == 0 ? &tiny : &cases[i], i == 0);
    if (tiny_only || only) {
        gpu_ctx_destroy(&g16);
        gpu_ctx_destroy(&g32);
        return test_summary();
    }
    check_training(g32);
    gpu_ctx_destroy(&g16);
    gpu_ctx_destroy(&g32);
    check_determinism();
    return test_summary();
}
