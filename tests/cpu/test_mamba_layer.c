/*
test_mamba_layer.c -- the whole ToM MambaLayer (common/nn/mamba_layer.c) on the CPU.

Parameters are laid out here in a private buffer (the model table belongs to common/model.c) and
initialised as architecture.md §5.3 (A_log = ln(1..16), D = 1, dt bias = softplus^-1 of a
log-uniform dt in [1e-3, 1e-1], PyTorch-default uniform weights), with the LayerNorm affine
perturbed so its gradients are not degenerate. Checks:
  - the parameter count formula of §5.2 (31,488 for C = 48 ...) with this layout;
  - forward against an independent index-by-index implementation written from §5.4;
  - finite differences in double for dx and EVERY parameter tensor (both configurations, one
    with dt_rank R = 2), <= 1e-5 relative (bar 1e-4);
  - the float build against the double build; backward accumulates; forward and backward stay
    inside mamba_layer_saved_size / mamba_layer_scratch_size (canaries after each buffer).
*/
#include "test.h"
#include "rng.h"
#include "check.h"
#include "mamba_layer.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FD_EPS 1e-5        // round-off of the loss dominates below this; truncation is ~eps^2
#define FD_RTOL 1e-5
#define FD_ATOL 1e-9
#define CANARY 4096         // guard elements after saved and scratch

static rng_t rng;

// ---- parameter layout and init ---------------------------------------------------------------

typedef struct { const char *name; size_t *off; size_t n; int dir; } ptensor_t;

// Fills m (C, nslices) and tab (up to 25 tensors) with a dense layout; returns the total size.
static size_t layout(mamba_layer_t *m, int C, size_t nslices, ptensor_t *tab, int *ntab)
{
    memset(m, 0, sizeof *m);
    m->C = C; m->E = 2 * C; m->R = (C + 15) / 16; m->NS = 16; m->K = 4; m->nslices = nslices;
    const size_t E = m->E, R = m->R, NS = m->NS;
    int t = 0;
    tab[t++] = (ptensor_t){ "norm.weight", &m->norm_w, C, -1 };
    tab[t++] = (ptensor_t){ "norm.bias", &m->norm_b, C, -1 };
    tab[t++] = (ptensor_t){ "in_proj.weight", &m->in_proj, 2 * E * C, -1 };
    tab[t++] = (ptensor_t){ "out_proj.weight", &m->out_proj, C * E, -1 };
    for (int k = 0; k < 3; k++) {
        tab[t++] = (ptensor_t){ "A_log", &m->A_log[k], E * NS, k };
        tab[t++] = (ptensor_t){ "D", &m->D[k], E, k };
        tab[t++] = (ptensor_t){ "conv1d.weight", &m->conv_w[k], E * m->K, k };
        tab[t++] = (ptensor_t){ "conv1d.bias", &m->conv_b[k], E, k };
        tab[t++] = (ptensor_t){ "x_proj.weight", &m->x_proj[k], (R + 2 * NS) * E, k };
        tab[t++] = (ptensor_t){ "dt_proj.weight", &m->dt_w[k], E * R, k };
        tab[t++] = (ptensor_t){ "dt_proj.bias", &m->dt_b[k], E, k };
    }
    size_t off = 0;
    for (int i = 0; i < t; i++) { *tab[i].off = off; off += tab[i].n; }
    *ntab = t;
    return off;
}

static void fill_u(double *p, size_t n, double bound)
{
    for (size_t i = 0; i < n; i++) p[i] = (float)(bound * (2 * rng_uniform(&rng) - 1));
}

static void init_params(double *p, const mamba_layer_t *m)
{
    const int C = m->C, E = m->E, R = m->R, NS = m->NS;
    for (int c = 0; c < C; c++) {
        p[m->norm_w + c] = (float)(1 + 0.2 * (rng_uniform(&rng) - 0.5));
        p[m->norm_b + c] = (float)(0.2 * (rng_uniform(&rng) - 0.5));
    }
    fill_u(p + m->in_proj, (size_t)2 * E * C, 1 / sqrt(C));
    fill_u(p + m->out_proj, (size_t)C * E, 1 / sqrt(E));
    for (int k = 0; k < 3; k++) {
        for (int e = 0; e < E; e++) {
            for (int s = 0; s < NS; s++) p[m->A_log[k] + e * NS + s] = (float)log(s + 1.0);
            p[m->D[k] + e] = 1;
            double dt = exp(rng_uniform(&rng) * (log(0.1) - log(0.001)) + log(0.001));
            dt = fmax(dt, 1e-4);
            p[m->dt_b[k] + e] = (float)(dt + log(-expm1(-dt)));
        }
        fill_u(p + m->conv_w[k], (size_t)E * m->K, 0.5);
        fill_u(p + m->conv_b[k], E, 0.5);
        fill_u(p + m->x_proj[k], (size_t)(R + 2 * NS) * E, 1 / sqrt(E));
        fill_u(p + m->dt_w[k], (size_t)E * R, 1 / sqrt(R));
    }
}

// ---- an independent forward, straight from architecture.md §5.4 ----------------------------

static double silu(double v) { return v / (1 + exp(-v)); }

static void ref_forward(double *y, const double *x, const double *p, const mamba_layer_t *m,
                        int N, size_t L)
{
    const int C = m->C, E = m->E, R = m->R, NS = m->NS, K = m->K, P = R + 2 * NS;
    double *T = xcalloc((size_t)C * L, 8), *xz = xcalloc((size_t)2 * E * L, 8);
    double *G = xcalloc((size_t)E * L, 8), *u = xcalloc((size_t)E * L, 8);
    double *xdbl = xcalloc((size_t)P * L, 8);
    for (int n = 0; n < N; n++) {
        const double *xn = x + (size_t)n * C * L;
        for (size_t l = 0; l < L; l++) {                      // LayerNorm per token
            double mu = 0, var = 0;
            for (int c = 0; c < C; c++) mu += xn[c * L + l] / C;
            for (int c = 0; c < C; c++) var += (xn[c * L + l] - mu) * (xn[c * L + l] - mu) / C;
            for (int c = 0; c < C; c++)
                T[c * L + l] = (xn[c * L + l] - mu) / sqrt(var + 1e-5) * p[m->norm_w + c] + p[m->norm_b + c];
        }
        for (int o = 0; o < 2 * E; o++)                          // in_proj
            for (size_t l = 0; l < L; l++) {
                double s = 0;
                for (int c = 0; c < C; c++) s += p[m->in_proj + o * C + c] * T[c * L + l];
                xz[o * L + l] = s;
            }
        memset(G, 0, (size_t)E * L * 8);
        for (int k = 0; k < 3; k++) {
#define PI(j) tom_index((tom_order_t)k, (j), L, m->nslices)
            for (int e = 0; e < E; e++)                          // conv on the permuted x, SiLU
                for (size_t j = 0; j < L; j++) {
                    double s = p[m->conv_b[k] + e];
                    for (int i = 0; i < K; i++) {
                        long src = (long)j - (K - 1) + i;
                        if (src >= 0) s += p[m->conv_w[k] + e * K + i] * xz[e * L + PI((size_t)src)];
                    }
                    u[e * L + j] = silu(s);
                }
            for (int r = 0; r < P; r++)                          // x_proj
                for (size_t j = 0; j < L; j++) {
                    double s = 0;
                    for (int e = 0; e < E; e++) s += p[m->x_proj[k] + r * E + e] * u[e * L + j];
                    xdbl[r * L + j] = s;
                }
            for (int e = 0; e < E; e++) {                        // dt, scan, gate, un-permute
                double h[16] = {0};
                for (size_t j = 0; j < L; j++) {
                    double v = p[m->dt_b[k] + e];
                    for (int r = 0; r < R; r++) v += p[m->dt_w[k] + e * R + r] * xdbl[r * L + j];
                    double dt = v > 20 ? v : log1p(exp(v)), out = p[m->D[k] + e] * u[e * L + j];
                    for (int s = 0; s < NS; s++) {
                        double A = -exp(p[m->A_log[k] + e * NS + s]);
                        h[s] = exp(dt * A) * h[s] + dt * xdbl[(R + s) * L + j] * u[e * L + j];
                        out += xdbl[(R + NS + s) * L + j] * h[s];
                    }
                    G[e * L + PI(j)] += out * silu(xz[(E + e) * L + PI(j)]);
                }
            }
#undef PI
        }
        for (int c = 0; c < C; c++)                              // out_proj
            for (size_t l = 0; l < L; l++) {
                double s = 0;
                for (int e = 0; e < E; e++) s += p[m->out_proj + c * E + e] * G[e * L + l];
                y[((size_t)n * C + c) * L + l] = s;
            }
    }
    free(T); free(xz); free(G); free(u); free(xdbl);
}

// ---- finite differences ----------------------------------------------------------------------

typedef struct {
    const mamba_layer_t *m;
    int N;
    size_t L;
    double *y, *x, *p, *saved, *scratch, *g;
} fd_ctx;

static double loss(void *v, const double *unused)
{
    (void)unused;
    fd_ctx *c = v;
    mamba_layer_forward_cpu_f64(c->y, c->saved, c->scratch, c->x, c->p, c->m, c->N, c->L);
    double s = 0;
    for (size_t i = 0; i < (size_t)c->N * c->m->C * c->L; i++) s += c->g[i] * c->y[i];
    return s;
}

static int canaries_ok(const double *end)
{
    for (int i = 0; i < CANARY; i++) if (!isnan(end[i])) return 0;
    return 1;
}

static const char *dir_name[] = { "", "_b", "_s" };

static void run_config(const char *tag, int C, int N, size_t L, size_t nslices, size_t probe)
{
    mamba_layer_t m;
    ptensor_t tab[32];
    int nt;
    const size_t np = layout(&m, C, nslices, tab, &nt);
    const size_t nx = (size_t)N * C * L;
    const size_t nsv = mamba_layer_saved_size(&m, N, L), nsc = mamba_layer_scratch_size(&m, N, L);
    double *p = xcalloc(np, 8);
    init_params(p, &m);
    fd_ctx c = { &m, N, L, xcalloc(nx, 8), xcalloc(nx, 8), p, xmalloc((nsv + CANARY) * 8),
                 xmalloc((nsc + CANARY) * 8), xcalloc(nx, 8) };
    for (size_t i = 0; i < nsv + CANARY; i++) c.saved[i] = NAN;
    for (size_t i = 0; i < nsc + CANARY; i++) c.scratch[i] = NAN;
    for (size_t i = 0; i < nx; i++) {
        c.x[i] = (float)(rng_normal(&rng) + 0.5);
        c.g[i] = (float)rng_normal(&rng);
    }

    // forward vs the independent implementation
    loss(&c, NULL);
    double *yr = xcalloc(nx, 8);
    ref_forward(yr, c.x, p, &m, N, L);
    char lb[128];
    snprintf(lb, sizeof lb, "%s forward vs reference", tag);
    EXPECT(tensor_close_d(lb, c.y, yr, nx, 1e-12, 0), "%s", lb);
    free(yr);

    // backward into gradient buffers pre-filled with random values (it must accumulate)
    double *dx = xcalloc(nx, 8), *dp = xcalloc(np, 8), *pre_x = xcalloc(nx, 8), *pre_p = xcalloc(np, 8);
    for (size_t i = 0; i < nx; i++) dx[i] = pre_x[i] = rng_uniform(&rng);
    for (size_t i = 0; i < np; i++) dp[i] = pre_p[i] = rng_uniform(&rng);
    mamba_layer_backward_cpu_f64(dx, dp, c.scratch, c.g, c.x, c.saved, p, &m, N, L);
    EXPECT(canaries_ok(c.saved + nsv) && canaries_ok(c.scratch + nsc),
           "%s: forward/backward stay inside saved (%zu) and scratch (%zu)", tag, nsv, nsc);
    for (size_t i = 0; i < nx; i++) dx[i] -= pre_x[i];
    for (size_t i = 0; i < np; i++) dp[i] -= pre_p[i];

    snprintf(lb, sizeof lb, "%s dx", tag);
    EXPECT(gradcheck(lb, loss, &c, c.x, nx, dx, FD_EPS, FD_RTOL, FD_ATOL, probe, 1), "%s", lb);
    for (int t = 0; t < nt; t++) {
        const char *nm = tab[t].name;
        if (tab[t].dir >= 0) {
            // per-direction names as in params_M_btcv.txt: A_b_log, D_s, conv1d_b.weight ...
            char base[64];
            const char *dot = strchr(nm, '.');
            if (!strcmp(nm, "A_log")) snprintf(base, sizeof base, "A%s_log", dir_name[tab[t].dir]);
            else if (dot) snprintf(base, sizeof base, "%.*s%s%s", (int)(dot - nm), nm, dir_name[tab[t].dir], dot);
            else snprintf(base, sizeof base, "%s%s", nm, dir_name[tab[t].dir]);
            snprintf(lb, sizeof lb, "%s d%s", tag, base);
        } else {
            snprintf(lb, sizeof lb, "%s d%s", tag, nm);
        }
        EXPECT(gradcheck(lb, loss, &c, p + *tab[t].off, tab[t].n, dp + *tab[t].off, FD_EPS,
                         FD_RTOL, FD_ATOL, probe, 10 + t), "%s", lb);
    }

    // float build vs double build, forward and backward (gradients from zero)
    loss(&c, NULL);
    float *pf = xmalloc(np * 4), *xf = xmalloc(nx * 4), *gf = xmalloc(nx * 4), *yf = xmalloc(nx * 4);
    float *sf = xmalloc(nsv * 4), *scf = xmalloc(nsc * 4), *dxf = xcalloc(nx, 4), *dpf = xcalloc(np, 4);
    for (size_t i = 0; i < np; i++) pf[i] = (float)p[i];
    for (size_t i = 0; i < nx; i++) { xf[i] = (float)c.x[i]; gf[i] = (float)c.g[i]; }
    mamba_layer_forward_cpu(yf, sf, scf, xf, pf, &m, N, L);
    mamba_layer_backward_cpu(dxf, dpf, scf, gf, xf, sf, pf, &m, N, L);
    float *yd = xmalloc(nx * 4), *dxd = xmalloc(nx * 4), *dpd = xmalloc(np * 4);
    for (size_t i = 0; i < nx; i++) { yd[i] = (float)c.y[i]; dxd[i] = (float)dx[i]; }
    for (size_t i = 0; i < np; i++) dpd[i] = (float)dp[i];
    snprintf(lb, sizeof lb, "%s f32 y", tag);
    EXPECT(tensor_close(lb, yf, yd, nx, 1e-5, 0), "%s", lb);
    snprintf(lb, sizeof lb, "%s f32 dx", tag);
    EXPECT(tensor_close(lb, dxf, dxd, nx, 1e-4, 0), "%s", lb);
    int worst_ok = 1;
    for (int t = 0; t < nt; t++) {
        snprintf(lb, sizeof lb, "%s f32 %s[%d]", tag, tab[t].name, tab[t].dir);
        worst_ok &= tensor_close(lb, dpf + *tab[t].off, dpd + *tab[t].off, tab[t].n, 1e-4, 0);
    }
    EXPECT(worst_ok, "%s: every f32 parameter gradient within 1e-4 of f64", tag);

    // determinism: a second backward gives bit-identical gradients
    float *dpf2 = xcalloc(np, 4), *dxf2 = xcalloc(nx, 4);
    mamba_layer_backward_cpu(dxf2, dpf2, scf, gf, xf, sf, pf, &m, N, L);
    EXPECT(!memcmp(dpf, dpf2, np * 4) && !memcmp(dxf, dxf2, nx * 4), "%s: backward is deterministic", tag);

    free(pf); free(xf); free(gf); free(yf); free(sf); free(scf); free(dxf); free(dpf); free(yd);
    free(dxd); free(dpd); free(dpf2); free(dxf2);
    free(dx); free(dp); free(pre_x); free(pre_p);
    free(c.y); free(c.x); free(p); free(c.saved); free(c.scratch); free(c.g);
}

static void test_param_count(void)
{
    // architecture.md §5.2: 31,488 / 94,080 / 312,576 / 1,122,816 for C = 48 / 96 / 192 / 384
    const int Cs[4] = { 48, 96, 192, 384 };
    const size_t want[4] = { 31488, 94080, 312576, 1122816 };
    for (int i = 0; i < 4; i++) {
        mamba_layer_t m;
        ptensor_t tab[32];
        int nt;
        size_t n = layout(&m, Cs[i], 4, tab, &nt);
        EXPECT(n == want[i] && nt == 25, "C=%d: %zu parameters in %d tensors, want %zu in 25",
               Cs[i], n, nt, want[i]);
    }
}

int main(void)
{
    rng = rng_seed(7);
    test_param_count();
    // the brief's shape: C = 8 (E = 16, R = 1), N = 2, L = 4*3*2 with nslices = 4
    run_config("C8 N2 L24 ns4", 8, 2, 24, 4, 1000);
    // dt_rank 2 (C = 20), odd L = 3*5*3 with nslices = 3 (= the depth)
    run_config("C20 N1 L45 ns3", 20, 1, 45, 3, 250);
    return test_summary();
}
