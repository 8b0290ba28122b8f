/*
selective_scan.cu -- the Mamba-1 selective scan forward on the GPU for up to three ToM
directions at once, split across the sequence (twin of common/ops/selective_scan.c composed with
tom_permute / tom_unpermute), plus the chunk-carry pass the backward shares.

The recurrence h_t = a_t h_{t-1} + b_t (a_t = exp(dt_t A), b_t = dt_t B_t u_t, per channel e and
state s) composes associatively, so the sequence is cut into chunks of SCAN_T tokens:
  1. summary:  every chunk runs from h = 0 -> its local end state, and S_c = sum of dt over the
               chunk (the chunk's decay is exp(A S_c), no product needed); grid (chunk, dir*N)
  2. carries:  per (dir, n, e, s) a pass over the chunks turns the local end states into the
               state entering each chunk (in place) -- kept as the `states` for the backward
  3. emit:     every chunk re-runs from its entering state and writes
               y = (sum_s C h + D u) * silu(z) at the original position pi(j).
One thread per channel holds the 16 states in registers; loads of (token, channel) rows are
coalesced (channels fastest); B and C of the chunk are staged in shared memory.
delta = softplus(x_dt W_dt^T + bias) (threshold 20: the dt projection too, mamba_kernels.cuh),
A = -exp(A_log) (formed once per call into the workspace), the D skip, the gate and the ToM
order are fused. State, A, D, delta in fp32.
The three directions' outputs are summed into one buffer by three emit launches in a fixed
order (=, +=, +=): deterministic, and no (3, N, L, E) temporary -- except for small shapes
(the small levels, where one emit launch is latency-bound with a few blocks an SM): there the
three run as one launch into an fp32 (3, N, L, E) workspace view and a pass adds them in the
same order with the same roundings.
*/
#include "gpu_internal.h"
#include "mamba_kernels.cuh"
#include <stdlib.h>
#include <string.h>

scan_k scan_kernel_args(const gpu_ctx_t *g, const scan_gpu_t *s)
{
    ASSERT(s->ndir >= 1 && s->ndir <= 3 && s->N >= 1 && s->E >= 1 && s->E <= 1024 && s->L >= 1);
    scan_k k;
    memset(&k, 0, sizeof k);
    k.N = s->N; k.E = s->E; k.ndir = s->ndir; k.ow = s->overwrite;
    // SRM_SCAN_FAST_EXP=1 forces the MUFU decays in fp32 too (diagnostics: shows their error).
    k.exact = g->act == GPU_F32 && !getenv("SRM_SCAN_FAST_EXP");
    k.nch = (int)CEIL_DIV(s->L, (size_t)SCAN_T);
    k.L = s->L; k.nslices = s->nslices ? s->nslices : 1; k.m = k.L / k.nslices;
    k.ldbc = s->ldbc; k.ldz = s->ldz;
    ASSERT(s->R >= 1 && s->R <= SCAN_RMAX && s->ldbc >= (size_t)s->R);
    k.R = s->R;
    for (int d = 0; d < s->ndir; d++) {
        const scan_dir_gpu_t *a = &s->dir[d];
        ASSERT(a->u && a->x_dt && a->W_dt && a->B && a->C && a->A_log);
        ASSERT(a->order != TOM_SLICE || s->L % k.nslices == 0);
        ASSERT(!a->z || s->ldz >= (size_t)s->E);
        ASSERT(s->ldbc >= SCAN_NS);
        // one launch updates all directions at once: outputs shared between two of them
        // would race, so each direction needs its own
        for (int e = 0; e < d; e++) {
            const scan_dir_gpu_t *b = &s->dir[e];
            const void *oa[] = { a->du, a->dB, a->dC, a->ddelta, a->dA_log, a->dD,
                                 a->ddelta_bias, a->dx_dt, a->dW_dt };
            const void *ob[] = { b->du, b->dB, b->dC, b->ddelta, b->dA_log, b->dD,
                                 b->ddelta_bias, b->dx_dt, b->dW_dt };
            for (size_t i = 0; i < sizeof oa / sizeof *oa; i++)
                ASSERT(!oa[i] || oa[i] != ob[i]);
        }
        scan_kdir *o = &k.d[d];
        o->u = a->u; o->B = a->B; o->C = a->C; o->z = a->z;
        o->A_log = a->A_log; o->D = a->D; o->bias = a->delta_bias;
        o->du = a->du; o->ddelta = a->ddelta; o->dB = a->dB; o->dC = a->dC;
        o->dA_log = a->dA_log; o->dD = a->dD; o->dbias = a->ddelta_bias;
        o->xdt = a->x_dt; o->Wdt = a->W_dt; o->dxdt = a->dx_dt; o->dWdt = a->dW_dt;
        o->order = (int)a->order;
    }
    return k;
}

static size_t nch_of(const scan_gpu_t *s) { return CEIL_DIV(s->L, (size_t)SCAN_T); }

// one f32 per (dir, n, chunk, channel), arena-rounded: S, Dp and bp each
static size_t per_chunk_bytes(const scan_gpu_t *s)
{
    return gpu_arena_round((size_t)s->ndir * s->N * nch_of(s) * s->E * sizeof(float));
}

size_t selective_scan_states_bytes(const scan_gpu_t *s)
{
    return (size_t)s->ndir * s->N * nch_of(s) * s->E * SCAN_NS * sizeof(float);
}

size_t selective_scan_dir_states(const scan_gpu_t *s, int d)
{
    ASSERT(d >= 0 && d < s->ndir);
    return (size_t)d * s->N * nch_of(s) * s->E * SCAN_NS;
}

// the backward's per-chunk dW_dt partials (ndir, N, nch, E, R)
static size_t wp_bytes(const scan_gpu_t *s)
{
    return gpu_arena_round((size_t)s->ndir * s->N * nch_of(s) * s->E * s->R * sizeof(float));
}

// A = -exp(A_log) of every direction (ndir, E, 16)
static size_t a_bytes(const scan_gpu_t *s)
{
    return gpu_arena_round((size_t)s->ndir * s->E * SCAN_NS * sizeof(float));
}

// The forward's per-direction outputs in fp32 (ndir, N, L, E), reserved for small shapes (N L E
// <= 2^21: at most 24 MB for three directions) so that their emits can run as one launch
// (selective_scan_forward_gpu); 0 for the others. The sizes take no device, so the reservation
// is by shape alone; whether a launch uses it also depends on the SM count (its grid must be
// under 4 blocks an SM), so some shapes reserve a few MB they do not use. As the forward and
// backward may share one workspace, selective_scan_workspace_bytes covers it too.
static size_t yf_bytes(const scan_gpu_t *s)
{
    const size_t n = (size_t)s->N * s->L * s->E;
    return s->ndir > 1 && n <= ((size_t)1 << 21) ? gpu_arena_round((size_t)s->ndir * n * sizeof(float)) : 0;
}

size_t selective_scan_forward_workspace_bytes(const scan_gpu_t *s)
{
    return a_bytes(s) + per_chunk_bytes(s) + yf_bytes(s);  // A, S and the fp32 outputs
}

size_t selective_scan_workspace_bytes(const scan_gpu_t *s)
{
    const size_t b = a_bytes(s) + 3 * per_chunk_bytes(s) + gpu_arena_round(selective_scan_states_bytes(s)) +
                     gpu_arena_round(scan_bwd_aux_bytes(s)) + wp_bytes(s);
    const size_t f = selective_scan_forward_workspace_bytes(s);
    return b > f ? b : f;
}

scan_ws scan_workspace_views(void *ws, const scan_gpu_t *s)
{
    const size_t small = per_chunk_bytes(s);
    scan_ws w;
    w.A = (float *)ws;
    char *p = (char *)ws + a_bytes(s);
    w.S = (float *)p;
    w.yf = yf_bytes(s) ? (float *)(p + small) : NULL;  // forward only: over the backward's views
    w.Dp = (float *)(p + small);
    w.bp = (float *)(p + 2 * small);
    w.big = (float *)(p + 3 * small);
    w.aux = (float *)(p + 3 * small + gpu_arena_round(selective_scan_states_bytes(s)));
    w.Wp = (float *)((char *)w.aux + gpu_arena_round(scan_bwd_aux_bytes(s)));
    return w;
}

__global__ void scan_neg_exp(scan_k k, float *A)
{
    const int n = k.E * SCAN_NS, d = blockIdx.y;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        A[(size_t)d * n + i] = -expf(k.d[d].A_log[i]);
}

void scan_prepare_A(gpu_ctx_t *g, scan_k &k, const scan_ws &w)
{
    const int n = k.E * SCAN_NS;
    scan_neg_exp<<<dim3(CEIL_DIV(n, 256), k.ndir), 256, 0, g->stream>>>(k, w.A);
    KERNEL_CHECK();
    for (int d = 0; d < k.ndir; d++) k.d[d].A = w.A + (size_t)d * n;
}

// ----------------------------------------------------------------------------
// 1. chunk summaries: hloc (dir, n, c, e, s) local end state from 0, S (dir, n, c, e) = sum dt

// EXACT is k.exact as a template argument (h27 v12): as a run-time flag every one of the 16
// decays of a token carried a branch with convergence barriers (BSSY / BSYNC, ~4 issue slots
// each), more issue than the MUFU work it guarded.
// blockIdx.z: the channel block of eb = scan_block_width(E) channels. The chunk's (dt, dt u) are
// staged in shared memory first (dynamic, SCAN_T x eb float2, then x_dt and W_dt): one bulk
// of independent loads instead of a dependent round trip per token.
template <typename T, int EXACT>
__global__ void scan_fwd_summary(scan_k k, int eb, float *hloc, float *S)
{
    extern __shared__ float4 scan_dyn[];
    float *xs, *ws;                                 // x_dt, W_dt (scan_chan_carve)
    float2 *tdu = scan_chan_carve<float2>(scan_dyn, eb, k.R, xs, ws);   // dt, dt u
    __shared__ float Bs[SCAN_T][SCAN_NS];
    const int c = blockIdx.x, d = blockIdx.y / k.N, n = blockIdx.y % k.N;
    const scan_kdir &P = k.d[d];
    const size_t j0 = (size_t)c * SCAN_T;
    const int tn = (int)min((size_t)SCAN_T, k.L - j0);
    scan_chan_stage<T>(Bs, NULL, NULL, xs, ws, k, P, n, j0, tn, blockIdx.z * eb, eb);
    __syncthreads();
    const int el = threadIdx.x, e = blockIdx.z * eb + el;
    if (e >= k.E) return;
    const float bias = P.bias ? P.bias[e] : 0.0f;
    const T *u = (const T *)P.u;
    {
        // the thread stages only its own channel; all tokens (past tn: unused values), so the
        // u loads are predicated, not behind a branch each, and go out together
        // u of token t at ut0[t E]: the 64-bit row arithmetic once, not per token (it was
        // 14 % of the kernel's instructions)
        float draw[SCAN_T];
        scan_dt_tokens(draw, xs, 0, ws + el * k.R, k.R);
        const T *ut0 = u + ((size_t)n * k.L + j0) * k.E + e;
#pragma unroll
        for (int t = 0; t < SCAN_T; t++) {
            const float ut = t < tn ? to_f(ut0[(size_t)t * k.E]) : 0.0f;
            const float dt = softplus20_t<T>(draw[t] + bias);
            tdu[t * eb + el] = make_float2(dt, dt * ut);
        }
    }
    // (A is loaded here, not before the staging as in the emit: live across the u loop above
    // its 16 registers took the kernel from 78 to 95)
    float A[SCAN_NS], h[SCAN_NS];
    scan_ld_A(A, P, e, k.E);
    scan_A_of(A);
#pragma unroll
    for (int s = 0; s < SCAN_NS; s++) h[s] = 0.0f;
    float sum = 0.0f;
    for (int t = 0; t < tn; t++) {
        const float2 v = tdu[t * eb + el];
        sum += v.x;
#pragma unroll
        for (int s = 0; s < SCAN_NS; s++) h[s] = fmaf(scan_ex2<EXACT>(v.x * A[s]), h[s], v.y * Bs[t][s]);
    }
    const size_t row = ((size_t)blockIdx.y * k.nch + c) * k.E + e;
#pragma unroll
    for (int s = 0; s < SCAN_NS; s++) hloc[row * SCAN_NS + s] = h[s];
    S[row] = sum;
}

// ----------------------------------------------------------------------------
// 2. carry pass (shared with the backward). Per (dir, n, column (e, s)) the maps h -> a_c h + b_c
// (a_c = exp(A S_c), b_c the chunk-local value) are composed over the chunks in order:
// (a2, b2) o (a1, b1) = (a2 a1, a2 b1 + b2). A block owns the CARRY_COLS = 16 columns of one
// channel e (64 contiguous bytes of each chunk row) and walks the chunks in steps of CARRY_STEP
// rows:
//   load:  threads over (row, column), columns fastest: every warp load reads two whole 64-byte
//          pieces (v1 had a warp per column reading 4 bytes per sector, ~8x the bytes through
//          L2/L1; until v55 a block had 8 columns: 32 bytes a row, ~1.4 TB/s at level 0);
//          the next step's rows are loaded into registers while this step is scanned
//   scan:  warp w scans column w out of shared memory exactly as v1 did from global memory: lane
//          composes its CARRY_Q consecutive chunks serially, an inclusive warp scan combines the
//          lanes, the carry of the previous step enters at lane 0 -- the same operations in the
//          same order as v1, so the values are bit-identical to it
//   store: the entering carries go back through the tile, coalesced like the load.
// Rows past the last chunk are loaded as v = 0, S = 0: a = exp2(0) = 1 exactly, the identity.
#define CARRY_Q 8                                   // chunks one lane composes serially
#define CARRY_COLS 16                               // columns per block = warps per block
#define CARRY_STEP (32 * CARRY_Q)                   // chunk rows per step
#define CARRY_THREADS (32 * CARRY_COLS)
#define CARRY_LD (CARRY_STEP / 32)                  // rows each thread loads per step (= 8)
// tile[row][col] at row * 16 + col + row / 8: a lane of the scan reads rows lane * 8 + q, which
// without the pad all sit in one bank (stride 128 words); with it lane l is shifted by l. The
// S values get the same pad (stride 8 -> 9 words): one row each for the first CARRY_STEP
// threads.
__device__ __forceinline__ int carry_at(int row, int col)
{
    return row * CARRY_COLS + col + (row >> 3);
}

template <int EXACT>
__global__ void __launch_bounds__(CARRY_THREADS)
scan_carry_kernel(float *buf, const float *S, scan_k k, int reverse)
{
    __shared__ float tile[CARRY_STEP * CARRY_COLS + CARRY_STEP / 8];
    __shared__ float Ss[CARRY_STEP + CARRY_STEP / 8];   // S of row r at r + r / 8 (same pad)
    const int lane = threadIdx.x & 31, w = threadIdx.x / 32;
    const int lc = threadIdx.x % CARRY_COLS, lr = threadIdx.x / CARRY_COLS;   // load slot
    const int dn = blockIdx.y, d = dn / k.N;
    const int cols = k.E * SCAN_NS, col0 = blockIdx.x * CARRY_COLS;  // one channel (16 | cols)
    const int e = col0 / SCAN_NS;
    const float A = k.d[d].A[col0 + w] * LOG2E_F;
    float *b = buf + (size_t)dn * k.nch * cols + col0;                // (nch, cols) of (dir, n)
    const float *Sd = S + (size_t)dn * k.nch * k.E + e;               // (nch) at stride E
    // this thread's rows of the next two steps: the loads of step j + 2 are issued when step j's
    // rows have been staged, so two steps' loads are in flight during a scan (one step ahead
    // kept ~12 KB in flight a multiprocessor at level 0, where the grid has ~1.5 blocks an SM:
    // ~1.3 TB/s, a latency-bound walk)
    float pv0[CARRY_LD], ps0, pv1[CARRY_LD], ps1;
    auto load = [&](int i0, float (&pv)[CARRY_LD], float &ps) {
        if (i0 >= k.nch) return;
#pragma unroll
        for (int q = 0; q < CARRY_LD; q++) {
            const int i = i0 + lr + 32 * q, c = reverse ? k.nch - 1 - i : i;
            pv[q] = i < k.nch ? b[(size_t)c * cols + lc] : 0.0f;
        }
        const int i = i0 + (int)threadIdx.x, c = reverse ? k.nch - 1 - i : i;
        ps = threadIdx.x < CARRY_STEP && i < k.nch ? Sd[(size_t)c * k.E] : 0.0f;   // S: a row each
    };
    float carry = 0.0f;                             // state entering this step's first chunk
    auto step = [&](int i0, float (&pv)[CARRY_LD], float &ps) {
        __syncthreads();                            // the previous step's tile is stored
#pragma unroll
        for (int q = 0; q < CARRY_LD; q++) tile[carry_at(lr + 32 * q, lc)] = pv[q];
        if (threadIdx.x < CARRY_STEP) Ss[threadIdx.x + threadIdx.x / 8] = ps;
        __syncthreads();
        load(i0 + 2 * CARRY_STEP, pv, ps);          // in flight during this step and the next

        float a[CARRY_Q], v[CARRY_Q];
        float ca = 1.0f, cb = 0.0f;                 // this lane's composite
#pragma unroll
        for (int q = 0; q < CARRY_Q; q++) {
            const int r = lane * CARRY_Q + q;
            a[q] = scan_ex2<EXACT>(A * Ss[r + (r >> 3)]);
            v[q] = tile[carry_at(r, w)];
            cb = fmaf(a[q], cb, v[q]);
            ca *= a[q];
        }
        // inclusive warp scan of the lane composites
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const float pa = __shfl_up_sync(0xffffffffu, ca, off);
            const float pb = __shfl_up_sync(0xffffffffu, cb, off);
            if (lane >= off) { cb = fmaf(ca, pb, cb); ca *= pa; }
        }
        const float after = fmaf(ca, carry, cb);    // state after this lane's chunks
        float h = __shfl_up_sync(0xffffffffu, after, 1);
        if (lane == 0) h = carry;
#pragma unroll
        for (int q = 0; q < CARRY_Q; q++) {
            tile[carry_at(lane * CARRY_Q + q, w)] = h;
            h = fmaf(a[q], h, v[q]);
        }
        carry = __shfl_sync(0xffffffffu, after, 31);
        __syncthreads();
#pragma unroll
        for (int q = 0; q < CARRY_LD; q++) {
            const int i = i0 + lr + 32 * q, c = reverse ? k.nch - 1 - i : i;
            if (i < k.nch) b[(size_t)c * cols + lc] = tile[carry_at(lr + 32 * q, lc)];
        }
    };
    load(0, pv0, ps0);
    load(CARRY_STEP, pv1, ps1);
    for (int i0 = 0; i0 < k.nch; i0 += 2 * CARRY_STEP) {   // uniform over the block
        step(i0, pv0, ps0);
        if (i0 + CARRY_STEP < k.nch) step(i0 + CARRY_STEP, pv1, ps1);
    }
}

void scan_carry_pass(gpu_ctx_t *g, float *buf, const float *S, const scan_k &k, int reverse)
{
    static_assert(SCAN_NS == CARRY_COLS, "a carry block walks one channel's columns");
    const int cols = k.E * SCAN_NS;
    dim3 grid(cols / CARRY_COLS, k.ndir * k.N);
    if (k.exact) scan_carry_kernel<1><<<grid, CARRY_THREADS, 0, g->stream>>>(buf, S, k, reverse);
    else scan_carry_kernel<0><<<grid, CARRY_THREADS, 0, g->stream>>>(buf, S, k, reverse);
    KERNEL_CHECK();
}

// ----------------------------------------------------------------------------
// 3. emit one direction: y[n, pi(j), e] (=|+=) (sum_s C h + D u) * silu(z)
// The chunk's step sizes of the thread's channel go to shared memory first (dynamic,
// SCAN_T x eb, then the chunk's x_dt and the channels' W_dt rows).
// The global loads of token t + 2 (u, z, and y when accumulating) are issued before token t's
// 16-state update (h27 v12, v51): before, a token's loads could not move above the previous
// token's y store (the compiler cannot prove u / z / y do not alias), so every token waited
// one dependent round trip (two with the y read) after its predecessor. One token ahead
// sufficed while each token also formed its softplus (~45 instructions); with the step sizes
// formed in the staging and the fast softplus, a token's update is ~90 instructions and the
// next token's load was its largest stall (ncu source counters, level 0: ~40 % of the samples
// on the register copy of the loaded u). v5's 8-token prefetch cost 30-60 registers and lost
// more occupancy than it hid. Safe: the rows read ahead belong to other tokens (pi is a
// permutation), never to a y row this thread stores before it.

// blockIdx.z: the channel block of eb = scan_block_width(E) channels. ALL = 0: direction dir,
// blockIdx.y = n, y (+)= the output; ALL = 1: every direction (blockIdx.y = d N + n), direction
// d's fp32 output stored into yf (d, N, L, E) for scan_sum_dirs (a template argument: as a
// run-time pointer test it cost the one-direction kernel 12 registers).
template <typename T, int EXACT, int ALL>
__global__ void scan_fwd_emit(scan_k k, int dir, int eb, T *y, int accumulate, const float *states,
                              float *yf)
{
    extern __shared__ float4 scan_dyn[];
    float *xs, *ws;                                 // x_dt, W_dt (scan_chan_carve)
    float *dts = scan_chan_carve<float>(scan_dyn, eb, k.R, xs, ws);     // delta
    __shared__ float Bs[SCAN_T][SCAN_NS], Cs[SCAN_T][SCAN_NS];
    __shared__ size_t srow[SCAN_T];                 // n L + pi(j0 + t): the y / z row of token t
    const int c = blockIdx.x, d = ALL ? (int)blockIdx.y / k.N : dir;
    const int n = ALL ? (int)blockIdx.y % k.N : (int)blockIdx.y;
    const scan_kdir &P = k.d[d];
    const size_t j0 = (size_t)c * SCAN_T;
    const int tn = (int)min((size_t)SCAN_T, k.L - j0);
    const int el = threadIdx.x, e = blockIdx.z * eb + el;
    // the channel's A and entering states first: their loads run under the staging
    const size_t row = (((size_t)d * k.N + n) * k.nch + c) * k.E + e;
    float A[SCAN_NS], h[SCAN_NS];
    scan_ld_A(A, P, e, k.E);
#pragma unroll
    for (int s = 0; s < SCAN_NS; s++) h[s] = e < k.E ? states[row * SCAN_NS + s] : 0.0f;
    scan_chan_stage<T>(Bs, Cs, srow, xs, ws, k, P, n, j0, tn, blockIdx.z * eb, eb);
    __syncthreads();
    if (e >= k.E) return;
    const float bias = P.bias ? P.bias[e] : 0.0f, De = P.D ? P.D[e] : 0.0f;
    scan_delta_to_shared<T>(dts, eb, el, xs, ws + el * k.R, k.R, bias);   // own column: no barrier
    scan_A_of(A);
    const T *u = (const T *)P.u, *z = (const T *)P.z;
    const size_t ib = ((size_t)n * k.L + j0) * k.E + e;  // (n, j0, e) of u, token stride E
    // a token's global inputs, raw (converted at use, so no instruction waits on them early),
    // in three buffers that the walk uses in turn: each token's loads are issued two token
    // steps before its own, into a buffer nothing copies from (a register copy of a load still
    // in flight waits for it, v51). The step size and the row come from shared memory at the
    // step, so a buffer holds only what the loads bring.
    struct tok_in { T u, z, y; };
    tok_in b0, b1, b2;
    b0.z = b0.y = b1.z = b1.y = b2.z = b2.y = T();
    auto fetch = [&](tok_in &f, int t) {
        f.u = u[ib + (size_t)t * k.E];
        const size_t r = srow[t];
        if (z) f.z = z[r * k.ldz + e];
        if (accumulate) f.y = y[r * k.E + e];
    };
    auto step = [&](int t, const tok_in &f) {
        const float ut = to_f(f.u), dt = dts[t * eb + el], du = dt * ut;
        const size_t r = srow[t];
        float acc = De * ut;
#pragma unroll
        for (int s = 0; s < SCAN_NS; s++) {
            h[s] = fmaf(scan_ex2<EXACT>(dt * A[s]), h[s], du * Bs[t][s]);
            acc = fmaf(Cs[t][s], h[s], acc);
        }
        if (z) {
            const float zt = to_f(f.z);
            acc *= zt * sigmoid_t<T>(zt);
        }
        if (ALL) yf[((size_t)d * k.N * k.L + r) * k.E + e] = acc;
        else y[r * k.E + e] = from_f<T>(accumulate ? to_f(f.y) + acc : acc);
    };
    fetch(b0, 0);
    if (tn > 1) fetch(b1, 1);
    for (int t = 0; t < tn; t += 3) {
        if (t + 2 < tn) fetch(b2, t + 2);
        step(t, b0);
        if (t + 1 >= tn) break;
        if (t + 3 < tn) fetch(b0, t + 3);
        step(t + 1, b1);
        if (t + 2 >= tn) break;
        if (t + 4 < tn) fetch(b1, t + 4);
        step(t + 2, b2);
    }
}

// y (+)= the directions' fp32 outputs yf (ndir, n) in the order 0, 1, 2 with the rounding to T
// after each, as the one-launch-per-direction emits do it: the same values, bit for bit.
template <typename T>
__global__ void scan_sum_dirs(T *y, const float *yf, size_t n, int ndir, int accumulate)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        T t = from_f<T>(accumulate ? to_f(y[i]) + yf[i] : yf[i]);
        for (int d = 1; d < ndir; d++) t = from_f<T>(to_f(t) + yf[(size_t)d * n + i]);
        y[i] = t;
    }
}

template <typename T, int EXACT, int ALL>
static void launch_emit(gpu_ctx_t *g, dim3 grid, int eb, size_t shm, const scan_k &k, int d, T *y,
                        int acc, const float *states, float *yf)
{
    scan_allow_shm(scan_fwd_emit<T, EXACT, ALL>, shm);
    scan_fwd_emit<T, EXACT, ALL><<<grid, eb, shm, g->stream>>>(k, d, eb, y, acc, states, yf);
}

void selective_scan_forward_gpu(gpu_ctx_t *g, void *y, int accumulate, float *states,
                                void *workspace, const scan_gpu_t *s)
{
    scan_k k = scan_kernel_args(g, s);
    const scan_ws w = scan_workspace_views(workspace, s);   // the forward uses A, S and yf (the
    float *S = w.S;                                         // first three views) alone
    scan_prepare_A(g, k, w);
    const int eb = scan_block_width(k.E), nb = CEIL_DIV(k.E, eb);
    const size_t shm = scan_chan_shm(eb, k.R, sizeof(float2)), shm_e = scan_chan_shm(eb, k.R, sizeof(float));
    ACT_DISPATCH(g->act, T, {
        const dim3 grid(k.nch, k.ndir * k.N, nb);
        if (k.exact) {
            scan_allow_shm(scan_fwd_summary<T, 1>, shm);
            scan_fwd_summary<T, 1><<<grid, eb, shm, g->stream>>>(k, eb, states, S);
        } else {
            scan_allow_shm(scan_fwd_summary<T, 0>, shm);
            scan_fwd_summary<T, 0><<<grid, eb, shm, g->stream>>>(k, eb, states, S);
        }
        KERNEL_CHECK();
    });
    scan_carry_pass(g, states, S, k, 0);
    // the directions' outputs summed into y in the fixed order 0, 1, 2: deterministic. Where one
    // direction's emit has under 4 blocks an SM and the workspace holds the fp32 outputs (the
    // small levels: the emit is latency-bound there, ~35 us a launch whatever its grid), the
    // directions run as one launch and scan_sum_dirs adds them up; else one launch each.
    const int together = w.yf && (size_t)k.nch * k.N * nb < (size_t)4 * g->sm_count;
    const int nl = together ? 1 : k.ndir;
    const dim3 grid(k.nch, together ? k.ndir * k.N : k.N, nb);
    for (int d = 0; d < nl; d++)
        ACT_DISPATCH(g->act, T, {
            const int acc = !together && (accumulate || d > 0);
            T *yt = (T *)y;
            if (k.exact) {
                if (together) launch_emit<T, 1, 1>(g, grid, eb, shm_e, k, d, yt, acc, states, w.yf);
                else launch_emit<T, 1, 0>(g, grid, eb, shm_e, k, d, yt, acc, states, w.yf);
            } else {
                if (together) launch_emit<T, 0, 1>(g, grid, eb, shm_e, k, d, yt, acc, states, w.yf);
                else launch_emit<T, 0, 0>(g, grid, eb, shm_e, k, d, yt, acc, states, w.yf);
            }
            KERNEL_CHECK();
        });
    if (together) {
        const size_t n = (size_t)k.N * k.L * k.E;
        ACT_DISPATCH(g->act, T, scan_sum_dirs<T><<<grid_for(g, n, 256), 256, 0, g->stream>>>(
                                    (T *)y, w.yf, n, k.ndir, accumulate));
        KERNEL_CHECK();
    }
}

// ----------------------------------------------------------------------------
// 4. the step size alone, as every scan kernel forms it (for the tests: the scans' own checks
// see it only through bf16-rounded outputs, ~1e-2)
template <typename T>
__global__ void scan_step_size_kernel(float *dt, float *dsp, float *dt_bwd, const float *raw,
                                      size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float d;
        dt[i] = softplus20_t<T>(raw[i]);
        dt_bwd[i] = softplus20_d<T>(raw[i], d);
        dsp[i] = d;
    }
}

void selective_scan_step_size_gpu(gpu_ctx_t *g, float *dt, float *dsp, float *dt_bwd,
                                  const float *raw, size_t n)
{
    ACT_DISPATCH(g->act, T, scan_step_size_kernel<T><<<grid_for(g, n, 256), 256, 0, g->stream>>>(
                                dt, dsp, dt_bwd, raw, n));
    KERNEL_CHECK();
}
