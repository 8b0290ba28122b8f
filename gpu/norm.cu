/*
norm.cu -- InstanceNorm (no affine) and GroupNorm (affine), each optionally fused with the ReLU
that follows it in the model (CMMB and downsample IN -> ReLU, ResBlock GN -> ReLU), on
channels-last (N, S, C) tensors. Twin of common/ops/norm.c composed with relu in common/ops/act.c.
InstanceNorm is GroupNorm with G = C groups of one channel and no affine, so one code path.

Every pass over the tensor gives each thread one fixed vector column of VEC channels (16-byte
loads: 8 bf16 or 4 floats, when C and the pointers allow; else VEC = 1) and walks rows, so
loads are coalesced and the per-channel coefficients sit in registers (no index division per
element). Statistics are deterministic and two-stage, never atomics:
  1. a grid of (row chunk, n) blocks: per-thread Welford over its rows (one reciprocal per row
     shared by the VEC channels), merged over the block's row lanes in a fixed order -> per
     (n, chunk, c) partials (count, mean, M2);
  2. one block per (n, group) merges the chunks x channels of its group in double (strided per
     thread, then a fixed shared-memory tree) into mean and rstd = 1 / sqrt(var + eps).
The backward recomputes xhat (and the ReLU mask) from x, mean and rstd, reduces
A = sum dyr, B = sum dyr * xhat per (n, c) the same way (dyr = dy masked by the ReLU), and
applies dx += rstd * (gamma dyr - mean_group(gamma A) - xhat * mean_group(gamma B)).
dgamma += sum_n B, dbeta += sum_n A.
*/
#include "gpu_internal.h"

#define NORM_THREADS 256

// Block geometry of a pass over (N, S, C) with VEC-wide columns: cpb vector columns per block
// (threadIdx.x % cpb), rp row lanes (threadIdx.x / cpb), `tiles` column tiles when C / VEC is
// wider than a block. grid.y = N * tiles.
struct norm_geo { int cpb, rp, tiles, threads; };

static norm_geo geo_for(int C, int vec)
{
    norm_geo q;
    const int V = C / vec;
    q.cpb = V < NORM_THREADS ? V : NORM_THREADS;
    q.rp = NORM_THREADS / q.cpb;
    q.tiles = CEIL_DIV(V, q.cpb);
    q.threads = q.rp * q.cpb;
    return q;
}

// ----------------------------------------------------------------------------
// stage 1: per-chunk Welford partials

__device__ __forceinline__ void chan_merge(float &n, float &m, float &q, float nb, float mb, float qb)
{
    if (nb == 0.0f) return;
    const float nn = n + nb, d = mb - m;
    m += d * (nb / nn);
    q += qb + d * d * (n * nb / nn);
    n = nn;
}

// part: (N, nch, C, 3) Welford partials of x (N, S, C) over row chunks of `chunk` rows.
// Dynamic shared memory: mean and M2 (rp, cpb * VEC) and counts (rp).
template <typename T, int VEC>
__global__ void __launch_bounds__(NORM_THREADS)
stats_partial_kernel(float *__restrict__ part, const T *__restrict__ x, size_t S, int C,
                     size_t chunk, int cpb, int rp, int tiles)
{
    extern __shared__ float sh[];
    const int W = cpb * VEC;
    float *smean = sh, *sm2 = sh + rp * W, *scnt = sh + 2 * rp * W;
    const int n = blockIdx.y / tiles, tile = blockIdx.y % tiles, k = blockIdx.x, nch = gridDim.x;
    const int lc = threadIdx.x % cpb, ro = threadIdx.x / cpb;
    const int col = tile * cpb + lc;                   // vector column
    const size_t r0 = (size_t)k * chunk, r1 = min(S, r0 + chunk);
    float cnt = 0.0f, mean[VEC], m2[VEC];
#pragma unroll
    for (int i = 0; i < VEC; i++) { mean[i] = 0.0f; m2[i] = 0.0f; }
    if (col * VEC < C) {
        const T *xp = x + (size_t)n * S * C + (size_t)col * VEC;
        size_t r = r0 + ro;
        // four rows' loads in flight before the first update
        for (; r + 3 * (size_t)rp < r1; r += 4 * (size_t)rp) {
            float v[4][VEC];
#pragma unroll
            for (int u = 0; u < 4; u++) ld_vec<T, VEC>(xp + (r + (size_t)u * rp) * C, v[u]);
#pragma unroll
            for (int u = 0; u < 4; u++) {
                cnt += 1.0f;
                const float inv = __frcp_rn(cnt);
#pragma unroll
                for (int i = 0; i < VEC; i++) {
                    const float d = v[u][i] - mean[i];
                    mean[i] = fmaf(d, inv, mean[i]);
                    m2[i] = fmaf(d, v[u][i] - mean[i], m2[i]);
                }
            }
        }
        for (; r < r1; r += rp) {
            float v[VEC];
            ld_vec<T, VEC>(xp + r * C, v);
            cnt += 1.0f;
            const float inv = __frcp_rn(cnt);
#pragma unroll
            for (int i = 0; i < VEC; i++) {
                const float d = v[i] - mean[i];
                mean[i] = fmaf(d, inv, mean[i]);
                m2[i] = fmaf(d, v[i] - mean[i], m2[i]);
            }
        }
    }
    if (ro < rp) {
#pragma unroll
        for (int i = 0; i < VEC; i++) {
            smean[ro * W + lc * VEC + i] = mean[i];
            sm2[ro * W + lc * VEC + i] = m2[i];
        }
        if (lc == 0) scnt[ro] = cnt;
    }
    __syncthreads();
    // one thread per channel of the tile merges the row lanes in order
    for (int t = threadIdx.x; t < W; t += blockDim.x) {
        const int ch = tile * W + t;
        if (ch >= C) continue;
        float a = scnt[0], b = smean[t], q = sm2[t];
        for (int j = 1; j < rp; j++) chan_merge(a, b, q, scnt[j], smean[j * W + t], sm2[j * W + t]);
        float *o = part + (((size_t)n * nch + k) * C + ch) * 3;
        o[0] = a; o[1] = b; o[2] = q;
    }
}

// ----------------------------------------------------------------------------
// stage 2: mean, rstd (N, G). One block per (n, g): each thread merges a strided subset of the
// group's (chunk, channel) partials in double, then a fixed tree over the threads.

__device__ __forceinline__ void chan_merge_d(double &n, double &m, double &q, double nb, double mb,
                                             double qb)
{
    if (nb == 0.0) return;
    const double nn = n + nb, d = mb - m;
    m += d * (nb / nn);
    q += qb + d * d * (n * nb / nn);
    n = nn;
}

__global__ void __launch_bounds__(NORM_THREADS)
stats_final_kernel(float *mean, float *rstd, const float *part, int C, int G, int nch, double eps)
{
    __shared__ double sn[NORM_THREADS], sm[NORM_THREADS], sq[NORM_THREADS];
    const int n = blockIdx.x / G, gi = blockIdx.x % G, cg = C / G, tid = threadIdx.x;
    double cnt = 0, m = 0, q = 0;
    const int items = nch * cg;
    for (int it = tid; it < items; it += NORM_THREADS) {
        const int k = it / cg, c = gi * cg + it % cg;
        const float *p = part + (((size_t)n * nch + k) * C + c) * 3;
        chan_merge_d(cnt, m, q, p[0], p[1], p[2]);
    }
    sn[tid] = cnt; sm[tid] = m; sq[tid] = q;
    __syncthreads();
    for (int off = NORM_THREADS / 2; off > 0; off >>= 1) {
        if (tid < off) {
            double a = sn[tid], b = sm[tid], c2 = sq[tid];
            chan_merge_d(a, b, c2, sn[tid + off], sm[tid + off], sq[tid + off]);
            sn[tid] = a; sm[tid] = b; sq[tid] = c2;
        }
        __syncthreads();
    }
    if (tid == 0) {
        mean[blockIdx.x] = (float)sm[0];
        rstd[blockIdx.x] = (float)(1.0 / sqrt(sq[0] / sn[0] + eps));
    }
}

// ----------------------------------------------------------------------------
// forward apply: y = relu?((x - mean) * rstd * gamma + beta), grid (row blocks, N * tiles)

// Per-thread coefficients of one vector column: mean, rstd, gamma, beta (gamma absent: 1, 0).
struct col_coef { float mu, rs, ga, be; int s; };     // s: the (sample, group) index n G + g
// Those of channels col VEC .. + VEC - 1 of sample n (G groups of C / G channels).
template <int VEC>
__device__ __forceinline__ void col_coefs(col_coef (&kc)[VEC], const float *mean, const float *rstd,
                                          const float *gamma, const float *beta, int n, int col,
                                          int C, int G)
{
    const int cg = C / G;
#pragma unroll
    for (int i = 0; i < VEC; i++) {
        const int ch = col * VEC + i, s = n * G + ch / cg;
        kc[i].s = s; kc[i].mu = mean[s]; kc[i].rs = rstd[s];
        kc[i].ga = gamma ? gamma[ch] : 1.0f;
        kc[i].be = gamma && beta ? beta[ch] : 0.0f;
    }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(NORM_THREADS)
norm_apply_kernel(T *__restrict__ y, const T *__restrict__ x, const float *mean, const float *rstd,
                  const float *gamma, const float *beta, size_t S, int C, int G, int relu, int cpb,
                  int rp, int tiles)
{
    const int n = blockIdx.y / tiles, tile = blockIdx.y % tiles;
    const int lc = threadIdx.x % cpb, ro = threadIdx.x / cpb, col = tile * cpb + lc;
    if (ro >= rp || col * VEC >= C) return;
    col_coef kc[VEC];
    col_coefs<VEC>(kc, mean, rstd, gamma, beta, n, col, C, G);
    const size_t off = (size_t)n * S * C + (size_t)col * VEC;
    for (size_t r = (size_t)blockIdx.x * rp + ro; r < S; r += (size_t)gridDim.x * rp) {
        float v[VEC];
        ld_vec<T, VEC>(x + off + r * C, v);
#pragma unroll
        for (int i = 0; i < VEC; i++) {
            float o = (v[i] - kc[i].mu) * kc[i].rs;
            if (gamma) o = o * kc[i].ga + kc[i].be;
            if (relu) o = o > 0.0f ? o : 0.0f;
            v[i] = o;
        }
        st_vec<T, VEC>(y + off + r * C, v);
    }
}

// ----------------------------------------------------------------------------
// backward kernels

// dyr (dy masked by the fused ReLU, whose pre-activation is recomputed as the forward did it)
// and xhat of one element.
__device__ __forceinline__ float masked_dy_v(float dy, float x, const col_coef &k, int affine,
                                             int relu, float *xhat)
{
    const float xh = (x - k.mu) * k.rs;
    *xhat = xh;
    if (relu) {
        const float pre = affine ? xh * k.ga + k.be : xh;
        if (!(pre > 0.0f)) dy = 0.0f;
    }
    return dy;
}

// part: (N, nch, C, 2) partial sums {dyr, dyr * xhat}; dynamic shared (2, rp, cpb * VEC).
template <typename T, int VEC>
__global__ void __launch_bounds__(NORM_THREADS)
grad_partial_kernel(float *__restrict__ part, const T *__restrict__ dy, const T *__restrict__ x,
                    const float *mean, const float *rstd, const float *gamma, const float *beta,
                    size_t S, int C, int G, int relu, size_t chunk, int cpb, int rp, int tiles)
{
    extern __shared__ float sh[];
    const int W = cpb * VEC;
    float *sa = sh, *sb = sh + rp * W;
    const int n = blockIdx.y / tiles, tile = blockIdx.y % tiles, k = blockIdx.x, nch = gridDim.x;
    const int lc = threadIdx.x % cpb, ro = threadIdx.x / cpb, col = tile * cpb + lc;
    const int affine = gamma != NULL;
    const size_t r0 = (size_t)k * chunk, r1 = min(S, r0 + chunk);
    float a[VEC], b[VEC];
#pragma unroll
    for (int i = 0; i < VEC; i++) { a[i] = 0.0f; b[i] = 0.0f; }
    if (ro < rp && col * VEC < C) {
        col_coef kc[VEC];
        col_coefs<VEC>(kc, mean, rstd, gamma, beta, n, col, C, G);
        const size_t off = (size_t)n * S * C + (size_t)col * VEC;
        size_t r = r0 + ro;
        for (; r + (size_t)rp < r1; r += 2 * (size_t)rp) {
            float g0[VEC], x0[VEC], g1[VEC], x1[VEC];
            ld_vec<T, VEC>(dy + off + r * C, g0);
            ld_vec<T, VEC>(x + off + r * C, x0);
            ld_vec<T, VEC>(dy + off + (r + rp) * C, g1);
            ld_vec<T, VEC>(x + off + (r + rp) * C, x1);
#pragma unroll
            for (int i = 0; i < VEC; i++) {
                float xh;
                float gr = masked_dy_v(g0[i], x0[i], kc[i], affine, relu, &xh);
                a[i] += gr; b[i] = fmaf(gr, xh, b[i]);
                gr = masked_dy_v(g1[i], x1[i], kc[i], affine, relu, &xh);
                a[i] += gr; b[i] = fmaf(gr, xh, b[i]);
            }
        }
        for (; r < r1; r += rp) {
            float g0[VEC], x0[VEC];
            ld_vec<T, VEC>(dy + off + r * C, g0);
            ld_vec<T, VEC>(x + off + r * C, x0);
#pragma unroll
            for (int i = 0; i < VEC; i++) {
                float xh;
                const float gr = masked_dy_v(g0[i], x0[i], kc[i], affine, relu, &xh);
                a[i] += gr; b[i] = fmaf(gr, xh, b[i]);
            }
        }
    }
    if (ro < rp) {
#pragma unroll
        for (int i = 0; i < VEC; i++) { sa[ro * W + lc * VEC + i] = a[i]; sb[ro * W + lc * VEC + i] = b[i]; }
    }
    __syncthreads();
    for (int t = threadIdx.x; t < W; t += blockDim.x) {
        const int ch = tile * W + t;
        if (ch >= C) continue;
        float ta = 0.0f, tb = 0.0f;
        for (int j = 0; j < rp; j++) { ta += sa[j * W + t]; tb += sb[j * W + t]; }
        float *o = part + (((size_t)n * nch + k) * C + ch) * 2;
        o[0] = ta; o[1] = tb;
    }
}

// AB: (2, N, C) = chunk sums of A and B in double: one warp per (n, c), lanes strided over the
// chunks, then a fixed xor tree.
__global__ void grad_sum_kernel(float *AB, const float *part, int N, int C, int nch)
{
    const int lane = threadIdx.x & 31;
    const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (t >= N * C) return;                         // whole warp leaves together
    const int n = t / C, c = t % C;
    double a = 0, b = 0;
    for (int k = lane; k < nch; k += 32) {
        const float *p = part + (((size_t)n * nch + k) * C + c) * 2;
        a += p[0];
        b += p[1];
    }
    for (int o = 16; o > 0; o >>= 1) {
        a += __shfl_xor_sync(0xffffffffu, a, o);
        b += __shfl_xor_sync(0xffffffffu, b, o);
    }
    if (lane == 0) {
        AB[t] = (float)a;
        AB[(size_t)N * C + t] = (float)b;
    }
}

// M: (2, N, G) = group means of gamma*A and gamma*B over cg*S values.
__global__ void grad_means_kernel(float *M, const float *AB, const float *gamma, int N, int C,
                                  int G, size_t S)
{
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= N * G) return;
    int n = t / G, gi = t % G, cg = C / G;
    double a = 0, b = 0;
    for (int c = gi * cg; c < (gi + 1) * cg; c++) {
        double gm = gamma ? gamma[c] : 1.0;
        a += gm * AB[(size_t)n * C + c];
        b += gm * AB[(size_t)N * C + (size_t)n * C + c];
    }
    double cnt = (double)cg * (double)S;
    M[t] = (float)(a / cnt);
    M[(size_t)N * G + t] = (float)(b / cnt);
}

__global__ void affine_grad_kernel(float *dgamma, float *dbeta, const float *AB, int N, int C)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double a = 0, b = 0;
    for (int n = 0; n < N; n++) {
        a += AB[(size_t)n * C + c];
        b += AB[(size_t)N * C + (size_t)n * C + c];
    }
    if (dbeta) dbeta[c] = (float)((double)dbeta[c] + a);
    if (dgamma) dgamma[c] = (float)((double)dgamma[c] + b);
}

// dx += rstd * (gamma dyr - M1 - xhat M2), grid (row blocks, N * tiles)
template <typename T, int VEC>
__global__ void __launch_bounds__(NORM_THREADS)
grad_apply_kernel(T *__restrict__ dx, const T *__restrict__ dy, const T *__restrict__ x,
                  const float *mean, const float *rstd, const float *gamma, const float *beta,
                  const float *M, int N, size_t S, int C, int G, int relu, int cpb, int rp,
                  int tiles)
{
    const int n = blockIdx.y / tiles, tile = blockIdx.y % tiles;
    const int lc = threadIdx.x % cpb, ro = threadIdx.x / cpb, col = tile * cpb + lc;
    if (ro >= rp || col * VEC >= C) return;
    const int affine = gamma != NULL;
    col_coef kc[VEC];
    col_coefs<VEC>(kc, mean, rstd, gamma, beta, n, col, C, G);
    float m1[VEC], m2[VEC];
#pragma unroll
    for (int i = 0; i < VEC; i++) { m1[i] = M[kc[i].s]; m2[i] = M[(size_t)N * G + kc[i].s]; }
    const size_t off = (size_t)n * S * C + (size_t)col * VEC;
    for (size_t r = (size_t)blockIdx.x * rp + ro; r < S; r += (size_t)gridDim.x * rp) {
        float g0[VEC], x0[VEC], d0[VEC];
        ld_vec<T, VEC>(dy + off + r * C, g0);
        ld_vec<T, VEC>(x + off + r * C, x0);
        ld_vec<T, VEC>(dx + off + r * C, d0);
#pragma unroll
        for (int i = 0; i < VEC; i++) {
            float xh;
            const float gr = masked_dy_v(g0[i], x0[i], kc[i], affine, relu, &xh);
            d0[i] += kc[i].rs * (kc[i].ga * gr - m1[i] - xh * m2[i]);
        }
        st_vec<T, VEC>(dx + off + r * C, d0);
    }
}

// ----------------------------------------------------------------------------
// shared launchers (InstanceNorm: G = C, no gamma/beta)

// Row chunks per item for a (N, S, C) reduction with `slots` floats per partial, leaving
// `reserve` floats of the scratch for the coefficient arrays that follow the partials.
static int norm_chunks(const gpu_ctx_t *g, int N, int C, size_t S, int slots, size_t reserve,
                       size_t *chunk)
{
    int nch = gpu_reduce_chunks(g, S, N, (size_t)C, slots, 64);
    while (nch > 1 && (size_t)N * nch * C * slots + reserve > g->red_floats) nch--;
    ASSERT((size_t)N * nch * C * slots + reserve <= g->red_floats);
    *chunk = CEIL_DIV(S, (size_t)nch);
    return (int)CEIL_DIV(S, *chunk);
}

// Runs stmt with VEC = 16 / sizeof(T) when `ok`, else VEC = 1.
#define VEC_DISPATCH(ok, T, VEC, ...)                                         \
    do {                                                                      \
        if (ok) { constexpr int VEC = 16 / (int)sizeof(T); __VA_ARGS__; }     \
        else { constexpr int VEC = 1; __VA_ARGS__; }                          \
    } while (0)

// Row blocks of an apply pass: enough for ~8 blocks per SM over all (n, tile), each thread a
// few rows.
static unsigned apply_rows(const gpu_ctx_t *g, size_t S, int rp, int items)
{
    size_t want = CEIL_DIV(S, (size_t)rp);
    size_t cap = CEIL_DIV((size_t)g->sm_count * 8, (size_t)items);
    if (want > cap) want = cap;
    return (unsigned)(want ? want : 1);
}

static void norm_forward(gpu_ctx_t *g, void *y, float *mean, float *rstd, const void *x,
                         const float *gamma, const float *beta, int N, int C, int G, size_t S,
                         double eps, int relu)
{
    ASSERT(N > 0 && C > 0 && G > 0 && C % G == 0 && S > 0);
    size_t chunk;
    int nch = norm_chunks(g, N, C, S, 3, 0, &chunk);
    const size_t esz = g->act == GPU_F32 ? 4 : 2;
    const int vok = vec16_width(esz, C, { x, y }) > 1;
    ACT_DISPATCH(g->act, T, VEC_DISPATCH(vok, T, VEC, {
        const norm_geo q = geo_for(C, VEC);
        const size_t shm = (size_t)(2 * q.rp * q.cpb * VEC + q.rp) * sizeof(float);
        stats_partial_kernel<T, VEC><<<dim3(nch, N * q.tiles), q.threads, shm, g->stream>>>(
            g->red, (const T *)x, S, C, chunk, q.cpb, q.rp, q.tiles);
        KERNEL_CHECK();
        stats_final_kernel<<<N * G, NORM_THREADS, 0, g->stream>>>(mean, rstd, g->red, C, G, nch,
                                                                  eps);
        KERNEL_CHECK();
        norm_apply_kernel<T, VEC><<<dim3(apply_rows(g, S, q.rp, N * q.tiles), N * q.tiles),
                                    q.threads, 0, g->stream>>>(
            (T *)y, (const T *)x, mean, rstd, gamma, beta, S, C, G, relu, q.cpb, q.rp, q.tiles);
        KERNEL_CHECK();
    }));
}

static void norm_backward(gpu_ctx_t *g, void *dx, float *dgamma, float *dbeta, const void *dy,
                          const void *x, const float *mean, const float *rstd, const float *gamma,
                          const float *beta, int N, int C, int G, size_t S, int relu)
{
    ASSERT(N > 0 && C > 0 && G > 0 && C % G == 0 && S > 0);
    ASSERT(!relu || !gamma || beta);            // the ReLU mask of GN needs beta
    if (!dx && !dgamma && !dbeta) return;
    // Scratch: [partials (N, nch, C, 2)] [AB (2, N, C)] [M (2, N, G)]
    size_t coef = (size_t)2 * N * C + (size_t)2 * N * G, chunk;
    int nch = norm_chunks(g, N, C, S, 2, coef, &chunk);
    float *part = g->red, *AB = g->red + (size_t)N * nch * C * 2, *M = AB + (size_t)2 * N * C;
    const size_t esz = g->act == GPU_F32 ? 4 : 2;
    const int vok = vec16_width(esz, C, { x, dy, dx }) > 1;
    ACT_DISPATCH(g->act, T, VEC_DISPATCH(vok, T, VEC, {
        const norm_geo q = geo_for(C, VEC);
        const size_t shm = (size_t)(2 * q.rp * q.cpb * VEC) * sizeof(float);
        grad_partial_kernel<T, VEC><<<dim3(nch, N * q.tiles), q.threads, shm, g->stream>>>(
            part, (const T *)dy, (const T *)x, mean, rstd, gamma, beta, S, C, G, relu, chunk,
            q.cpb, q.rp, q.tiles);
        KERNEL_CHECK();
    }));
    grad_sum_kernel<<<CEIL_DIV(N * C, 8), 256, 0, g->stream>>>(AB, part, N, C, nch);
    KERNEL_CHECK();
    if (dgamma || dbeta) {
        affine_grad_kernel<<<CEIL_DIV(C, 128), 128, 0, g->stream>>>(dgamma, dbeta, AB, N, C);
        KERNEL_CHECK();
    }
    if (!dx) return;
    grad_means_kernel<<<CEIL_DIV(N * G, 128), 128, 0, g->stream>>>(M, AB, gamma, N, C, G, S);
    KERNEL_CHECK();
    ACT_DISPATCH(g->act, T, VEC_DISPATCH(vok, T, VEC, {
        const norm_geo q = geo_for(C, VEC);
        grad_apply_kernel<T, VEC><<<dim3(apply_rows(g, S, q.rp, N * q.tiles), N * q.tiles),
                                    q.threads, 0, g->stream>>>(
            (T *)dx, (const T *)dy, (const T *)x, mean, rstd, gamma, beta, M, N, S, C, G, relu,
            q.cpb, q.rp, q.tiles);
        KERNEL_CHECK();
    }));
}

// ----------------------------------------------------------------------------
// public ops

void instancenorm_forward_gpu(gpu_ctx_t *g, void *y, float *mean, float *rstd, const void *x,
                              int N, int C, size_t S, double eps, int relu)
{
    norm_forward(g, y, mean, rstd, x, NULL, NULL, N, C, C, S, eps, relu);
}

void instancenorm_backward_gpu(gpu_ctx_t *g, void *dx, const void *dy, const void *x,
                               const float *mean, const float *rstd, int N, int C, size_t S,
                               int relu)
{
    norm_backward(g, dx, NULL, NULL, dy, x, mean, rstd, NULL, NULL, N, C, C, S, relu);
}

void groupnorm_forward_gpu(gpu_ctx_t *g, void *y, float *mean, float *rstd, const void *x,
                           const float *gamma, const float *beta, int N, int C, int G, size_t S,
                           double eps, int relu)
{
    ASSERT(gamma && beta);
    norm_forward(g, y, mean, rstd, x, gamma, beta, N, C, G, S, eps, relu);
}

void groupnorm_backward_gpu(gpu_ctx_t *g, void *dx, float *dgamma, float *dbeta, const void *dy,
                            const void *x, const float *mean, const float *rstd,
                            const float *gamma, const float *beta, int N, int C, int G, size_t S,
                            int relu)
{
    ASSERT(gamma);
    norm_backward(g, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, N, C, G, S, relu);
}
