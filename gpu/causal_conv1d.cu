/*
causal_conv1d.cu -- Mamba's depthwise causal conv1d (K <= 4 taps, zero history, bias) along the
scanned token order of one ToM direction, optionally fused with the SiLU that follows it; the
GPU twin of common/ops/causal_conv1d.c composed with tom_permute / silu (common/ops).

The token order is fused into the load: scanned token j reads x at row pi(j) of the
original-order input (a channel slice of xz, row stride ldx), so no permuted copy of x exists.
The output (and its gradient) is dense (N, L, E) in scanned order. One thread per (token,
channel), channels fastest: every tap is a coalesced row read.
Backward recomputes the pre-activation for the SiLU derivative (nothing saved). dx is a gather
(no collisions); dw / db are deterministic two-stage column sums (row-chunk partials in the
context's reduction scratch, then the chunks in order).
Index arithmetic is 32-bit (the launcher checks N L E and N L ldx fit): 64-bit divisions per
element and per tap cost more than the memory traffic (h18: the three kernels took ~38 ms of a
step under ncu). The dx backward loads the 2K-1 x values around a token once and rebuilds the K
pre-activations from them (it used to recompute each pre-activation, K loads and ToM indices, per tap).
*/
#include "gpu_internal.h"
#include "mamba_kernels.cuh"

#define BLOCK 256

struct conv_args {
    const float *w, *b;
    size_t ldx, L, nslices;
    int E, K, order;
    unsigned L32, ns32, m32;        // L, nslices, L / nslices as 32-bit divisors
};

// pi(j) of tom_pi() in 32-bit arithmetic (j < L < 2^32).
__device__ __forceinline__ unsigned tom_pi32(const conv_args &a, unsigned j)
{
    if (a.order == TOM_FORWARD) return j;
    if (a.order == TOM_REVERSE) return a.L32 - 1 - j;
    return (j % a.ns32) * a.m32 + j / a.ns32;
}

// The K x values feeding the pre-activation of scanned token j (channel e of item n): tap i
// reads token j - (K-1-i); taps before the sequence start are 0 and flagged off in `on`.
template <typename T>
__device__ __forceinline__ void load_taps(const T *x, const conv_args &a, unsigned n, unsigned j,
                                          int e, float *xv, bool *on)
{
    const T *xn = x + (size_t)n * a.L32 * a.ldx;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const unsigned back = (unsigned)(a.K - 1 - i);
        on[i] = i < a.K && j >= back;
        xv[i] = on[i] ? to_f(xn[(size_t)tom_pi32(a, j - back) * a.ldx + e]) : 0.0f;
    }
}

// Pre-activation (bias + taps in order) from the loaded taps.
__device__ __forceinline__ float pre_from_taps(const conv_args &a, int e, const float *xv,
                                               const bool *on)
{
    float acc = a.b ? a.b[e] : 0.0f;
#pragma unroll
    for (int i = 0; i < 4; i++)
        if (on[i]) acc = fmaf(a.w[(size_t)e * a.K + i], xv[i], acc);
    return acc;
}

__device__ __forceinline__ float dsilu_f(float v)
{
    const float s = sigmoid_f(v);
    return s * (1.0f + v * (1.0f - s));
}

// y: (N, L, E) scanned order
template <typename T>
__global__ void conv_fwd_kernel(T *y, const T *x, conv_args a, size_t total, int silu)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const unsigned ii = (unsigned)i, m = ii / (unsigned)a.E, n = m / a.L32;
        const int e = (int)(ii - m * (unsigned)a.E);
        const unsigned j = m - n * a.L32;
        float xv[4];
        bool on[4];
        load_taps(x, a, n, j, e, xv, on);
        float v = pre_from_taps(a, e, xv, on);
        if (silu) v = v * sigmoid_f(v);
        y[i] = from_f<T>(v);
    }
}

// dx[n, pi(s), e] += sum_i w[e, i] dpre[n, s + K-1-i, e]   (gather: one writer per element)
template <typename T>
__global__ void conv_bwd_dx_kernel(T *dx, const T *dy, const T *x, conv_args a, size_t total,
                                   int silu)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const unsigned ii = (unsigned)i, m = ii / (unsigned)a.E, n = m / a.L32;
        const int e = (int)(ii - m * (unsigned)a.E);
        const unsigned s = m - n * a.L32;
        // x at tokens s-(K-1) .. s+(K-1) (slot q = token s-(K-1)+q), each loaded once
        float xq[7];
        if (silu) {
            const T *xn = x + (size_t)n * a.L32 * a.ldx;
#pragma unroll
            for (int q = 0; q < 7; q++) {
                const long t = (long)s - (a.K - 1) + q;
                xq[q] = q < 2 * a.K - 1 && t >= 0 && t < (long)a.L32
                            ? to_f(xn[(size_t)tom_pi32(a, (unsigned)t) * a.ldx + e]) : 0.0f;
            }
        }
        float acc = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            if (k >= a.K) break;
            const unsigned t = s + (unsigned)(a.K - 1 - k);
            if (t >= a.L32) continue;
            float d = to_f(dy[((size_t)n * a.L32 + t) * a.E + e]);
            if (silu) {
                // pre-activation of token t: tap i reads token t-(K-1-i) = slot K-1-k+i
                float pre = a.b ? a.b[e] : 0.0f;
#pragma unroll
                for (int i2 = 0; i2 < 4; i2++)
                    if (i2 < a.K && t >= (unsigned)(a.K - 1 - i2))
                        pre = fmaf(a.w[(size_t)e * a.K + i2], xq[a.K - 1 - k + i2], pre);
                d *= dsilu_f(pre);
            }
            acc = fmaf(a.w[(size_t)e * a.K + k], d, acc);
        }
        T *p = dx + ((size_t)n * a.L32 + tom_pi32(a, s)) * a.ldx + e;
        *p = from_f<T>(to_f(*p) + acc);
    }
}

// part: (nch, E, 5): per row chunk {sum dpre * x[tap 0..3], sum dpre}. Block (32, 8) as in
// norm.cu: x over channels, y over rows, then the 8 row partials in a fixed order.
template <typename T>
__global__ void conv_bwd_wb_partial(float *part, const T *dy, const T *x, conv_args a, size_t M,
                                    size_t chunk, int silu)
{
    __shared__ float sp[5][8][33];
    const size_t r0 = (size_t)blockIdx.x * chunk, r1 = min(M, r0 + chunk);
    for (int c0 = 0; c0 < a.E; c0 += 32) {
        const int e = c0 + threadIdx.x;
        float acc[5] = { 0.0f, 0.0f, 0.0f, 0.0f, 0.0f };
        if (e < a.E)
            for (size_t r = r0 + threadIdx.y; r < r1; r += 8) {
                const unsigned n = (unsigned)r / a.L32, j = (unsigned)r - n * a.L32;
                float xv[4];
                bool on[4];
                load_taps(x, a, n, j, e, xv, on);
                float d = to_f(dy[r * a.E + e]);
                if (silu) d *= dsilu_f(pre_from_taps(a, e, xv, on));
                acc[4] += d;
#pragma unroll
                for (int i = 0; i < 4; i++)
                    if (on[i]) acc[i] += d * xv[i];
            }
        for (int q = 0; q < 5; q++) sp[q][threadIdx.y][threadIdx.x] = acc[q];
        __syncthreads();
        if (threadIdx.y < 5 && e < a.E) {
            const int q = threadIdx.y;
            float s = 0.0f;
            for (int k = 0; k < 8; k++) s += sp[q][k][threadIdx.x];
            part[((size_t)blockIdx.x * a.E + e) * 5 + q] = s;
        }
        __syncthreads();
    }
}

__global__ void conv_bwd_wb_final(float *dw, float *db, const float *part, int E, int K, int nch)
{
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= E) return;
    for (int q = 0; q < 5; q++) {
        if (q < 4 && (q >= K || !dw)) continue;
        if (q == 4 && !db) continue;
        double s = 0;
        for (int k = 0; k < nch; k++) s += part[((size_t)k * E + e) * 5 + q];
        if (q < 4) dw[(size_t)e * K + q] += (float)s;
        else db[e] += (float)s;
    }
}

static conv_args make_args(const float *w, const float *b, size_t ldx, int E, size_t L, int K,
                           tom_order_t order, size_t nslices)
{
    ASSERT(K >= 1 && K <= 4 && E >= 1 && ldx >= (size_t)E);
    ASSERT(order != TOM_SLICE || (nslices > 0 && L % nslices == 0));
    conv_args a;
    a.w = w; a.b = b; a.ldx = ldx; a.L = L; a.nslices = nslices ? nslices : 1;
    a.E = E; a.K = K; a.order = (int)order;
    a.L32 = (unsigned)L; a.ns32 = (unsigned)a.nslices; a.m32 = (unsigned)(L / a.nslices);
    return a;
}

void causal_conv1d_forward_gpu(gpu_ctx_t *g, void *y, const void *x, size_t ldx, const float *w,
                               const float *b, int N, int E, size_t L, int K, tom_order_t order,
                               size_t nslices, int silu)
{
    const conv_args a = make_args(w, b, ldx, E, L, K, order, nslices);
    const size_t total = (size_t)N * L * E;
    ASSERT((size_t)N * L * ldx <= 0xffffffffu);     // 32-bit index arithmetic in the kernels
    if (!total) return;
    ACT_DISPATCH(g->act, T, {
        conv_fwd_kernel<T><<<grid_for(g, total, BLOCK), BLOCK, 0, g->stream>>>(
            (T *)y, (const T *)x, a, total, silu);
        KERNEL_CHECK();
    });
}

void causal_conv1d_backward_gpu(gpu_ctx_t *g, void *dx, float *dw, float *db, const void *dy,
                                const void *x, size_t ldx, const float *w, const float *b, int N,
                                int E, size_t L, int K, tom_order_t order, size_t nslices,
                                int silu)
{
    const conv_args a = make_args(w, b, ldx, E, L, K, order, nslices);
    const size_t M = (size_t)N * L, total = M * E;
    if (!total) return;
    ASSERT(M * ldx <= 0xffffffffu);                 // 32-bit index arithmetic in the kernels
    if (dx) ACT_DISPATCH(g->act, T, {
        conv_bwd_dx_kernel<T><<<grid_for(g, total, BLOCK), BLOCK, 0, g->stream>>>(
            (T *)dx, (const T *)dy, (const T *)x, a, total, silu);
        KERNEL_CHECK();
    });
    if (dw || db) {
        size_t nch = (size_t)g->sm_count * 4, fit = g->red_floats / (5 * (size_t)E);
        if (nch > fit) nch = fit;
        if (nch > CEIL_DIV(M, (size_t)64)) nch = CEIL_DIV(M, (size_t)64);
        if (nch < 1) nch = 1;
        const size_t chunk = CEIL_DIV(M, nch);
        nch = CEIL_DIV(M, chunk);
        ACT_DISPATCH(g->act, T, {
            conv_bwd_wb_partial<T><<<(unsigned)nch, dim3(32, 8), 0, g->stream>>>(
                g->red, (const T *)dy, (const T *)x, a, M, chunk, silu);
            KERNEL_CHECK();
        });
        conv_bwd_wb_final<<<CEIL_DIV(E, 128), 128, 0, g->stream>>>(dw, db, g->red, E, K, (int)nch);
        KERNEL_CHECK();
    }
}
