/*
layernorm.cu -- LayerNorm over the channel axis of token-major (N*L, C) activations, the GPU
twin of common/ops/layernorm.c (which works on channels-first data; the math is the same).

A group of G lanes per token (G a power of two <= 32, 32 / G tokens per warp at once), each
lane VPL vectors of VEC channels (16 bytes where C and the pointers allow, else one element):
a token's C channels are contiguous, so loads are coalesced, and the statistics are reductions
over the group's lanes (two-pass variance from registers, fp32). M's layers have C = 48..384,
a 96..768-byte row: one lane per token-channel (the first version, a warp per token with one
2-byte element a lane) moved 48-channel rows at ~15 % of the memory bandwidth (ncu, level 0:
forward 121 us, dx 222 us for 25 MB tensors). mean and rstd are saved for the backward.

The backward forms dx and the dgamma / dbeta column sums in one pass over x and dy: every lane
adds its channels' dy * xhat and dy over the tokens it visits, the partials meet per block in a
fixed order (shuffles over the warp's token groups, then the warps in order) into the context's
reduction scratch, and gpu_rows_sum_add (elementwise.cu) adds the blocks' rows in a fixed order.
Deterministic, no atomics.
*/
#include "gpu_internal.h"

#define LN_WARPS 8                  // warps per block
#define LN_THREADS (32 * LN_WARPS)
#define LN_CMAX 512                 // the widest C (the scalar path holds C / 32 values a lane)

// How a launch lays out C: VEC-wide vectors (16 bytes or 1 element), G lanes per token, VPL
// vectors per lane. Uniform over the launch.
struct ln_geo { int vec, G, vpl; };

static ln_geo ln_geo_for(int C, size_t act, std::initializer_list<const void *> ops)
{
    ln_geo q;
    q.vec = vec16_width(act, C, ops);
    const int nv = C / q.vec;                       // vectors per token
    q.G = 1;
    while (q.G < 32 && q.G < nv) q.G *= 2;
    q.vpl = CEIL_DIV(nv, q.G);
    return q;
}

// sum over the G lanes of each token group (xor butterfly: a fixed order)
__device__ __forceinline__ float group_sum(float v, int G)
{
    for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// The token a lane works on in a warp's pass over tokens t0 + [0, 32 / G), and its vector index
// j's first channel (or -1 past C). Lanes of a token past M load zeros and store nothing, but
// take part in the shuffles.
__device__ __forceinline__ int ln_chan(int sub, int j, int G, int VEC, int C)
{
    const int c = (sub + j * G) * VEC;
    return c < C ? c : -1;
}

// y, x: (M, C) with M = N*L tokens; mean, rstd: (M)
template <typename T, int VEC, int VPL>
__global__ void __launch_bounds__(LN_THREADS)
ln_fwd_kernel(T *y, float *mean, float *rstd, const T *x, const float *gamma, const float *beta,
              size_t M, int C, int G, float eps)
{
    const int lane = threadIdx.x & 31, sub = lane & (G - 1), tpw = 32 / G;
    const size_t warp = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const size_t warps = (size_t)gridDim.x * LN_WARPS;
    const float invC = 1.0f / (float)C;
    for (size_t t0 = warp * tpw; t0 < M; t0 += warps * tpw) {
        const size_t t = t0 + lane / G;
        const bool ok = t < M;
        float v[VPL][VEC], s = 0.0f;
#pragma unroll
        for (int j = 0; j < VPL; j++) {
            const int c = ln_chan(sub, j, G, VEC, C);
#pragma unroll
            for (int i = 0; i < VEC; i++) v[j][i] = 0.0f;
            if (ok && c >= 0) ld_vec<T, VEC>(x + t * C + c, v[j]);
#pragma unroll
            for (int i = 0; i < VEC; i++) s += v[j][i];
        }
        const float mu = group_sum(s, G) * invC;
        float q = 0.0f;
#pragma unroll
        for (int j = 0; j < VPL; j++) {
            const bool in = ln_chan(sub, j, G, VEC, C) >= 0;
#pragma unroll
            for (int i = 0; i < VEC; i++) {
                const float d = in ? v[j][i] - mu : 0.0f;
                q = fmaf(d, d, q);
            }
        }
        const float rs = rsqrtf(group_sum(q, G) * invC + eps);
        if (!ok) continue;
#pragma unroll
        for (int j = 0; j < VPL; j++) {
            const int c = ln_chan(sub, j, G, VEC, C);
            if (c < 0) continue;
            float o[VEC];
#pragma unroll
            for (int i = 0; i < VEC; i++) o[i] = (v[j][i] - mu) * rs * gamma[c + i] + beta[c + i];
            st_vec<T, VEC>(y + t * C + c, o);
        }
        if (sub == 0) { mean[t] = mu; rstd[t] = rs; }
    }
}

// dx += rstd * (g - mean_c(g) - xh * mean_c(g * xh)), g = dy * gamma, xh = (x - mean) * rstd
// (dx NULL: not formed); part (NULL: no affine gradient): row blockIdx.x of (gridDim.x, 2 C),
// {sum dy * xh | sum dy} over the block's tokens.
template <typename T, int VEC, int VPL>
__global__ void __launch_bounds__(LN_THREADS)
ln_bwd_kernel(T *dx, float *part, const T *dy, const T *x, const float *mean, const float *rstd,
              const float *gamma, size_t M, int C, int G)
{
    extern __shared__ float ln_red[];                // [warp][2 C]
    const int lane = threadIdx.x & 31, w = threadIdx.x / 32, sub = lane & (G - 1), tpw = 32 / G;
    const size_t warp = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const size_t warps = (size_t)gridDim.x * LN_WARPS;
    const float invC = 1.0f / (float)C;
    float pa[VPL][VEC], pb[VPL][VEC];               // this lane's sum dy * xh, sum dy
#pragma unroll
    for (int j = 0; j < VPL; j++)
#pragma unroll
        for (int i = 0; i < VEC; i++) pa[j][i] = pb[j][i] = 0.0f;
    for (size_t t0 = warp * tpw; t0 < M; t0 += warps * tpw) {
        const size_t t = t0 + lane / G;
        const bool ok = t < M;
        const float mu = ok ? mean[t] : 0.0f, rs = ok ? rstd[t] : 0.0f;
        float gv[VPL][VEC], xh[VPL][VEC], sg = 0.0f, sgx = 0.0f;
#pragma unroll
        for (int j = 0; j < VPL; j++) {
            const int c = ln_chan(sub, j, G, VEC, C);
            float d[VEC], xv[VEC];
#pragma unroll
            for (int i = 0; i < VEC; i++) d[i] = xv[i] = 0.0f;
            if (ok && c >= 0) {
                ld_vec<T, VEC>(dy + t * C + c, d);
                ld_vec<T, VEC>(x + t * C + c, xv);
            }
#pragma unroll
            for (int i = 0; i < VEC; i++) {
                const bool in = ok && c >= 0;
                xh[j][i] = in ? (xv[i] - mu) * rs : 0.0f;
                gv[j][i] = in ? d[i] * gamma[c + i] : 0.0f;
                pa[j][i] = fmaf(d[i], xh[j][i], pa[j][i]);
                pb[j][i] += d[i];
                sg += gv[j][i];
                sgx = fmaf(gv[j][i], xh[j][i], sgx);
            }
        }
        if (!dx) continue;
        const float mg = group_sum(sg, G) * invC, mgx = group_sum(sgx, G) * invC;
        if (!ok) continue;
#pragma unroll
        for (int j = 0; j < VPL; j++) {
            const int c = ln_chan(sub, j, G, VEC, C);
            if (c < 0) continue;
            float o[VEC];
            ld_vec<T, VEC>(dx + t * C + c, o);
#pragma unroll
            for (int i = 0; i < VEC; i++) o[i] += rs * (gv[j][i] - mg - xh[j][i] * mgx);
            st_vec<T, VEC>(dx + t * C + c, o);
        }
    }
    if (!part) return;
    // the warp's token groups (lanes sub, sub + G, ...) in a fixed butterfly, then the warps
    // in order
#pragma unroll
    for (int j = 0; j < VPL; j++)
#pragma unroll
        for (int i = 0; i < VEC; i++)
            for (int o = 16; o >= G; o >>= 1) {
                pa[j][i] += __shfl_xor_sync(0xffffffffu, pa[j][i], o);
                pb[j][i] += __shfl_xor_sync(0xffffffffu, pb[j][i], o);
            }
    if (lane < G)
#pragma unroll
        for (int j = 0; j < VPL; j++) {
            const int c = ln_chan(sub, j, G, VEC, C);
            if (c < 0) continue;
#pragma unroll
            for (int i = 0; i < VEC; i++) {
                ln_red[w * 2 * C + c + i] = pa[j][i];
                ln_red[w * 2 * C + C + c + i] = pb[j][i];
            }
        }
    __syncthreads();
    for (int k = threadIdx.x; k < 2 * C; k += blockDim.x) {
        float s = 0.0f;
        for (int q = 0; q < LN_WARPS; q++) s += ln_red[q * 2 * C + k];
        part[(size_t)blockIdx.x * 2 * C + k] = s;
    }
}

// blocks for a pass over M tokens: about 8 resident per SM (a block takes LN_WARPS * 32 / G
// tokens at a time), fewer where M is small
static unsigned ln_grid(const gpu_ctx_t *g, size_t M, int G)
{
    const size_t per = (size_t)LN_WARPS * (32 / G);
    size_t want = CEIL_DIV(M, per), cap = (size_t)g->sm_count * 8;
    return (unsigned)(want < cap ? (want ? want : 1) : cap);
}

// kernel<T, VEC, VPL> for the launch's geometry: VEC 16 bytes with VPL 1, 2 or 4 (C / VEC <= 128),
// or one element with VPL = 16 (C <= 512: the fallback for C or pointers off 16 bytes)
#define LN_DISPATCH(q, T, K, ...)                                                         \
    do {                                                                                  \
        constexpr int V16 = 16 / (int)sizeof(T);                                          \
        if ((q).vec == 1) K<T, 1, LN_CMAX / 32> __VA_ARGS__;                               \
        else if ((q).vpl == 1) K<T, V16, 1> __VA_ARGS__;                                   \
        else if ((q).vpl == 2) K<T, V16, 2> __VA_ARGS__;                                   \
        else K<T, V16, 4> __VA_ARGS__;                                                     \
    } while (0)

void layernorm_forward_gpu(gpu_ctx_t *g, void *y, float *mean, float *rstd, const void *x,
                           const float *gamma, const float *beta, int N, int C, size_t L,
                           double eps)
{
    ASSERT(C >= 1 && C <= LN_CMAX);
    const size_t M = (size_t)N * L;
    if (M == 0) return;
    const ln_geo q = ln_geo_for(C, gpu_dtype_size(g->act), { y, x });
    ACT_DISPATCH(g->act, T, {
        LN_DISPATCH(q, T, ln_fwd_kernel, <<<ln_grid(g, M, q.G), LN_THREADS, 0, g->stream>>>(
            (T *)y, mean, rstd, (const T *)x, gamma, beta, M, C, q.G, (float)eps));
        KERNEL_CHECK();
    });
}

void layernorm_backward_gpu(gpu_ctx_t *g, void *dx, float *dgamma, float *dbeta, const void *dy,
                            const void *x, const float *mean, const float *rstd,
                            const float *gamma, int N, int C, size_t L)
{
    ASSERT(C >= 1 && C <= LN_CMAX);
    const size_t M = (size_t)N * L;
    if (M == 0 || (!dx && !dgamma && !dbeta)) return;
    const ln_geo q = ln_geo_for(C, gpu_dtype_size(g->act), { dx, dy, x });
    unsigned grid = ln_grid(g, M, q.G);
    float *part = NULL;
    if (dgamma || dbeta) {                          // one 2 C row of partials a block
        const size_t fit = g->red_floats / (2 * (size_t)C);
        ASSERT(fit >= 1);
        if (grid > fit) grid = (unsigned)fit;
        part = g->red;
    }
    const size_t shm = part ? (size_t)LN_WARPS * 2 * C * sizeof(float) : 0;
    ACT_DISPATCH(g->act, T, {
        LN_DISPATCH(q, T, ln_bwd_kernel, <<<grid, LN_THREADS, shm, g->stream>>>(
            (T *)dx, part, (const T *)dy, (const T *)x, mean, rstd, gamma, M, C, q.G));
        KERNEL_CHECK();
    });
    if (part) {                                     // the blocks' rows, in order
        gpu_rows_sum_add(g, dgamma, part, 2 * (size_t)C, C, (int)grid);
        gpu_rows_sum_add(g, dbeta, part + C, 2 * (size_t)C, C, (int)grid);
    }
}
