/*
test_model_grad.c -- finite differences for the WHOLE tiny SegResMamba (width 8), every variant,
in double precision, at patch 64x32x32 (the smallest that gives every parameter a gradient),
batch 1, fixed random input and labels, softmax Dice loss.
  per tensor:  (f(p + eps v) - f(p - eps v)) / (2 eps)  vs  <grad, v>  along a random unit v
               of that tensor, |num - ana| <= 1e-4 |num| + atol (eps 1e-7, then 1e-8: see
               fd_direction; a second direction if the first misses)
  probes:      a few single elements of the whole buffer
  float:       the float model's gradients vs the double model's, per tensor, <= 1e-2 relative
By default variant M checks every tensor and the other variants every 4th tensor;
SRM_SLOW_TESTS=1 checks every tensor of every variant.
Also checks that the patch size rule is enforced and that the input gradient dx is correct.
*/
#define _GNU_SOURCE
#include "test.h"
#include "model_test_util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// The loss with buf = base + s*v on [off, off + len) of the parameters (input = 0) or of the
// input (input = 1); pert is a scratch copy of that buffer, restored on return.
static double loss_at(tmodel_t *t, int input, double *pert, const double *base, size_t off,
                      size_t len, const double *v, double s)
{
    for (size_t i = 0; i < len; i++) pert[off + i] = base[off + i] + s * v[i];
    double f = input ? (model_forward_cpu_f64(t->wsd, t->pd, pert, &t->m, &t->p),
                        model_loss_cpu_f64(t->wsd, t->labels, &t->tc, &t->m, &t->p))
                     : tmodel_loss_d(t, pert);
    memcpy(pert + off, base + off, len * sizeof *pert);
    return f;
}

// Central difference along v against ana = <grad, v>. The loss is piecewise smooth: a +-eps
// segment that crosses a ReLU kink biases the quotient (seen here: 1e-2 at eps 1e-6 where
// 1e-7 or 1e-8 agree to 1e-5), and below 1e-8 double roundoff (~1e-16 / eps) takes over. So
// eps 1e-7 and then 1e-8 are tried; a wrong gradient fails both.
static int fd_direction(tmodel_t *t, int input, double *pert, size_t off, size_t len,
                        const double *v, double ana, const char *label)
{
    const double *base = input ? t->xd : t->pd;
    static const double eps[2] = { 1e-7, 1e-8 }, atol[2] = { 1e-9, 3e-8 };   // ~ 3 ulp(loss) / eps
    double num = 0;
    for (int k = 0; k < 2; k++) {
        num = (loss_at(t, input, pert, base, off, len, v, eps[k]) -
               loss_at(t, input, pert, base, off, len, v, -eps[k])) / (2 * eps[k]);
        int ok = fabs(num - ana) <= 1e-4 * fabs(num) + atol[k];
        if (getenv("SRM_TEST_VERBOSE") || (!ok && k == 1))
            printf("%s %-48s eps %.0e num %+.10e ana %+.10e rel %.2e\n", ok ? "ok  " : "miss", label,
                   eps[k], num, ana, fabs(num - ana) / (fabs(num) + 1e-300));
        if (ok) return 1;
    }
    return 0;
}

// One tensor along random unit directions (a second one if the first misses).
static int check_tensor(tmodel_t *t, const param_t *q, rng_t *r, double *pert)
{
    double *v = xmalloc(q->numel * sizeof *v);
    int ok = 0;
    for (int attempt = 0; attempt < 2 && !ok; attempt++) {
        double nv = 0, ana = 0;
        for (size_t i = 0; i < q->numel; i++) { v[i] = 2 * rng_uniform(r) - 1; nv += v[i] * v[i]; }
        nv = sqrt(nv);
        for (size_t i = 0; i < q->numel; i++) { v[i] /= nv; ana += t->gd[q->offset + i] * v[i]; }
        ok = fd_direction(t, 0, pert, q->offset, q->numel, v, ana, q->name);
    }
    if (!ok) printf("FAIL %s: two directions\n", q->name);
    free(v);
    return ok;
}

// Single elements of the parameter buffer (input = 0, grad = t->gd) or of the input (1, dx).
static int check_elements(tmodel_t *t, int input, const double *grad, size_t n, int count,
                          uint64_t seed, double *pert)
{
    rng_t r = rng_seed(seed);
    int bad = 0;
    const double one = 1.0;
    for (int k = 0; k < count; k++) {
        size_t i = (size_t)rng_below(&r, n);
        char label[64];
        snprintf(label, sizeof label, "%s[%zu]", input ? "x" : "param", i);
        int ok = fd_direction(t, input, pert, i, 1, &one, grad[i], label);
        if (!ok) printf("FAIL %s\n", label);
        bad += !ok;
    }
    return bad;
}

static void check_variant(model_variant_t v, int all_tensors)
{
    // 64x32x32 exercises every parameter (architecture.md); SRM_GRAD_DIMS=64,64,64 runs the same
    // check at 64^3 (issue 4's bar; too slow for every CI run on 2 cores)
    int dims[3] = { 64, 32, 32 };
    const char *env = getenv("SRM_GRAD_DIMS");
    if (env && sscanf(env, "%d,%d,%d", &dims[0], &dims[1], &dims[2]) != 3)
        DIE("SRM_GRAD_DIMS='%s': expected D,H,W", env);
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
    EXPECT(check_elements(&t, 0, t.gd, t.m.table.numel, 6, 7 + v, pert) == 0,
           "variant %s: single-element probes", model_variant_name(v));

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
    printf("variant %-6s at %dx%dx%d: %d tensors (%zu params), %d FD-checked, loss %.6f, fwd+bwd %.2fs, total %.1fs\n",
           model_variant_name(v), dims[0], dims[1], dims[2], t.m.table.count, t.m.table.numel, checked,
           loss, t1 - t0, now_s() - t0);
    free(gd32);
    free(pert);
    tmodel_free(&t);
}

// The input gradient dx of the double model, a non-cubic patch with odd level extents, batch 2.
static void check_dx(void)
{
    const int dims[3] = { 32, 32, 48 };     // a non-cubic patch; level 2/3 extents odd on W
    tmodel_t t;
    tmodel_init(&t, MODEL_M, 8, 2, 4, dims, 2, 55, 1);
    double *dx = xcalloc(t.p.in_numel, sizeof *dx);
    memset(t.gd, 0, t.m.table.numel * sizeof *t.gd);
    tmodel_loss_d(&t, t.pd);
    model_backward_cpu_f64(t.gd, dx, t.wsd, t.pd, t.xd, &t.m, &t.p);
    double *xpert = xmalloc(t.p.in_numel * sizeof *xpert);
    memcpy(xpert, t.xd, t.p.in_numel * sizeof *xpert);
    EXPECT(check_elements(&t, 1, dx, t.p.in_numel, 8, 3, xpert) == 0, "input gradient dx");
    free(xpert);
    // and every 7th parameter tensor on this odd-extent patch
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
    // SRM_GRAD_VARIANTS="R,no-tom" limits the run to those variants (for debugging)
    const char *only = getenv("SRM_GRAD_VARIANTS");
    check_patch_rule();
    for (int v = MODEL_M; v <= MODEL_NOTOM; v++) {
        char key[16];
        snprintf(key, sizeof key, ",%s,", model_variant_name((model_variant_t)v));
        char list[256];
        snprintf(list, sizeof list, ",%s,", only ? only : "");
        if (only && !strstr(list, key)) continue;
        check_variant((model_variant_t)v, all || v == MODEL_M);
    }
    if (!only) check_dx();
    return test_summary();
}
