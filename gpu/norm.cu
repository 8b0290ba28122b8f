/*
norm.cu -- InstanceNorm (no affine) and GroupNorm (affine), each optionally fused with the ReLU
that follows it in the model (CMMB and downsample IN -> ReLU, ResBlock GN -> ReLU), on
channels-last (N, S, C) tensors. Twin of common/ops/norm.c composed with relu in common/ops/act.c.
InstanceNorm is GroupNorm with G = C groups of one channel and no affine, so one code path.

Statistics are deterministic and two-stage, never atomics:
  1. a grid of (row chunk, n) blocks computes per-channel Welford partials (count, mean, M2)
     of its chunk (block (32, 8): x over channels, coalesced; y over rows);
  2. one thread per (n, group) merges the partials of its channels and chunks in a fixed order
     (Chan's formula, in double) into mean and rstd = 1 / sqrt(var + eps), biased variance.
The backward recomputes xhat (and the ReLU mask) from x, mean and rstd, reduces
A = sum dyr, B = sum dyr * xhat per (n, c) the same way (dyr = dy masked by the ReLU), and
applies dx += rstd * (gamma dyr - mean_group(gamma A) - xhat * mean_group(gamma B)).
dgamma += sum_n B, dbeta += sum_n A.
*/
#include "gpu_internal.h"

#define BLOCK 256

// ----------------------------------------------------------------------------
// stage-1 kernels

__device__ __forceinline__ void chan_merge(float &n, float &m, float &q, float nb, float mb, float qb)
{
    float nn = n + nb;
    if (nb == 0.0f) return;
    float d = mb - m;
    m += d * (nb / nn);
    q += qb + d * d * (n * nb / nn);
    n = nn;
}

// part: (N, nch, C, 3) Welford partials of x (N, S, C) over row chunks of `chunk` rows.
template <typename T>
__global__ void stats_partial_kernel(float *part, const T *x, size_t S, int C, size_t chunk)
{
    __shared__ float sn[8][33], sm[8][33], sq[8][33];
    const int n = blockIdx.y, k = blockIdx.x, nch = gridDim.x;
    const size_t r0 = (size_t)k * chunk, r1 = min(S, r0 + chunk);
    const T *xn = x + (size_t)n * S * C;
    for (int c0 = 0; c0 < C; c0 += 32) {
        const int c = c0 + threadIdx.x;
        float cnt = 0.0f, mean = 0.0f, m2 = 0.0f;
        if (c < C)
            for (size_t r = r0 + threadIdx.y; r < r1; r += 8) {
                float v = to_f(xn[r * C + c]);
                cnt += 1.0f;
                float d = v - mean;
                mean += d / cnt;
                m2 += d * (v - mean);
            }
        sn[threadIdx.y][threadIdx.x] = cnt;
        sm[threadIdx.y][threadIdx.x] = mean;
        sq[threadIdx.y][threadIdx.x] = m2;
        __syncthreads();
        if (threadIdx.y == 0 && c < C) {
            float a = sn[0][threadIdx.x], b = sm[0][threadIdx.x], q = sq[0][threadIdx.x];
            for (int j = 1; j < 8; j++)
                chan_merge(a, b, q, sn[j][threadIdx.x], sm[j][threadIdx.x], sq[j][threadIdx.x]);
            float *o = part + (((size_t)n * nch + k) * C + c) * 3;
            o[0] = a; o[1] = b; o[2] = q;
        }
        __syncthreads();
    }
}

// mean, rstd: (N, G). One thread per (n, g), merging chunks then channels in a fixed order.
__global__ void stats_final_kernel(float *mean, float *rstd, const float *part, int N, int C, int G,
                                   int nch, double eps)
{
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= N * G) return;
    int n = t / G, gi = t % G, cg = C / G;
    double cnt = 0, m = 0, q = 0;
    for (int k = 0; k < nch; k++)
        for (int c = gi * cg; c < (gi + 1) * cg; c++) {
            const float *p = part + (((size_t)n * nch + k) * C + c) * 3;
            double nb = p[0];
            if (nb == 0) continue;
            double nn = cnt + nb, d = (double)p[1] - m;
            m += d * (nb / nn);
            q += (double)p[2] + d * d * (cnt * nb / nn);
            cnt = nn;
        }
    mean[t] = (float)m;
    rstd[t] = (float)(1.0 / sqrt(q / cnt + eps));
}

template <typename T>
__global__ void norm_apply_kernel(T *y, const T *x, const float *mean, const float *rstd,
                                  const float *gamma, const float *beta, size_t S, int C, int G,
                                  int relu, size_t total)
{
    const int cg = C / G;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int c = (int)(i % C);
        size_t n = i / ((size_t)S * C);
        size_t s = n * G + c / cg;
        float v = (to_f(x[i]) - mean[s]) * rstd[s];
        if (gamma) v = v * gamma[c] + beta[c];
        if (relu) v = v > 0.0f ? v : 0.0f;
        y[i] = from_f<T>(v);
    }
}

// ----------------------------------------------------------------------------
// backward kernels

// The upstream gradient after the fused ReLU's mask, and xhat.
template <typename T>
__device__ __forceinline__ float masked_dy(const T *dy, const T *x, size_t i, int c, float mu,
                                           float rs, const float *gamma, const float *beta,
                                           int relu, float *xhat)
{
    float xh = (to_f(x[i]) - mu) * rs;
    *xhat = xh;
    float g = to_f(dy[i]);
    if (relu) {
        float pre = gamma ? xh * gamma[c] + beta[c] : xh;
        if (!(pre > 0.0f)) g = 0.0f;
    }
    return g;
}

// part: (N, nch, C, 2) partial sums {dyr, dyr * xhat}.
template <typename T>
__global__ void grad_partial_kernel(float *part, const T *dy, const T *x, const float *mean,
                                    const float *rstd, const float *gamma, const float *beta,
                                    size_t S, int C, int G, int relu, size_t chunk)
{
    __shared__ float sa[8][33], sb[8][33];
    const int n = blockIdx.y, k = blockIdx.x, nch = gridDim.x, cg = C / G;
    const size_t r0 = (size_t)k * chunk, r1 = min(S, r0 + chunk);
    const size_t base = (size_t)n * S * C;
    for (int c0 = 0; c0 < C; c0 += 32) {
        const int c = c0 + threadIdx.x;
        float a = 0.0f, b = 0.0f;
        if (c < C) {
            float mu = mean[n * G + c / cg], rs = rstd[n * G + c / cg];
            for (size_t r = r0 + threadIdx.y; r < r1; r += 8) {
                float xh;
                float gr = masked_dy(dy, x, base + r * C + c, c, mu, rs, gamma, beta, relu, &xh);
                a += gr;
                b += gr * xh;
            }
        }
        sa[threadIdx.y][threadIdx.x] = a;
        sb[threadIdx.y][threadIdx.x] = b;
        __syncthreads();
        if (threadIdx.y == 0 && c < C) {
            float ta = 0.0f, tb = 0.0f;
            for (int j = 0; j < 8; j++) { ta += sa[j][threadIdx.x]; tb += sb[j][threadIdx.x]; }
            float *o = part + (((size_t)n * nch + k) * C + c) * 2;
            o[0] = ta; o[1] = tb;
        }
        __syncthreads();
    }
}

// AB: (2, N, C) = chunk sums of A and B, in order, in double.
__global__ void grad_sum_kernel(float *AB, const float *part, int N, int C, int nch)
{
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= N * C) return;
    int n = t / C, c = t % C;
    double a = 0, b = 0;
    for (int k = 0; k < nch; k++) {
        const float *p = part + (((size_t)n * nch + k) * C + c) * 2;
        a += p[0];
        b += p[1];
    }
    AB[t] = (float)a;
    AB[(size_t)N * C + t] = (float)b;
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

template <typename T>
__global__ void grad_apply_kernel(T *dx, const T *dy, const T *x, const float *mean,
                                  const float *rstd, const float *gamma, const float *beta,
                                  const float *M, int N, size_t S, int C, int G, int relu,
                                  size_t total)
{
    const int cg = C / G;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int c = (int)(i % C);
        size_t n = i / ((size_t)S * C);
        size_t s = n * G + c / cg;
        float rs = rstd[s], xh;
        float gr = masked_dy(dy, x, i, c, mean[s], rs, gamma, beta, relu, &xh);
        float gm = gamma ? gamma[c] : 1.0f;
        float m1 = M[s], m2 = M[(size_t)N * G + s];
        dx[i] = from_f<T>(to_f(dx[i]) + rs * (gm * gr - m1 - xh * m2));
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

static void norm_forward(gpu_ctx_t *g, void *y, float *mean, float *rstd, const void *x,
                         const float *gamma, const float *beta, int N, int C, int G, size_t S,
                         double eps, int relu)
{
    ASSERT(N > 0 && C > 0 && G > 0 && C % G == 0 && S > 0);
    size_t chunk;
    int nch = norm_chunks(g, N, C, S, 3, 0, &chunk);
    ACT_DISPATCH(g->act, T, stats_partial_kernel<T><<<dim3(nch, N), dim3(32, 8), 0, g->stream>>>(
                                g->red, (const T *)x, S, C, chunk));
    KERNEL_CHECK();
    stats_final_kernel<<<CEIL_DIV(N * G, 128), 128, 0, g->stream>>>(mean, rstd, g->red, N, C, G,
                                                                     nch, eps);
    KERNEL_CHECK();
    size_t total = (size_t)N * S * C;
    ACT_DISPATCH(g->act, T, norm_apply_kernel<T><<<grid_for(g, total, BLOCK), BLOCK, 0, g->stream>>>(
                                (T *)y, (const T *)x, mean, rstd, gamma, beta, S, C, G, relu, total));
    KERNEL_CHECK();
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
    ACT_DISPATCH(g->act, T, grad_partial_kernel<T><<<dim3(nch, N), dim3(32, 8), 0, g->stream>>>(
                                part, (const T *)dy, (const T *)x, mean, rstd, gamma, beta, S, C,
                                G, relu, chunk));
    KERNEL_CHECK();
    grad_sum_kernel<<<CEIL_DIV(N * C, 128), 128, 0, g->stream>>>(AB, part, N, C, nch);
    KERNEL_CHECK();
    if (dgamma || dbeta) {
        affine_grad_kernel<<<CEIL_DIV(C, 128), 128, 0, g->stream>>>(dgamma, dbeta, AB, N, C);
        KERNEL_CHECK();
    }
    if (!dx) return;
    grad_means_kernel<<<CEIL_DIV(N * G, 128), 128, 0, g->stream>>>(M, AB, gamma, N, C, G, S);
    KERNEL_CHECK();
    size_t total = (size_t)N * S * C;
    ACT_DISPATCH(g->act, T, grad_apply_kernel<T><<<grid_for(g, total, BLOCK), BLOCK, 0, g->stream>>>(
                                (T *)dx, (const T *)dy, (const T *)x, mean, rstd, gamma, beta, M,
                                N, S, C, G, relu, total));
    KERNEL_CHECK();
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
