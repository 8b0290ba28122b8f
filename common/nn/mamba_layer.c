/*
mamba_layer.c -- one ToM MambaLayer (LayerNorm + SegMamba "bimamba v3" Mamba with forward,
reverse and inter-slice token orders), forward and backward on the CPU, composed from the ops in
common/ops (architecture.md §5.4 and §5.6). See mamba_layer.h for the contract.

What is saved vs recomputed (per token, P = R + 32 rows of x_dbl):
  saved    xz (2E)   in_proj output, from which every direction's x_k, z_k are re-permuted
           G  (E)    sum of the three un-permuted gated scan outputs (for dW_out)
           x_dbl_k (3P)  per direction [dt | B | C], as the GPU path (§5.5) saves it
  recomputed in backward: the LayerNorm (output and statistics), conv1d output and u = SiLU(.),
  delta = W_dt x_dbl[:R], and the scan states (inside selective_scan_backward).
So saved = (3E + 3P) * N*L elements; scratch = (12E + P) * N*L + 2*E*NS (the backward's need;
the forward uses a prefix of it). The three directions reuse the same scratch buffers in turn.
*/
// mamba_layer.h first: it #undefs `real` after its twin declarations, real.h then sets it.
#include "mamba_layer.h"
#include "real.h"
#include "check.h"
#include <math.h>
#include <string.h>

#define LN_EPS 1e-5

#ifndef SRM_REAL_DOUBLE
// Defined once (float build): sizes do not depend on the precision.
size_t mamba_layer_saved_size(const mamba_layer_t *m, int N, size_t L)
{
    const size_t NL = (size_t)N * L, P = (size_t)m->R + 2 * (size_t)m->NS;
    return NL * (3 * (size_t)m->E + 3 * P);
}

size_t mamba_layer_scratch_size(const mamba_layer_t *m, int N, size_t L)
{
    const size_t NL = (size_t)N * L, P = (size_t)m->R + 2 * (size_t)m->NS;
    return NL * (12 * (size_t)m->E + P) + 2 * (size_t)m->E * m->NS;
}
#endif

// Views into `saved`.
typedef struct { real *xz, *G, *xdbl[3]; } saved_t;

// Views into `scratch`. Each (N, E, L) unless noted. The forward uses xk (first as the LayerNorm
// output T, (N, C, L)), zk, u, delta, yk and A.
typedef struct {
    real *dG, *dxz;                 // (N, E, L), (N, 2E, L)
    real *xk, *zk, *cpre, *u, *delta, *yk, *du, *dd, *dz;
    real *dxdbl;                    // (N, P, L)
    real *A, *dA;                   // (E, NS)
} scratch_t;

static saved_t saved_views(real *base, const mamba_layer_t *m, int N, size_t L)
{
    const size_t NL = (size_t)N * L, E = m->E, P = (size_t)m->R + 2 * (size_t)m->NS;
    saved_t s;
    s.xz = base;
    s.G = s.xz + 2 * E * NL;
    for (int k = 0; k < 3; k++) s.xdbl[k] = s.G + E * NL + (size_t)k * P * NL;
    return s;
}

static scratch_t scratch_views(real *base, const mamba_layer_t *m, int N, size_t L)
{
    const size_t NL = (size_t)N * L, E = m->E, P = (size_t)m->R + 2 * (size_t)m->NS;
    scratch_t s;
    real *p = base;
    s.dG = p; p += E * NL;
    s.dxz = p; p += 2 * E * NL;
    real **one[] = { &s.xk, &s.zk, &s.cpre, &s.u, &s.delta, &s.yk, &s.du, &s.dd, &s.dz };
    for (size_t i = 0; i < sizeof one / sizeof *one; i++) { *one[i] = p; p += E * NL; }
    s.dxdbl = p; p += P * NL;
    s.A = p; p += E * m->NS;
    s.dA = p;
    return s;
}

static void check_layer(const mamba_layer_t *m, size_t L)
{
    ASSERT(m->C > 0 && m->E > 0 && m->R > 0 && m->NS > 0 && m->K >= 1 && m->K <= 4);
    ASSERT(m->nslices > 0 && L % m->nslices == 0);
}

static double sigm(double v) { return 1.0 / (1.0 + exp(-v)); }

// x_k and z_k of direction `order`: channels [0, E) and [E, 2E) of xz, permuted per batch item
// (xz has batch stride 2E*L, the outputs are dense (N, E, L)).
static void permute_xz(real *xk, real *zk, const real *xz, const mamba_layer_t *m, int N,
                       size_t L, tom_order_t order)
{
    const size_t EL = (size_t)m->E * L;
    for (int n = 0; n < N; n++) {
        OP(tom_permute)(xk + n * EL, xz + 2 * n * EL, 1, m->E, L, order, m->nslices);
        OP(tom_permute)(zk + n * EL, xz + 2 * n * EL + EL, 1, m->E, L, order, m->nslices);
    }
}

// A = -exp(A_log): (E, NS)
static void make_A(real *A, const real *A_log, const mamba_layer_t *m)
{
    for (size_t i = 0; i < (size_t)m->E * m->NS; i++) A[i] = (real)-exp((double)A_log[i]);
}

// Direction front end shared by forward and backward: x_k, z_k, conv pre-activation (cpre may
// be NULL: then the conv writes straight into u), u = SiLU(conv), delta_raw = W_dt x_dbl[:R].
// In forward x_dbl is computed here (compute_xdbl = 1); backward reads the saved one.
static void direction_front(scratch_t *w, real *xdbl, int compute_xdbl, const real *xz,
                            const real *params, const mamba_layer_t *m, int N, size_t L, int k)
{
    const int E = m->E, P = m->R + 2 * m->NS;
    const size_t n_el = (size_t)N * E * L;
    permute_xz(w->xk, w->zk, xz, m, N, L, (tom_order_t)k);
    real *c = w->cpre ? w->cpre : w->u;
    OP(causal_conv1d_forward)(c, w->xk, params + m->conv_w[k], params + m->conv_b[k], N, E, L, m->K);
    for (size_t i = 0; i < n_el; i++) w->u[i] = (real)(c[i] * sigm(c[i]));
    if (compute_xdbl) {
        linear_shape_t xs = { .N = N, .Cin = E, .Cout = P, .L = L };
        OP(linear_forward)(xdbl, w->u, params + m->x_proj[k], NULL, xs);
    }
    linear_shape_t ds = { .N = N, .Cin = m->R, .Cout = E, .L = L, .x_nstride = (size_t)P * L };
    OP(linear_forward)(w->delta, xdbl, params + m->dt_w[k], NULL, ds);
    make_A(w->A, params + m->A_log[k], m);
}

static scan_shape_t scan_shape(const mamba_layer_t *m, int N, size_t L)
{
    scan_shape_t s = { .N = N, .E = m->E, .NS = m->NS, .L = L,
                       .bc_nstride = ((size_t)m->R + 2 * (size_t)m->NS) * L };
    return s;
}

// y, x: (N, C, L)
void OP(mamba_layer_forward)(real *y, real *saved, real *scratch, const real *x,
                             const real *params, const mamba_layer_t *m, int N, size_t L)
{
    check_layer(m, L);
    const int C = m->C, E = m->E, R = m->R;
    const size_t NL = (size_t)N * L, EL = (size_t)E * L;
    saved_t sv = saved_views(saved, m, N, L);
    scratch_t w = scratch_views(scratch, m, N, L);
    w.cpre = NULL;      // forward needs only u

    // T = LayerNorm(x) (in the xk buffer; its statistics go to du, unused until backward)
    real *T = w.xk;
    OP(layernorm_forward)(T, w.du, w.du + NL, x, params + m->norm_w, params + m->norm_b,
                          N, C, L, LN_EPS);
    linear_shape_t in = { .N = N, .Cin = C, .Cout = 2 * E, .L = L };
    OP(linear_forward)(sv.xz, T, params + m->in_proj, NULL, in);

    const scan_shape_t ss = scan_shape(m, N, L);
    for (int k = 0; k < 3; k++) {
        real *xd = sv.xdbl[k];
        direction_front(&w, xd, 1, sv.xz, params, m, N, L, k);
        OP(selective_scan_forward)(w.yk, w.u, w.delta, w.A, xd + (size_t)R * L,
                                   xd + ((size_t)R + m->NS) * L, params + m->D[k], w.zk,
                                   params + m->dt_b[k], ss);
        // G (+)= unpermute(y_k); delta is free again and serves as the temporary
        real *dst = k == 0 ? sv.G : w.delta;
        OP(tom_unpermute)(dst, w.yk, N, E, L, (tom_order_t)k, m->nslices);
        if (k > 0) for (size_t i = 0; i < (size_t)N * EL; i++) sv.G[i] += w.delta[i];
    }
    linear_shape_t out = { .N = N, .Cin = E, .Cout = C, .L = L };
    OP(linear_forward)(y, sv.G, params + m->out_proj, NULL, out);
}

// dst[n, :ch, :] += src[n, :ch, :], dst with batch stride dst_nstride, src dense (N, ch, L)
static void add_strided(real *dst, size_t dst_nstride, const real *src, int N, size_t chL)
{
    for (int n = 0; n < N; n++)
        for (size_t i = 0; i < chL; i++) dst[n * dst_nstride + i] += src[n * chL + i];
}

void OP(mamba_layer_backward)(real *dx, real *dparams, real *scratch, const real *dy,
                              const real *x, const real *saved, const real *params,
                              const mamba_layer_t *m, int N, size_t L)
{
    check_layer(m, L);
    const int C = m->C, E = m->E, R = m->R, NS = m->NS, P = R + 2 * NS;
    const size_t NL = (size_t)N * L, EL = (size_t)E * L, nE = (size_t)N * EL;
    const saved_t sv = saved_views((real *)saved, m, N, L);   // read only below
    scratch_t w = scratch_views(scratch, m, N, L);

    // out = W_out G: dG = W_out^T dy (shared by the three directions), dW_out += dy G^T
    memset(w.dG, 0, nE * sizeof(real));
    linear_shape_t out = { .N = N, .Cin = E, .Cout = C, .L = L };
    OP(linear_backward)(w.dG, dparams + m->out_proj, NULL, dy, sv.G, params + m->out_proj, out);

    memset(w.dxz, 0, 2 * nE * sizeof(real));
    const scan_shape_t ss = scan_shape(m, N, L);
    for (int k = 0; k < 3; k++) {
        const tom_order_t order = (tom_order_t)k;
        real *xd = sv.xdbl[k];
        direction_front(&w, xd, 0, sv.xz, params, m, N, L, k);
        OP(tom_permute)(w.yk, w.dG, N, E, L, order, m->nslices);     // yk holds dy_k

        memset(w.du, 0, nE * sizeof(real));
        memset(w.dd, 0, nE * sizeof(real));
        memset(w.dz, 0, nE * sizeof(real));
        memset(w.dxdbl, 0, (size_t)P * NL * sizeof(real));
        memset(w.dA, 0, (size_t)E * NS * sizeof(real));
        OP(selective_scan_backward)(w.du, w.dd, w.dA, w.dxdbl + (size_t)R * L,
                                    w.dxdbl + ((size_t)R + NS) * L, dparams + m->D[k], w.dz,
                                    dparams + m->dt_b[k], w.yk, w.u, w.delta, w.A,
                                    xd + (size_t)R * L, xd + ((size_t)R + NS) * L,
                                    params + m->D[k], w.zk, params + m->dt_b[k], ss);
        // A = -exp(A_log): dA_log = dA * A
        real *dAlog = dparams + m->A_log[k];
        for (size_t i = 0; i < (size_t)E * NS; i++) dAlog[i] += w.dA[i] * w.A[i];

        // delta_raw = W_dt x_dbl[:R] -> dx_dbl[:R], dW_dt
        linear_shape_t ds = { .N = N, .Cin = R, .Cout = E, .L = L, .x_nstride = (size_t)P * L };
        OP(linear_backward)(w.dxdbl, dparams + m->dt_w[k], NULL, w.dd, xd, params + m->dt_w[k], ds);
        // x_dbl = W_x u -> du, dW_x
        linear_shape_t xs = { .N = N, .Cin = E, .Cout = P, .L = L };
        OP(linear_backward)(w.du, dparams + m->x_proj[k], NULL, w.dxdbl, w.u, params + m->x_proj[k], xs);
        // u = SiLU(cpre): dcpre = du * s (1 + c (1 - s)), into the free delta buffer
        for (size_t i = 0; i < nE; i++) {
            double c = w.cpre[i], s = sigm(c);
            w.delta[i] = (real)(w.du[i] * s * (1.0 + c * (1.0 - s)));
        }
        // causal conv: dx_k (into dd, free now), dW_conv, db_conv
        memset(w.dd, 0, nE * sizeof(real));
        OP(causal_conv1d_backward)(w.dd, dparams + m->conv_w[k], dparams + m->conv_b[k], w.delta,
                                   w.xk, params + m->conv_w[k], N, E, L, m->K);
        // back to the original order, into dxz = [dx; dz]
        OP(tom_unpermute)(w.zk, w.dd, N, E, L, order, m->nslices);
        add_strided(w.dxz, 2 * EL, w.zk, N, EL);
        OP(tom_unpermute)(w.yk, w.dz, N, E, L, order, m->nslices);
        add_strided(w.dxz + EL, 2 * EL, w.yk, N, EL);
    }

    // Recompute T = LayerNorm(x) with its statistics (bit-identical to the forward's), then
    // xz = W_in T: dT = W_in^T dxz, dW_in += dxz T^T; then the LayerNorm backward.
    real *T = w.xk, *dT = w.zk, *mean = w.du, *rstd = w.du + NL;
    OP(layernorm_forward)(T, mean, rstd, x, params + m->norm_w, params + m->norm_b, N, C, L, LN_EPS);
    memset(dT, 0, (size_t)C * NL * sizeof(real));
    linear_shape_t in = { .N = N, .Cin = C, .Cout = 2 * E, .L = L };
    OP(linear_backward)(dT, dparams + m->in_proj, NULL, w.dxz, T, params + m->in_proj, in);
    OP(layernorm_backward)(dx, dparams + m->norm_w, dparams + m->norm_b, dT, x, mean, rstd,
                           params + m->norm_w, N, C, L);
}
