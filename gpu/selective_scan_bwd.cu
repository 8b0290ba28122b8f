/*
selective_scan_bwd.cu -- the selective scan backward on the GPU, chunked like the forward
(selective_scan.cu): with lambda_j = dL/dh_j, the adjoint lambda_j = gout_j C_j + a_{j+1}
lambda_{j+1} is the same kind of linear recurrence run in reverse, so
  1. adjoint summary: every chunk runs backward from lambda = 0 -> X_c = a_{j0} lambda_loc(j0),
     and S_c = sum dt (the chunk decay exp(A S_c) again); one thread per channel, channels
     split over blocks of at most 128
  2. carries: the shared carry pass, reversed, turns X into Lambda_c = the adjoint entering
     chunk c from its right (in place)
  3. main: per chunk, channels in groups of 16 staged through shared memory (coalesced
     loads and read-modify-writes; the next group's inputs fetched by cp.async while the
     current one is scanned), one lane per (channel, state), two channels per warp:
     recompute the chunk's 32 states in registers from the saved entering state, then walk
     back with lambda from Lambda_c and form every gradient. Sums over the 16 states
     (sum lam B for du and ddelta, sum A lam a h_prev for ddelta) are one transposing
     butterfly per 4 tokens; the sums over
     channels (dB, dC) stay in registers per lane across a warp's channels and meet in a
     fixed warp order at the chunk's end; dA, dD, ddelta_bias get per-chunk partials. Where
     the chunks alone give too few blocks (the small levels: L = 64..4096 with E = 192..768),
     the channel groups are split over blocks too, each writing its dB / dC sums to a partial
     that a small kernel adds up in split order
     The main kernel also runs the fused dt projection's backward (delta_raw = x_dt W_dt^T)
     from the ddelta it has just formed, so ddelta never goes to memory: dx_dt = ddelta W_dt
     summed over the chunk's channels in a fixed order (per token, in shared memory across the
     groups), and per-chunk partials of dW_dt = ddelta^T x_dt
  4. column sums of the partials over the chunks in a fixed order (dA_log = dA * A): all four
     in one launch over row ranges, then one pass over the ranges
Nothing uses atomics: the result is bit-reproducible. gout = dy(pi(j)) * silu(z(pi(j))).
There is no dz: it needs the pre-gate y = sum_s C h + D u, a third sum over the states in the
walk (~5 of its ~31 instructions per lane-step) and a read-modify-write of dz at pi(j) per
direction. The Mamba layer saves the forward's pre-gate sum over the three directions instead
(as mamba_ssm saves `out`) and forms dz from it elementwise (mamba_gate.cu), once for all three.
*/
#include "gpu_internal.h"
#include "mamba_kernels.cuh"
#include <stdint.h>
#include <string.h>

#define BWD_WARPS 4

// ----------------------------------------------------------------------------
// 1. adjoint summary: X (dir, n, c, e, s), S (dir, n, c, e)

// blockIdx.z: the channel block of eb = scan_block_width(E) channels. Dynamic shared memory
// (bsum_shm): the step sizes of half a chunk for the thread's channel (SCAN_T / 2 x eb f32,
// formed from the staged x_dt and W_dt rows, one half at a time), x_dt, the W_dt rows, then with
// VEC the chunk's dy and z rows as stored (2 x SCAN_T x eb of T), copied by 16-byte cp.async
// right after the rows are known: the loads of all 32 tokens are in flight together, under
// the first half's step sizes, instead of two tokens' at a time in front of their use (the
// kernel's largest stall: 32 % of its samples waited on those loads, ncu at level 0). VEC
// needs what scan_bwd_main's staging needs (bwd_vec_ok); otherwise the loads stay in the loop,
// BWD_SUM_BATCH tokens' at a time.
// Tokens whose loads a thread issues together before using them (without VEC). Scan backward
// of a 128^3 step (srm-bench, H100, with the cp.async main kernel): batch 1 16.2 ms, 2 15.7, 4
// 16.1, 8 17.2 (gpu/PERF_NOTES.md v17; 4 again no better in v28).
#define BWD_SUM_BATCH 2
#define BSUM_HALF (SCAN_T / 2)
static size_t bsum_shm(int eb, int R, size_t act, int vec)
{
    return (size_t)BSUM_HALF * eb * sizeof(float) + (size_t)(SCAN_T + eb) * R * sizeof(float) +
           (vec ? 2 * (size_t)SCAN_T * eb * act : 0);
}
// EXACT is k.exact as a template argument, as in every other scan kernel: as a run-time flag each
// of a token's 16 decays carried a branch (BSSY / BRA / BSYNC) and the shared address of C was
// formed again after each, ~4 of the ~9 issue slots a state (SASS of v49's build; PERF_NOTES v50).
template <typename T, int VEC, int EXACT>
__global__ void scan_bwd_summary(scan_k k, int eb, const T *dy, float *X, float *S)
{
    extern __shared__ float4 scan_dyn[];
    float *dts = (float *)scan_dyn;                 // [t * eb + channel], t < BSUM_HALF
    float *xs = dts + BSUM_HALF * eb;               // [r * SCAN_T + t] (scan_stage_xdt)
    float *ws = xs + SCAN_T * k.R;                  // [channel * R + r] (scan_stage_wdt)
    T *rdy = (T *)(ws + eb * k.R), *rz = rdy + SCAN_T * eb;   // [t * eb + channel] (16-byte aligned:
                                                    // eb is a multiple of 32)
    __shared__ float Cs[SCAN_T][SCAN_NS];
    __shared__ size_t srow[SCAN_T];                 // n L + pi(j0 + t): the dy / z row of token t
    const int c = blockIdx.x, d = blockIdx.y / k.N, n = blockIdx.y % k.N;
    const scan_kdir &P = k.d[d];
    const size_t j0 = (size_t)c * SCAN_T;
    const int tn = (int)min((size_t)SCAN_T, k.L - j0);
    const int el = threadIdx.x, e0 = blockIdx.z * eb, e = e0 + el;
    const T *z = (const T *)P.z;
    float A[SCAN_NS], lam[SCAN_NS];
    scan_ld_A(A, P, e, k.E);
    scan_chan_stage<T>(NULL, Cs, srow, xs, ws, k, P, n, j0, tn, e0, eb);
    __syncthreads();
    if (VEC) {                                      // dy and z rows: 16-byte pieces, zero-filled
        constexpr int CT = 16 / (int)sizeof(T);     // channels a piece (E % 8 == 0: whole pieces)
        // piece i = row ppr + ch / CT; the block's eb = CT ppr threads step i by whole CT rows,
        // so a thread keeps its column and forms it once (the run-time divisions per piece
        // were 7 % of the kernel's instructions)
        const int ppr = eb / CT, rows = (z ? 2 : 1) * SCAN_T, ch = threadIdx.x % ppr * CT;
        for (int row = threadIdx.x / ppr; row < rows; row += CT) {
            const int a = row / SCAN_T, t = row % SCAN_T;
            const bool ok = t < tn && e0 + ch < k.E;
            const T *src = !ok ? dy : a == 0 ? dy + srow[t] * k.E + e0 + ch : z + srow[t] * k.ldz + e0 + ch;
            cp_async16((a == 0 ? rdy : rz) + t * eb + ch, src, ok ? 16 : 0);
        }
        cp_async_commit();
    }
    // the step sizes of a half, own column (no barrier; rows past E read the zero W_dt rows):
    // the last half's while the copies are in flight
    const float bias = e < k.E && P.bias ? P.bias[e] : 0.0f;
    scan_delta_to_shared<T>(dts, eb, el, xs, ws + el * k.R, k.R, bias, BSUM_HALF, BSUM_HALF);
    if (VEC) {
        cp_async_wait_all();
        __syncthreads();                            // every thread's pieces have landed
    }
    if (e >= k.E) return;
    scan_A_of(A);
#pragma unroll
    for (int s = 0; s < SCAN_NS; s++) lam[s] = 0.0f;
    float sum = 0.0f;
    // the halves from the last, each walked backward BWD_SUM_BATCH tokens at a time
#pragma unroll 1
    for (int h0 = BSUM_HALF; h0 >= 0; h0 -= BSUM_HALF) {
        if (h0 != BSUM_HALF)
            scan_delta_to_shared<T>(dts, eb, el, xs, ws + el * k.R, k.R, bias, h0, BSUM_HALF);
        for (int tb = min(tn, h0 + BSUM_HALF) - 1; tb >= h0; tb -= BWD_SUM_BATCH) {
            float dtv[BWD_SUM_BATCH], dyv[BWD_SUM_BATCH], zv[BWD_SUM_BATCH];
#pragma unroll
            for (int q = 0; q < BWD_SUM_BATCH; q++) {
                const int t = tb - q;
                if (t < h0) break;
                dtv[q] = dts[(t - h0) * eb + el];
                if (VEC) {
                    dyv[q] = to_f(rdy[t * eb + el]);
                    zv[q] = z ? to_f(rz[t * eb + el]) : 0.0f;
                } else {
                    const size_t r = srow[t];
                    dyv[q] = to_f(dy[r * k.E + e]);
                    zv[q] = z ? to_f(z[r * k.ldz + e]) : 0.0f;
                }
            }
#pragma unroll
            for (int q = 0; q < BWD_SUM_BATCH; q++) {
                const int t = tb - q;
                if (t < h0) break;
                const float dt = dtv[q];
                float gout = dyv[q];
                if (z) gout *= zv[q] * sigmoid_t<T>(zv[q]);
                sum += dt;
#pragma unroll
                for (int s = 0; s < SCAN_NS; s++)
                    lam[s] = scan_ex2<EXACT>(dt * A[s]) * fmaf(gout, Cs[t][s], lam[s]);
            }
        }
    }
    const size_t row = ((size_t)blockIdx.y * k.nch + c) * k.E + e;
#pragma unroll
    for (int s = 0; s < SCAN_NS; s++) X[row * SCAN_NS + s] = lam[s];
    S[row] = sum;
}

// ----------------------------------------------------------------------------
// 3. main backward kernel

// Sums over the 16 lanes of each half-warp (the states) of 8 values per lane: the two per-state
// sums (lam B, A lam a h_prev) of 4 tokens, v[2k + q] = value q of token k. A transposing
// butterfly: at each level a lane keeps half of its values and sends the other half to its
// partner (lane ^ 8, ^4, ^2), so 8 + 4 + 2 values cost 4 + 2 + 1 shuffles, and one more (^1)
// adds the two half-sums of the last value: 8 shuffles per 4 tokens. Afterwards the lanes with
// state index s and s ^ 1 both hold the sum of value q = (s >> 1) & 1 of token k = s >> 2.
// Fixed order.
__device__ __forceinline__ float reduce8_16(const float (&v)[8], int s)
{
    const bool b3 = s & 8, b2 = s & 4, b1 = s & 2;
    float w[4], x[2];
#pragma unroll
    for (int j = 0; j < 4; j++) {                   // keep values 4*b3 + j
        const float send = b3 ? v[j] : v[j + 4], keep = b3 ? v[j + 4] : v[j];
        w[j] = keep + __shfl_xor_sync(0xffffffffu, send, 8);
    }
#pragma unroll
    for (int j = 0; j < 2; j++) {                   // keep values 4*b3 + 2*b2 + j
        const float send = b2 ? w[j] : w[j + 2], keep = b2 ? w[j + 2] : w[j];
        x[j] = keep + __shfl_xor_sync(0xffffffffu, send, 4);
    }
    // keep value 4*b3 + 2*b2 + b1: the sum over the 8 lanes that share s & 1, then both halves
    const float y = (b1 ? x[1] : x[0]) + __shfl_xor_sync(0xffffffffu, b1 ? x[0] : x[1], 2);
    return y + __shfl_xor_sync(0xffffffffu, y, 1);
}

// *pp gets v: stored (k.ow) or added
template <typename T>
__device__ __forceinline__ void scan_put(const scan_k &k, T *pp, float v)
{
    *pp = from_f<T>((k.ow ? 0.0f : to_f(*pp)) + v);
}
// dB (col < 16) or dC (col - 16) of token row `row` (n L + j) gets v (scan_put); a NULL output
// is skipped. The callers hoist dB, dC out of their loops.
template <typename T>
__device__ __forceinline__ void dbc_put(const scan_k &k, T *dB, T *dC, size_t row, int col, float v)
{
    T *dst = col < SCAN_NS ? dB : dC;
    if (dst) scan_put<T>(k, dst + row * k.ldbc + (col % SCAN_NS), v);
}

// lam_dA: in Lambda (dir, n, c, e, s), out the chunk's dA partial (same index, in place).
// Dp, bp: (dir, n, c, e) partial dD / ddelta_bias.
// The chunk's channels are walked in groups of BWD_EG. Per group, three phases:
//   pre:  threads over (token, channel), channels fastest: the group's u, dy, z (the last two at
//         pi(j), whose row index is computed once per token per chunk), already in shared
//         memory (bwd_stage), and delta_raw from the staged x_dt -> dt, u, gout and softplus'
//         in shared; nothing is reloaded later
//   scan: lanes over (channel of a pair, state), reading shared only: the forward recompute
//         keeps the chunk's 32 states in registers; the backward keeps dB / dC in registers
//         per lane across all of the warp's pairs (flushed once per chunk, not a shared
//         read-modify-write per step) and reduces the 2 state sums once per 4 tokens. Before
//         it starts, the next group's raw inputs are requested with cp.async, so their loads
//         run under this group's scan and post phases instead of in front of its pre phase
//   post: threads over (token, channel) again: du and ddelta written coalesced from the state
//         sums the scan left in shared; dD / dbias partials of the chunk
// Summation orders are fixed (tokens descending, pairs in warp order, warps in order): two runs
// are bit-identical.
#define BWD_EG 16                                   // channels per group (8 pairs)
// floats of one channel split's partial row of a chunk: dB | dC (32 per token), then dx_dt
// (R per token)
__host__ __device__ __forceinline__ size_t bwd_part_floats(int R) { return (size_t)SCAN_T * (32 + R); }
#define BWD_THREADS (32 * BWD_WARPS)
#define BWD_FIN (2 * (BWD_EG + 1))                  // sfin row: 2 sums x 17 (bank spread)
#define BWD_TP (SCAN_T + 4)                         // row of the token-fastest arrays

// One channel group's raw inputs of a chunk, as stored: u, dy and z (at pi(j)).
template <typename T> struct bwd_raw {
    T u[SCAN_T][BWD_EG], dy[SCAN_T][BWD_EG], z[SCAN_T][BWD_EG];
};

// Fills r with group e0's raw inputs (tokens past tn, channels past E: zeros). vec (uniform
// over the launch; selective_scan_backward_gpu checks E % 8 == 0, ldz % 8 == 0 and 16-byte
// aligned bases, so every 16-byte piece of a row is wholly inside or outside E): 16-byte
// cp.async copies, committed but not waited for (the caller waits and syncs before reading).
// Otherwise plain loads, waited for here: the same values.
template <typename T>
__device__ __forceinline__ void bwd_stage(bwd_raw<T> &r, const scan_k &k, const scan_kdir &P,
                                          const T *dy, const size_t *srow, int n, size_t j0,
                                          int tn, int e0, int vec)
{
    const T *u = (const T *)P.u, *z = (const T *)P.z;
    if (vec) {
        constexpr int PT = BWD_EG * (int)sizeof(T) / 16;    // pieces per row
        constexpr int CT = 16 / (int)sizeof(T);             // channels per piece
        // u, dy, z: SCAN_T * PT pieces each (z absent: two arrays)
        const int pieces = (z ? 3 : 2) * SCAN_T * PT;
#pragma unroll
        for (int i = threadIdx.x; i < 3 * SCAN_T * PT; i += BWD_THREADS) {
            if (i >= pieces) break;
            const int a = i / (SCAN_T * PT), t = i % (SCAN_T * PT) / PT, ch = i % PT * CT, e = e0 + ch;
            const bool ok = t < tn && e < k.E;
            const T *src = !ok ? u : a == 0 ? u + ((size_t)n * k.L + j0 + t) * k.E + e
                                   : a == 1 ? dy + srow[t] * k.E + e : z + srow[t] * k.ldz + e;
            T *dst = a == 0 ? &r.u[t][ch] : a == 1 ? &r.dy[t][ch] : &r.z[t][ch];
            cp_async16(dst, src, ok ? 16 : 0);
        }
        cp_async_commit();
    } else {
        const int cc = threadIdx.x % BWD_EG, e = e0 + cc;
        for (int t = threadIdx.x / BWD_EG; t < SCAN_T; t += BWD_THREADS / BWD_EG) {
            const bool ok = t < tn && e < k.E;
            const size_t it = ((size_t)n * k.L + j0 + t) * k.E + e, rt = srow[t];
            r.u[t][cc] = ok ? u[it] : from_f<T>(0.0f);
            r.dy[t][cc] = ok ? dy[rt * k.E + e] : from_f<T>(0.0f);
            if (z) r.z[t][cc] = ok ? z[rt * k.ldz + e] : from_f<T>(0.0f);
        }
    }
}
// EXACT is k.exact as a template argument: as a run-time flag every decay carried a branch
// (BRA + convergence barriers, ~8 SASS instructions per step); 4 blocks of 128 threads per SM
// are asked for (<= 128 registers) so the compiler does not trade occupancy for hoisted decays.
template <typename T, int EXACT>
__global__ void __launch_bounds__(BWD_THREADS, 4)
scan_bwd_main(scan_k k, const T *dy, const float *states, float *lam_dA, float *Dp, float *bp,
              float *Wp, int egs, float *dbcp, int vec)
{
    // B, C and the group's dt, dt u, gout stored token-fastest (rows of BWD_TP: 16-byte aligned,
    // adjacent rows 4 banks apart), so the recompute and the walk read 4 tokens of a value with
    // one 16-byte load: per 4 tokens the walk's 5 loads and the recompute's 3 instead of 8 each
    __shared__ __align__(16) float Bs[SCAN_NS][BWD_TP], Cs[SCAN_NS][BWD_TP];
    // the chunk-end dB / dC flush over the same bytes as the chunk's x_dt (the dt projection)
    // and its dx_dt sums, which live only while the groups run
    __shared__ union {
        float bc[BWD_WARPS][SCAN_T][32];                // per warp: dB (lanes 0-15), dC (16-31)
        struct { float x[SCAN_RMAX][SCAN_T], dx[SCAN_T][SCAN_RMAX]; } dt;   // x as scan_stage_xdt
    } un;
    __shared__ __align__(16) float pdt[BWD_EG][BWD_TP], pdu[BWD_EG][BWD_TP], pgo[BWD_EG][BWD_TP];
    __shared__ float pu[SCAN_T][BWD_EG];                // u (post phase)
    __shared__ float dsps[SCAN_T][BWD_EG];              // d softplus / d raw, then ddelta_raw
    __shared__ float sfin[SCAN_T][BWD_FIN];             // [t][q * 17 + ch]: state sums (post)
    __shared__ float sred[2][BWD_THREADS / BWD_EG][BWD_EG];
    __shared__ size_t srow[SCAN_T];                     // n L + pi(j0 + t): dy / z row
    __shared__ __align__(16) bwd_raw<T> raw;            // the group's inputs (bwd_stage)
    const int c = blockIdx.x, d = blockIdx.y / k.N, n = blockIdx.y % k.N;
    const scan_kdir &P = k.d[d];
    const size_t j0 = (size_t)c * SCAN_T;
    const int tn = (int)min((size_t)SCAN_T, k.L - j0);
    const int w = threadIdx.x / 32, lane = threadIdx.x & 31, s = lane & 15, el = lane >> 4;
    {
        // every load of the thread's B / C elements issued before the first store: a load after
        // a shared store may not move above it (the pointers could alias), and one round trip
        // per element was ~2 % of the kernel's stall samples (ncu, level 0)
        const T *B = (const T *)P.B, *C = (const T *)P.C;
        constexpr int per = SCAN_T * SCAN_NS / BWD_THREADS;
        T bv[per], cv[per];
#pragma unroll
        for (int j = 0; j < per; j++) {
            const int i = threadIdx.x + j * BWD_THREADS, t = i / SCAN_NS, q = i % SCAN_NS;
            const size_t r = ((size_t)n * k.L + j0 + t) * k.ldbc + q;
            bv[j] = t < tn ? B[r] : from_f<T>(0.0f);
            cv[j] = t < tn ? C[r] : from_f<T>(0.0f);
        }
#pragma unroll
        for (int j = 0; j < per; j++) {
            const int i = threadIdx.x + j * BWD_THREADS;
            Bs[i % SCAN_NS][i / SCAN_NS] = to_f(bv[j]);
            Cs[i % SCAN_NS][i / SCAN_NS] = to_f(cv[j]);
        }
        scan_chunk_rows(srow, k, P.order, n, j0, tn);
        scan_stage_xdt<T>(&un.dt.x[0][0], k, P, n, j0, tn);
        for (int i = threadIdx.x; i < SCAN_T * k.R; i += blockDim.x) un.dt.dx[i / k.R][i % k.R] = 0.0f;
    }

    const T *z = (const T *)P.z;
    T *du = (T *)P.du;
    float *ddl = P.ddelta;
    const size_t prow = ((size_t)blockIdx.y * k.nch + c) * k.E;
    // this thread's (token row, channel) slots in the pre/post phases: fixed channel cc
    constexpr int t_step = BWD_THREADS / BWD_EG, t_per = SCAN_T / t_step;
    const int cc = threadIdx.x % BWD_EG, t_first = threadIdx.x / BWD_EG;
    // this lane's dB (el = 0) or dC (el = 1) sums of state s over the warp's channels, per token
    float acc[SCAN_T];
#pragma unroll
    for (int t = 0; t < SCAN_T; t++) acc[t] = 0.0f;

    // this block's channels: [blockIdx.z egs, + egs), egs a multiple of BWD_EG (one split: all)
    const int e_end = min(k.E, ((int)blockIdx.z + 1) * egs);
    __syncthreads();                                // srow
    bwd_stage<T>(raw, k, P, dy, srow, n, j0, tn, blockIdx.z * egs, vec);
    // the warp's pairs of a group are p = w + i BWD_WARPS, i < PPW; each one's A, entering
    // state and entering adjoint (global) are loaded one pair ahead -- the first at the group's
    // start, under its pre phase -- instead of in front of the pair's recompute (a dependent
    // round trip per pair: the kernel's top stall under ncu at level 0)
    constexpr int PPW = BWD_EG / 2 / BWD_WARPS;
    static_assert(PPW * 2 * BWD_WARPS == BWD_EG, "whole pairs per warp");
    static_assert(SCAN_T * SCAN_NS % BWD_THREADS == 0, "whole B / C loads per thread");
    float nxt_a, nxt_h0, nxt_lam;                   // the next pair's loads
    auto pair_loads = [&](int e0, int i) {
        const int e = e0 + 2 * (w + i * BWD_WARPS) + el;
        const size_t sidx = (prow + e) * SCAN_NS + s;
        const bool ok = e < k.E;
        nxt_a = ok ? P.A[e * SCAN_NS + s] : 0.0f;
        nxt_h0 = ok ? states[sidx] : 0.0f;
        nxt_lam = ok ? lam_dA[sidx] : 0.0f;
    };
    for (int e0 = blockIdx.z * egs; e0 < e_end; e0 += BWD_EG) {
        pair_loads(e0, 0);
        const int e_t = e0 + cc;
        const float bias_t = e_t < k.E && P.bias ? P.bias[e_t] : 0.0f;
        // delta_raw of the thread's tokens t_first + q t_step (its W_dt row read once; rows past
        // E read row E - 1, unused)
        float dr[t_per];
        scan_dt_tokens<t_per, t_step>(dr, &un.dt.x[0][0], t_first,
                                      P.Wdt + (size_t)min(e_t, k.E - 1) * k.R, k.R);
        cp_async_wait_all();
        __syncthreads();                            // raw staged, previous post phase done
#pragma unroll
        for (int q = 0; q < t_per; q++) {
            const int t = t_first + q * t_step;
            float dt = 0.0f, ut = 0.0f, gout = 0.0f, dsp = 0.0f;
            if (t < tn && e_t < k.E) {
                const float v = dr[q] + bias_t;
                dt = softplus20_d<T>(v, dsp);
                ut = to_f(raw.u[t][cc]);
                const float dyt = to_f(raw.dy[t][cc]);
                gout = dyt;
                if (z) {
                    const float zt = to_f(raw.z[t][cc]);
                    gout = dyt * (zt * sigmoid_t<T>(zt));   // dy silu(z)
                }
            }
            // dt u once per (token, channel), not per (token, channel, state) in the recompute:
            // the same product as before, so the states are bit-identical
            pdt[cc][t] = dt;
            pdu[cc][t] = dt * ut;
            pgo[cc][t] = gout;
            pu[t][cc] = ut;
            dsps[t][cc] = dsp;
        }
        __syncthreads();                            // pre written; raw free for the next group
        if (e0 + BWD_EG < e_end) bwd_stage<T>(raw, k, P, dy, srow, n, j0, tn, e0 + BWD_EG, vec);

#pragma unroll 1
        for (int i = 0; i < PPW; i++) {                 // (one copy of the walk's code)
            // lane = (channel el of the pair, state s)
            const int ce = 2 * (w + i * BWD_WARPS) + el, e = e0 + ce;
            const bool e_ok = e < k.E;
            const float A = nxt_a, A2 = A * LOG2E_F;
            const size_t sidx = (prow + e) * SCAN_NS + s;
            const float h0 = nxt_h0;
            float lam = nxt_lam;
            if (i + 1 < PPW) pair_loads(e0, i + 1);
            // forward recompute of the states h[t] from the entering state (tokens t >= tn have
            // dt = u = B = 0: a = 1, h unchanged, no contribution). The decays are recomputed in
            // the backward walk rather than kept: a[32] next to h[32] and acc[32] took the kernel
            // from 111 to 187 registers (2 blocks per SM instead of 4); the MUFU pipe has room.
            float h[SCAN_T];
            {
                float hp = h0;
#pragma unroll
                for (int g = 0; g < SCAN_T / 4; g++) {
                    float dd[4], uu[4], bb[4];
                    ld_vec<float, 4>(&pdt[ce][4 * g], dd);
                    ld_vec<float, 4>(&pdu[ce][4 * g], uu);
                    ld_vec<float, 4>(&Bs[s][4 * g], bb);
#pragma unroll
                    for (int q = 0; q < 4; q++) {
                        hp = fmaf(scan_ex2<EXACT>(dd[q] * A2), hp, uu[q] * bb[q]);
                        h[4 * g + q] = hp;
                    }
                }
            }
            float dA = 0.0f;
#pragma unroll
            for (int g = SCAN_T / 4 - 1; g >= 0; g--) {
                float v[8];                         // v[2k + q]: state sum q of token 4g + k
                float dd[4], uu[4], gg[4], bb[4], cq[4];
                ld_vec<float, 4>(&pdt[ce][4 * g], dd);
                ld_vec<float, 4>(&pdu[ce][4 * g], uu);
                ld_vec<float, 4>(&pgo[ce][4 * g], gg);
                ld_vec<float, 4>(&Bs[s][4 * g], bb);
                ld_vec<float, 4>(&Cs[s][4 * g], cq);
#pragma unroll
                for (int kk = 3; kk >= 0; kk--) {
                    const int t = 4 * g + kk;
                    const float dt = dd[kk], gout = gg[kk], Bt = bb[kk], Ct = cq[kk];
                    const float hprev = t ? h[t - 1] : h0;
                    lam = fmaf(gout, Ct, lam);          // dL/dh_t, all paths
                    const float at = EXACT ? exp2_acc(dt * A2) : ex2_fast_again(dt * A2);
                    const float q = lam * Bt;           // du = dt sum q; ddt gets u sum q
                    const float dBl = lam * uu[kk], dCl = gout * h[t];
                    lam *= at;                          // -> contribution to dL/dh_{t-1}
                    const float r = lam * hprev;        // lam_t a_t h_{t-1}
                    dA = fmaf(r, dt, dA);
                    v[2 * kk + 0] = q;                  // -> du, ddt (post phase)
                    v[2 * kk + 1] = A * r;              // -> ddt
                    // dB over the pair's two channels on lanes 0-15, dC on lanes 16-31
                    const float other = __shfl_xor_sync(0xffffffffu, el ? dBl : dCl, 16);
                    acc[t] += (el ? dCl : dBl) + other;
                }
                const float x = reduce8_16(v, s);
                if (!(s & 1)) sfin[4 * g + (s >> 2)][((s >> 1) & 1) * (BWD_EG + 1) + ce] = x;
            }
            if (e_ok) lam_dA[sidx] = dA;
        }
        __syncthreads();

        // post: final per-token gradients, coalesced over channels; dD / dbias partials
        float dDc = 0.0f, dbc = 0.0f;
        const float De = e_t < k.E && P.D ? P.D[e_t] : 0.0f;
        const size_t it0 = ((size_t)n * k.L + j0) * k.E + e_t;     // (n, j0, e_t): token stride E
        for (int t = t_first; t < SCAN_T; t += t_step) {
            if (t >= tn || e_t >= k.E) continue;
            const size_t it = it0 + (size_t)t * k.E;
            const float ut = pu[t][cc], gout = pgo[cc][t], dt = pdt[cc][t];
            // state sums: sq = sum lam B, sa = sum A lam a h_prev -> du = dt sq (+ D gout),
            // ddelta = sa + u sq (times softplus' for the raw step)
            const float sq = sfin[t][cc], sa = sfin[t][(BWD_EG + 1) + cc];
            const float draw = fmaf(ut, sq, sa) * dsps[t][cc];
            if (du) du[it] = from_f<T>((k.ow ? 0.0f : to_f(du[it])) + fmaf(De, gout, dt * sq));
            if (ddl) ddl[it] = (k.ow ? 0.0f : ddl[it]) + draw;
            dsps[t][cc] = draw;                     // (0 where t >= tn or e >= E, as dsp was)
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
        // dt_proj backward of the group (delta_raw = x_dt W_dt^T; dsps holds ddelta_raw):
        // dW_dt partial of each (channel, r) over the chunk's tokens (all SCAN_T: past tn both
        // factors are 0; four interleaved partial sums in a fixed order keep the FMA chain
        // short) ...
        for (int i = threadIdx.x; i < BWD_EG * k.R; i += BWD_THREADS) {
            const int c2 = i % BWD_EG, r = i / BWD_EG, e = e0 + c2;
            if (e >= k.E) continue;
            float a[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
#pragma unroll
            for (int t = 0; t < SCAN_T; t++) a[t & 3] = fmaf(dsps[t][c2], un.dt.x[r][t], a[t & 3]);
            Wp[(prow + e) * k.R + r] = (a[0] + a[1]) + (a[2] + a[3]);
        }
        // ... and dx_dt of each (token, r): the group's channels (W_dt rows loaded together,
        // zero past E), added to the chunk's sum (groups in order); each (t, r) has one
        // owner thread, fixed per launch
        for (int i = threadIdx.x; i < tn * k.R; i += BWD_THREADS) {
            const int t = i / k.R, r = i % k.R;
            const int ce = min(BWD_EG, k.E - e0);
            const float *W = P.Wdt + (size_t)e0 * k.R + r;
            float wv[BWD_EG], a[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
#pragma unroll
            for (int c2 = 0; c2 < BWD_EG; c2++) wv[c2] = c2 < ce ? W[(size_t)c2 * k.R] : 0.0f;
#pragma unroll
            for (int c2 = 0; c2 < BWD_EG; c2++) a[c2 & 3] = fmaf(dsps[t][c2], wv[c2], a[c2 & 3]);
            un.dt.dx[t][r] += (a[0] + a[1]) + (a[2] + a[3]);
        }
    }
    // dx_dt of the chunk (this split's channels): to the split partial behind its dB / dC,
    // or stored; then the warps' dB / dC sums over the same bytes
    T *dB = (T *)P.dB, *dC = (T *)P.dC;
    float *part = dbcp ? dbcp + (((size_t)blockIdx.y * k.nch + c) * gridDim.z + blockIdx.z) *
                                    bwd_part_floats(k.R)
                       : NULL;
    T *dx = (T *)P.dxdt;
    __syncthreads();
    for (int i = threadIdx.x; i < tn * k.R; i += BWD_THREADS) {
        const int t = i / k.R, r = i % k.R;
        const float v = un.dt.dx[t][r];
        if (part) part[SCAN_T * 32 + i] = v;
        else if (dx) scan_put<T>(k, dx + ((size_t)n * k.L + j0 + t) * k.ldbc + r, v);
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < SCAN_T; t++) un.bc[w][t][lane] = acc[t];
    __syncthreads();

    // dB, dC of the chunk: the warps' rows in a fixed order; with a channel split, this split's
    // rows go to its partial (scan_bwd_dbc_finish adds the splits up)
    for (int i = threadIdx.x; i < SCAN_T * 32; i += blockDim.x) {
        const int t = i / 32, col = i % 32;
        float v = 0.0f;
        for (int q = 0; q < BWD_WARPS; q++) v += un.bc[q][t][col];
        if (part) part[i] = v;
        else if (t < tn) dbc_put<T>(k, dB, dC, (size_t)n * k.L + j0 + t, col, v);
    }
}

// dB, dC (+)= the sum of the splits' partials (dir, n, chunk, split, bwd_part_floats(R)),
// splits in order; dx_dt likewise where the direction has W_dt. A thread per partial column
// (grid.z slices a chunk's SCAN_T (32 + R) columns), its loads over the splits unrolled so they
// overlap: the first version walked 4+ columns a thread with one split's load at a time, ~36 us
// a launch at level 3 (48 splits, 16 chunk blocks) for a few KB -- a latency chain.
#define DBC_THREADS 256
template <typename T>
__global__ void __launch_bounds__(DBC_THREADS) scan_bwd_dbc_finish(scan_k k, const float *dbcp, int nsplit)
{
    const int c = blockIdx.x, d = blockIdx.y / k.N, n = blockIdx.y % k.N;
    const scan_kdir &P = k.d[d];
    const size_t j0 = (size_t)c * SCAN_T, pf = bwd_part_floats(k.R);
    const int tn = (int)min((size_t)SCAN_T, k.L - j0);
    const int i = blockIdx.z * DBC_THREADS + threadIdx.x;
    const bool bc = i < SCAN_T * 32;                // dB / dC column, else dx_dt
    const int t = bc ? i / 32 : (i - SCAN_T * 32) / k.R;
    T *dx = (T *)P.dxdt;
    if (t >= tn || (size_t)i >= pf || (!bc && !dx)) return;
    const float *p = dbcp + ((size_t)blockIdx.y * k.nch + c) * nsplit * pf + i;
    float v = 0.0f;
#pragma unroll 8
    for (int z = 0; z < nsplit; z++) v += p[(size_t)z * pf];
    if (bc) dbc_put<T>(k, (T *)P.dB, (T *)P.dC, (size_t)n * k.L + j0 + t, i % 32, v);
    else scan_put<T>(k, dx + ((size_t)n * k.L + j0 + t) * k.ldbc + (i - SCAN_T * 32) % k.R, v);
}

// Channel split of scan_bwd_main: enough (chunk, dir, n, split) blocks for ~8 per SM
// (4 resident) where the chunks alone are fewer -- at L = 64 the 6 chunk blocks walked 768
// channels each, one group after another. Channels per split (egs) is a multiple of BWD_EG.
#define BWD_BLOCKS_WANTED 1024
static int bwd_split(const scan_gpu_t *s, int *egs)
{
    const int groups = CEIL_DIV(s->E, BWD_EG);
    const size_t base = (size_t)CEIL_DIV(s->L, (size_t)SCAN_T) * s->ndir * s->N;
    const size_t need = CEIL_DIV((size_t)BWD_BLOCKS_WANTED, base);
    const int want = need < (size_t)groups ? (int)need : groups;
    const int per = CEIL_DIV(groups, want);
    *egs = per * BWD_EG;
    return CEIL_DIV(groups, per);
}

// ----------------------------------------------------------------------------
// 4. out[col] += mul(col) * sum over the rows (n, chunk) of part (dir, rows, cols), in a fixed
// order, for the four partials at once: dA_log (mul = A = -exp(A_log), E*16 columns), dD and
// ddelta_bias (E columns each), dW_dt (E*R columns). Stage 1: a block owns
// COLSUM_COLS adjacent columns of one partial and COLSUM_ROWS rows; its threads are (row lane,
// column), columns fastest, so every warp load reads two whole 64-byte pieces (until v55: 8
// columns, 32 bytes a row, ~1.5 TB/s at level 0); row lane lr sums
// rows lr, lr + 32, ... of the range, the 32 lanes meet in shared memory in lane order -> one
// value per (dir, range, column). Stage 2 sums the ranges in order. (v10 had one block per 8
// columns walk all rows: at level 0 the dD / ddelta_bias sums ran on 36 blocks, 0.11 ms each.)
#define COLSUM_COLS 16
#define COLSUM_THREADS (32 * COLSUM_COLS)
#define COLSUM_ROWS 256
#define COLSUM_PARTS 4

static size_t colsum_ranges(const scan_gpu_t *s)
{
    return CEIL_DIV((size_t)s->N * CEIL_DIV(s->L, (size_t)SCAN_T), (size_t)COLSUM_ROWS);
}

// columns of partial p (0 dA_log, 1 dD, 2 ddelta_bias, 3 dW_dt), and of all four
__host__ __device__ __forceinline__ int colsum_cols(int p, int E, int R)
{
    return p == 0 ? E * SCAN_NS : p == 3 ? E * R : E;
}
__host__ __device__ __forceinline__ int colsum_width(int E, int R) { return E * (SCAN_NS + 2 + R); }
static int colsum_tiles(int E, int R)
{
    int t = 0;
    for (int p = 0; p < COLSUM_PARTS; p++) t += CEIL_DIV(colsum_cols(p, E, R), COLSUM_COLS);
    return t;
}

// grid (column tiles of the four partials, dir, row range); out (dir, range, colsum_width)
__global__ void __launch_bounds__(COLSUM_THREADS)
scan_colsum_ranges(const float *dA, const float *Dp, const float *bp, const float *Wp, scan_k k,
                   float *out)
{
    __shared__ float red[32][COLSUM_COLS];
    const int lc = threadIdx.x % COLSUM_COLS, lr = threadIdx.x / COLSUM_COLS, d = blockIdx.y;
    // tiles are counted per partial (E need not be a multiple of COLSUM_COLS): a tile never
    // straddles two of them
    int p = 0, tile = blockIdx.x, base = 0;
    while (p < COLSUM_PARTS - 1 && tile >= CEIL_DIV(colsum_cols(p, k.E, k.R), COLSUM_COLS)) {
        tile -= CEIL_DIV(colsum_cols(p, k.E, k.R), COLSUM_COLS);
        base += colsum_cols(p, k.E, k.R);
        p++;
    }
    const float *part = p == 0 ? dA : p == 1 ? Dp : p == 2 ? bp : Wp;
    const int cols = colsum_cols(p, k.E, k.R), tcol = tile * COLSUM_COLS + lc;
    const size_t rows = (size_t)k.N * k.nch;
    const size_t r0 = (size_t)blockIdx.z * COLSUM_ROWS, r1 = rows < r0 + COLSUM_ROWS ? rows : r0 + COLSUM_ROWS;
    float acc = 0.0f;
    if (tcol < cols) {
        const float *pd = part + (size_t)d * rows * cols + tcol;
#pragma unroll 8
        for (size_t r = r0 + lr; r < r1; r += 32) acc += pd[r * cols];
    }
    red[lr][lc] = acc;
    __syncthreads();
    if (lr == 0 && tcol < cols) {
        float tot = 0.0f;
        for (int i = 0; i < 32; i++) tot += red[i][lc];
        out[((size_t)d * gridDim.z + blockIdx.z) * colsum_width(k.E, k.R) + base + tcol] = tot;
    }
}

// grid (colsum_width / 256, dir): out[col] += mul * sum over the ranges in order
__global__ void scan_colsum_finish(const float *ranges, int nr, scan_k k)
{
    const int W = colsum_width(k.E, k.R), d = blockIdx.y;
    int w = blockIdx.x * blockDim.x + threadIdx.x;
    if (w >= W) return;
    const int tot_w = w;
    int p = 0;
    while (w >= colsum_cols(p, k.E, k.R)) { w -= colsum_cols(p, k.E, k.R); p++; }
    const scan_kdir &P = k.d[d];
    float *out = p == 0 ? P.dA_log : p == 1 ? P.dD : p == 2 ? P.dbias : P.dWdt;
    if (!out) return;
    float tot = 0.0f;
    for (int r = 0; r < nr; r++) tot += ranges[((size_t)d * nr + r) * W + tot_w];
    const float mul = p == 0 ? P.A[w] : 1.0f;
    out[w] += mul * tot;
}

static size_t aux_floats(const scan_gpu_t *s)
{
    int egs;
    const int nsplit = bwd_split(s, &egs);
    const size_t nch = CEIL_DIV(s->L, (size_t)SCAN_T);
    const size_t dbc = nsplit > 1 ? (size_t)s->ndir * s->N * nch * nsplit * bwd_part_floats(s->R) : 0;
    const size_t ranges = (size_t)s->ndir * colsum_ranges(s) * colsum_width(s->E, s->R);
    return dbc > ranges ? dbc : ranges;
}

// The most any call over 1..ndir of these directions needs: a workspace sized for ndir is also
// handed to calls over fewer (the layer's backward takes one direction per call, and with a
// third of the chunk blocks the channel split is wider: N 1, E 17, L 10913 needs 3.2 MB at one
// direction, 1.3 MB at three).
size_t scan_bwd_aux_bytes(const scan_gpu_t *s)
{
    size_t most = 0;
    for (int nd = 1; nd <= s->ndir; nd++) {
        scan_gpu_t t = *s;
        t.ndir = nd;
        const size_t f = aux_floats(&t);
        if (f > most) most = f;
    }
    return most * sizeof(float);
}

// Whether scan_bwd_main may stage with 16-byte copies (bwd_stage): whole 16-byte pieces of
// every u / dy / z row, at 16-byte aligned addresses. M's layers (E = 96..768, z inside
// xz at column E) all qualify; other shapes take the plain loads.
static int bwd_vec_ok(const scan_gpu_t *s, const void *dy)
{
    const int E8 = s->E % 8 == 0;
    int ok = E8 && (uintptr_t)dy % 16 == 0;
    for (int d = 0; d < s->ndir; d++) {
        const scan_dir_gpu_t *a = &s->dir[d];
        ok = ok && (uintptr_t)a->u % 16 == 0;
        if (a->z) ok = ok && (uintptr_t)a->z % 16 == 0 && s->ldz % 8 == 0;
    }
    return ok;
}

// The adjoint summary over every (chunk, dir, n, channel block) into w.big (X) and w.S
template <typename T, int VEC, int EXACT>
static void launch_bsum(gpu_ctx_t *g, const scan_k &k, int eb, const T *dy, const scan_ws &w)
{
    const size_t shm = bsum_shm(eb, k.R, sizeof(T), VEC);
    const dim3 grid(k.nch, k.ndir * k.N, CEIL_DIV(k.E, eb));
    scan_allow_shm(scan_bwd_summary<T, VEC, EXACT>, shm);
    scan_bwd_summary<T, VEC, EXACT><<<grid, eb, shm, g->stream>>>(k, eb, dy, w.big, w.S);
    KERNEL_CHECK();
}

int selective_scan_backward_small(const gpu_ctx_t *g, int N, int E, size_t L)
{
    // the adjoint summary's blocks (the main kernel splits channels further where chunks are
    // few, but its per-block latency is the same kind). Under 16 an SM: at 128^3, batch 1, that
    // is every layer but level 0's stage layers (the training peak stays 2.84 GiB);
    // under 4 (v42's first bound, levels 2-3 only) measured 0.2 ms slower a step (v46)
    const size_t blocks = CEIL_DIV(L, (size_t)SCAN_T) * (size_t)N * CEIL_DIV(E, scan_block_width(E));
    return blocks < (size_t)16 * g->sm_count;
}

void selective_scan_backward_gpu(gpu_ctx_t *g, const void *dy, const float *states,
                                 void *workspace, const scan_gpu_t *s)
{
    scan_k k = scan_kernel_args(g, s);
    const scan_ws w = scan_workspace_views(workspace, s);
    scan_prepare_A(g, k, w);
    const int eb = scan_block_width(k.E);
    const int vec = bwd_vec_ok(s, dy);
    ACT_DISPATCH(g->act, T, {
        const T *dyt = (const T *)dy;
        if (vec && k.exact) launch_bsum<T, 1, 1>(g, k, eb, dyt, w);
        else if (vec) launch_bsum<T, 1, 0>(g, k, eb, dyt, w);
        else if (k.exact) launch_bsum<T, 0, 1>(g, k, eb, dyt, w);
        else launch_bsum<T, 0, 0>(g, k, eb, dyt, w);
    });
    scan_carry_pass(g, w.big, w.S, k, 1);
    int egs;
    const int nsplit = bwd_split(s, &egs);
    float *dbcp = nsplit > 1 ? w.aux : NULL;
    const dim3 grid(k.nch, k.ndir * k.N, nsplit);
    ACT_DISPATCH(g->act, T, {
        if (k.exact)
            scan_bwd_main<T, 1><<<grid, BWD_THREADS, 0, g->stream>>>(
                k, (const T *)dy, states, w.big, w.Dp, w.bp, w.Wp, egs, dbcp, vec);
        else
            scan_bwd_main<T, 0><<<grid, BWD_THREADS, 0, g->stream>>>(
                k, (const T *)dy, states, w.big, w.Dp, w.bp, w.Wp, egs, dbcp, vec);
        KERNEL_CHECK();
        if (dbcp) {
            const dim3 fgrid(k.nch, k.ndir * k.N, (unsigned)CEIL_DIV(bwd_part_floats(k.R), (size_t)DBC_THREADS));
            scan_bwd_dbc_finish<T><<<fgrid, DBC_THREADS, 0, g->stream>>>(k, dbcp, nsplit);
            KERNEL_CHECK();
        }
    });
    // the ranges' sums reuse aux (the split partials are consumed above)
    const int nr = (int)colsum_ranges(s);
    scan_colsum_ranges<<<dim3(colsum_tiles(k.E, k.R), k.ndir, nr), COLSUM_THREADS, 0, g->stream>>>(
        w.big, w.Dp, w.bp, w.Wp, k, w.aux);
    KERNEL_CHECK();
    scan_colsum_finish<<<dim3(CEIL_DIV(colsum_width(k.E, k.R), 256), k.ndir), 256, 0, g->stream>>>(
        w.aux, nr, k);
    KERNEL_CHECK();
}
