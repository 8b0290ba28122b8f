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
*/
#include "gpu_internal.h"
#include "mamba_kernels.cuh"

#define BLOCK 256

struct conv_args {
    const float *w, *b;
    size_t ldx, L, nslices;
    int E, K, order;
};

// Pre-activation at scanned position j of batch item n, channel e.
template <typename T>
__device__ __forceinline__ float conv_pre(const T *x, const conv_args &a, size_t n, size_t j, int e)
{
    float acc = a.b ? a.b[e] : 0.0f;
    const T *xn = x + n * a.L * a.ldx;
    for (int i = 0; i < a.K; i++) {
        const size_t back = (size_t)(a.K - 1 - i);
        if (j >= back) {
            const size_t r = tom_pi(a.order, j - back, a.L, a.nslices);
            acc = fmaf(a.w[(size_t)e * a.K + i], to_f(xn[r * a.ldx + e]), acc);
        }
    }
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
        const int e = (int)(i % a.E);
        const size_t m = i / a.E, n = m / a.L, j = m % a.L;
        float v = conv_pre(x, a, n, j, e);
        if (silu) v = v * sigmoid_f(v);
        y[i] = from_f<T>(v);
    }
}

// Gradient of the pre-activation at scanned (n, j, e).
template <typename T>
__device__ __forceinline__ float conv_dpre(const T *dy, const T *x, const conv_args &a, size_t n,
                                           size_t j, int e, int silu)
{
    const float d = to_f(dy[(n * a.L + j) * a.E + e]);
    return silu ? d * dsilu_f(conv_pre(x, a, n, j, e)) : d;
}

// dx[n, pi(s), e] += sum_i w[e, i] dpre[n, s + K-1-i, e]   (gather: one writer per element)
template <typename T>
__global__ void conv_bwd_dx_kernel(T *dx, const T *dy, const T *x, conv_args a, size_t total,
                                   int silu)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const int e = (int)(i % a.E);
        const size_t m = i / a.E, n = m / a.L, s = m % a.L;
        float acc = 0.0f;
        for (int k = 0; k < a.K; k++) {
            const size_t t = s + (size_t)(a.K - 1 - k);
            if (t < a.L) acc = fmaf(a.w[(size_t)e * a.K + k], conv_dpre(dy, x, a, n, t, e, silu), acc);
        }
        T *p = dx + (n * a.L + tom_pi(a.order, s, a.L, a.nslices)) * a.ldx + e;
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
                const size_t n = r / a.L, j = r % a.L;
                const float d = conv_dpre(dy, x, a, n, j, e, silu);
                const T *xn = x + n * a.L * a.ldx;
                acc[4] += d;
                for (int i = 0; i < a.K; i++) {
                    const size_t back = (size_t)(a.K - 1 - i);
                    if (j >= back)
                        acc[i] += d * to_f(xn[tom_pi(a.order, j - back, a.L, a.nslices) * a.ldx + e]);
                }
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
    return a;
}

void causal_conv1d_forward_gpu(gpu_ctx_t *g, void *y, const void *x, size_t ldx, const float *w,
                               const float *b, int N, int E, size_t L, int K, tom_order_t order,
                               size_t nslices, int silu)
{
    const conv_args a = make_args(w, b, ldx, E, L, K, order, nslices);
    const size_t total = (size_t)N * L * E;
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
