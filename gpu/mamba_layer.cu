/*
mamba_layer.cu -- one ToM MambaLayer (LayerNorm + "bimamba v3" with forward, reverse and
inter-slice orders) forward and backward on the GPU, token-major (N, L, C) end to end; the twin
of common/nn/mamba_layer.c (architecture.md §5.4-5.6).

Forward:  T = LN(x); xz = T W_in^T (N, L, 2E); per direction k: u_k = SiLU(conv_k(x[pi_k]))
          (order fused into the conv load), x_dbl_k = u_k W_x^T; then ONE scan of the three
          directions (one summary and one carry launch over all three, emits summing the
          pre-gate Y = sum_k unpermute(y_k) in the fixed order =, +=, += -- three launches, or
          one into fp32 outputs and an ordered sum at the small levels), the dt
          projection delta_k = x_dbl_k[:R] W_dt^T fused into it (fp32, never stored);
          G = Y SiLU(z) (mamba_gate.cu: z is shared by the directions, so this is the sum of
          the gated y_k); y = G W_out^T. The three u sets sit over T's dead bytes (G over the
          first once the scan is done) and stay below the backward's scratch.
Saved:    Y (the pre-gate sum: dz = dG Y SiLU'(z) needs it, G is formed from it again; the CPU
          twin saves G and recomputes the scans' dz, the same math), the
          three x_dbl_k (row stride R + 32 rounded up to 8: 63 MB at level 0 of M; the
          x_proj GEMM's recompute cost 0.68 ms a step) and the scan's chunk-boundary states.
          Everything else is recomputed in the backward by the same kernels / GEMM plans on the
          same inputs (bit-identical): the LayerNorm, xz (one GEMM) and u_k (issue 5's Memory
          paragraph).
Backward: T = LN(x), xz = T W_in^T; dG = dy W_out; one pass forms dz = dG Y SiLU'(z) into
          dxz[E:] and G = Y SiLU(z) again for dW_out; then one direction at a time (buffers
          reused; below level 0 the three at once, bwd_dirs_together): recompute u_k; scan
          backward (gout = dG SiLU(z) inside, no dz), which also runs the dt_proj backward from
          its fp32 ddelta (dx_dbl[:R] and dW_dt with the fp32 master W_dt; ddelta never goes to
          memory); x_proj GEMM backward; conv backward (SiLU recomputed) into dxz[:E] at pi_k
          (written by direction 0, added to by 1 and 2); then, with the T kept from the start,
          dT = dxz W_in, dW_in, LN backward.
Precision: delta (the step size) and ddelta are fp32 in both modes (architecture.md §8).
Parameters: offsets of mamba_layer_t into the device buffers; GEMM weights are read from the
act-type copy (bf16 in bf16 mode), everything else (W_dt too: the scan's) from the fp32 master.
Gradients: fp32, +=.
Directions are accumulated into dxz one after another (fixed order): deterministic.
Timing: gpu_mark(g, GPU_MPART_*) before each part (gpu_internal.h) splits the layer for the
bench's breakdown; it enqueues nothing unless a profile armed the marks (never in timed steps
or graph captures).
*/
#include "gpu_internal.h"
#include "mamba_kernels.cuh"
#include <string.h>

#define LN_EPS 1e-5

// A bump allocator over the caller's scratch (sizes computed the same way by *_bytes).
struct bump {
    char *p;
    size_t off;
    void *take(size_t bytes)
    {
        void *r = p ? p + off : NULL;
        off += gpu_arena_round(bytes);
        return r;
    }
};

struct layer_dims {
    int C, E, R, P;
    size_t ldp;             // x_dbl's row stride: P rounded up to 8 elements (16-byte rows)
    size_t NL, act;
};

// x_dbl = [dt (R) | B (16) | C (16)] rows padded to a multiple of 8 elements: with P = 35 (M at
// level 0) bf16 rows of 70 bytes leave cuBLASLt no 16-byte-aligned algorithm for the x_proj
// GEMMs. The forward GEMM writes zeros into the pad columns (it runs with ldp outputs); nothing
// reads them.
size_t mamba_layer_gpu_xdbl_ld(const mamba_layer_t *m) { return ((size_t)m->R + 2 * m->NS + 7) / 8 * 8; }

static layer_dims dims_of(const gpu_ctx_t *g, const mamba_layer_t *m, int N, size_t L)
{
    ASSERT(m->C > 0 && m->E > 0 && m->R > 0 && m->NS == SCAN_NS && m->K >= 1 && m->K <= 4);
    ASSERT(m->nslices > 0 && L % m->nslices == 0);
    layer_dims d;
    d.C = m->C; d.E = m->E; d.R = m->R; d.P = m->R + 2 * m->NS;
    d.ldp = mamba_layer_gpu_xdbl_ld(m);
    d.NL = (size_t)N * L;
    d.act = gpu_dtype_size(g->act);
    return d;
}

static scan_gpu_t scan_desc(const mamba_layer_t *m, int N, size_t L, int ndir)
{
    scan_gpu_t s;
    memset(&s, 0, sizeof s);
    s.N = N; s.E = m->E; s.L = L; s.nslices = m->nslices;
    s.ldbc = mamba_layer_gpu_xdbl_ld(m);
    s.ldz = 2 * (size_t)m->E;
    s.ndir = ndir;
    s.R = m->R;
    return s;
}

// Views of `saved`.
struct saved_v { void *Y; float *states; void *xdbl3[3]; };

static saved_v saved_views(void *base, const gpu_ctx_t *g, const mamba_layer_t *m, int N, size_t L,
                           size_t *total)
{
    const layer_dims d = dims_of(g, m, N, L);
    const scan_gpu_t s3 = scan_desc(m, N, L, 3);
    bump b = { (char *)base, 0 };
    saved_v v;
    v.Y = b.take(d.NL * d.E * d.act);
    v.states = (float *)b.take(selective_scan_states_bytes(&s3));
    for (int k = 0; k < 3; k++) v.xdbl3[k] = b.take(d.NL * d.ldp * d.act);
    if (total) *total = b.off;
    return v;
}

// How many directions the backward runs as one scan call: 3 wherever one direction's scan
// backward leaves the GPU short of blocks (selective_scan_backward_small: at 128^3 batch 1 every
// layer but level 0's stage layers; their kernels are latency-bound there), else 1. The three
// directions' u, du, dx_dbl and the 3-direction workspace then take ~140 MB at level 1 of M,
// under level 0's one-direction region (~185 MB), so the arena's peak does not move (2.84 GiB
// either way, measured).
static int bwd_dirs_together(const gpu_ctx_t *g, const mamba_layer_t *m, int N, size_t L)
{
    return selective_scan_backward_small(g, N, m->E, L) ? 3 : 1;
}

// Views of `scratch` for the forward (fw = 1) or the backward (fw = 0).
// Forward: xz, then one region for two phases: T, mean, rstd (dead once xz is written), then
// the three directions' u and the forward scan workspace (A, the chunk sums and, at the small
// levels, the directions' fp32 outputs); G goes over the first u once the scan is done.
// This is smaller than the backward's scratch at level 0, which sets the arena: running the
// three directions as one scan costs no peak memory.
// Backward: xz, dG, dxz and T = LN(x) with its mean, rstd (recomputed once, for xz, and kept
// for dW_in and the LN backward: 27 MB at level 0 of M instead of a second LayerNorm) live
// through the whole call; behind them ONE region serves three phases in turn (stream order
// separates them):
//   out_proj   G (for dW_out), over u
//   direction  u, du, dxdbl for one direction, or for all three where their scans' backward
//              runs as one call (bwd_dirs_together), and the scan workspace
//   end        dT
struct scratch_v {
    void *T, *xz, *ws;                      // both directions of use
    void *G;                                // the gated output (over u, after the scan / before
                                            // the directions)
    void *u3[3];                            // the directions' u (forward: three; backward:
    void *du3[3], *dxdbl3[3];               // bwd_dirs_together of them, with du, dx_dbl)
    void *wx;                               // forward: W_x with zero rows up to ldp (act)
    float *mean, *rstd;
    void *dG, *dxz, *dT;                    // backward, act
};

static scratch_v scratch_views(void *base, const gpu_ctx_t *g, const mamba_layer_t *m, int N,
                               size_t L, int fw, size_t *total)
{
    const layer_dims d = dims_of(g, m, N, L);
    const size_t nle = d.NL * d.E * d.act, nlc = d.NL * d.C * d.act;
    bump b = { (char *)base, 0 };
    scratch_v v;
    memset(&v, 0, sizeof v);
    if (fw) {
        const scan_gpu_t s3 = scan_desc(m, N, L, 3);
        v.xz = b.take(2 * nle);
        const size_t region = b.off;
        v.T = b.take(nlc);
        v.mean = (float *)b.take(d.NL * sizeof(float));
        v.rstd = (float *)b.take(d.NL * sizeof(float));
        const size_t front_end = b.off;
        b.off = region;
        for (int k = 0; k < 3; k++) v.u3[k] = b.take(nle);
        v.G = v.u3[0];
        v.ws = b.take(selective_scan_forward_workspace_bytes(&s3));
        v.wx = b.take(d.ldp * d.E * d.act);
        if (b.off < front_end) b.off = front_end;
        if (total) *total = b.off;
        return v;
    }
    v.xz = b.take(2 * nle);
    v.dG = b.take(nle);
    v.dxz = b.take(2 * nle);
    v.T = b.take(nlc);
    v.mean = (float *)b.take(d.NL * sizeof(float));
    v.rstd = (float *)b.take(d.NL * sizeof(float));
    const size_t region = b.off;
    v.dT = b.take(nlc);
    const size_t end_phase = b.off;
    // direction phase, over the same bytes
    b.off = region;
    const int nd = bwd_dirs_together(g, m, N, L);
    for (int k = 0; k < nd; k++) {
        v.u3[k] = b.take(nle);
        v.du3[k] = b.take(nle);
        v.dxdbl3[k] = b.take(d.NL * d.ldp * d.act);
    }
    v.G = v.u3[0];
    const scan_gpu_t sw = scan_desc(m, N, L, nd);
    v.ws = b.take(selective_scan_workspace_bytes(&sw));
    if (b.off < end_phase) b.off = end_phase;
    if (total) *total = b.off;
    return v;
}

size_t mamba_layer_gpu_saved_bytes(const gpu_ctx_t *g, const mamba_layer_t *m, int N, size_t L)
{
    size_t t = 0;
    saved_views(NULL, g, m, N, L, &t);
    return t;
}

size_t mamba_layer_gpu_scratch_bytes(const gpu_ctx_t *g, const mamba_layer_t *m, int N, size_t L)
{
    size_t f = 0, b = 0;
    scratch_views(NULL, g, m, N, L, 1, &f);
    scratch_views(NULL, g, m, N, L, 0, &b);
    return f > b ? f : b;
}

static const void *wptr(const void *params_act, size_t off, size_t act)
{
    return (const char *)params_act + off * act;
}

// u_k = conv + SiLU of xz[:, :E] in order k. The backward calls this again on the same xz:
// same kernel, same values (rc = 1 only tags its timing mark as the backward's recompute).
static void direction_conv(gpu_ctx_t *g, void *u, const void *xz, const float *params,
                           const mamba_layer_t *m, const layer_dims &d, int N, size_t L, int k,
                           int rc)
{
    gpu_mark(g, rc ? GPU_MPART_CONV_RC : GPU_MPART_CONV_FWD);
    causal_conv1d_forward_gpu(g, u, xz, 2 * (size_t)d.E, params + m->conv_w[k],
                              params + m->conv_b[k], N, d.E, L, m->K, (tom_order_t)k, m->nslices, 1);
}

// The scan of direction k alone, forward inputs set: u; x_dt, B and C from x_dbl_k with the
// fp32 master W_dt (the fused dt projection); the gate z = xz[:, E:] (the backward's gout =
// dy SiLU(z); the forward clears it and emits the pre-gate y); direction k's A_log, D and
// delta bias. The backward adds the gradient pointers.
static scan_gpu_t direction_scan(const mamba_layer_t *m, const layer_dims &d, int N, size_t L,
                                 int k, const void *u, const void *xdbl, const void *xz,
                                 const float *params)
{
    scan_gpu_t s = scan_desc(m, N, L, 1);
    scan_dir_gpu_t *sd = &s.dir[0];
    sd->order = (tom_order_t)k;
    sd->u = u;
    sd->x_dt = xdbl;
    sd->W_dt = params + m->dt_w[k];
    sd->B = (const char *)xdbl + (size_t)d.R * d.act;
    sd->C = (const char *)xdbl + ((size_t)d.R + SCAN_NS) * d.act;
    sd->z = (const char *)xz + (size_t)d.E * d.act;
    sd->A_log = params + m->A_log[k];
    sd->D = params + m->D[k];
    sd->delta_bias = params + m->dt_b[k];
    return s;
}

// T = LN(x) (statistics too), xz = T W_in^T: the layer's front, run by the forward and again
// by the backward (same kernel and GEMM plan on the same x: the same xz; rc tags the marks).
static void layer_front(gpu_ctx_t *g, void *xz, void *T, float *mean, float *rstd, const void *x,
                        const float *params, const void *pa, const mamba_layer_t *m,
                        const layer_dims &d, int N, size_t L, int rc)
{
    gpu_mark(g, rc ? GPU_MPART_LN_RC : GPU_MPART_LN_FWD);
    layernorm_forward_gpu(g, T, mean, rstd, x, params + m->norm_w, params + m->norm_b, N, d.C, L,
                          LN_EPS);
    linear_shape_t in = { .N = N, .Cin = d.C, .Cout = 2 * d.E, .L = L, .x_nstride = 0, .y_nstride = 0 };
    gpu_mark(g, rc ? GPU_MPART_IN_RC : GPU_MPART_IN_FWD);
    linear_forward_gpu(g, xz, T, wptr(pa, m->in_proj, d.act), NULL, in);
}

void mamba_layer_forward_gpu(gpu_ctx_t *g, void *y, void *saved, void *scratch, const void *x,
                             const float *params, const void *params_act, const mamba_layer_t *m,
                             int N, size_t L)
{
    const layer_dims d = dims_of(g, m, N, L);
    const saved_v sv = saved_views(saved, g, m, N, L, NULL);
    const scratch_v w = scratch_views(scratch, g, m, N, L, 1, NULL);

    layer_front(g, w.xz, w.T, w.mean, w.rstd, x, params, params_act, m, d, N, L, 0);
    // the three directions' inputs, then one scan over all three: its summary and carry
    // launches cover 3x the grid of a single direction (the carry alone had 192 blocks of
    // 256 threads at level 0, ~1.5 per SM); the states land where three single-direction
    // scans put them ((dir, N, nch, E, 16)), and G is summed in the fixed order 0, 1, 2
    scan_gpu_t s3 = scan_desc(m, N, L, 3);
    for (int k = 0; k < 3; k++) {
        // x_dbl_k = u_k W_x^T, saved for the backward (the scan forms delta_k from x_dbl_k[:R])
        direction_conv(g, w.u3[k], w.xz, params, m, d, N, L, k, 0);
        // as ldp outputs (W_x's P rows, then zero rows: the rows' padding gets zeros): with
        // P = 35 (level 0 of M) cuBLASLt's best algorithm took 0.081 ms a direction for this
        // memory-bound GEMM (0.033 for 48 outputs; gpu/PERF_NOTES.md v33)
        const size_t wb = (size_t)d.P * d.E * d.act;
        gpu_copy(g, w.wx, wptr(params_act, m->x_proj[k], d.act), wb);
        if (d.ldp > d.P) gpu_memset(g, (char *)w.wx + wb, 0, (d.ldp - d.P) * d.E * d.act);
        linear_shape_t xs = { .N = N, .Cin = d.E, .Cout = (int)d.ldp, .L = L, .x_nstride = 0,
                              .y_nstride = 0 };
        gpu_mark(g, GPU_MPART_XPROJ_FWD);
        linear_forward_gpu(g, sv.xdbl3[k], w.u3[k], w.wx, NULL, xs);
        const scan_gpu_t s = direction_scan(m, d, N, L, k, w.u3[k], sv.xdbl3[k], w.xz, params);
        s3.dir[k] = s.dir[0];
        s3.dir[k].z = NULL;                         // Y ungated: saved for the backward's dz
    }
    gpu_mark(g, GPU_MPART_SCAN_FWD);
    selective_scan_forward_gpu(g, sv.Y, 0, sv.states, w.ws, &s3);
    gpu_mark(g, GPU_MPART_GATE);
    mamba_gate_forward_gpu(g, w.G, sv.Y, w.xz, d.NL, d.E);
    linear_shape_t out = { .N = N, .Cin = d.E, .Cout = d.C, .L = L, .x_nstride = 0, .y_nstride = 0 };
    gpu_mark(g, GPU_MPART_OUT_FWD);
    linear_forward_gpu(g, y, w.G, wptr(params_act, m->out_proj, d.act), NULL, out);
    gpu_mark(g, GPU_MPART_END);
}

void mamba_layer_backward_gpu(gpu_ctx_t *g, void *dx, float *dparams, void *scratch,
                              const void *dy, const void *x, const void *saved,
                              const float *params, const void *params_act,
                              const mamba_layer_t *m, int N, size_t L)
{
    const layer_dims d = dims_of(g, m, N, L);
    const saved_v sv = saved_views((void *)saved, g, m, N, L, NULL);
    const scratch_v w = scratch_views(scratch, g, m, N, L, 0, NULL);
    const void *pa = params_act;

    // T = LN(x) and xz again (T, mean, rstd kept for the end)
    layer_front(g, w.xz, w.T, w.mean, w.rstd, x, params, pa, m, d, N, L, 1);
    // y = G W_out^T: dG = dy W_out (written: no zeroing); then one pass forms dz = dG Y
    // SiLU'(z) into dxz[:, E:] (dxz[:, :E] is written by direction 0's conv backward) and
    // G = Y SiLU(z) again; dW_out += dy^T G
    gpu_mark(g, GPU_MPART_OUT_BWD);
    linear_shape_t out = { .N = N, .Cin = d.E, .Cout = d.C, .L = L, .x_nstride = 0, .y_nstride = 0 };
    linear_dx_gpu(g, w.dG, dy, wptr(pa, m->out_proj, d.act), out);
    gpu_mark(g, GPU_MPART_GATE);
    mamba_gate_backward_gpu(g, w.dxz, w.G, w.dG, sv.Y, w.xz, d.NL, d.E);
    gpu_mark(g, GPU_MPART_OUT_BWD);
    linear_backward_gpu(g, NULL, dparams + m->out_proj, NULL, dy, w.G,
                        wptr(pa, m->out_proj, d.act), out);

    // the directions one at a time, or all three as one scan call where that fills the GPU
    // better (bwd_dirs_together); either way dxz[:, :E] gets their conv gradients in the order
    // 0, 1, 2
    const scan_gpu_t s3 = scan_desc(m, N, L, 3);
    const int nd = bwd_dirs_together(g, m, N, L);
    for (int k0 = 0; k0 < 3; k0 += nd) {
        // du and all of dx_dbl are written by the scan (overwrite: no zeroing): dB, dC, and
        // dx_dbl[:, :R] from the fused dt_proj backward (in fp32 with the fp32 master W_dt),
        // which adds dW_dt too
        scan_gpu_t s = scan_desc(m, N, L, nd);
        s.overwrite = 1;
        for (int j = 0; j < nd; j++) {
            const int k = k0 + j;
            direction_conv(g, w.u3[j], w.xz, params, m, d, N, L, k, 1);
            scan_dir_gpu_t *sd = &s.dir[j];
            *sd = direction_scan(m, d, N, L, k, w.u3[j], sv.xdbl3[k], w.xz, params).dir[0];
            sd->du = w.du3[j];
            sd->dx_dt = w.dxdbl3[j];
            sd->dW_dt = dparams + m->dt_w[k];
            sd->dB = (char *)w.dxdbl3[j] + (size_t)d.R * d.act;
            sd->dC = (char *)w.dxdbl3[j] + ((size_t)d.R + SCAN_NS) * d.act;
            sd->dA_log = dparams + m->A_log[k];
            sd->dD = dparams + m->D[k];
            sd->ddelta_bias = dparams + m->dt_b[k];
        }
        gpu_mark(g, GPU_MPART_SCAN_BWD);
        selective_scan_backward_gpu(g, w.dG, sv.states + selective_scan_dir_states(&s3, k0), w.ws,
                                    &s);
        for (int j = 0; j < nd; j++) {
            const int k = k0 + j;
            // x_dbl = u W_x^T -> du, dW_x
            linear_shape_t xs = { .N = N, .Cin = d.E, .Cout = d.P, .L = L, .x_nstride = 0,
                                  .y_nstride = d.ldp };
            gpu_mark(g, GPU_MPART_XPROJ_BWD);
            linear_backward_gpu(g, w.du3[j], dparams + m->x_proj[k], NULL, w.dxdbl3[j], w.u3[j],
                                wptr(pa, m->x_proj[k], d.act), xs);
            // u = SiLU(conv(x[pi])): dx into dxz[:, :E] at pi, dW_conv, db_conv
            gpu_mark(g, GPU_MPART_CONV_BWD);
            causal_conv1d_backward_gpu(g, w.dxz, dparams + m->conv_w[k], dparams + m->conv_b[k],
                                       w.du3[j], w.xz, 2 * (size_t)d.E, params + m->conv_w[k],
                                       params + m->conv_b[k], N, d.E, L, m->K, (tom_order_t)k,
                                       m->nslices, 1, k == 0);
        }
    }

    // xz = T W_in^T: dT = dxz W_in (written), dW_in += dxz^T T
    linear_shape_t in = { .N = N, .Cin = d.C, .Cout = 2 * d.E, .L = L, .x_nstride = 0, .y_nstride = 0 };
    gpu_mark(g, GPU_MPART_IN_BWD);
    const void *w_in = wptr(pa, m->in_proj, d.act);
    linear_dx_gpu(g, w.dT, w.dxz, w_in, in);
    linear_backward_gpu(g, NULL, dparams + m->in_proj, NULL, w.dxz, w.T, w_in, in);
    gpu_mark(g, GPU_MPART_LN_BWD);
    layernorm_backward_gpu(g, dx, dparams + m->norm_w, dparams + m->norm_b, w.dT, x, w.mean,
                           w.rstd, params + m->norm_w, N, d.C, L);
    gpu_mark(g, GPU_MPART_END);
}
