/*
test_gpu_model.c -- the whole SegResMamba on the GPU against the CPU model (common/nn), needs a
GPU (`make test-gpu`):
  1. one training step's loss, logits and EVERY parameter gradient, by name, GPU vs CPU, at 64^3:
     the tiny configuration (width 8) of M, P, R and no-tom, M at full width 48, plus tiny M at
     48^3 (odd extents: the ToM_A pad/crop path) and tiny P with Dice + CE at batch 2; in strict
     fp32 (rtol 1e-4 per tensor) and in bf16 (rtol 2e-2). The reference is the CPU model in
     double precision; the CPU model in float is run too, and where the float CPU model itself
     is further than rtol from the double one (ill-conditioned tensors: InstanceNorm over the
     8 voxels of level 3 at 64^3 amplifies every rounding), the GPU may be up to 4x the CPU
     float model's error. The absolute floor of a tensor is
     rtol * (RMS of all gradient elements) * sqrt(numel): the error a tensor of typical
     magnitude may have. It matters for the biases of convs followed by a norm, whose true
     gradient is zero (the norm removes a per-channel constant) and whose computed one is
     rounding noise of cancelling sums.
     Conditioning: the CPU model's own gradients move when its input is perturbed by a relative
     1e-6 (fp32-sized) or 2e-3 (bf16-sized); for tiny M at 64^3 the 1e-6 perturbation alone moves
     most gradients by ~1e-2 (its forward amplifies it 50x into the logits), for R and no-tom by
     ~1e-5. A tensor may be off by up to 2x that movement (the GPU's fp32 accumulation errors act
     like such a perturbation); the well-conditioned variants keep the plain 1e-4 bar.
  2. inference (gpu_infer, no saved tensors) gives the training forward's logits.
  3. three training steps (Adam, cosine lr through the device scalar, CUDA graph replay) match
     GPU gradients + the CPU Adam, and the graph replay equals eager steps bit for bit.
  4. determinism: with the deterministic switch, two bf16 runs of 10 steps from one seed give
     bit-identical parameters.
SRM_TEST_SEED=n repeats a run's random inputs; SRM_TEST_TINY_ONLY=1 runs only the tiny M step.
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

// A model with initialised parameters, a random input and random labels, and the CPU reference
// of one step: loss, logits (N, K, S), gradients.
typedef struct {
    model_t m;
    model_plan_t p;
    train_cfg_t tc;
    float *params, *x, *grads, *logits;     // CPU float model
    float *grads64, *logits64;              // CPU double model (the reference), as float
    float *gsens[2];                        // CPU float model on a perturbed input: [0] fp32-
                                            //   sized (1e-6), [1] bf16-sized (2e-3) perturbation
    uint8_t *labels;
    double loss, loss64;
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
    for (int k = 0; k < 2; k++) r->gsens[k] = xcalloc(np, sizeof(float));
    r->logits64 = xmalloc(r->p.out_numel * sizeof(float));
}

static double *to_f64(const float *x, size_t n)
{
    double *d = xmalloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
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

// The conditioning of the reference itself: the float CPU model's gradients with the input
// multiplied by (1 + eps n), n ~ N(0, 1), into g. A GPU whose fp32 (or bf16) arithmetic errors
// act like a perturbation of that size cannot be held closer to the reference than this.
static void ref_step_perturbed(ref_t *r, double eps, uint64_t s, float *g)
{
    float *xp = xmalloc(r->p.in_numel * sizeof(float)), *ws = xcalloc(r->p.total, sizeof(float));
    rng_t R = rng_derive(s, 23, 0);
    for (size_t i = 0; i < r->p.in_numel; i++)
        xp[i] = (float)((double)r->x[i] * (1.0 + eps * rng_normal(&R)));
    model_forward_cpu(ws, r->params, xp, &r->m, &r->p);
    model_loss_cpu(ws, r->labels, &r->tc, &r->m, &r->p);
    memset(g, 0, r->m.table.numel * sizeof(float));
    model_backward_cpu(g, NULL, ws, r->params, xp, &r->m, &r->p);
    free(ws);
    free(xp);
}

static void ref_free(ref_t *r)
{
    free(r->params); free(r->x); free(r->grads); free(r->logits); free(r->labels);
    free(r->grads64); free(r->logits64); free(r->gsens[0]); free(r->gsens[1]);
    model_free(&r->m);
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

// Every gradient tensor by name against the double reference want; cpu32: the float CPU
// model's gradients (its own error sets the conditioning allowance). Returns failing tensors.
static int compare_grads(const char *tag, const model_t *m, const float *got, const float *want,
                         const float *cpu32, const float *sens, double rtol)
{
    double ss = 0;
    for (size_t i = 0; i < m->table.numel; i++) ss += (double)want[i] * want[i];
    const double rms = sqrt(ss / (double)m->table.numel);
    int bad = 0, allowance = 0, by_sens = 0;
    double worst = 0, worst_cpu = 0;
    const char *worst_name = "";
    for (int t = 0; t < m->table.count; t++) {
        const param_t *P = &m->table.items[t];
        char label[200];
        snprintf(label, sizeof label, "%.60s grad %.95s", tag, P->name);
        const double atol = rtol * rms * sqrt((double)P->numel);
        const double ecpu = rel_err(cpu32 + P->offset, want + P->offset, P->numel);
        const double esens = rel_err(sens + P->offset, want + P->offset, P->numel);
        double tol = 4 * ecpu > rtol ? 4 * ecpu : rtol;
        allowance += tol > rtol;
        if (2 * esens > tol) { tol = 2 * esens; by_sens++; }
        int ok = tensor_close(label, got + P->offset, want + P->offset, P->numel, tol, atol);
        EXPECT(ok, "%s (CPU float model's own error %.2e, on the perturbed input %.2e)", label,
               ecpu, esens);
        bad += !ok;
        double e = rel_err(got + P->offset, want + P->offset, P->numel);
        if (e > worst) { worst = e; worst_name = P->name; worst_cpu = ecpu; }
    }
    printf("%s: %d tensors, %d failing (rtol %.0e; %d tensors where the CPU float model itself "
           "is off by more, allowed 4x its error; %d where the reference moves by more than that "
           "on a perturbed input, allowed 2x that); largest relative error vs double %.2e (%s; "
           "CPU float there %.2e)\n", tag, m->table.count, bad, rtol, allowance, by_sens, worst,
           worst_name, worst_cpu);
    return bad;
}

// One step's loss, logits and gradients on the GPU context g against the CPU reference r.
static void check_step(gpu_ctx_t *g, const case_t *c, const ref_t *r, double rtol,
                       int check_infer)
{
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
    EXPECT(tensor_close(label, lg, r->logits64, no, rtol, 1e-6), "%s", label);
    printf("%s: logits relative error vs the double model %.2e (CPU float model %.2e)\n", tag,
           rel_err(lg, r->logits64, no), rel_err(r->logits, r->logits64, no));
    EXPECT(fabs(lf - r->loss64) <= rtol * fabs(r->loss64) + 1e-6, "%s loss %.8f vs CPU %.8f",
           tag, lf, r->loss64);

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
            free(li);
            gpu_infer_free(&gi);
        }
    }

    double t0 = now_s();
    double lg2 = gpu_model_grads(gm, r->x, r->labels);
    double t1 = now_s();
    EXPECT(lg2 == lf, "%s: loss of the gradient pass %.9g differs from the forward's %.9g", tag,
           lg2, lf);
    gpu_model_get_grads(gm, gr);
    int bad = compare_grads(tag, &r->m, gr, r->grads64, r->grads,
                            r->gsens[gpu_act_dtype(g) == GPU_F32 ? 0 : 1], rtol);
    printf("%s: loss GPU %.6f CPU %.6f, gradient pass %.1f ms (first, eager)\n", tag, lf, r->loss,
           1e3 * (t1 - t0));
    (void)bad;
    free(lg);
    free(gr);
    gpu_model_free(&gm);
}

static void run_case(gpu_ctx_t *g32, gpu_ctx_t *g16, const case_t *c, int check_infer)
{
    ref_t r;
    ref_init(&r, c, seed);
    double t0 = now_s();
    ref_step_cpu(&r);
    ref_step_cpu64(&r);
    ref_step_perturbed(&r, 1e-6, seed, r.gsens[0]);
    ref_step_perturbed(&r, 2e-3, seed, r.gsens[1]);
    printf("%s: CPU steps (float + double) %.1f s, %d tensors, %zu parameters\n", c->name, now_s() - t0,
           r.m.table.count, r.m.table.numel);
    check_step(g32, c, &r, 1e-4, check_infer);
    check_step(g16, c, &r, 2e-2, check_infer);
    ref_free(&r);
}

// Three steps with Adam and a cosine lr. The reference of the step machinery (zero grads,
// Adam, lr through the device scalar, graph capture and replay) is built from the GPU's own
// gradients (gpu_model_grads on a second model holding the same parameters) and the CPU Adam
// (adam_update_cpu): the network's numerics are checked by the gradient comparisons above.
static void check_training(gpu_ctx_t *g32)
{
    const case_t c = { "tiny M train", MODEL_M, 8, 1, { 64, 64, 64 }, LOSS_DICE };
    char err[ERR_LEN];
    ref_t r;
    ref_init(&r, &c, seed + 1);
    const size_t np = r.m.table.numel;
    float *ph = xmalloc(np * sizeof(float)), *m = xcalloc(np, sizeof(float));
    float *v = xcalloc(np, sizeof(float)), *gr = xcalloc(np, sizeof(float));
    memcpy(ph, r.params, np * sizeof(float));
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
    for (long s = 1; s <= 3; s++) {
        float lr = lr_cosine(base, s - 1, 10);
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
    }
    gpu_model_get_params(gm[0], pg[0]);
    gpu_model_get_params(gm[1], pg[1]);
    // 1e-4: after step 1 the two parameter copies differ in the last bits (float GPU Adam vs
    // the CPU's), so the next gradients differ by rounding and, for elements whose gradient is
    // ~0, m / (sqrt(v) + eps) can move by up to lr: a few elements, far under 1e-4 in norm.
    EXPECT(tensor_close("params after 3 steps, graph vs GPU grads + CPU Adam", pg[0], ph, np,
                        1e-4, 0), "params after 3 Adam steps");
    EXPECT(memcmp(pg[0], pg[1], np * sizeof(float)) == 0,
           "graph replay and eager steps give different parameters");
    double moved = rel_err(pg[0], r.params, np);
    EXPECT(moved > 1e-4, "parameters moved by only %.2e (relative)", moved);
    printf("training: 3 steps, parameters moved %.2e relative; graph steps vs reference %.2e\n",
           moved, rel_err(pg[0], ph, np));
    for (int k = 0; k < 3; k++) gpu_model_free(&gm[k]);
    for (int k = 0; k < 2; k++) free(pg[k]);
    free(ph); free(m); free(v); free(gr);
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
    // SRM_TEST_TINY_ONLY=1: the tiny M step alone (compute-sanitizer runs).
    const int tiny_only = getenv("SRM_TEST_TINY_ONLY") != NULL;
    const size_t ncase = tiny_only ? 1 : sizeof cases / sizeof *cases;
    for (size_t i = 0; i < ncase; i++) run_case(g32, g16, &cases[i], i == 0);
    if (tiny_only) {
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
