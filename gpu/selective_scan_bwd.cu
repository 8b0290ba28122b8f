/*
selective_scan_bwd.cu -- the selective scan backward on the GPU, chunked like the forward
(selective_scan.cu): with lambda_j = dL/dh_j, the adjoint lambda_j = gout_j C_j + a_{j+1}
lambda_{j+1} is the same kind of linear recurrence run in reverse, so
  1. adjoint summary: every chunk runs backward from lambda = 0 -> X_c = a_{j0} lambda_loc(j0),
     and S_c = sum dt (the chunk decay exp(A S_c) again); one thread per channel
  2. carries: the shared carry pass, reversed, turns X into Lambda_c = the adjoint entering
     chunk c from its right (in place)
  3. main: per chunk, channels in groups of 16 staged through shared memory (coalesced
     loads and read-modify-writes), one lane per (channel, state), two channels per warp:
     recompute the chunk's 32 states in registers from the saved entering state, then walk
     back with lambda from Lambda_c and form every gradient. Sums over the 16 states (du,
     ddelta, the pre-gate y for dz) are one transposing butterfly per 4 tokens; the sums over
     channels (dB, dC) stay in registers per lane across a warp's channels and meet in a
     fixed warp order at the chunk's end; dA, dD, ddelta_bias get per-chunk partials
  4. column sums of the partials over the chunks in a fixed order (dA_log = dA * A), read in
     coalesced 8-column tiles
Nothing uses atomics: the result is bit-reproducible. gout = dy(pi(j)) * silu(z(pi(j))).
*/
#include "gpu_internal.h"
#include "mamba_kernels.cuh"
#include <string.h>

#define BWD_WARPS 4

// ----------------------------------------------------------------------------
// 1. adjoint summary: X (dir, n, c, e, s), S (dir, n, c, e)

template <typename T>
__global__ void scan_bwd_summary(scan_k k, const T *dy, float *X, float *S)
{
    __shared__ float Cs[SCAN_T][SCAN_NS];
    __shared__ size_t srow[SCAN_T];                 // n L + pi(j0 + t): the dy / z row of token t
    const int c = blockIdx.x, d = blockIdx.y / k.N, n = blockIdx.y % k.N;
    const scan_kdir &P = k.d[d];
    const size_t j0 = (size_t)c * SCAN_T;
    const int tn = (int)min((size_t)SCAN_T, k.L - j0);
    const T *C = (const T *)P.C;
    for (int i = threadIdx.x; i < SCAN_T * SCAN_NS; i += blockDim.x) {
        const int t = i / SCAN_NS, s = i % SCAN_NS;
        Cs[t][s] = t < tn ? to_f(C[((size_t)n * k.L + j0 + t) * k.ldbc + s]) : 0.0f;
    }
    // pi once per token (blockDim >= 32), not per (token, channel): a 64-bit div / mod in the
    // slice order
    if (threadIdx.x < SCAN_T)
        srow[threadIdx.x] = (int)threadIdx.x < tn
            ? (size_t)n * k.L + tom_pi(P.order, j0 + threadIdx.x, k.L, k.nslices) : 0;
    __syncthreads();
    const int e = threadIdx.x;
    if (e >= k.E) return;
    float A[SCAN_NS], lam[SCAN_NS];
#pragma unroll
    for (int s = 0; s < SCAN_NS; s++) { A[s] = -expf(P.A_log[e * SCAN_NS + s]) * LOG2E_F; lam[s] = 0.0f; }
    const float bias = P.bias ? P.bias[e] : 0.0f;
    const float *dl = P.delta;
    const T *z = (const T *)P.z;
    float sum = 0.0f;
    for (int t = tn - 1; t >= 0; t--) {
        const size_t j = j0 + t, i = ((size_t)n * k.L + j) * k.E + e;
        const size_t r = srow[t];
        const float dt = softplus20_f(dl[i] + bias);
        float gout = to_f(dy[r * k.E + e]);
        if (z) {
            const float zt = to_f(z[r * k.ldz + e]);
            gout *= zt * sigmoid_f(zt);
        }
        sum += dt;
#pragma unroll
        for (int s = 0; s < SCAN_NS; s++) lam[s] = scan_ex2(dt * A[s], k.exact) * fmaf(gout, Cs[t][s], lam[s]);
    }
    const size_t row = ((size_t)blockIdx.y * k.nch + c) * k.E + e;
#pragma unroll
    for (int s = 0; s < SCAN_NS; s++) X[row * SCAN_NS + s] = lam[s];
    S[row] = sum;
}

// ----------------------------------------------------------------------------
// 3. main backward kernel

// Sums over the 16 lanes of each half-warp (the states) of 12 values per lane: the three
// per-state sums (du, ddelta, ypre) of 4 tokens, v[3k + q] = value q of token k. A transposing
// butterfly: at each level a lane keeps half of its values and sends the other half to its
// partner (lane ^ 8, ^4, ^2, ^1), so 12 + 6 + 3 + 2 values cost 6 + 3 + 2 + 1 = 12 shuffles
// (5 per token before). Afterwards the lane with state index s holds the sum of value
// q = s & 3 of token k = s >> 2, for q < 3 (lanes with s & 3 == 3 hold 0). Fixed order.
__device__ __forceinline__ float reduce12_16(const float (&v)[12], int s)
{
    const bool b3 = s & 8, b2 = s & 4, b1 = s & 2, b0 = s & 1;
    float w[6], x[3];
#pragma unroll
    for (int j = 0; j < 6; j++) {                   // keep values 6*b3 + j
        const float send = b3 ? v[j] : v[j + 6], keep = b3 ? v[j + 6] : v[j];
        w[j] = keep + __shfl_xor_sync(0xffffffffu, send, 8);
    }
#pragma unroll
    for (int j = 0; j < 3; j++) {                   // keep values 6*b3 + 3*b2 + j
        const float send = b2 ? w[j] : w[j + 3], keep = b2 ? w[j + 3] : w[j];
        x[j] = keep + __shfl_xor_sync(0xffffffffu, send, 4);
    }
    // 3 -> 2 per lane: b1 = 0 keeps q = 0, 1; b1 = 1 keeps q = 2 and an empty slot
    const float y0 = (b1 ? x[2] : x[0]) + __shfl_xor_sync(0xffffffffu, b1 ? x[0] : x[2], 2);
    const float y1 = (b1 ? 0.0f : x[1]) + __shfl_xor_sync(0xffffffffu, b1 ? x[1] : 0.0f, 2);
    // 2 -> 1: b0 = 0 keeps y0 (q = 0 or 2), b0 = 1 keeps y1 (q = 1, or the empty slot)
    return (b0 ? y1 : y0) + __shfl_xor_sync(0xffffffffu, b0 ? y0 : y1, 1);
}

// lam_dA: in Lambda (dir, n, c, e, s), out the chunk's dA partial (same index, in place).
// Dp, bp: (dir, n, c, e) partial dD / ddelta_bias.
// The chunk's channels are walked in groups of BWD_EG. Per group, three phases:
//   pre:  threads over (token, channel), channels fastest: coalesced loads of delta, u, dy, z
//         (the last two at pi(j), whose row index is computed once per token per chunk) ->
//         dt, u, gout, softplus' and the dz factor in shared; nothing is reloaded later
//   scan: lanes over (channel of a pair, state), reading shared only: the forward recompute
//         keeps the chunk's 32 states in registers; the backward keeps dB / dC in registers
//         per lane across all of the warp's pairs (flushed once per chunk, not a shared
//         read-modify-write per step) and reduces the 3 state sums once per 4 tokens
//   post: threads over (token, channel) again: du, ddelta, dz read-modify-written coalesced from
//         the state sums the scan left in shared; dD / dbias partials of the chunk
// Summation orders are fixed (tokens descending, pairs in warp order, warps in order): two runs
// are bit-identical.
#define BWD_EG 16                                   // channels per group (8 pairs)
#define BWD_THREADS (32 * BWD_WARPS)
#define BWD_FIN (3 * (BWD_EG + 1))                  // sfin row: 3 sums x 17 (bank spread)
// EXACT is k.exact as a template argument: as a run-time flag every decay carried a branch
// (BRA + convergence barriers, ~8 SASS instructions per step); 4 blocks of 128 threads per SM
// are asked for (<= 128 registers) so the compiler does not trade occupancy for hoisted decays.
template <typename T, int EXACT>
__global__ void __launch_bounds__(BWD_THREADS, 4)
scan_bwd_main(scan_k k, const T *dy, const float *states, float *lam_dA, float *Dp, float *bp)
{
    // (B, C) and (dt, u, gout, dt u) packed: one 8- and one 16-byte shared load per step
    __shared__ float2 BC[SCAN_T][SCAN_NS];
    __shared__ float bc[BWD_WARPS][SCAN_T][32];        // per warp: dB (lanes 0-15), dC (16-31)
    __shared__ float4 pre[SCAN_T][BWD_EG];              // dt, u, gout, dt u
    __shared__ float dsps[SCAN_T][BWD_EG];              // d softplus / d raw (post phase only)
    __shared__ float gzs[SCAN_T][BWD_EG];               // dz = ypre * gz
    __shared__ float sfin[SCAN_T][BWD_FIN];             // [t][q * 17 + ch]: du, ddt, ypre sums
    __shared__ float sred[2][BWD_THREADS / BWD_EG][BWD_EG];
    __shared__ size_t srow[SCAN_T];                     // n L + pi(j0 + t): dy / z row
    const int c = blockIdx.x, d = blockIdx.y / k.N, n = blockIdx.y % k.N;
    const scan_kdir &P = k.d[d];
    const size_t j0 = (size_t)c * SCAN_T;
    const int tn = (int)min((size_t)SCAN_T, k.L - j0);
    const int w = threadIdx.x / 32, lane = threadIdx.x & 31, s = lane & 15, el = lane >> 4;
    {
        const T *B = (const T *)P.B, *C = (const T *)P.C;
        for (int i = threadIdx.x; i < SCAN_T * SCAN_NS; i += blockDim.x) {
            const int t = i / SCAN_NS, q = i % SCAN_NS;
            const size_t r = ((size_t)n * k.L + j0 + t) * k.ldbc + q;
            BC[t][q] = t < tn ? make_float2(to_f(B[r]), to_f(C[r])) : make_float2(0.0f, 0.0f);
        }
        if (threadIdx.x < SCAN_T)                   // tails: row 0, never read (t >= tn)
            srow[threadIdx.x] = (int)threadIdx.x < tn
                ? (size_t)n * k.L + tom_pi(P.order, j0 + threadIdx.x, k.L, k.nslices) : 0;
    }

    const T *u = (const T *)P.u, *z = (const T *)P.z;
    const float *dl = P.delta;
    T *du = (T *)P.du, *dz = (T *)P.dz;
    float *ddl = P.ddelta;
    const size_t prow = ((size_t)blockIdx.y * k.nch + c) * k.E;
    // this thread's (token row, channel) slots in the pre/post phases: fixed channel cc
    const int cc = threadIdx.x % BWD_EG, t_first = threadIdx.x / BWD_EG;
    const int t_step = BWD_THREADS / BWD_EG;
    // this lane's dB (el = 0) or dC (el = 1) sums of state s over the warp's channels, per token
    float acc[SCAN_T];
#pragma unroll
    for (int t = 0; t < SCAN_T; t++) acc[t] = 0.0f;

    for (int e0 = 0; e0 < k.E; e0 += BWD_EG) {
        const int e_t = e0 + cc;
        const float bias_t = e_t < k.E && P.bias ? P.bias[e_t] : 0.0f;
        __syncthreads();                            // staging / previous post phase done
        for (int t = t_first; t < SCAN_T; t += t_step) {
            float dt = 0.0f, ut = 0.0f, gout = 0.0f, dsp = 0.0f, gz = 0.0f;
            if (t < tn && e_t < k.E) {
                const size_t it = ((size_t)n * k.L + j0 + t) * k.E + e_t, rt = srow[t];
                const float v = dl[it] + bias_t;
                dt = softplus20_f(v);
                dsp = v > 20.0f ? 1.0f : sigmoid_f(v);
                ut = to_f(u[it]);
                const float dyt = to_f(dy[rt * k.E + e_t]);
                gout = dyt;
                if (z) {
                    const float zt = to_f(z[rt * k.ldz + e_t]), sz = sigmoid_f(zt);
                    gout = dyt * (zt * sz);         // dy silu(z)
                    gz = dyt * sz * (1.0f + zt * (1.0f - sz));   // dy silu'(z)
                }
            }
            // dt u once per (token, channel), not per (token, channel, state) in the recompute:
            // the same product as before, so the states are bit-identical
            pre[t][cc] = make_float4(dt, ut, gout, dt * ut);
            dsps[t][cc] = dsp;
            gzs[t][cc] = gz;
        }
        __syncthreads();

        for (int p = w; 2 * p < BWD_EG; p += BWD_WARPS) {
            // lane = (channel el of the pair, state s)
            const int ce = 2 * p + el, e = e0 + ce;
            const bool e_ok = e < k.E;
            const float A = e_ok ? -expf(P.A_log[e * SCAN_NS + s]) : 0.0f, A2 = A * LOG2E_F;
            const size_t sidx = (prow + e) * SCAN_NS + s;
            const float h0 = e_ok ? states[sidx] : 0.0f;
            float lam = e_ok ? lam_dA[sidx] : 0.0f;
            // forward recompute of the states h[t] from the entering state (tokens t >= tn have
            // dt = u = B = 0: a = 1, h unchanged, no contribution). The decays are recomputed in
            // the backward walk rather than kept: a[32] next to h[32] and acc[32] took the kernel
            // from 111 to 187 registers (2 blocks per SM instead of 4); the MUFU pipe has room.
            float h[SCAN_T];
            {
                float hp = h0;
#pragma unroll
                for (int t = 0; t < SCAN_T; t++) {
                    const float4 pv = pre[t][ce];
                    hp = fmaf(scan_ex2(pv.x * A2, EXACT), hp, pv.w * BC[t][s].x);
                    h[t] = hp;
                }
            }
            float dA = 0.0f;
#pragma unroll
            for (int g = SCAN_T / 4 - 1; g >= 0; g--) {
                float v[12];                        // v[3k + q]: state sum q of token 4g + k
#pragma unroll
                for (int kk = 3; kk >= 0; kk--) {
                    const int t = 4 * g + kk;
                    const float4 pv = pre[t][ce];
                    const float dt = pv.x, ut = pv.y, gout = pv.z;
                    const float2 bcv = BC[t][s];
                    const float Bt = bcv.x, Ct = bcv.y;
                    const float hprev = t ? h[t - 1] : h0;
                    lam = fmaf(gout, Ct, lam);          // dL/dh_t, all paths
                    const float at = EXACT ? exp2_acc(dt * A2) : ex2_fast_again(dt * A2);
                    const float ahp = at * hprev, lamdt = lam * dt;
                    const float dBl = lamdt * ut, dCl = gout * h[t];
                    dA = fmaf(lamdt, ahp, dA);
                    v[3 * kk + 0] = lamdt * Bt;                     // -> du
                    v[3 * kk + 1] = lam * fmaf(A, ahp, Bt * ut);    // -> ddt
                    v[3 * kk + 2] = Ct * h[t];                      // -> ypre
                    lam *= at;                              // -> contribution to dL/dh_{t-1}
                    // dB over the pair's two channels on lanes 0-15, dC on lanes 16-31
                    const float other = __shfl_xor_sync(0xffffffffu, el ? dBl : dCl, 16);
                    acc[t] += (el ? dCl : dBl) + other;
                }
                const float x = reduce12_16(v, s);
                if ((s & 3) != 3) sfin[4 * g + (s >> 2)][(s & 3) * (BWD_EG + 1) + ce] = x;
            }
            if (e_ok) lam_dA[sidx] = dA;
        }
        __syncthreads();

        // post: final per-token gradients, coalesced over channels; dD / dbias partials
        float dDc = 0.0f, dbc = 0.0f;
        const float De = e_t < k.E && P.D ? P.D[e_t] : 0.0f;
        for (int t = t_first; t < SCAN_T; t += t_step) {
            if (t >= tn || e_t >= k.E) continue;
            const size_t it = ((size_t)n * k.L + j0 + t) * k.E + e_t;
            const float4 pv = pre[t][cc];
            const float ut = pv.y, gout = pv.z;
            const float draw = sfin[t][(BWD_EG + 1) + cc] * dsps[t][cc];
            if (du) du[it] = from_f<T>(to_f(du[it]) + fmaf(De, gout, sfin[t][cc]));
            if (ddl) ddl[it] += draw;
            if (z && dz) {
                const float ypre = fmaf(De, ut, sfin[t][2 * (BWD_EG + 1) + cc]);
                dz[it] = from_f<T>(to_f(dz[it]) + ypre * gzs[t][cc]);
            }
            dDc = fmaf(gout, ut, dDc);
            dbc += draw;
        }
        sred[0][t_first][cc] = dDc;
        sred[1][t_first][cc] = dbc;
        __syncthreads();
        if (threadIdx.x < BWD_EG && e_t < k.E) {       // fixed order over the token rows
            float a0 = 0.0f, a1 = 0.0f;
            for (int r = 0; r < t_step; r++) { a0 += sred[0][r][cc]; a1 += sred[1][r][cc]; }
            Dp[prow + e_t] = a0;
            bp[prow + e_t] = a1;
        }
    }
    // flush the warps' dB / dC sums (no barrier needed before: bc is written only here)
#pragma unroll
    for (int t = 0; t < SCAN_T; t++) bc[w][t][lane] = acc[t];
    __syncthreads();

    // dB, dC of the chunk: the warps' rows in a fixed order
    T *dB = (T *)P.dB, *dC = (T *)P.dC;
    for (int i = threadIdx.x; i < SCAN_T * 32; i += blockDim.x) {
        const int t = i / 32, col = i % 32;
        if (t >= tn) continue;
        float v = 0.0f;
        for (int q = 0; q < BWD_WARPS; q++) v += bc[q][t][col];
        T *dst = col < SCAN_NS ? dB : dC;
        if (!dst) continue;
        T *pp = dst + ((size_t)n * k.L + j0 + t) * k.ldbc + (col % SCAN_NS);
        *pp = from_f<T>(to_f(*pp) + v);
    }
}

// ----------------------------------------------------------------------------
// 4. out[col] += mul(col) * sum over the rows (n, chunk) of part (dir, rows, cols), in a fixed
// order. which: 0 dA_log (mul = A = -exp(A_log)), 1 dD, 2 ddelta_bias. A block owns
// COLSUM_COLS adjacent columns; its threads are (row lane, column), columns fastest, so every
// warp load reads 4 full 32-byte sectors (v1: a warp per column, one 4-byte word per sector).
// Row lane lr sums rows lr, lr + 32, ... into COLSUM_ACC interleaved accumulators (that many
// independent loads in flight), the 32 row lanes meet in shared memory in lane order.
#define COLSUM_COLS 8
#define COLSUM_THREADS (32 * COLSUM_COLS)
#define COLSUM_ACC 8

__global__ void __launch_bounds__(COLSUM_THREADS)
scan_colsum_kernel(const float *part, scan_k k, int cols, int which)
{
    __shared__ float red[32][COLSUM_COLS];
    const int lc = threadIdx.x % COLSUM_COLS, lr = threadIdx.x / COLSUM_COLS;
    const int col = blockIdx.x * COLSUM_COLS + lc, d = blockIdx.y;
    const scan_kdir &P = k.d[d];
    float *out = which == 0 ? P.dA_log : which == 1 ? P.dD : P.dbias;
    if (!out) return;                               // uniform over the block
    const size_t rows = (size_t)k.N * k.nch;
    float acc[COLSUM_ACC];
#pragma unroll
    for (int q = 0; q < COLSUM_ACC; q++) acc[q] = 0.0f;
    if (col < cols) {
        const float *pd = part + (size_t)d * rows * cols + col;
        size_t r = lr;
        for (; r + 32 * (COLSUM_ACC - 1) < rows; r += 32 * COLSUM_ACC) {
#pragma unroll
            for (int q = 0; q < COLSUM_ACC; q++) acc[q] += pd[(r + 32 * q) * cols];
        }
#pragma unroll
        for (int q = 0; q < COLSUM_ACC - 1; q++)    // the last < COLSUM_ACC rows of this lane
            if (r + 32 * q < rows) acc[q] += pd[(r + 32 * q) * cols];
    }
    float sum = 0.0f;
#pragma unroll
    for (int q = 0; q < COLSUM_ACC; q++) sum += acc[q];
    red[lr][lc] = sum;
    __syncthreads();
    if (lr == 0 && col < cols) {
        float tot = 0.0f;
        for (int i = 0; i < 32; i++) tot += red[i][lc];
        const float mul = which == 0 ? -expf(P.A_log[col]) : 1.0f;
        out[col] += mul * tot;
    }
}

void selective_scan_backward_gpu(gpu_ctx_t *g, const void *dy, const float *states,
                                 void *workspace, const scan_gpu_t *s)
{
    const scan_k k = scan_kernel_args(g, s);
    const scan_ws w = scan_workspace_views(workspace, s);
    const int threads = CEIL_DIV(k.E, 32) * 32;
    const dim3 grid(k.nch, k.ndir * k.N);
    ACT_DISPATCH(g->act, T, {
        scan_bwd_summary<T><<<grid, threads, 0, g->stream>>>(k, (const T *)dy, w.big, w.S);
        KERNEL_CHECK();
    });
    scan_carry_pass(g, w.big, w.S, k, 1);
    ACT_DISPATCH(g->act, T, {
        if (k.exact)
            scan_bwd_main<T, 1><<<grid, BWD_THREADS, 0, g->stream>>>(k, (const T *)dy, states,
                                                                     w.big, w.Dp, w.bp);
        else
            scan_bwd_main<T, 0><<<grid, BWD_THREADS, 0, g->stream>>>(k, (const T *)dy, states,
                                                                     w.big, w.Dp, w.bp);
        KERNEL_CHECK();
    });
    scan_colsum_kernel<<<dim3(CEIL_DIV(k.E * SCAN_NS, COLSUM_COLS), k.ndir), COLSUM_THREADS, 0,
                         g->stream>>>(w.big, k, k.E * SCAN_NS, 0);
    KERNEL_CHECK();
    scan_colsum_kernel<<<dim3(CEIL_DIV(k.E, COLSUM_COLS), k.ndir), COLSUM_THREADS, 0, g->stream>>>(
        w.Dp, k, k.E, 1);
    KERNEL_CHECK();
    scan_colsum_kernel<<<dim3(CEIL_DIV(k.E, COLSUM_COLS), k.ndir), COLSUM_THREADS, 0, g->stream>>>(
        w.bp, k, k.E, 2);
    KERNEL_CHECK();
}
