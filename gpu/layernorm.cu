/*
layernorm.cu -- LayerNorm over the channel axis of token-major (N*L, C) activations, the GPU
twin of common/ops/layernorm.c (which works on channels-first data; the math is the same).

One warp per token: its C channels are contiguous, so loads are coalesced and the statistics
are warp reductions (two-pass variance from registers, fp32). mean and rstd are saved for the
backward. dgamma / dbeta are column sums over all tokens: deterministic two-stage reduction
(per row-chunk partials in the context's reduction scratch, then the chunks in order), no atomics.
*/
#include "gpu_internal.h"

#define LN_WARPS 8                  // warps (tokens in flight) per block
#define LN_CPL 16                   // channels per lane held in registers: C <= 512

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// y, x: (M, C) with M = N*L tokens; mean, rstd: (M)
template <typename T>
__global__ void ln_fwd_kernel(T *y, float *mean, float *rstd, const T *x, const float *gamma,
                              const float *beta, size_t M, int C, float eps)
{
    const int lane = threadIdx.x & 31;
    const size_t warps = (size_t)gridDim.x * LN_WARPS;
    for (size_t t = (size_t)blockIdx.x * LN_WARPS + threadIdx.x / 32; t < M; t += warps) {
        const T *xr = x + t * C;
        float v[LN_CPL], s = 0.0f;
#pragma unroll
        for (int k = 0; k < LN_CPL; k++) {
            const int c = lane + 32 * k;
            v[k] = c < C ? to_f(xr[c]) : 0.0f;
            s += v[k];
        }
        const float mu = warp_sum(s) / (float)C;
        float q = 0.0f;
#pragma unroll
        for (int k = 0; k < LN_CPL; k++) {
            const int c = lane + 32 * k;
            const float d = c < C ? v[k] - mu : 0.0f;
            q += d * d;
        }
        const float rs = rsqrtf(warp_sum(q) / (float)C + eps);
        T *yr = y + t * C;
#pragma unroll
        for (int k = 0; k < LN_CPL; k++) {
            const int c = lane + 32 * k;
            if (c < C) yr[c] = from_f<T>((v[k] - mu) * rs * gamma[c] + beta[c]);
        }
        if (lane == 0) { mean[t] = mu; rstd[t] = rs; }
    }
}

// dx += rstd * (g - mean_c(g) - xh * mean_c(g * xh)), g = dy * gamma, xh = (x - mean) * rstd
template <typename T>
__global__ void ln_bwd_dx_kernel(T *dx, const T *dy, const T *x, const float *mean,
                                 const float *rstd, const float *gamma, size_t M, int C)
{
    const int lane = threadIdx.x & 31;
    const size_t warps = (size_t)gridDim.x * LN_WARPS;
    for (size_t t = (size_t)blockIdx.x * LN_WARPS + threadIdx.x / 32; t < M; t += warps) {
        const float mu = mean[t], rs = rstd[t];
        float gv[LN_CPL], xh[LN_CPL], sg = 0.0f, sgx = 0.0f;
#pragma unroll
        for (int k = 0; k < LN_CPL; k++) {
            const int c = lane + 32 * k;
            gv[k] = c < C ? to_f(dy[t * C + c]) * gamma[c] : 0.0f;
            xh[k] = c < C ? (to_f(x[t * C + c]) - mu) * rs : 0.0f;
            sg += gv[k];
            sgx += gv[k] * xh[k];
        }
        const float mg = warp_sum(sg) / (float)C, mgx = warp_sum(sgx) / (float)C;
#pragma unroll
        for (int k = 0; k < LN_CPL; k++) {
            const int c = lane + 32 * k;
            if (c < C) {
                const size_t i = t * C + c;
                dx[i] = from_f<T>(to_f(dx[i]) + rs * (gv[k] - mg - xh[k] * mgx));
            }
        }
    }
}

// part: (nch, C, 2) = per row chunk {sum dy * xh, sum dy}. Block (32, 8): x over channels
// (coalesced), y over rows; the 8 row-partials are then added in a fixed order.
template <typename T>
__global__ void ln_bwd_affine_partial(float *part, const T *dy, const T *x, const float *mean,
                                      const float *rstd, size_t M, int C, size_t chunk)
{
    __shared__ float sa[8][33], sb[8][33];
    const size_t r0 = (size_t)blockIdx.x * chunk, r1 = min(M, r0 + chunk);
    for (int c0 = 0; c0 < C; c0 += 32) {
        const int c = c0 + threadIdx.x;
        float a = 0.0f, b = 0.0f;
        if (c < C)
            for (size_t r = r0 + threadIdx.y; r < r1; r += 8) {
                const float d = to_f(dy[r * C + c]);
                a += d * (to_f(x[r * C + c]) - mean[r]) * rstd[r];
                b += d;
            }
        sa[threadIdx.y][threadIdx.x] = a;
        sb[threadIdx.y][threadIdx.x] = b;
        __syncthreads();
        if (threadIdx.y == 0 && c < C) {
            float ta = 0.0f, tb = 0.0f;
            for (int j = 0; j < 8; j++) { ta += sa[j][threadIdx.x]; tb += sb[j][threadIdx.x]; }
            float *o = part + ((size_t)blockIdx.x * C + c) * 2;
            o[0] = ta;
            o[1] = tb;
        }
        __syncthreads();
    }
}

__global__ void ln_bwd_affine_final(float *dgamma, float *dbeta, const float *part, int C, int nch)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double a = 0, b = 0;
    for (int k = 0; k < nch; k++) {
        a += part[((size_t)k * C + c) * 2];
        b += part[((size_t)k * C + c) * 2 + 1];
    }
    if (dgamma) dgamma[c] += (float)a;
    if (dbeta) dbeta[c] += (float)b;
}

static unsigned ln_grid(const gpu_ctx_t *g, size_t M)
{
    size_t want = CEIL_DIV(M, (size_t)LN_WARPS), cap = (size_t)g->sm_count * 16;
    return (unsigned)(want < cap ? (want ? want : 1) : cap);
}

void layernorm_forward_gpu(gpu_ctx_t *g, void *y, float *mean, float *rstd, const void *x,
                           const float *gamma, const float *beta, int N, int C, size_t L,
                           double eps)
{
    ASSERT(C >= 1 && C <= 32 * LN_CPL);
    const size_t M = (size_t)N * L;
    if (M == 0) return;
    ACT_DISPATCH(g->act, T, {
        ln_fwd_kernel<T><<<ln_grid(g, M), 32 * LN_WARPS, 0, g->stream>>>(
            (T *)y, mean, rstd, (const T *)x, gamma, beta, M, C, (float)eps);
        KERNEL_CHECK();
    });
}

void layernorm_backward_gpu(gpu_ctx_t *g, void *dx, float *dgamma, float *dbeta, const void *dy,
                            const void *x, const float *mean, const float *rstd,
                            const float *gamma, int N, int C, size_t L)
{
    ASSERT(C >= 1 && C <= 32 * LN_CPL);
    const size_t M = (size_t)N * L;
    if (M == 0) return;
    if (dx) ACT_DISPATCH(g->act, T, {
        ln_bwd_dx_kernel<T><<<ln_grid(g, M), 32 * LN_WARPS, 0, g->stream>>>(
            (T *)dx, (const T *)dy, (const T *)x, mean, rstd, gamma, M, C);
        KERNEL_CHECK();
    });
    if (dgamma || dbeta) {
        // Row chunks: about 4 blocks per SM, at least 64 rows each, within the scratch.
        size_t nch = (size_t)g->sm_count * 4, fit = g->red_floats / (2 * (size_t)C);
        if (nch > fit) nch = fit;
        if (nch > CEIL_DIV(M, (size_t)64)) nch = CEIL_DIV(M, (size_t)64);
        if (nch < 1) nch = 1;
        const size_t chunk = CEIL_DIV(M, nch);
        nch = CEIL_DIV(M, chunk);
        ACT_DISPATCH(g->act, T, {
            ln_bwd_affine_partial<T><<<(unsigned)nch, dim3(32, 8), 0, g->stream>>>(
                g->red, (const T *)dy, (const T *)x, mean, rstd, M, C, chunk);
            KERNEL_CHECK();
        });
        ln_bwd_affine_final<<<CEIL_DIV(C, 128), 128, 0, g->stream>>>(dgamma, dbeta, g->red, C,
                                                                      (int)nch);
        KERNEL_CHECK();
    }
}
