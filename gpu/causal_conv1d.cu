/*
causal_conv1d.cu -- Mamba's depthwise causal conv1d (K <= 4 taps, zero history, bias) along the
scanned token order of one ToM direction, optionally fused with the SiLU that follows it; the
GPU twin of common/ops/causal_conv1d.c composed with tom_permute / silu (common/ops).

The token order is fused into the load: scanned token j reads x at row pi(j) of the
original-order input (a channel slice of xz, row stride ldx), so no permuted copy of x exists.
The output (and its gradient) is dense (N, L, E) in scanned order.
Forward: work item = (run of T consecutive SCANNED tokens, group of V channels); items are
numbered with the channel group fastest, so a warp's vector loads cover whole rows (coalesced
even in the slice order, where consecutive scanned tokens are far apart in memory). A thread
keeps the last K-1 x values in registers, so each row is read once per run plus a K-1 token
halo (h24, PERF_NOTES v9).
Backward is ONE pass over (x, dy, dx) in tiles of 32 tokens x 32 channels: every load of a tile
first, then the pre-activation (recomputed for the SiLU derivative: nothing saved) and its
gradient for the tile and a 3-token halo into shared memory, then dx gathered from there (one
writer per element; added to the old dx, or written where the caller asks, as for the first of
the Mamba layer's three directions); per-thread dw / db sums in registers, which blocks reduce in
a fixed order into the context's reduction scratch and a last kernel sums over the blocks in a
fixed order (deterministic, no atomics; PERF_NOTES v24).
Index arithmetic is 32-bit (the launchers check N L ldx < 2^32).
*/
#include "gpu_internal.h"
#include "mamba_kernels.cuh"

// The forward's per-run functions are host-callable too (h24 checked them on the CPU against a
// double reference over every order / K / tail, PERF_NOTES v9); hence host-device twins of
// to_f / from_f / sigmoid_f.
#define C1_HD __host__ __device__ __forceinline__
#define FWD_BLOCK 256

struct c1_args {
    const float *w, *b;             // w: (E, K) f32, b: (E) f32 or NULL
    unsigned N, L, E, ldx;          // 32-bit: N L ldx < 2^32
    unsigned ns, m;                 // slice order: nslices, L / nslices
    unsigned T, nruns;              // forward: tokens per run (multiple of 4), runs per
                                    // sequence ceil(L / T); backward: T unused, nruns tiles
                                    // per sequence ceil(L / CB_TT)
    int K, order;
};

C1_HD unsigned c1_umin(unsigned p, unsigned q) { return p < q ? p : q; }

C1_HD float c1_to_f(float v) { return v; }
C1_HD float c1_to_f(bf16 v) { return __bfloat162float(v); }
template <typename T> C1_HD T c1_from_f(float v);
template <> C1_HD float c1_from_f<float>(float v) { return v; }
template <> C1_HD bf16 c1_from_f<bf16>(float v) { return __float2bfloat16_rn(v); }

// V consecutive elements as one aligned access (the launcher checks the alignment).
template <typename T, int V> struct alignas(sizeof(T) * V) c1_vec { T v[V]; };

template <typename T, int V> C1_HD void c1_cvt(float (&f)[V], const c1_vec<T, V> &r)
{
#pragma unroll
    for (int v = 0; v < V; v++) f[v] = c1_to_f(r.v[v]);
}
template <typename T, int V> C1_HD c1_vec<T, V> c1_ld(const T *p)
{
    return *reinterpret_cast<const c1_vec<T, V> *>(p);
}
template <typename T, int V> C1_HD void c1_load(float (&f)[V], const T *p)
{
    c1_cvt<T, V>(f, c1_ld<T, V>(p));
}
template <typename T, int V> C1_HD void c1_store(T *p, const float (&f)[V])
{
    c1_vec<T, V> r;
#pragma unroll
    for (int v = 0; v < V; v++) r.v[v] = c1_from_f<T>(f[v]);
    *reinterpret_cast<c1_vec<T, V> *>(p) = r;
}
template <int V> C1_HD void c1_zero(float (&f)[V])
{
#pragma unroll
    for (int v = 0; v < V; v++) f[v] = 0.0f;
}

// bf16 tensors take the fast exponential and division (sigmoid_t: the accurate expf and IEEE
// division were a third of the backward's issue slots, PERF_NOTES v25); fp32 keeps the accurate
// ones, as the CPU reference computes them.
template <typename T> C1_HD float c1_sigmoid(float v)
{
#ifdef __CUDA_ARCH__
    return sigmoid_t<T>(v);                         // mamba_kernels.cuh
#else
    return sigmoid_f(v);                            // gpu_internal.h
#endif
}
template <typename T> C1_HD float c1_dsilu(float v) { return dsilu_of(v, c1_sigmoid<T>(v)); }

// Taps in a 4-slot frame: slot i4 reads token t - (3 - i4); tap i of K sits in slot i + 4 - K,
// slots below 4 - K are off (weight 0, never used: the loops test `i4 >= 4 - K`, uniform).
// Tap slot i4 of channel e (0 where the slot is off).
C1_HD float c1_tap(const c1_args &a, unsigned e, int i4)
{
    return i4 >= 4 - a.K ? a.w[(size_t)e * a.K + (i4 - (4 - a.K))] : 0.0f;
}
// w4: (4, V), bias: (V) for channels e0 .. e0 + V - 1.
template <int V> C1_HD void c1_weights(const c1_args &a, unsigned e0, float (&w4)[4][V],
                                       float (&bias)[V])
{
#pragma unroll
    for (int v = 0; v < V; v++) {
        bias[v] = a.b ? a.b[e0 + v] : 0.0f;
#pragma unroll
        for (int i4 = 0; i4 < 4; i4++) w4[i4][v] = c1_tap(a, e0 + v, i4);
    }
}

// Pre-activation of one channel of token t from x[t - 3 .. t] (x0 .. x3): bias, then the taps
// in order, as the CPU reference sums them.
C1_HD float c1_pre1(const c1_args &a, const float (&w)[4], float bias, float x0, float x1,
                    float x2, float x3)
{
    const float xw[3] = { x0, x1, x2 };
    float acc = bias;
#pragma unroll
    for (int i4 = 0; i4 < 3; i4++)
        if (i4 >= 4 - a.K) acc = fmaf(w[i4], xw[i4], acc);
    return fmaf(w[3], x3, acc);
}
// The same for V channels (slot 3 = x[t] = xt).
template <int V> C1_HD void c1_pre(float (&pre)[V], const c1_args &a, const float (&w4)[4][V],
                                   const float (&bias)[V], const float (&xw)[3][V],
                                   const float (&xt)[V])
{
#pragma unroll
    for (int v = 0; v < V; v++) {
        const float w[4] = { w4[0][v], w4[1][v], w4[2][v], w4[3][v] };
        pre[v] = c1_pre1(a, w, bias[v], xw[0][v], xw[1][v], xw[2][v], xt[v]);
    }
}

// Walks pi(t) for t = j, j+1, ... without a division per token (the slice order keeps
// t = q ns + p as (p, q): pi = p m + q).
struct c1_walk {
    unsigned j, p, q;
    C1_HD c1_walk(const c1_args &a, unsigned j0) : j(j0), p(0), q(0)
    {
        if (a.order == TOM_SLICE) { q = j0 / a.ns; p = j0 - q * a.ns; }
    }
    C1_HD unsigned row(const c1_args &a) const
    {
        if (a.order == TOM_FORWARD) return j;
        if (a.order == TOM_REVERSE) return a.L - 1 - j;
        return p * a.m + q;
    }
    C1_HD void next(const c1_args &a)
    {
        j++;
        if (++p == a.ns) { p = 0; q++; }        // p, q only read in the slice order
    }
};

template <typename T, int V> C1_HD c1_vec<T, V> c1_vzero()
{
    c1_vec<T, V> r;
#pragma unroll
    for (int v = 0; v < V; v++) r.v[v] = c1_from_f<T>(0.0f);
    return r;
}

// x window before the run: xw[h] = x[j0 - 3 + h] (0 before the sequence start). Returns the
// walker at token j0. xn: item n's x with the channel offset applied.
template <typename T, int V> C1_HD c1_walk c1_warmup(float (&xw)[3][V], const T *xn,
                                                      const c1_args &a, unsigned j0)
{
    c1_walk wk(a, j0 >= 3 ? j0 - 3 : 0);
#pragma unroll
    for (int h = 0; h < 3; h++) {
        if (j0 + h >= 3) {
            c1_load<T, V>(xw[h], xn + (size_t)wk.row(a) * a.ldx);
            wk.next(a);
        } else c1_zero<V>(xw[h]);
    }
    return wk;
}

template <int V> C1_HD void c1_shift(float (&w)[3][V], const float (&in)[V])
{
#pragma unroll
    for (int v = 0; v < V; v++) { w[0][v] = w[1][v]; w[1][v] = w[2][v]; w[2][v] = in[v]; }
}

// One forward run: y[n, j, e0 .. e0+V) for j in [j0, min(j0 + T, L)).
// y: (N, L, E) scanned order; x: rows of stride ldx, original order.
template <typename T, int V>
C1_HD void c1_fwd_run(T *y, const T *x, const c1_args &a, unsigned n, unsigned j0, unsigned e0,
                      int silu)
{
    float w4[4][V], bias[V], xw[3][V];
    c1_weights<V>(a, e0, w4, bias);
    const T *xn = x + (size_t)n * a.L * a.ldx + e0;
    T *yn = y + (size_t)n * a.L * a.E + e0;
    c1_walk wk = c1_warmup<T, V>(xw, xn, a, j0);
    const unsigned jend = c1_umin(j0 + a.T, a.L);
    for (unsigned jb = j0; jb < jend; jb += 4) {
        c1_vec<T, V> xr[4];         // the batch's loads go out before the first use
#pragma unroll
        for (int q = 0; q < 4; q++) {
            if (jb + q < jend) xr[q] = c1_ld<T, V>(xn + (size_t)wk.row(a) * a.ldx);
            else xr[q] = c1_vzero<T, V>();
            wk.next(a);
        }
#pragma unroll
        for (int q = 0; q < 4; q++) {
            if (jb + q >= jend) break;
            float xt[V], pre[V];
            c1_cvt<T, V>(xt, xr[q]);
            c1_pre<V>(pre, a, w4, bias, xw, xt);
            if (silu) {
#pragma unroll
                for (int v = 0; v < V; v++) pre[v] *= c1_sigmoid<T>(pre[v]);
            }
            c1_store<T, V>(yn + (size_t)(jb + q) * a.E, pre);
            c1_shift<V>(xw, xt);
        }
    }
}

// ---- kernels ----
// Items (n, run, group), group fastest; grid-stride.
template <typename T, int V>
__global__ void __launch_bounds__(FWD_BLOCK) conv_fwd_kernel(T *y, const T *x, c1_args a,
                                                             unsigned items, int silu)
{
    const unsigned G = a.E / V;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < items;
         i += gridDim.x * blockDim.x) {
        const unsigned c = i % G, r = i / G, n = r / a.nruns;
        c1_fwd_run<T, V>(y, x, a, n, (r - n * a.nruns) * a.T, c * V, silu);
    }
}

// Backward, one tile of CB_TT scanned tokens [j0, j0 + CB_TT) x CB_EB channels per step.
// With dpre[t] = dy[t] silu'(pre[t]) (or dy[t]) and dpre[t >= L] = 0:
//   dx[n, pi(s), e] (+)= sum_i w[e, i] dpre[s + K-1-i]        for s in the tile (gather)
//   acc[i4] += dpre[t] x[t - (3 - i4)], acc[4] += dpre[t]      for t in the tile
// The tile's x rows (tokens j0 - 3 .. j0 + CB_TT + 2, at pi(j)), dy rows (j0 .. j0 + CB_TT + 2)
// and the old dx rows are all loaded before their first use (one round trip per tile, ~14
// loads in flight per thread), the pre-activation gradients of the tile and its 3-token halo
// go to shared memory, then every dx of the tile is formed from shared memory: no serial walk
// over the tokens. (v9's walker -- a thread per run of T tokens, 4 tokens of loads at a time,
// 110 registers -- ran level 0 at 0.9 TB/s and the small levels 4-10x off their bytes,
// latency-bound: PERF_NOTES v24.) Thread (el, tl): channel blockIdx.y CB_EB + el for life (its
// dw / db sums stay in registers), tokens tl, tl + CB_TR, ... of each tile; the block walks
// tiles blockIdx.x, + gridDim.x, ... of its channel slab blockIdx.y, and sums its token lanes
// in order into part[(bx, e, 5)] (taps in the 4-slot frame, then db) when `part` is non-NULL.
// dx_ow: dx is written, not added to (the old dx is not read); the launch writes every token
// row and channel of dx once. (Loading the next tile under the current one's math, with its
// token rows double-buffered, measured slower: 62 registers, 4 blocks an SM; PERF_NOTES v48.)
#define CB_EB 32                                    // channels per block
#define CB_TT 32                                    // tokens per tile
#define CB_THREADS 256
#define CB_TR (CB_THREADS / CB_EB)                  // token lanes
#define CB_XR (CB_TT + 6)                           // x rows: tokens j0 - 3 .. j0 + CB_TT + 2
#define CB_DR (CB_TT + 3)                           // dpre rows: tokens j0 .. j0 + CB_TT + 2
#define C1_NOROW 0xffffffffu                        // a token outside [0, L): reads as 0
template <typename T>
__global__ void __launch_bounds__(CB_THREADS) conv_bwd_kernel(T *dx, float *part, const T *dy,
                                                              const T *x, c1_args a, int silu,
                                                              int dx_ow)
{
    __shared__ float xs[CB_XR][CB_EB], dps[CB_DR][CB_EB];
    __shared__ unsigned rows[CB_XR];    // (n L + pi(j0 - 3 + i)) ldx, C1_NOROW outside [0, L)
    __shared__ float red[5][CB_TR][CB_EB];
    const unsigned el = threadIdx.x % CB_EB, tl = threadIdx.x / CB_EB, e = blockIdx.y * CB_EB + el;
    const bool eok = e < a.E;
    float w4[4], acc[5] = { 0.0f, 0.0f, 0.0f, 0.0f, 0.0f };
#pragma unroll
    for (int i4 = 0; i4 < 4; i4++) w4[i4] = eok ? c1_tap(a, e, i4) : 0.0f;
    const float bias = eok && a.b ? a.b[e] : 0.0f;
    const unsigned ntile = a.N * a.nruns;           // nruns: tiles per sequence
    for (unsigned r = blockIdx.x; r < ntile; r += gridDim.x) {
        const unsigned n = r / a.nruns, j0 = (r - n * a.nruns) * CB_TT;
        // tokens of the tile that exist: dy rows with the halo, own tokens
        const unsigned dn = c1_umin(CB_DR, a.L - j0), tn = c1_umin(CB_TT, a.L - j0);
        const T *dyt = dy + ((size_t)n * a.L + j0) * a.E + e;
        __syncthreads();                            // the previous tile's reads are done
        for (unsigned i = threadIdx.x; i < CB_XR; i += CB_THREADS) {
            const unsigned j = j0 + i - 3;          // wraps below 0: fails j < L
            rows[i] = j0 + i >= 3 && j < a.L
                          ? (n * a.L + tom_pi<unsigned>(a.order, j, a.L, a.ns, a.m)) * a.ldx : C1_NOROW;
        }
        __syncthreads();
        // every load of the tile first: x (0 before the sequence), dy (0 from L on), old dx;
        // 32-bit element offsets from the tensors' bases (N L ldx < 2^32)
        T xv[(CB_XR + CB_TR - 1) / CB_TR], dv[(CB_DR + CB_TR - 1) / CB_TR], ov[CB_TT / CB_TR];
#pragma unroll
        for (int k = 0; k < (CB_XR + CB_TR - 1) / CB_TR; k++) {
            const unsigned i = tl + k * CB_TR, ro = i < CB_XR ? rows[i] : C1_NOROW;
            xv[k] = eok && ro != C1_NOROW ? x[ro + e] : c1_from_f<T>(0.0f);
        }
#pragma unroll
        for (int k = 0; k < (CB_DR + CB_TR - 1) / CB_TR; k++) {
            const unsigned i = tl + k * CB_TR;
            dv[k] = eok && i < dn ? dyt[i * a.E] : c1_from_f<T>(0.0f);
        }
#pragma unroll
        for (int k = 0; k < CB_TT / CB_TR; k++) {
            const unsigned i = tl + k * CB_TR;
            ov[k] = dx && !dx_ow && eok && i < tn ? dx[rows[i + 3] + e] : c1_from_f<T>(0.0f);
        }
#pragma unroll
        for (int k = 0; k < (CB_XR + CB_TR - 1) / CB_TR; k++)
            if (tl + k * CB_TR < CB_XR) xs[tl + k * CB_TR][el] = c1_to_f(xv[k]);
        __syncthreads();
        // dpre of the tile and its halo (0 from L on: dy is), dw / db sums over its own tokens
#pragma unroll
        for (int k = 0; k < (CB_DR + CB_TR - 1) / CB_TR; k++) {
            const unsigned i = tl + k * CB_TR;
            if (i >= CB_DR) break;
            const float x0 = xs[i][el], x1 = xs[i + 1][el], x2 = xs[i + 2][el], x3 = xs[i + 3][el];
            float d = c1_to_f(dv[k]);
            if (silu) d *= c1_dsilu<T>(c1_pre1(a, w4, bias, x0, x1, x2, x3));
            dps[i][el] = d;
            if (i < CB_TT) {
                acc[0] = fmaf(d, x0, acc[0]);
                acc[1] = fmaf(d, x1, acc[1]);
                acc[2] = fmaf(d, x2, acc[2]);
                acc[3] = fmaf(d, x3, acc[3]);
                acc[4] += d;
            }
        }
        __syncthreads();
        if (!dx) continue;
        // dx[s] (+)= sum over the taps of w4[i4] dpre[s + 3 - i4], at row pi(s)
#pragma unroll
        for (int k = 0; k < CB_TT / CB_TR; k++) {
            const unsigned i = tl + k * CB_TR;
            if (!eok || i >= tn) continue;
            float s = 0.0f;
#pragma unroll
            for (int i4 = 0; i4 < 4; i4++)
                if (i4 >= 4 - a.K) s = fmaf(w4[i4], dps[i + 3 - i4][el], s);
            dx[rows[i + 3] + e] = c1_from_f<T>(c1_to_f(ov[k]) + s);
        }
    }
    if (!part) return;                              // uniform over the block
#pragma unroll
    for (int q = 0; q < 5; q++) red[q][tl][el] = acc[q];
    __syncthreads();
    if (tl == 0 && eok)
#pragma unroll
        for (int q = 0; q < 5; q++) {
            float s = 0.0f;
            for (int k = 0; k < CB_TR; k++) s += red[q][k][el];
            part[((size_t)blockIdx.x * a.E + e) * 5 + q] = s;
        }
}

// One warp per (e, slot): sums the nbx block partials in a fixed order (lane-strided in
// double, then a fixed shuffle tree) and adds into dw[e, i] (slot i + 4 - K) or db[e] (slot 4).
__global__ void conv_bwd_wb_final(float *dw, float *db, const float *part, int E, int K, int nbx)
{
    const int wid = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;
    if (wid >= E * 5) return;                   // whole warps leave together
    const int e = wid / 5, q = wid % 5;
    if (q < 4 && (q < 4 - K || !dw)) return;
    if (q == 4 && !db) return;
    double s = 0.0;
    for (int k = lane; k < nbx; k += 32) s += part[((size_t)k * E + e) * 5 + q];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) {
        if (q < 4) dw[(size_t)e * K + (q - (4 - K))] += (float)s;
        else db[e] += (float)s;
    }
}

// ---- launchers ----
static c1_args make_args(const float *w, const float *b, size_t ldx, int N, int E, size_t L,
                         int K, tom_order_t order, size_t nslices)
{
    ASSERT(K >= 1 && K <= 4 && E >= 1 && N >= 1 && ldx >= (size_t)E);
    ASSERT(order != TOM_SLICE || (nslices > 0 && L % nslices == 0));
    ASSERT((size_t)N * L * ldx <= 0xffffffffu);     // 32-bit index arithmetic in the kernels
    c1_args a;
    a.w = w; a.b = b;
    a.N = (unsigned)N; a.L = (unsigned)L; a.E = (unsigned)E; a.ldx = (unsigned)ldx;
    a.ns = (unsigned)(nslices ? nslices : 1); a.m = a.L / a.ns;
    a.K = K; a.order = (int)order;
    a.T = 4; a.nruns = 0;
    return a;
}

// Channels per thread: the widest V (<= vbytes / sizeof element) that divides E and ldx and
// keeps every pointer V-element aligned; 1 always works.
static int pick_vec(size_t esz, int vbytes, const c1_args &a, const void *p0, const void *p1,
                    const void *p2)
{
    for (int V = vbytes / (int)esz; V > 1; V >>= 1) {
        const size_t al = esz * (size_t)V;
        if (a.E % V || a.ldx % V) continue;
        if ((uintptr_t)p0 % al || (uintptr_t)p1 % al || (uintptr_t)p2 % al) continue;
        return V;
    }
    return 1;
}

// Tokens per run: the longest (32 .. 4) that still gives about `want` work items, so long
// sequences pay a small halo ((K-1) / T extra row reads, mostly L2 hits) and short ones still
// fill the GPU.
static void pick_run(c1_args &a, int V, size_t want)
{
    const size_t G = a.E / (unsigned)V;
    unsigned T = 32;
    while (T > 4 && (size_t)a.N * CEIL_DIV((size_t)a.L, T) * G < want) T >>= 1;
    a.T = T;
    a.nruns = (unsigned)CEIL_DIV((size_t)a.L, T);
}

// Channels per forward thread: V = 4 (8-byte bf16 loads) where E, ldx and the pointers allow.
#define C1_VEC_SWITCH(V, ...)                                               \
    do {                                                                    \
        if ((V) == 4) { constexpr int VV = 4; __VA_ARGS__; }                \
        else if ((V) == 2) { constexpr int VV = 2; __VA_ARGS__; }           \
        else { constexpr int VV = 1; __VA_ARGS__; }                         \
    } while (0)

void causal_conv1d_forward_gpu(gpu_ctx_t *g, void *y, const void *x, size_t ldx, const float *w,
                               const float *b, int N, int E, size_t L, int K, tom_order_t order,
                               size_t nslices, int silu)
{
    if (!N || !E || !L) return;
    c1_args a = make_args(w, b, ldx, N, E, L, K, order, nslices);
    const size_t esz = g->act == GPU_F32 ? 4 : 2;
    const int V = pick_vec(esz, 8, a, y, x, x);
    pick_run(a, V, (size_t)g->sm_count * 1024);
    const size_t items = (size_t)a.N * a.nruns * (a.E / (unsigned)V);
    ASSERT(items <= 0xffffffffu);
    ACT_DISPATCH(g->act, T, {
        C1_VEC_SWITCH(V, {
            conv_fwd_kernel<T, VV><<<grid_for(g, items, FWD_BLOCK), FWD_BLOCK, 0, g->stream>>>(
                (T *)y, (const T *)x, a, (unsigned)items, silu);
            KERNEL_CHECK();
        });
    });
}

void causal_conv1d_backward_gpu(gpu_ctx_t *g, void *dx, float *dw, float *db, const void *dy,
                                const void *x, size_t ldx, const float *w, const float *b, int N,
                                int E, size_t L, int K, tom_order_t order, size_t nslices,
                                int silu, int dx_overwrite)
{
    if (!N || !E || !L || (!dx && !dw && !db)) return;
    c1_args a = make_args(w, b, ldx, N, E, L, K, order, nslices);
    a.nruns = (unsigned)CEIL_DIV(L, (size_t)CB_TT);
    const size_t ntile = (size_t)N * a.nruns;
    // 32-bit token indices: j0 + i (< L + CB_XR) must not wrap
    ASSERT(ntile <= 0xffffffffu && L + CB_XR <= 0xffffffffu);
    // grid.x: enough tiles in flight to fill the GPU a few times over, and (when dw / db are
    // wanted) no more block partials than the reduction scratch holds; grid.y: channel slabs
    const unsigned nslab = (unsigned)CEIL_DIV(E, CB_EB);
    size_t nbx = ntile, cap = CEIL_DIV((size_t)g->sm_count * 16, nslab);
    if (dw || db) {
        const size_t fit = g->red_floats / (5 * (size_t)E);
        ASSERT(fit >= 1);
        if (cap > fit) cap = fit;
    }
    if (nbx > cap) nbx = cap;
    float *part = (dw || db) ? g->red : NULL;
    ACT_DISPATCH(g->act, T, {
        conv_bwd_kernel<T><<<dim3((unsigned)nbx, nslab), CB_THREADS, 0, g->stream>>>(
            (T *)dx, part, (const T *)dy, (const T *)x, a, silu, dx_overwrite);
        KERNEL_CHECK();
    });
    if (part) {
        const size_t warps = (size_t)E * 5;
        conv_bwd_wb_final<<<(unsigned)CEIL_DIV(warps * 32, (size_t)256), 256, 0, g->stream>>>(
            dw, db, part, E, K, (int)nbx);
        KERNEL_CHECK();
    }
}
