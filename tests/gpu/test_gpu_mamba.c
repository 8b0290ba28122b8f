/*
test_gpu_mamba.c -- the Mamba GPU ops (gpu/layernorm.cu, causal_conv1d.cu, selective_scan*.cu,
mamba_layer.cu) against their CPU twins, forward and backward, strict fp32 and bf16; then the
timings of the level-0 scan and the whole layer at 128^3 (N = 1, L = 64^3, E = 96).

The CPU twins are channels-first (N, C, L) and run one order at a time; the GPU ops are
token-major and fuse the ToM order, so each GPU op is compared with the composition
tom_permute -> CPU op -> tom_unpermute. Inputs are fresh random numbers (seed printed;
SRM_TEST_SEED repeats), rounded to bf16 in bf16 mode so only the op's own rounding is measured.
Outputs are poisoned (NaN bytes) before each GPU run; gradients start from the same random
values on both sides (backward accumulates), so unwritten or overwritten gradients fail.
Tolerances (||gpu - cpu|| <= rtol ||cpu|| + atol): LayerNorm and conv1d 1e-5 (fp32) -- a few
fp32 roundings per element; the scan and the layer 1e-4 (fp32): 32..4134-step fp32 recurrences
and fp32 sums over up to N*L = 8268 tokens (dA, dD, dB over channels) against the CPU's double
accumulators accumulate ~sqrt(steps) ulps; bf16 mode 1e-2 for ops, 2e-2 for the layer (bf16
GEMM inputs and bf16 intermediates xz, u, G between the fused stages; delta, formed in the scan
kernels, is fp32).
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "check.h"
#include "gpu.h"
#include "mamba_layer.h"
#include "ops.h"
#include "rng.h"
#include "test.h"

static gpu_ctx_t *g;
static int bf16;
static rng_t R;
static const double ATOL = 1e-6;

static double rtol_op(void) { return bf16 ? 1e-2 : 1e-5; }
static double rtol_scan(void) { return bf16 ? 1e-2 : 1e-4; }
static double rtol_layer(void) { return bf16 ? 2e-2 : 1e-4; }

// ---- host bf16 rounding (test_f2bf / test_bf2f: tests/test.h) and device transfer ---------
static void round_act(float *x, size_t n)
{
    if (bf16) for (size_t i = 0; i < n; i++) x[i] = test_bf2f(test_f2bf(x[i]));
}
static size_t asz(void) { return bf16 ? 2 : 4; }

static float *hrand(size_t n, float mean, float std)
{
    float *x = xmalloc(n * sizeof *x);
    rng_fill_normal(&R, x, n, mean, std);
    round_act(x, n);
    return x;
}
static float *hcopy(const float *x, size_t n)
{
    float *y = xmalloc(n * sizeof *y);
    memcpy(y, x, n * sizeof *y);
    return y;
}

static void *dev_act(const float *x, size_t n)
{
    void *d = gpu_malloc(g, n * asz() + 16, "test act");
    if (!bf16) { gpu_upload(g, d, x, n * 4); return d; }
    uint16_t *h = xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) h[i] = test_f2bf(x[i]);
    gpu_upload(g, d, h, n * 2);
    free(h);
    return d;
}
static float *dev_f32(const float *x, size_t n)
{
    float *d = gpu_malloc(g, n * 4 + 16, "test f32");
    gpu_upload(g, d, x, n * 4);
    return d;
}
static float *get_act(const void *d, size_t n)
{
    float *x = xmalloc(n * sizeof *x);
    if (!bf16) { gpu_download(g, x, d, n * 4); return x; }
    uint16_t *h = xmalloc(n * 2);
    gpu_download(g, h, d, n * 2);
    for (size_t i = 0; i < n; i++) x[i] = test_bf2f(h[i]);
    free(h);
    return x;
}
static float *get_f32(const float *d, size_t n)
{
    float *x = xmalloc(n * sizeof *x);
    gpu_download(g, x, d, n * 4);
    return x;
}

// (N, L, ld) token-major columns [c0, c0 + C) -> (N, C, L) channels-first, and back
static void tl_to_cf(float *cf, const float *tl, int N, int C, size_t L, size_t ld, size_t c0)
{
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (size_t l = 0; l < L; l++)
                cf[((size_t)n * C + c) * L + l] = tl[((size_t)n * L + l) * ld + c0 + c];
}
static void cf_to_tl(float *tl, const float *cf, int N, int C, size_t L, size_t ld, size_t c0)
{
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (size_t l = 0; l < L; l++)
                tl[((size_t)n * L + l) * ld + c0 + c] = cf[((size_t)n * C + c) * L + l];
}

static char lbl[160];
static const char *L_(const char *what, int N, int C, size_t L, int extra)
{
    snprintf(lbl, sizeof lbl, "%s %s N=%d C=%d L=%zu %d", bf16 ? "bf16" : "f32", what, N, C, L,
             extra);
    return lbl;
}
#define CLOSE(what, got, want, n, rt) \
    EXPECT(tensor_close(L_(what, N, C, L, extra), got, want, n, rt, ATOL), "%s", lbl)

// ---- LayerNorm -------------------------------------------------------------------------
static void test_layernorm(int N, int C, size_t L)
{
    const int extra = 0;
    const size_t M = (size_t)N * L, n = M * C;
    float *x = hrand(n, 2.0f, 1.5f), *dy = hrand(n, 0, 1), *dx0 = hrand(n, 0, 1);
    float *gm = hrand(C, 1, 0.3f), *bt = hrand(C, 0, 0.3f), *dg0 = hrand(C, 0, 1), *db0 = hrand(C, 0, 1);
    float *xc = xmalloc(n * 4), *yc = xmalloc(n * 4), *mc = xmalloc(M * 4), *rc = xmalloc(M * 4);
    float *dyc = xmalloc(n * 4), *dxc = xmalloc(n * 4), *yt = xmalloc(n * 4), *dxt = xmalloc(n * 4);
    tl_to_cf(xc, x, N, C, L, C, 0);
    tl_to_cf(dyc, dy, N, C, L, C, 0);
    tl_to_cf(dxc, dx0, N, C, L, C, 0);
    float *dgc = hcopy(dg0, C), *dbc = hcopy(db0, C);
    layernorm_forward_cpu(yc, mc, rc, xc, gm, bt, N, C, L, 1e-5);
    layernorm_backward_cpu(dxc, dgc, dbc, dyc, xc, mc, rc, gm, N, C, L);
    cf_to_tl(yt, yc, N, C, L, C, 0);
    cf_to_tl(dxt, dxc, N, C, L, C, 0);

    void *dX = dev_act(x, n), *dY = dev_act(x, n), *dDY = dev_act(dy, n), *dDX = dev_act(dx0, n);
    float *dG = dev_f32(gm, C), *dB = dev_f32(bt, C), *dDG = dev_f32(dg0, C), *dDB = dev_f32(db0, C);
    float *dM = dev_f32(mc, M), *dR = dev_f32(rc, M);
    gpu_poison(g, dY, n * asz());
    gpu_poison(g, dM, M * 4);
    gpu_poison(g, dR, M * 4);
    layernorm_forward_gpu(g, dY, dM, dR, dX, dG, dB, N, C, L, 1e-5);
    layernorm_backward_gpu(g, dDX, dDG, dDB, dDY, dX, dM, dR, dG, N, C, L);
    float *y = get_act(dY, n), *m = get_f32(dM, M), *r = get_f32(dR, M);
    float *dxg = get_act(dDX, n), *dgg = get_f32(dDG, C), *dbg = get_f32(dDB, C);
    CLOSE("layernorm y", y, yt, n, rtol_op());
    CLOSE("layernorm mean", m, mc, M, 1e-5);
    CLOSE("layernorm rstd", r, rc, M, 1e-5);
    CLOSE("layernorm dx", dxg, dxt, n, rtol_op());
    CLOSE("layernorm dgamma", dgg, dgc, C, bf16 ? 1e-2 : 1e-4);
    CLOSE("layernorm dbeta", dbg, dbc, C, bf16 ? 1e-2 : 1e-4);
    void *dv[] = { dX, dY, dDY, dDX, dG, dB, dDG, dDB, dM, dR };
    for (size_t i = 0; i < sizeof dv / sizeof *dv; i++) gpu_free(g, dv[i]);
    float *hv[] = { x, dy, dx0, gm, bt, dg0, db0, xc, yc, mc, rc, dyc, dxc, yt, dxt, dgc, dbc,
                    y, m, r, dxg, dgg, dbg };
    for (size_t i = 0; i < sizeof hv / sizeof *hv; i++) free(hv[i]);
}

// ---- causal conv1d with the ToM order fused -----------------------------------------------
static void test_conv(int N, int E, size_t L, size_t ns, int order, int silu, int K)
{
    const int C = E, extra = order * 100 + silu * 10 + K;
    const size_t nl = (size_t)N * L, n = nl * E, ldx = 2 * (size_t)E;
    float *xz = hrand(nl * ldx, 0, 1), *dy = hrand(n, 0, 1), *dxz0 = hrand(nl * ldx, 0, 1);
    float *w = hrand((size_t)E * K, 0, 0.5f), *b = hrand(E, 0, 0.5f);
    float *dw0 = hrand((size_t)E * K, 0, 1), *db0 = hrand(E, 0, 1);
    // CPU: x (orig, cf) -> permute -> conv (-> SiLU)
    float *xc = xmalloc(n * 4), *xp = xmalloc(n * 4), *yc = xmalloc(n * 4), *pre = xmalloc(n * 4);
    tl_to_cf(xc, xz, N, E, L, ldx, 0);
    tom_permute_cpu(xp, xc, N, E, L, (tom_order_t)order, ns);
    causal_conv1d_forward_cpu(pre, xp, w, b, N, E, L, K);
    memcpy(yc, pre, n * 4);
    if (silu) silu_forward_cpu(yc, yc, n);
    float *yt = xmalloc(n * 4);
    cf_to_tl(yt, yc, N, E, L, E, 0);
    // backward: dpre, conv backward, unpermute into dxz[:, :E]
    float *dyc = xmalloc(n * 4), *dpre = calloc(n, 4), *dxp = calloc(n, 4), *dxc = xmalloc(n * 4);
    tl_to_cf(dyc, dy, N, E, L, E, 0);
    if (silu) silu_backward_cpu(dpre, dyc, pre, n);
    else memcpy(dpre, dyc, n * 4);
    float *dwc = hcopy(dw0, (size_t)E * K), *dbc = hcopy(db0, E);
    causal_conv1d_backward_cpu(dxp, dwc, dbc, dpre, xp, w, N, E, L, K);
    tom_unpermute_cpu(dxc, dxp, N, E, L, (tom_order_t)order, ns);
    // written instead of added (dx_overwrite): the x half is the gradient alone
    float *dxzw = hcopy(dxz0, nl * ldx);
    cf_to_tl(dxzw, dxc, N, E, L, ldx, 0);
    float *dxzt = hcopy(dxz0, nl * ldx), *orig = xmalloc(n * 4);
    tl_to_cf(orig, dxz0, N, E, L, ldx, 0);
    for (size_t i = 0; i < n; i++) dxc[i] += orig[i];
    cf_to_tl(dxzt, dxc, N, E, L, ldx, 0);

    void *dX = dev_act(xz, nl * ldx), *dY = dev_act(dy, n), *dDY = dev_act(dy, n);
    void *dDX = dev_act(dxz0, nl * ldx);
    float *dW = dev_f32(w, (size_t)E * K), *dB = dev_f32(b, E);
    float *dDW = dev_f32(dw0, (size_t)E * K), *dDB = dev_f32(db0, E);
    gpu_poison(g, dY, n * asz());
    causal_conv1d_forward_gpu(g, dY, dX, ldx, dW, dB, N, E, L, K, (tom_order_t)order, ns, silu);
    causal_conv1d_backward_gpu(g, dDX, dDW, dDB, dDY, dX, ldx, dW, dB, N, E, L, K,
                               (tom_order_t)order, ns, silu, 0);
    float *y = get_act(dY, n), *dxg = get_act(dDX, nl * ldx);
    float *dwg = get_f32(dDW, (size_t)E * K), *dbg = get_f32(dDB, E);
    CLOSE("conv1d y", y, yt, n, rtol_op());
    CLOSE("conv1d dxz", dxg, dxzt, nl * ldx, rtol_op());
    CLOSE("conv1d dw", dwg, dwc, (size_t)E * K, bf16 ? 1e-2 : 1e-4);
    CLOSE("conv1d db", dbg, dbc, E, bf16 ? 1e-2 : 1e-4);
    // the same backward asked for part of the gradients: dw, db alone, then dx alone
    float *dDW2 = dev_f32(dw0, (size_t)E * K), *dDB2 = dev_f32(db0, E);
    void *dDX2 = dev_act(dxz0, nl * ldx);
    causal_conv1d_backward_gpu(g, NULL, dDW2, dDB2, dDY, dX, ldx, dW, dB, N, E, L, K,
                               (tom_order_t)order, ns, silu, 0);
    causal_conv1d_backward_gpu(g, dDX2, NULL, NULL, dDY, dX, ldx, dW, dB, N, E, L, K,
                               (tom_order_t)order, ns, silu, 0);
    float *dwg2 = get_f32(dDW2, (size_t)E * K), *dbg2 = get_f32(dDB2, E);
    float *dxg2 = get_act(dDX2, nl * ldx);
    CLOSE("conv1d dw (no dx)", dwg2, dwc, (size_t)E * K, bf16 ? 1e-2 : 1e-4);
    CLOSE("conv1d db (no dx)", dbg2, dbc, E, bf16 ? 1e-2 : 1e-4);
    CLOSE("conv1d dxz (no dw, db)", dxg2, dxzt, nl * ldx, rtol_op());
    // dx written, not added (the old x half is random, the z half must stay)
    void *dDX3 = dev_act(dxz0, nl * ldx);
    causal_conv1d_backward_gpu(g, dDX3, NULL, NULL, dDY, dX, ldx, dW, dB, N, E, L, K,
                               (tom_order_t)order, ns, silu, 1);
    float *dxg3 = get_act(dDX3, nl * ldx);
    CLOSE("conv1d dxz (overwrite)", dxg3, dxzw, nl * ldx, rtol_op());
    void *dv2[] = { dDW2, dDB2, dDX2, dDX3 };
    for (size_t i = 0; i < sizeof dv2 / sizeof *dv2; i++) gpu_free(g, dv2[i]);
    free(dwg2); free(dbg2); free(dxg2); free(dxg3); free(dxzw);
    void *dv[] = { dX, dY, dDY, dDX, dW, dB, dDW, dDB };
    for (size_t i = 0; i < sizeof dv / sizeof *dv; i++) gpu_free(g, dv[i]);
    float *hv[] = { xz, dy, dxz0, w, b, dw0, db0, xc, xp, yc, pre, yt, dyc, dpre, dxp, dxc, dwc,
                    dbc, dxzt, orig, y, dxg, dwg, dbg };
    for (size_t i = 0; i < sizeof hv / sizeof *hv; i++) free(hv[i]);
}

// ---- the scans' step size ------------------------------------------------------------------
// delta = softplus(raw) (threshold 20) and its derivative sigmoid(raw) as every scan kernel
// forms them, element by element against double over raw in [-90, 45] (a 0.003 grid, the
// threshold's neighbours, random values). Bound, relative: 1e-6 for |raw| <= 5 (fp32 mode: 2
// ulps of log1pf / expf; bf16 mode's fast form: 3.5e-7 in a host emulation with exact
// exponentials, plus the MUFU exponential and division, ~2^-22 each), beyond it 2e-6 plus
// 7e-8 |raw| (bf16: the rounding of |raw| log2(e), the exponential's argument); absolute 1e-37
// (the MUFU exponential flushes results under 2^-126 to 0). What this catches in the series:
// a wrong sign or low-order term (>= 1e-4), two of the top terms dropped (1.6e-6 near raw = 0);
// a single top coefficient's error (~1e-7) is under fp32's resolution here, and under bf16's
// 4e-3 by far. The backward's combined form must give delta bit for bit (both forms run in
// one kernel here; that every scan kernel forms delta by the same operations is by
// construction: softplus20_t / softplus20_d in mamba_kernels.cuh).
static void test_step_size(void)
{
    const size_t ngrid = 45000, nrand = 4096, n = ngrid + nrand + 8;
    float *raw = xmalloc(n * 4);
    for (size_t i = 0; i < ngrid; i++) raw[i] = -90.0f + 0.003f * (float)i;
    for (size_t i = 0; i < nrand; i++) raw[ngrid + i] = 4.0f * (float)rng_normal(&R);
    const float special[8] = { 0.0f, -0.0f, 20.0f, nextafterf(20.0f, 0.0f), nextafterf(20.0f, 30.0f),
                               -20.0f, 1e-30f, -1e-30f };
    memcpy(raw + ngrid + nrand, special, sizeof special);
    float *draw = dev_f32(raw, n), *ddt = gpu_malloc(g, n * 4, "dt"), *ddsp = gpu_malloc(g, n * 4, "dsp");
    float *ddt2 = gpu_malloc(g, n * 4, "dt bwd");
    gpu_poison(g, ddt, n * 4); gpu_poison(g, ddsp, n * 4); gpu_poison(g, ddt2, n * 4);
    selective_scan_step_size_gpu(g, ddt, ddsp, ddt2, draw, n);
    float *dt = get_f32(ddt, n), *dsp = get_f32(ddsp, n), *dt2 = get_f32(ddt2, n);
    double worst = 0.0, worst_d = 0.0, worst5 = 0.0;
    size_t bad = 0, bad_d = 0, wi = 0;
    for (size_t i = 0; i < n; i++) {
        const double v = raw[i], sp = v > 20.0 ? v : log1p(exp(v)), sg = 1.0 / (1.0 + exp(-v));
        const double rt = fabs(v) <= 5.0 ? 1e-6 : 2e-6 + 7e-8 * fabs(v), at = 1e-37;
        const double e1 = fabs(dt[i] - sp), e2 = fabs(dsp[i] - sg);
        if (!(e1 <= rt * sp + at)) bad++;
        if (!(e2 <= rt * sg + at)) bad_d++;
        if (sp > at && e1 / sp > worst) { worst = e1 / sp; wi = i; }
        if (fabs(v) <= 5.0 && e1 / sp > worst5) worst5 = e1 / sp;
        if (sg > at && e2 / sg > worst_d) worst_d = e2 / sg;
    }
    printf("%s step size: largest relative error %.2e (raw %.4g; %.2e for |raw| <= 5), "
           "derivative %.2e\n", bf16 ? "bf16" : "f32", worst, raw[wi], worst5, worst_d);
    EXPECT(bad == 0, "%s: %zu of %zu step sizes off softplus (largest relative %.2e at raw %g)",
           bf16 ? "bf16" : "f32", bad, n, worst, raw[wi]);
    EXPECT(bad_d == 0, "%s: %zu of %zu step-size derivatives off sigmoid (largest %.2e)",
           bf16 ? "bf16" : "f32", bad_d, n, worst_d);
    EXPECT(!memcmp(dt, dt2, n * 4), "%s: the backward's step sizes differ from the forward's",
           bf16 ? "bf16" : "f32");
    gpu_free(g, draw); gpu_free(g, ddt); gpu_free(g, ddsp); gpu_free(g, ddt2);
    free(raw); free(dt); free(dsp); free(dt2);
}

// ---- selective scan, three directions in one call ---------------------------------------
#define NSt 16
#define R_L0 3                                      // M's dt rank at level 0 (C = 48)

typedef struct {
    float *u[3], *dl[3], *xd[3], *Wd[3], *Al[3], *D[3], *bias[3], *xz;
} scan_in_t;

static void test_scan(int N, int E, size_t L, size_t ns, int rr)
{
    const int pp = rr + 2 * NSt;
    const int C = E, extra = (int)ns;
    const size_t nl = (size_t)N * L, n = nl * E, ldz = 2 * (size_t)E;
    scan_in_t in;
    for (int k = 0; k < 3; k++) {
        in.u[k] = hrand(n, 0, 1);
        in.xd[k] = hrand(nl * pp, 0, 1);
        // the fused dt projection: delta_raw = x_dbl[:R] W_dt^T ~ N(0, 0.7), formed here as the
        // kernels form it (fp32 fmaf, r ascending) from the values they see
        in.Wd[k] = hrand((size_t)E * rr, 0, 0.7f / sqrtf((float)rr));
        in.dl[k] = xmalloc(n * 4);
        for (size_t t = 0; t < nl; t++)
            for (int e = 0; e < E; e++) {
                float a = 0.0f;
                for (int r = 0; r < rr; r++) a = fmaf(in.xd[k][t * pp + r], in.Wd[k][e * rr + r], a);
                in.dl[k][t * E + e] = a;
            }
        in.Al[k] = xmalloc((size_t)E * NSt * 4);
        for (int e = 0; e < E; e++)
            for (int s = 0; s < NSt; s++)
                in.Al[k][e * NSt + s] = logf((float)(s + 1)) + 0.1f * (float)rng_normal(&R);
        in.D[k] = hrand(E, 1, 0.3f);
        in.bias[k] = xmalloc(E * 4);
        for (int e = 0; e < E; e++) {      // softplus^-1 of dt in [0.001, 0.1], as the init
            double dt = exp(log(0.001) + rng_uniform(&R) * (log(0.1) - log(0.001)));
            in.bias[k][e] = (float)(dt + log(-expm1(-dt)));
        }
    }
    in.xz = hrand(nl * ldz, 0, 1);
    in.bias[0][3] = 25.0f;                 // one channel beyond the softplus threshold
    float *dy = hrand(n, 0, 1);

    // CPU reference, direction by direction
    float *Gc = calloc(n, 4), *zc = xmalloc(n * 4), *zp = xmalloc(n * 4), *uc = xmalloc(n * 4);
    float *dc = xmalloc(n * 4), *Bc = xmalloc(nl * NSt * 4), *Cc = xmalloc(nl * NSt * 4);
    float *yk = xmalloc(n * 4), *tmp = xmalloc(n * 4), *A = xmalloc((size_t)E * NSt * 4);
    float *dyc = xmalloc(n * 4), *dyp = xmalloc(n * 4);
    tl_to_cf(zc, in.xz, N, E, L, ldz, E);
    tl_to_cf(dyc, dy, N, E, L, E, 0);
    // backward initial values (same on both sides) and expected results (token-major)
    float *du0[3], *dd0[3], *dx0[3], *dA0[3], *dD0[3], *db0[3];
    float *due[3], *dde[3], *dxe[3], *dAe[3], *dDe[3], *dbe[3];
    // dz summed over the directions, original order: what the layer's gate backward forms from
    // the pre-gate sum Y (the scans themselves have no dz)
    float *dzs = calloc(n, 4);
    // the dt projection's gradients dx_dbl[:R] and dW_dt on directions 0 and 2; direction 1
    // asks for neither, so its dx_dbl[:R] must stay as it was
    float *dW0[3], *dWe[3];
    const scan_shape_t ss = { .N = N, .E = E, .NS = NSt, .L = L, .bc_nstride = 0 };
    for (int k = 0; k < 3; k++) {
        du0[k] = hrand(n, 0, 1); dd0[k] = hrand(n, 0, 1);
        dx0[k] = hrand(nl * pp, 0, 1);
        dA0[k] = hrand((size_t)E * NSt, 0, 1); dD0[k] = hrand(E, 0, 1); db0[k] = hrand(E, 0, 1);
        const tom_order_t o = (tom_order_t)k;
        tl_to_cf(uc, in.u[k], N, E, L, E, 0);
        tl_to_cf(dc, in.dl[k], N, E, L, E, 0);
        tl_to_cf(Bc, in.xd[k], N, NSt, L, pp, rr);
        tl_to_cf(Cc, in.xd[k], N, NSt, L, pp, rr + NSt);
        tom_permute_cpu(zp, zc, N, E, L, o, ns);
        for (size_t i = 0; i < (size_t)E * NSt; i++) A[i] = -expf(in.Al[k][i]);
        selective_scan_forward_cpu(yk, uc, dc, A, Bc, Cc, in.D[k], zp, in.bias[k], ss);
        tom_unpermute_cpu(tmp, yk, N, E, L, o, ns);
        for (size_t i = 0; i < n; i++) Gc[i] += tmp[i];

        float *du = xmalloc(n * 4), *dd = xmalloc(n * 4), *dz = calloc(n, 4);
        float *dB = xmalloc(nl * NSt * 4), *dC = xmalloc(nl * NSt * 4), *dA = calloc((size_t)E * NSt, 4);
        tl_to_cf(du, du0[k], N, E, L, E, 0);
        tl_to_cf(dd, dd0[k], N, E, L, E, 0);
        tl_to_cf(dB, dx0[k], N, NSt, L, pp, rr);
        tl_to_cf(dC, dx0[k], N, NSt, L, pp, rr + NSt);
        dDe[k] = hcopy(dD0[k], E);
        dbe[k] = hcopy(db0[k], E);
        tom_permute_cpu(dyp, dyc, N, E, L, o, ns);
        selective_scan_backward_cpu(du, dd, dA, dB, dC, dDe[k], dz, dbe[k], dyp, uc, dc, A, Bc, Cc,
                                    in.D[k], zp, in.bias[k], ss);
        due[k] = xmalloc(n * 4); dde[k] = xmalloc(n * 4);
        dxe[k] = hcopy(dx0[k], nl * pp);
        dW0[k] = hrand((size_t)E * rr, 0, 1);
        dWe[k] = hcopy(dW0[k], (size_t)E * rr);
        if (k != 1) {
            // ddelta_raw alone (dd started at dd0): dx_dbl[:R] += ddelta W, dW += ddelta^T x
            for (size_t t = 0; t < nl; t++)
                for (int r = 0; r < rr; r++) {
                    double a = 0.0;
                    for (int e = 0; e < E; e++) {
                        const size_t i = (size_t)e * L + t % L + (t / L) * (size_t)E * L;
                        a += ((double)dd[i] - dd0[k][t * E + e]) * in.Wd[k][e * rr + r];
                    }
                    dxe[k][t * pp + r] += (float)a;
                }
            for (int e = 0; e < E; e++)
                for (int r = 0; r < rr; r++) {
                    double a = dW0[k][e * rr + r];
                    for (size_t t = 0; t < nl; t++) {
                        const size_t i = (size_t)e * L + t % L + (t / L) * (size_t)E * L;
                        a += ((double)dd[i] - dd0[k][t * E + e]) * in.xd[k][t * pp + r];
                    }
                    dWe[k][e * rr + r] = (float)a;
                }
        }
        cf_to_tl(due[k], du, N, E, L, E, 0);
        cf_to_tl(dde[k], dd, N, E, L, E, 0);
        tom_unpermute_cpu(tmp, dz, N, E, L, o, ns);
        cf_to_tl(yk, tmp, N, E, L, E, 0);
        for (size_t i = 0; i < n; i++) dzs[i] += yk[i];
        cf_to_tl(dxe[k], dB, N, NSt, L, pp, rr);
        cf_to_tl(dxe[k], dC, N, NSt, L, pp, rr + NSt);
        dAe[k] = hcopy(dA0[k], (size_t)E * NSt);
        for (size_t i = 0; i < (size_t)E * NSt; i++) dAe[k][i] += dA[i] * A[i];
        free(du); free(dd); free(dz); free(dB); free(dC); free(dA);
    }
    float *Gt = xmalloc(n * 4);
    cf_to_tl(Gt, Gc, N, E, L, E, 0);

    // GPU
    scan_gpu_t s;
    memset(&s, 0, sizeof s);
    s.N = N; s.E = E; s.L = L; s.nslices = ns; s.ldbc = pp; s.ldz = ldz; s.ndir = 3; s.R = rr;
    void *dxz = dev_act(in.xz, nl * ldz), *dY = gpu_malloc(g, n * asz(), "y"), *dDY = dev_act(dy, n);
    void *bufs[64];
    int nb = 0;
    for (int k = 0; k < 3; k++) {
        scan_dir_gpu_t *d = &s.dir[k];
        d->order = (tom_order_t)k;
        d->u = bufs[nb++] = dev_act(in.u[k], n);
        void *xd = bufs[nb++] = dev_act(in.xd[k], nl * pp);
        d->x_dt = xd;
        d->W_dt = bufs[nb++] = dev_f32(in.Wd[k], (size_t)E * rr);
        d->B = (char *)xd + rr * asz();
        d->C = (char *)xd + (rr + NSt) * asz();
        d->z = (char *)dxz + (size_t)E * asz();
        d->A_log = bufs[nb++] = dev_f32(in.Al[k], (size_t)E * NSt);
        d->D = bufs[nb++] = dev_f32(in.D[k], E);
        d->delta_bias = bufs[nb++] = dev_f32(in.bias[k], E);
        d->du = bufs[nb++] = dev_act(du0[k], n);
        d->ddelta = bufs[nb++] = dev_f32(dd0[k], n);
        void *dxd = bufs[nb++] = dev_act(dx0[k], nl * pp);
        d->dB = (char *)dxd + rr * asz();
        d->dC = (char *)dxd + (rr + NSt) * asz();
        d->dA_log = bufs[nb++] = dev_f32(dA0[k], (size_t)E * NSt);
        d->dD = bufs[nb++] = dev_f32(dD0[k], E);
        d->ddelta_bias = bufs[nb++] = dev_f32(db0[k], E);
        if (k != 1) {
            d->dx_dt = dxd;
            d->dW_dt = bufs[nb++] = dev_f32(dW0[k], (size_t)E * rr);
        }
    }
    float *states = gpu_malloc(g, selective_scan_states_bytes(&s), "states");
    void *ws = gpu_malloc(g, selective_scan_workspace_bytes(&s), "ws");
    gpu_poison(g, dY, n * asz());
    gpu_poison(g, states, selective_scan_states_bytes(&s));
    gpu_poison(g, ws, selective_scan_workspace_bytes(&s));
    selective_scan_forward_gpu(g, dY, 0, states, ws, &s);
    gpu_poison(g, ws, selective_scan_workspace_bytes(&s));
    selective_scan_backward_gpu(g, dDY, states, ws, &s);
    float *y = get_act(dY, n);
    CLOSE("scan y (sum of 3 dirs)", y, Gt, n, rtol_scan());
    free(y);
    {
        // accumulate = 1: y += the sum, onto random values (the states it rewrites are the same)
        float *y0 = hrand(n, 0, 1), *want = xmalloc(n * 4);
        for (size_t i = 0; i < n; i++) want[i] = y0[i] + Gt[i];
        void *dY0 = dev_act(y0, n);
        gpu_poison(g, ws, selective_scan_workspace_bytes(&s));
        selective_scan_forward_gpu(g, dY0, 1, states, ws, &s);
        float *ya = get_act(dY0, n);
        CLOSE("scan y += (sum of 3 dirs)", ya, want, n, rtol_scan());
        gpu_free(g, dY0);
        free(y0); free(want); free(ya);
    }
    for (int k = 0; k < 3; k++) {
        scan_dir_gpu_t *d = &s.dir[k];
        float *a = get_act(d->du, n), *b = get_f32(d->ddelta, n);
        float *x = get_act((char *)d->dB - rr * asz(), nl * pp);
        float *dA = get_f32(d->dA_log, (size_t)E * NSt), *dD = get_f32(d->dD, E);
        float *db = get_f32(d->ddelta_bias, E);
        const char *nm[] = { "fwd", "rev", "slice" };
        char t[64];
        snprintf(t, sizeof t, "scan %s du", nm[k]);    CLOSE(t, a, due[k], n, rtol_scan());
        snprintf(t, sizeof t, "scan %s ddelta", nm[k]); CLOSE(t, b, dde[k], n, rtol_scan());
        snprintf(t, sizeof t, "scan %s dB|dC", nm[k]); CLOSE(t, x, dxe[k], nl * pp, rtol_scan());
        snprintf(t, sizeof t, "scan %s dA_log", nm[k]); CLOSE(t, dA, dAe[k], (size_t)E * NSt, rtol_scan());
        snprintf(t, sizeof t, "scan %s dD", nm[k]);    CLOSE(t, dD, dDe[k], E, rtol_scan());
        snprintf(t, sizeof t, "scan %s ddelta_bias", nm[k]); CLOSE(t, db, dbe[k], E, rtol_scan());
        if (d->dW_dt) {
            float *dW = get_f32(d->dW_dt, (size_t)E * rr);
            snprintf(t, sizeof t, "scan %s dW_dt (fused)", nm[k]);
            CLOSE(t, dW, dWe[k], (size_t)E * rr, rtol_scan());
            free(dW);
        }
        free(a); free(b); free(x); free(dA); free(dD); free(db);
    }
    // The Mamba layer's path: the scans emit the pre-gate Y (z = NULL), then G = Y silu(z) and
    // dz = dy Y silu'(z) for the three directions at once -- G as the gated scans' sum above,
    // dz as the sum of the CPU reference's per-direction dz, dxz's x half left alone.
    {
        scan_gpu_t su = s;
        for (int k = 0; k < 3; k++) su.dir[k].z = NULL;
        void *dYu = gpu_malloc(g, n * asz(), "Y"), *dG = gpu_malloc(g, n * asz(), "G");
        void *ddxz = gpu_malloc(g, nl * ldz * asz(), "dxz"), *dG2 = gpu_malloc(g, n * asz(), "G'");
        gpu_poison(g, dG, n * asz());
        gpu_poison(g, dG2, n * asz());
        gpu_poison(g, ddxz, nl * ldz * asz());
        unsigned char *before = xmalloc(nl * ldz * asz()), *after = xmalloc(nl * ldz * asz());
        gpu_download(g, before, ddxz, nl * ldz * asz());
        selective_scan_forward_gpu(g, dYu, 0, states, ws, &su);
        mamba_gate_forward_gpu(g, dG, dYu, dxz, nl, E);
        mamba_gate_backward_gpu(g, ddxz, dG2, dDY, dYu, dxz, nl, E);
        gpu_download(g, after, ddxz, nl * ldz * asz());
        float *gg = get_act(dG, n), *c = get_act(ddxz, nl * ldz), *got = xmalloc(n * 4);
        CLOSE("scan pre-gate Y, then the gate: G", gg, Gt, n, rtol_scan());
        {   // the backward's G for dW_out: the forward's, bit for bit
            void *h1 = xmalloc(n * asz()), *h2 = xmalloc(n * asz());
            gpu_download(g, h1, dG, n * asz());
            gpu_download(g, h2, dG2, n * asz());
            EXPECT(!memcmp(h1, h2, n * asz()), "gate backward's G differs from the forward's (E=%d)", E);
            free(h1); free(h2);
        }
        int kept = 1;                               // the x half is the conv backward's
        for (size_t r = 0; r < nl; r++) {
            for (int e = 0; e < E; e++) got[r * E + e] = c[r * ldz + E + e];
            kept &= !memcmp(before + r * ldz * asz(), after + r * ldz * asz(), (size_t)E * asz());
        }
        CLOSE("gate dz (3 directions)", got, dzs, n, rtol_scan());
        EXPECT(kept, "gate backward wrote dxz[:, :E] (E=%d)", E);
        free(gg); free(c); free(got); free(before); free(after);
        gpu_free(g, dYu); gpu_free(g, dG); gpu_free(g, dG2); gpu_free(g, ddxz);
    }
    // Determinism: the backward again from the same starting gradients, bit for bit.
    {
        float *first = get_f32(s.dir[2].dA_log, (size_t)E * NSt);
        float *firstD = get_f32(s.dir[2].dD, E), *firstb = get_f32(s.dir[2].ddelta_bias, E);
        float *firstW = get_f32(s.dir[2].dW_dt, (size_t)E * rr);
        void *firstB = xmalloc(nl * pp * asz());
        gpu_download(g, firstB, (char *)s.dir[2].dB - rr * asz(), nl * pp * asz());
        for (int k = 0; k < 3; k++) {
            scan_dir_gpu_t *d = &s.dir[k];
            gpu_upload(g, d->dA_log, dA0[k], (size_t)E * NSt * 4);
            gpu_upload(g, d->dD, dD0[k], (size_t)E * 4);
            gpu_upload(g, d->ddelta_bias, db0[k], (size_t)E * 4);
            if (d->dW_dt) gpu_upload(g, d->dW_dt, dW0[k], (size_t)E * rr * 4);
            void *tmpb = dev_act(dx0[k], nl * pp);
            gpu_copy(g, (char *)d->dB - rr * asz(), tmpb, nl * pp * asz());
            gpu_sync(g);
            gpu_free(g, tmpb);
        }
        selective_scan_backward_gpu(g, dDY, states, ws, &s);
        float *second = get_f32(s.dir[2].dA_log, (size_t)E * NSt);
        float *secondD = get_f32(s.dir[2].dD, E), *secondb = get_f32(s.dir[2].ddelta_bias, E);
        float *secondW = get_f32(s.dir[2].dW_dt, (size_t)E * rr);
        void *secondB = xmalloc(nl * pp * asz());
        gpu_download(g, secondB, (char *)s.dir[2].dB - rr * asz(), nl * pp * asz());
        EXPECT(!memcmp(first, second, (size_t)E * NSt * 4) &&
               !memcmp(firstD, secondD, (size_t)E * 4) && !memcmp(firstb, secondb, (size_t)E * 4) &&
               !memcmp(firstB, secondB, nl * pp * asz()) &&
               !memcmp(firstW, secondW, (size_t)E * rr * 4),
               "%s scan backward not bit-reproducible (L=%zu)", bf16 ? "bf16" : "f32", L);
        free(first); free(second); free(firstB); free(secondB);
        free(firstD); free(secondD); free(firstb); free(secondb); free(firstW); free(secondW);
    }
    // Overwrite mode (the Mamba layer's): du, ddelta, dB, dC (and dx_dbl[:R] where fused) are
    // written, not added, so buffers poisoned first come back as the gradients alone (expected:
    // the accumulated results minus the starting values).
    s.overwrite = 1;
    for (int k = 0; k < 3; k++) {
        scan_dir_gpu_t *d = &s.dir[k];
        gpu_poison(g, d->du, n * asz());
        gpu_poison(g, d->ddelta, n * 4);
        gpu_poison(g, (char *)d->dB - rr * asz(), nl * pp * asz());
    }
    selective_scan_backward_gpu(g, dDY, states, ws, &s);
    for (int k = 0; k < 3; k++) {
        scan_dir_gpu_t *d = &s.dir[k];
        float *a = get_act(d->du, n), *b = get_f32(d->ddelta, n);
        float *x = get_act((char *)d->dB - rr * asz(), nl * pp);
        float *wa = xmalloc(n * 4), *wb = xmalloc(n * 4);
        // the columns the scan writes: dB | dC, and dx_dbl[:R] where fused
        const int q0 = d->dx_dt ? 0 : rr, nq = pp - q0;
        float *gx = xmalloc(nl * nq * 4), *wx = xmalloc(nl * nq * 4);
        for (size_t i = 0; i < n; i++) { wa[i] = due[k][i] - du0[k][i]; wb[i] = dde[k][i] - dd0[k][i]; }
        for (size_t r = 0; r < nl; r++)
            for (int q = 0; q < nq; q++) {
                gx[r * nq + q] = x[r * pp + q0 + q];
                wx[r * nq + q] = dxe[k][r * pp + q0 + q] - dx0[k][r * pp + q0 + q];
            }
        char t[64];
        snprintf(t, sizeof t, "scan dir %d overwrite du", k);     CLOSE(t, a, wa, n, rtol_scan());
        snprintf(t, sizeof t, "scan dir %d overwrite ddelta", k); CLOSE(t, b, wb, n, rtol_scan());
        snprintf(t, sizeof t, "scan dir %d overwrite dx_dbl", k); CLOSE(t, gx, wx, nl * nq, rtol_scan());
        free(a); free(b); free(x); free(wa); free(wb); free(gx); free(wx);
    }
    for (int i = 0; i < nb; i++) gpu_free(g, bufs[i]);
    gpu_free(g, dxz); gpu_free(g, dY); gpu_free(g, dDY); gpu_free(g, states); gpu_free(g, ws);
    for (int k = 0; k < 3; k++) {
        float *hv[] = { in.u[k], in.dl[k], in.xd[k], in.Wd[k], in.Al[k], in.D[k], in.bias[k],
                        du0[k], dd0[k], dx0[k], dA0[k], dD0[k], db0[k], due[k], dde[k],
                        dxe[k], dAe[k], dDe[k], dbe[k], dW0[k], dWe[k] };
        for (size_t i = 0; i < sizeof hv / sizeof *hv; i++) free(hv[i]);
    }
    float *hv[] = { in.xz, dy, Gc, zc, zp, uc, dc, Bc, Cc, yk, tmp, A, dyc, dyp, Gt, dzs };
    for (size_t i = 0; i < sizeof hv / sizeof *hv; i++) free(hv[i]);
}

// ---- the whole layer ----------------------------------------------------------------------
typedef struct { const char *name; size_t off, n; } pdesc_t;

static size_t layer_layout(mamba_layer_t *m, int C, size_t ns, pdesc_t *pd, int *npd)
{
    memset(m, 0, sizeof *m);
    m->C = C; m->E = 2 * C; m->R = (C + 15) / 16; m->NS = NSt; m->K = 4; m->nslices = ns;
    const size_t E = m->E, P = (size_t)m->R + 2 * NSt;
    size_t off = 0;
    int k = 0;
#define PUT(field, nm, cnt) do { m->field = off; pd[k++] = (pdesc_t){ nm, off, cnt }; off += (cnt); } while (0)
    PUT(norm_w, "norm.weight", (size_t)C);
    PUT(norm_b, "norm.bias", (size_t)C);
    PUT(in_proj, "in_proj", 2 * E * C);
    PUT(out_proj, "out_proj", (size_t)C * E);
    static const char *nm[3][7] = {
        { "A_log", "D", "conv.w", "conv.b", "x_proj", "dt.w", "dt.b" },
        { "A_b_log", "D_b", "conv_b.w", "conv_b.b", "x_proj_b", "dt_b.w", "dt_b.b" },
        { "A_s_log", "D_s", "conv_s.w", "conv_s.b", "x_proj_s", "dt_s.w", "dt_s.b" } };
    for (int d = 0; d < 3; d++) {
        PUT(A_log[d], nm[d][0], E * NSt);
        PUT(D[d], nm[d][1], E);
        PUT(conv_w[d], nm[d][2], E * 4);
        PUT(conv_b[d], nm[d][3], E);
        PUT(x_proj[d], nm[d][4], P * E);
        PUT(dt_w[d], nm[d][5], E * m->R);
        PUT(dt_b[d], nm[d][6], E);
    }
#undef PUT
    *npd = k;
    return off;
}

static void init_params(float *p, const mamba_layer_t *m, size_t np)
{
    rng_fill_uniform(&R, p, np, -0.3f, 0.3f);
    const int C = m->C, E = m->E;
    for (int c = 0; c < C; c++) p[m->norm_w + c] = 1.0f + 0.2f * (float)rng_normal(&R);
    for (int d = 0; d < 3; d++) {
        for (int e = 0; e < E; e++) {
            for (int s = 0; s < NSt; s++)
                p[m->A_log[d] + (size_t)e * NSt + s] = logf((float)(s + 1));
            p[m->D[d] + e] = 1.0f;
            double dt = exp(log(0.001) + rng_uniform(&R) * (log(0.1) - log(0.001)));
            p[m->dt_b[d] + e] = (float)(dt + log(-expm1(-dt)));
        }
        for (size_t i = 0; i < (size_t)E * 4; i++) p[m->conv_w[d] + i] *= 1.6f;  // bound 0.5
    }
    round_act(p, np);     // bf16 mode: the GEMMs read bf16 weights, the CPU gets the same values
}

static void *params_act_copy(const float *dP, size_t np)
{
    if (!bf16) return (void *)dP;
    void *b = gpu_malloc(g, np * 2, "bf16 params");
    gpu_convert(g, b, GPU_BF16, dP, GPU_F32, np);
    return b;
}

static void test_layer(int N, int C, size_t L, size_t ns)
{
    const int extra = (int)ns;
    mamba_layer_t m;
    pdesc_t pd[40];
    int npd;
    const size_t np = layer_layout(&m, C, ns, pd, &npd), n = (size_t)N * L * C;
    float *p = xmalloc(np * 4);
    init_params(p, &m, np);
    float *x = hrand(n, 0, 1), *dy = hrand(n, 0, 1), *dx0 = hrand(n, 0, 1), *dp0 = hrand(np, 0, 0.1f);
    // CPU
    float *xc = xmalloc(n * 4), *yc = xmalloc(n * 4), *dyc = xmalloc(n * 4), *dxc = xmalloc(n * 4);
    tl_to_cf(xc, x, N, C, L, C, 0);
    tl_to_cf(dyc, dy, N, C, L, C, 0);
    tl_to_cf(dxc, dx0, N, C, L, C, 0);
    float *sv = xmalloc(mamba_layer_saved_size(&m, N, L) * 4);
    float *sc = xmalloc(mamba_layer_scratch_size(&m, N, L) * 4);
    float *dpc = hcopy(dp0, np);
    mamba_layer_forward_cpu(yc, sv, sc, xc, p, &m, N, L);
    mamba_layer_backward_cpu(dxc, dpc, sc, dyc, xc, sv, p, &m, N, L);
    float *yt = xmalloc(n * 4), *dxt = xmalloc(n * 4);
    cf_to_tl(yt, yc, N, C, L, C, 0);
    cf_to_tl(dxt, dxc, N, C, L, C, 0);
    // GPU
    float *dP = dev_f32(p, np), *dDP = dev_f32(dp0, np);
    void *dPA = params_act_copy(dP, np);
    void *dX = dev_act(x, n), *dY = gpu_malloc(g, n * asz(), "y"), *dDY = dev_act(dy, n);
    void *dDX = dev_act(dx0, n);
    const size_t svb = mamba_layer_gpu_saved_bytes(g, &m, N, L);
    const size_t scb = mamba_layer_gpu_scratch_bytes(g, &m, N, L);
    void *dSV = gpu_malloc(g, svb, "saved"), *dSC = gpu_malloc(g, scb, "scratch");
    gpu_poison(g, dY, n * asz());
    gpu_poison(g, dSV, svb);
    gpu_poison(g, dSC, scb);
    mamba_layer_forward_gpu(g, dY, dSV, dSC, dX, dP, dPA, &m, N, L);
    gpu_poison(g, dSC, scb);
    mamba_layer_backward_gpu(g, dDX, dDP, dSC, dDY, dX, dSV, dP, dPA, &m, N, L);
    float *y = get_act(dY, n), *dxg = get_act(dDX, n), *dpg = get_f32(dDP, np);
    CLOSE("layer y", y, yt, n, rtol_layer());
    CLOSE("layer dx", dxg, dxt, n, rtol_layer());
    for (int i = 0; i < npd; i++) {
        char t[64];
        snprintf(t, sizeof t, "layer d%s", pd[i].name);
        CLOSE(t, dpg + pd[i].off, dpc + pd[i].off, pd[i].n, rtol_layer());
    }
    if (dPA != (void *)dP) gpu_free(g, dPA);
    void *dv[] = { dP, dDP, dX, dY, dDY, dDX, dSV, dSC };
    for (size_t i = 0; i < sizeof dv / sizeof *dv; i++) gpu_free(g, dv[i]);
    float *hv[] = { p, x, dy, dx0, dp0, xc, yc, dyc, dxc, sv, sc, dpc, yt, dxt, y, dxg, dpg };
    for (size_t i = 0; i < sizeof hv / sizeof *hv; i++) free(hv[i]);
}

// ---- the layer at the whole model's shapes, against the CPU model in double --------------
static double relerr(const float *a, const float *b, size_t n)
{
    double d = 0, w = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = (double)a[i] - (double)b[i];
        d += e * e;
        w += (double)b[i] * b[i];
    }
    return w > 0 ? sqrt(d / w) : sqrt(d);
}

static double *to64(const float *x, size_t n)
{
    double *d = xmalloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

// The absolute floor of parameter gradient nm (cnt elements), as test_gpu_model's: rt * RMS of
// all the layer's parameter gradients * sqrt(cnt) -- the error a tensor of typical magnitude
// may have, for the small gradients whose sums cancel (dt_proj of one direction) -- and for a
// bias "X.b" with a weight "X.w", at least rt * the norm of the weight's gradient (a bias
// gradient sums the same terms as the weight's and may cancel far below them: its rounding is
// judged at the weight's scale, as if the two were one tensor). want: the reference gradients,
// grms: their RMS over all the layer's parameters.
static double param_floor(const char *nm, size_t cnt, const pdesc_t *pd, int npd,
                          const float *want, double grms, double rt)
{
    double f = rt * grms * sqrt((double)cnt);
    const size_t n = strlen(nm);
    if (n < 3 || strcmp(nm + n - 2, ".b") != 0) return f;
    for (int i = 0; i < npd; i++)
        if (strlen(pd[i].name) == n && strncmp(pd[i].name, nm, n - 1) == 0 &&
            pd[i].name[n - 1] == 'w') {
            double w = 0;
            for (size_t j = 0; j < pd[i].n; j++) w += (double)want[pd[i].off + j] * want[pd[i].off + j];
            if (rt * sqrt(w) > f) f = rt * sqrt(w);
        }
    return f;
}

// One ToM layer at a level of the 64^3 model (tiny: C = 8, E = 16, R = 1): level 0 runs ToM_B/C
// at L = 32768 with 32 slices, ToM_A at L = 4096 with 4 slices. Inputs of the model's scale,
// the model's init (A = -(1..16), dt in [0.001, 0.1]: memories of up to ~1000 tokens, where a
// biased decay shows). Reference: the CPU layer in double. The GPU may be off by
// max(rtol, 4x the CPU float layer's own error) per tensor (rtol 2e-5 fp32, 2e-2 bf16): the
// same rule as the whole-model test, tighter than the float-reference tests above.
static void test_layer_vs_double(int N, int C, size_t L, size_t ns)
{
    const int extra = (int)ns;
    const double rt = bf16 ? 2e-2 : 2e-5;
    mamba_layer_t m;
    pdesc_t pd[40];
    int npd;
    const size_t np = layer_layout(&m, C, ns, pd, &npd), n = (size_t)N * L * C;
    float *p = xmalloc(np * 4);
    init_params(p, &m, np);
    float *x = hrand(n, 0, 1), *dy = hrand(n, 0, 1e-3f);
    float *xc = xmalloc(n * 4), *dyc = xmalloc(n * 4);
    tl_to_cf(xc, x, N, C, L, C, 0);
    tl_to_cf(dyc, dy, N, C, L, C, 0);
    // CPU float and double, gradients from zero
    float *yc = xmalloc(n * 4), *dxc = calloc(n, 4), *dpc = calloc(np, 4);
    float *sv = xmalloc(mamba_layer_saved_size(&m, N, L) * 4);
    float *sc = xmalloc(mamba_layer_scratch_size(&m, N, L) * 4);
    mamba_layer_forward_cpu(yc, sv, sc, xc, p, &m, N, L);
    mamba_layer_backward_cpu(dxc, dpc, sc, dyc, xc, sv, p, &m, N, L);
    free(sv); free(sc);
    double *P8 = to64(p, np), *X8 = to64(xc, n), *DY8 = to64(dyc, n);
    double *Y8 = xmalloc(n * 8), *DX8 = calloc(n, 8), *DP8 = calloc(np, 8);
    double *sv8 = xmalloc(mamba_layer_saved_size(&m, N, L) * 8);
    double *sc8 = xmalloc(mamba_layer_scratch_size(&m, N, L) * 8);
    mamba_layer_forward_cpu_f64(Y8, sv8, sc8, X8, P8, &m, N, L);
    mamba_layer_backward_cpu_f64(DX8, DP8, sc8, DY8, X8, sv8, P8, &m, N, L);
    free(sv8); free(sc8);
    float *y64 = xmalloc(n * 4), *dx64 = xmalloc(n * 4), *dp64 = xmalloc(np * 4);
    float *yf = xmalloc(n * 4), *dxf = xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) { xc[i] = (float)Y8[i]; dyc[i] = (float)DX8[i]; }
    cf_to_tl(y64, xc, N, C, L, C, 0);
    cf_to_tl(dx64, dyc, N, C, L, C, 0);
    cf_to_tl(yf, yc, N, C, L, C, 0);
    cf_to_tl(dxf, dxc, N, C, L, C, 0);
    for (size_t i = 0; i < np; i++) dp64[i] = (float)DP8[i];
    // GPU, gradients from zero
    float *dP = dev_f32(p, np), *zero = calloc(np > n ? np : n, 4), *dDP = dev_f32(zero, np);
    void *dPA = params_act_copy(dP, np);
    void *dX = dev_act(x, n), *dY = gpu_malloc(g, n * asz(), "y"), *dDY = dev_act(dy, n);
    void *dDX = dev_act(zero, n);
    const size_t svb = mamba_layer_gpu_saved_bytes(g, &m, N, L);
    const size_t scb = mamba_layer_gpu_scratch_bytes(g, &m, N, L);
    void *dSV = gpu_malloc(g, svb, "saved"), *dSC = gpu_malloc(g, scb, "scratch");
    gpu_poison(g, dY, n * asz());
    gpu_poison(g, dSV, svb);
    gpu_poison(g, dSC, scb);
    mamba_layer_forward_gpu(g, dY, dSV, dSC, dX, dP, dPA, &m, N, L);
    gpu_poison(g, dSC, scb);
    mamba_layer_backward_gpu(g, dDX, dDP, dSC, dDY, dX, dSV, dP, dPA, &m, N, L);
    float *y = get_act(dY, n), *dxg = get_act(dDX, n), *dpg = get_f32(dDP, np);
    double worst = 0, worst_cpu = 0;
    const char *worst_name = "";
    typedef struct { const char *nm; const float *a, *b, *f; size_t cnt; } cmp_t;
    cmp_t t[42];
    int nt = 0;
    t[nt++] = (cmp_t){ "y", y, y64, yf, n };
    t[nt++] = (cmp_t){ "dx", dxg, dx64, dxf, n };
    for (int i = 0; i < npd; i++)
        t[nt++] = (cmp_t){ pd[i].name, dpg + pd[i].off, dp64 + pd[i].off,
                                  dpc + pd[i].off, pd[i].n };
    double gss = 0;
    for (size_t i = 0; i < np; i++) gss += (double)dp64[i] * dp64[i];
    const double grms = sqrt(gss / (double)np);
    for (int i = 0; i < nt; i++) {
        const double ecpu = relerr(t[i].f, t[i].b, t[i].cnt), e = relerr(t[i].a, t[i].b, t[i].cnt);
        const double tol = 4 * ecpu > rt ? 4 * ecpu : rt;
        char what[64];
        snprintf(what, sizeof what, "layer vs double %s", t[i].nm);
        const double atol = i < 2 ? 1e-9 : param_floor(t[i].nm, t[i].cnt, pd, npd, dp64, grms, rt);
        EXPECT(tensor_close(L_(what, N, C, L, extra), t[i].a, t[i].b, t[i].cnt, tol, atol),
               "%s (CPU float layer's own error %.2e)", lbl, ecpu);
        if (e > worst) { worst = e; worst_cpu = ecpu; worst_name = t[i].nm; }
    }
    printf("%s layer vs double N=%d C=%d L=%zu ns=%zu: y %.2e (CPU float %.2e), dx %.2e (%.2e); "
           "largest %.2e at %s (CPU float %.2e)\n", bf16 ? "bf16" : "f32", N, C, L, ns,
           relerr(y, y64, n), relerr(yf, y64, n), relerr(dxg, dx64, n), relerr(dxf, dx64, n),
           worst, worst_name, worst_cpu);
    if (dPA != (void *)dP) gpu_free(g, dPA);
    void *dv[] = { dP, dDP, dX, dY, dDY, dDX, dSV, dSC };
    for (size_t i = 0; i < sizeof dv / sizeof *dv; i++) gpu_free(g, dv[i]);
    void *hv[] = { p, x, dy, xc, dyc, yc, dxc, dpc, P8, X8, DY8, Y8, DX8, DP8, y64, dx64, dp64,
                   yf, dxf, zero, y, dxg, dpg };
    for (size_t i = 0; i < sizeof hv / sizeof *hv; i++) free(hv[i]);
}

// ---- timings at the level-0 shape of 128^3 ------------------------------------------------
static int cmpf(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

// SRM_TEST_REPS (default 20, at most 64) timed repetitions after 3 warm-up ones.
#define REPS_MAX 64
static int REPS = 20;
static float median_ms(float *t, int n)
{
    qsort(t, n, sizeof *t, cmpf);
    return t[n / 2];
}

static void *dev_rand_act(size_t n, float mean, float std)
{
    float *h = hrand(n, mean, std);
    void *d = dev_act(h, n);
    free(h);
    return d;
}

// The scan alone at one layer shape, called as the Mamba layer calls it (forward: the 3
// directions in one call emitting the pre-gate Y, then the gate; backward: the gate's dz, then
// one call per direction): median ms into *mf, *mb.
static void scan_timing(gpu_timer_t *tm, size_t L, int E, size_t ns, int Rk, float *mf, float *mb,
                        int report_memory)
{
    const int N = 1, P = Rk + 2 * NSt;
    const size_t nl = (size_t)N * L, n = nl * E;
    float tf[REPS_MAX], tb[REPS_MAX];
    scan_gpu_t s;
    memset(&s, 0, sizeof s);
    s.N = N; s.E = E; s.L = L; s.nslices = ns; s.ldbc = P; s.ldz = 2 * (size_t)E; s.ndir = 3;
    s.R = Rk;
    void *bufs[64];
    int nb = 0;
    void *xz = bufs[nb++] = dev_rand_act(nl * 2 * E, 0, 1);
    void *dY = bufs[nb++] = dev_rand_act(n, 0, 1);
    void *Y = bufs[nb++] = dev_rand_act(n, 0, 1), *G = bufs[nb++] = dev_rand_act(n, 0, 1);
    void *dxz = bufs[nb++] = dev_rand_act(nl * 2 * E, 0, 1);
    float *al = xmalloc((size_t)E * NSt * 4), *one = xmalloc((size_t)E * 4);
    float *bias = xmalloc((size_t)E * 4), *zero = xcalloc((size_t)E * (Rk > NSt ? Rk : NSt), 4);
    for (int k = 0; k < 3; k++) {
        scan_dir_gpu_t *d = &s.dir[k];
        for (int i = 0; i < E * NSt; i++) al[i] = logf((float)(i % NSt + 1));
        for (int i = 0; i < E; i++) { one[i] = 1.0f; bias[i] = -3.0f + 0.5f * (float)rng_normal(&R); }
        d->order = (tom_order_t)k;
        d->u = bufs[nb++] = dev_rand_act(n, 0, 1);
        void *xd = bufs[nb++] = dev_rand_act(nl * P, 0, 1);
        d->B = (char *)xd + Rk * asz();
        d->C = (char *)xd + (Rk + NSt) * asz();
        d->z = (char *)xz + (size_t)E * asz();
        d->A_log = bufs[nb++] = dev_f32(al, (size_t)E * NSt);
        d->D = bufs[nb++] = dev_f32(one, E);
        d->delta_bias = bufs[nb++] = dev_f32(bias, E);
        d->du = bufs[nb++] = dev_rand_act(n, 0, 1);
        // as the layer: delta_raw = x_dbl[:R] W_dt^T (~ N(0, 0.7)), ddelta not stored
        float *hd = hrand((size_t)E * Rk, 0, 0.7f / sqrtf((float)Rk));
        d->W_dt = bufs[nb++] = dev_f32(hd, (size_t)E * Rk);
        free(hd);
        d->x_dt = xd;
        void *dxd = bufs[nb++] = dev_rand_act(nl * P, 0, 1);
        d->dB = (char *)dxd + Rk * asz();
        d->dC = (char *)dxd + (Rk + NSt) * asz();
        d->dx_dt = dxd;
        d->dW_dt = bufs[nb++] = dev_f32(zero, (size_t)E * Rk);
        d->dA_log = bufs[nb++] = dev_f32(zero, (size_t)E * NSt);
        d->dD = bufs[nb++] = dev_f32(zero, E);
        d->ddelta_bias = bufs[nb++] = dev_f32(zero, E);
    }
    free(al); free(one); free(bias); free(zero);
    float *states = bufs[nb++] = gpu_malloc(g, selective_scan_states_bytes(&s), "states");
    void *ws = bufs[nb++] = gpu_malloc(g, selective_scan_workspace_bytes(&s), "ws");
    for (int r = -3; r < REPS; r++) {
        scan_gpu_t sf = s;
        for (int k = 0; k < 3; k++) sf.dir[k].z = NULL;
        gpu_timer_start(tm);
        selective_scan_forward_gpu(g, Y, 0, states, ws, &sf);
        mamba_gate_forward_gpu(g, G, Y, xz, nl, E);
        gpu_timer_stop(tm);
        float f = gpu_timer_ms(tm);
        // as mamba_layer_backward_gpu: one direction per call (one u buffer)
        gpu_timer_start(tm);
        mamba_gate_backward_gpu(g, dxz, G, dY, Y, xz, nl, E);
        for (int k = 0; k < 3; k++) {
            scan_gpu_t s1 = s;
            s1.ndir = 1;
            s1.overwrite = 1;                       // as the layer
            s1.dir[0] = s.dir[k];
            selective_scan_backward_gpu(g, dY, states + selective_scan_dir_states(&s, k), ws, &s1);
        }
        gpu_timer_stop(tm);
        float b = gpu_timer_ms(tm);
        if (r >= 0) { tf[r] = f; tb[r] = b; }
    }
    *mf = median_ms(tf, REPS);
    *mb = median_ms(tb, REPS);
    if (report_memory)
        printf("scan memory: states %.1f MiB (saved), workspace %.1f MiB\n",
               selective_scan_states_bytes(&s) / 1048576.0,
               selective_scan_workspace_bytes(&s) / 1048576.0);
    for (int i = 0; i < nb; i++) gpu_free(g, bufs[i]);
}

static void timing(void)
{
    const int N = 1, E = 96, C = 48;
    const size_t L = (size_t)64 * 64 * 64, ns = 64, nl = (size_t)N * L;
    gpu_timer_t *tm = gpu_timer_new(g);
    float tf[REPS_MAX], tb[REPS_MAX];
    char desc[256];
    gpu_describe(g, desc, sizeof desc);
    printf("timing on %s, %s mode\n", desc, bf16 ? "bf16" : "fp32");

    float mf, mb;
    scan_timing(tm, L, E, ns, R_L0, &mf, &mb, 1);
    printf("scan level 0 (N=1 L=%zu E=%d, 3 directions): forward %.3f ms, backward %.3f ms, "
           "fwd+bwd %.3f ms; two layers' worth %.3f ms\n", L, E, mf, mb, mf + mb, 2 * (mf + mb));
    // Every ToM layer shape of variant M at 128^3, batch 1 (architecture.md's level table):
    // per level the CMMB's ToM_A (nslices 4) once and the stage's ToM_B / ToM_C twice. The sum
    // is what one training step's scans should cost without the model's other work.
    static const struct { size_t L; int E; size_t ns; int layers; } shp[] = {
        { 32768, 96, 4, 1 }, { 262144, 96, 64, 2 }, { 4096, 192, 4, 1 }, { 32768, 192, 32, 2 },
        { 512, 384, 4, 1 }, { 4096, 384, 16, 2 }, { 64, 768, 4, 1 }, { 512, 768, 8, 2 },
    };
    float sf = 0.0f, sb = 0.0f;
    for (size_t i = 0; i < sizeof shp / sizeof *shp; i++) {
        scan_timing(tm, shp[i].L, shp[i].E, shp[i].ns, (shp[i].E / 2 + 15) / 16, &mf, &mb, 0);
        printf("scan shape L=%zu E=%d nslices=%zu (x%d): forward %.3f ms, backward %.3f ms\n",
               shp[i].L, shp[i].E, shp[i].ns, shp[i].layers, mf, mb);
        sf += shp[i].layers * mf;
        sb += shp[i].layers * mb;
    }
    printf("scan all layers of M at 128^3: forward %.3f ms, backward %.3f ms, total %.3f ms\n",
           sf, sb, sf + sb);

    // the whole layer
    mamba_layer_t m;
    pdesc_t pd[40];
    int npd;
    const size_t np = layer_layout(&m, C, ns, pd, &npd), nx = nl * C;
    float *p = xmalloc(np * 4);
    init_params(p, &m, np);
    float *dP = dev_f32(p, np);
    float *dDP = gpu_malloc(g, np * 4, "dparams");
    gpu_memset(g, dDP, 0, np * 4);
    void *dPA = params_act_copy(dP, np);
    void *X = dev_rand_act(nx, 0, 1), *Yl = dev_rand_act(nx, 0, 1), *DY = dev_rand_act(nx, 0, 1);
    void *DX = dev_rand_act(nx, 0, 1);
    const size_t svb = mamba_layer_gpu_saved_bytes(g, &m, N, L);
    const size_t scb = mamba_layer_gpu_scratch_bytes(g, &m, N, L);
    void *SV = gpu_malloc(g, svb, "saved"), *SC = gpu_malloc(g, scb, "scratch");
    for (int r = -3; r < REPS; r++) {
        gpu_timer_start(tm);
        mamba_layer_forward_gpu(g, Yl, SV, SC, X, dP, dPA, &m, N, L);
        gpu_timer_stop(tm);
        float f = gpu_timer_ms(tm);
        gpu_timer_start(tm);
        mamba_layer_backward_gpu(g, DX, dDP, SC, DY, X, SV, dP, dPA, &m, N, L);
        gpu_timer_stop(tm);
        float b = gpu_timer_ms(tm);
        if (r >= 0) { tf[r] = f; tb[r] = b; }
    }
    const float lf = median_ms(tf, REPS), lb = median_ms(tb, REPS);
    printf("mamba layer level 0 (N=1 L=%zu C=%d): forward %.3f ms, backward %.3f ms, total %.3f ms;"
           " saved %.1f MiB, scratch %.1f MiB\n", L, C, lf, lb, lf + lb, svb / 1048576.0,
           scb / 1048576.0);
    EXPECT(isfinite(lf) && isfinite(lb) && mf > 0 && mb > 0, "timings must be finite");
    if (dPA != (void *)dP) gpu_free(g, dPA);
    void *dv[] = { dP, dDP, X, Yl, DY, DX, SV, SC };
    for (size_t i = 0; i < sizeof dv / sizeof *dv; i++) gpu_free(g, dv[i]);
    free(p);
    gpu_timer_free(&tm);
}

int main(void)
{
    const char *es = getenv("SRM_TEST_SEED");
    unsigned long long seed = es ? strtoull(es, NULL, 10) : (unsigned long long)time(NULL);
    printf("test_gpu_mamba seed %llu (SRM_TEST_SEED to repeat)\n", seed);
    R = rng_seed(seed);
    // SRM_TEST_ONLY_TIMING=1: only the timings (for profiling runs); SRM_TEST_NO_TIMING=1: none.
    const int only_timing = getenv("SRM_TEST_ONLY_TIMING") != NULL;
    if (getenv("SRM_TEST_REPS")) REPS = atoi(getenv("SRM_TEST_REPS"));
    if (REPS < 1) REPS = 1;
    if (REPS > REPS_MAX) REPS = REPS_MAX;
    for (bf16 = only_timing; bf16 <= 1; bf16++) {
        gpu_cfg_t cfg = GPU_CFG_DEFAULT;
        cfg.act = bf16 ? GPU_BF16 : GPU_F32;
        cfg.deterministic = 1;
        g = gpu_ctx_new(cfg);
        if (only_timing) { timing(); gpu_ctx_destroy(&g); continue; }
        // token groups of G lanes (16-byte vectors where C allows): C 37 one element a lane
        // (the fallback) in both modes, 20 and 100 in bf16 (and 100 with 25 vectors in fp32),
        // 8 one lane a token (G 1), 48 / 96 M's levels 0-1, 384 / 512 several vectors a lane;
        // L 40000 more token groups than the grid's lanes (every warp loops, many blocks'
        // dgamma / dbeta rows)
        test_layernorm(2, 20, 37);
        test_layernorm(1, 37, 301);
        test_layernorm(2, 100, 257);
        test_layernorm(2, 8, 33);
        test_layernorm(1, 48, 301);
        test_layernorm(2, 96, 4133);
        test_layernorm(1, 48, 40000);
        test_layernorm(1, 384, 1000);
        test_layernorm(1, 512, 301);
        for (int order = 0; order < 3; order++)
            for (int silu = 0; silu < 2; silu++) {
                test_conv(2, 20, 37, 1, order, silu, 4);
                test_conv(1, 20, 4134, 13, order, silu, 4);
                // backward tiles: three whole 32-channel slabs; a part slab with N = 2 and
                // fewer taps; more tiles than blocks (blocks walk several)
                test_conv(1, 96, 4134, 13, order, silu, 4);
                test_conv(2, 45, 301, 7, order, silu, 3);
                test_conv(1, 20, 301, 7, order, silu, 2);
                test_conv(2, 33, 5, 1, order, silu, 1);     // one part tile, one tap
                test_conv(1, 8, 2, 2, order, silu, 4);      // shorter than the taps
                test_conv(1, 64, 40000, 16, order, silu, 4);
            }
        test_step_size();
        // last argument: the dt rank R (x_dbl = [dt (R) | B | C]) of the fused dt_proj backward
        test_scan(2, 20, 37, 1, 3);
        test_scan(1, 20, 301, 7, 1);
        test_scan(2, 20, 4133, 1, 3);
        test_scan(1, 96, 4134, 13, 6);
        test_scan(1, 45, 11000, 8, 3);              // enough chunks: no channel split
        test_scan(1, 200, 301, 7, 13);              // channel blocks of 128 + a 72-wide tail
        test_scan(1, 129, 301, 7, SCAN_RMAX);       // channel blocks of 96 (129 = 96 + 33)
        test_scan(1, 1024, 301, 7, 32);             // the widest layer the scans take
        test_scan(1, 96, 33000, 8, 6);              // level 0's width, no channel split: the
                                                    // direct dx_dbl[:R] store
        test_layer(2, 10, 37, 1);
        test_layer(1, 20, 301, 7);
        test_layer(1, 48, 4134, 13);
        {
            // the layer's one-direction-at-a-time backward: a length whose one-direction scan
            // fills this GPU (the shapes above all run their three directions as one call)
            size_t Lw = 65536;
            while (selective_scan_backward_small(g, 1, 16, Lw)) Lw *= 2;
            test_layer(1, 8, Lw, 16);
        }
        test_layer_vs_double(1, 8, 32768, 32);      // tiny level 0: ToM_B / ToM_C
        test_layer_vs_double(1, 8, 4096, 4);        // tiny level 0: ToM_A
        test_layer_vs_double(1, 16, 4096, 16);      // tiny level 1
        if (bf16 && !getenv("SRM_TEST_NO_TIMING")) timing();
        gpu_ctx_destroy(&g);
    }
    return test_summary();
}
