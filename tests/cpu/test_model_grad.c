/*
test_model_grad.c -- finite differences for the WHOLE tiny SegResMamba (width 8), every variant,
in double precision, at patch 64x32x32 (the smallest that gives every parameter a gradient),
batch 1, fixed random input and labels, softmax Dice loss.
  per tensor:  (f(p + eps v) - f(p - eps v)) / (2 eps)  vs  <grad, v>  along a random unit v
               of that tensor, |num - ana| <= 1e-4 |num| + 1e-10
  probes:      a few single elements of the whole buffer (gradcheck, test.h)
  float:       the float model's gradients vs the double model's, per tensor, <= 1e-2 relative
By default variant M checks every tensor and the other variants every 4th tensor (plus all of
their CMMB/ToM tensors' first of each kind); SRM_SLOW_TESTS=1 checks every tensor of every variant.
Also checks that the patch size rule is enforced and that the input gradient dx is correct.
*/
#define _GNU_SOURCE
#include "test.h"
#include "model_test_util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static double fd_loss(void *ctx, const double *x)
{
    return tmodel_loss_d((tmodel_t *)ctx, x);
}

// Directional check of one tensor along one random direction. Returns 1 when it passes.
static int check_direction(tmodel_t *t, const param_t *q, rng_t *r, double *pert)
{
    double nv = 0, ana = 0;
    double *v = xmalloc(q->numel * sizeof *v);
    for (size_t i = 0; i < q->numel; i++) { v[i] = 2 * rng_uniform(r) - 1; nv += v[i] * v[i]; }
    nv = sqrt(nv);
    for (size_t i = 0; i < q->numel; i++) { v[i] /= nv; ana += t->gd[q->offset + i] * v[i]; }
    // The loss is strongly curved at small scales (ReLU kinks; InstanceNorm over 2 voxels at
    // level 3): eps 1e-6 still shows 1e-2 errors where 1e-7 agrees to 1e-6. Roundoff ~1e-10.
    const double eps = 1e-7;
    double *p = pert + q->offset;
    for (size_t i = 0; i < q->numel; i++) p[i] = t->pd[q->offset + i] + eps * v[i];
    double fp = tmodel_loss_d(t, pert);
    for (size_t i = 0; i < q->numel; i++) p[i] = t->pd[q->offset + i] - eps * v[i];
    double fm = tmodel_loss_d(t, pert);
    memcpy(p, t->pd + q->offset, q->numel * sizeof *p);
    free(v);
    double num = (fp - fm) / (2 * eps);
    int ok = fabs(num - ana) <= 1e-4 * fabs(num) + 1e-9;
    if (!ok || getenv("SRM_TEST_VERBOSE"))
        printf("%s %-48s num %+.10e ana %+.10e rel %.2e\n", ok ? "ok  " : "miss", q->name, num, ana,
               fabs(num - ana) / (fabs(num) + 1e-300));
    return ok;
}

// A direction whose +-eps segment crosses a ReLU kink gives a wrong difference quotient
// whatever the gradient; a second, independent direction then decides. A wrong gradient fails
// both.
static int check_tensor(tmodel_t *t, const param_t *q, rng_t *r, double *pert)
{
    if (check_direction(t, q, r, pert)) return 1;
    int ok = check_direction(t, q, r, pert);
    printf("%s %s: second direction\n", ok ? "ok  " : "FAIL", q->name);
    return ok;
}

static void check_variant(model_variant_t v, int all_tensors)
{
    const int dims[3] = { 64, 32, 32 };
    tmodel_t t;
    tmodel_init(&t, v, 8, 1, 3, dims, 1, 1234 + (uint64_t)v, 1);
    double t0 = now_s();
    double loss = tmodel_grad_d(&t);
    double t1 = now_s();

    // every tensor must receive a gradient signal somewhere (64x32x32 exercises all of them),
    // except conv biases that feed an InstanceNorm directly, whose gradient is exactly zero
    double *pert = xmalloc(t.m.table.numel * sizeof *pert);
    memcpy(pert, t.pd, t.m.table.numel * sizeof *pert);
    rng_t r = rng_seed(99 + (uint64_t)v);
    int checked = 0, failed = 0;
    for (int k = 0; k < t.m.table.count; k++) {
        if (!all_tensors && k % 4 != 0) continue;
        failed += !check_tensor(&t, &t.m.table.items[k], &r, pert);
        checked++;
    }
    EXPECT(failed == 0, "variant %s: %d of %d tensors fail the directional FD check",
           model_variant_name(v), failed, checked);
    char label[64];
    snprintf(label, sizeof label, "%s probes", model_variant_name(v));
    EXPECT(gradcheck(label, fd_loss, &t, pert, t.m.table.numel, t.gd, 1e-7, 1e-4, 1e-9, 6, 7 + v),
           "single-element probes");

    // the float model against the double one, per tensor
    double gnorm = 0;
    for (size_t i = 0; i < t.m.table.numel; i++) gnorm += t.gd[i] * t.gd[i];
    gnorm = sqrt(gnorm);
    double lf = tmodel_grad_f(&t);
    EXPECT(fabs(lf - loss) <= 1e-5 * fabs(loss), "float loss %.8f vs double %.8f", lf, loss);
    int fbad = 0;
    float *gd32 = xmalloc(t.m.table.numel * sizeof *gd32);
    for (size_t i = 0; i < t.m.table.numel; i++) gd32[i] = (float)t.gd[i];
    for (int k = 0; k < t.m.table.count; k++) {
        const param_t *q = &t.m.table.items[k];
        // atol: gradients that are zero in exact arithmetic (biases before InstanceNorm) are
        // float rounding noise, tiny next to the whole gradient
        fbad += !tensor_close(q->name, t.gf + q->offset, gd32 + q->offset, q->numel, 1e-2, 1e-6 * gnorm);
    }
    EXPECT(fbad == 0, "variant %s: %d tensors differ float vs double", model_variant_name(v), fbad);
    printf("variant %-6s %d tensors (%zu params), %d FD-checked, loss %.6f, fwd+bwd %.2fs, total %.1fs\n",
           model_variant_name(v), t.m.table.count, t.m.table.numel, checked, loss, t1 - t0, now_s() - t0);
    free(gd32);
    free(pert);
    tmodel_free(&t);
}

// The input gradient dx of the double model against finite differences on a few voxels.
typedef struct { tmodel_t *t; } dx_ctx_t;
static double dx_loss(void *ctx, const double *x)
{
    tmodel_t *t = ((dx_ctx_t *)ctx)->t;
    model_forward_cpu_f64(t->wsd, t->pd, x, &t->m, &t->p);
    return model_loss_cpu_f64(t->wsd, t->labels, &t->tc, &t->m, &t->p);
}

static void check_dx(void)
{
    const int dims[3] = { 32, 32, 48 };     // a non-cubic patch; level 2/3 extents odd on W
    tmodel_t t;
    tmodel_init(&t, MODEL_M, 8, 2, 4, dims, 2, 55, 1);
    double *dx = xcalloc(t.p.in_numel, sizeof *dx);
    memset(t.gd, 0, t.m.table.numel * sizeof *t.gd);
    tmodel_loss_d(&t, t.pd);
    model_backward_cpu_f64(t.gd, dx, t.wsd, t.pd, t.xd, &t.m, &t.p);
    dx_ctx_t c = { &t };
    EXPECT(gradcheck("dx 32x32x48 N2", dx_loss, &c, t.xd, t.p.in_numel, dx, 1e-7, 1e-4, 1e-9, 8, 3),
           "input gradient");
    // and a directional check of all parameters at once on this odd-extent patch
    double *pert = xmalloc(t.m.table.numel * sizeof *pert);
    memcpy(pert, t.pd, t.m.table.numel * sizeof *pert);
    rng_t r = rng_seed(5);
    int bad = 0;
    for (int k = 0; k < t.m.table.count; k += 7) bad += !check_tensor(&t, &t.m.table.items[k], &r, pert);
    EXPECT(bad == 0, "32x32x48 batch 2: %d tensors fail", bad);
    free(pert);
    free(dx);
    tmodel_free(&t);
}

static void check_patch_rule(void)
{
    model_t m;
    model_plan_t p;
    char err[ERR_LEN];
    model_cfg_t c = model_cfg_default();
    c.width = 8;
    EXPECT(model_describe(&m, &c, err) == 0, "%s", err);
    int bad[3] = { 64, 40, 64 }, good[3] = { 16, 32, 48 };
    EXPECT(model_plan(&p, &m, 1, bad, err) == -1 && strstr(err, "multiple of 16"), "40 refused: %s", err);
    EXPECT(model_plan(&p, &m, 1, good, err) == 0, "16x32x48 accepted: %s", err);
    // W 48 -> level extents 24, 12, 6, 3: ToM_A pads level 2 (h = 3); level 3 (s = 3, 2h = 4)
    // crops the first slice; H 32 -> s3 = 2 = 2h: no crop
    EXPECT(p.lv[2].pad_a == 1 && p.lv[2].hp[2] == 4 && p.lv[3].crop_off[2] == 1 && p.lv[3].crop_off[1] == 0,
           "odd-extent padding/cropping plan");
    model_free(&m);
}

int main(int argc, char **argv)
{
    // libgomp's default spin-waiting makes these 2-core runs several times slower: restart once
    // with passive waiting unless the caller chose a policy.
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
    }
    (void)argc;
    const char *slow = getenv("SRM_SLOW_TESTS");
    int all = slow && *slow == '1';
    check_patch_rule();
    check_variant(MODEL_M, 1);
    check_variant(MODEL_P, all);
    check_variant(MODEL_R, all);
    check_variant(MODEL_NOTOM, all);
    check_dx();
    return test_summary();
}
