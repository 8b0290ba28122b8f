/*
elementwise.cu -- activations (ReLU, GELU exact erf, SiLU, softplus with threshold 20), the
residual add and gradient accumulation, and the channel bias add / bias gradient of channels-last
tensors. Twin of common/ops/act.c (formulas and edge cases as there: ReLU'(0) = 0, softplus
returns x above 20). One thread per element (the bias add: per 16-byte vector where C allows)
in grid-stride loops: these ops are memory bound.
Values are loaded as `act` (float or bf16), computed in fp32, stored as `act`.
The bias gradient is a deterministic two-stage column sum (partials per row chunk, then the
chunks added in order by gpu_rows_sum_add, fp32), never atomics.
*/
#include "gpu_internal.h"

#define BLOCK 256
#define GRID_STRIDE(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

// ----------------------------------------------------------------------------
// activation formulas (fp32)

enum { ACT_RELU, ACT_GELU, ACT_SILU, ACT_SOFTPLUS };

template <int A> __device__ __forceinline__ float act_f(float v)
{
    if (A == ACT_RELU) return v > 0.0f ? v : 0.0f;
    if (A == ACT_GELU) return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    if (A == ACT_SILU) return v * sigmoid_f(v);
    return v > 20.0f ? v : log1pf(expf(v));
}

template <int A> __device__ __forceinline__ float act_df(float v)
{
    if (A == ACT_RELU) return v > 0.0f ? 1.0f : 0.0f;
    if (A == ACT_GELU) {
        float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
        return cdf + v * 0.39894228040143268f * expf(-0.5f * v * v);
    }
    if (A == ACT_SILU) return dsilu_of(v, sigmoid_f(v));
    return v > 20.0f ? 1.0f : sigmoid_f(v);
}

// ----------------------------------------------------------------------------
// kernels

template <int A, typename T> __global__ void act_fwd_kernel(T *y, const T *x, size_t n)
{
    GRID_STRIDE(i, n) y[i] = from_f<T>(act_f<A>(to_f(x[i])));
}

template <int A, typename T> __global__ void act_bwd_kernel(T *dx, const T *dy, const T *x, size_t n)
{
    GRID_STRIDE(i, n) dx[i] = from_f<T>(to_f(dx[i]) + to_f(dy[i]) * act_df<A>(to_f(x[i])));
}

template <typename T> __global__ void add_kernel(T *y, const T *a, const T *b, size_t n)
{
    GRID_STRIDE(i, n) y[i] = from_f<T>(to_f(a[i]) + to_f(b[i]));
}

template <typename T> __global__ void accumulate_kernel(T *dst, const T *src, size_t n)
{
    GRID_STRIDE(i, n) dst[i] = from_f<T>(to_f(dst[i]) + to_f(src[i]));
}

template <typename T> __global__ void add_to_f32_kernel(float *dst, const T *src, size_t n)
{
    GRID_STRIDE(i, n) dst[i] += to_f(src[i]);
}

// y[r][c] += b[c] over n / VEC vectors of VEC channels (C % VEC == 0)
template <typename T, int VEC> __global__ void bias_add_kernel(T *y, const float *b, size_t n, int C)
{
    const int CV = C / VEC;
    GRID_STRIDE(i, n / VEC) {
        const int c = (int)(i % (size_t)CV) * VEC;
        float v[VEC];
        ld_vec<T, VEC>(y + i * VEC, v);
#pragma unroll
        for (int k = 0; k < VEC; k++) v[k] += b[c + k];
        st_vec<T, VEC>(y + i * VEC, v);
    }
}

// Stage 1: part[chunk][c] = sum over the chunk's rows of dy[r][c]. Block (32, 8): x runs over
// channels (coalesced), y over rows; then the 8 row-partials are added in a fixed order.
template <typename T>
__global__ void colsum_partial_kernel(float *part, const T *dy, size_t rows, int C, size_t chunk)
{
    __shared__ float sh[8][33];
    size_t r0 = blockIdx.x * chunk, r1 = min(rows, r0 + chunk);
    for (int c0 = 0; c0 < C; c0 += 32) {
        int c = c0 + threadIdx.x;
        float acc = 0.0f;
        if (c < C)
            for (size_t r = r0 + threadIdx.y; r < r1; r += 8) acc += to_f(dy[r * C + c]);
        sh[threadIdx.y][threadIdx.x] = acc;
        __syncthreads();
        if (threadIdx.y == 0 && c < C) {
            float s = 0.0f;
            for (int k = 0; k < 8; k++) s += sh[k][threadIdx.x];
            part[(size_t)blockIdx.x * C + c] = s;
        }
        __syncthreads();
    }
}

// Stage 2 (gpu_rows_sum_add, also the LayerNorm's dgamma / dbeta): out[c] += the sum over the
// rows of part[r * ld + c], a block per 32 columns with SUM_ROW_LANES row lanes: lane r adds
// rows r, r + SUM_ROW_LANES, ... (loads independent of the sum, so they overlap), then the lanes
// in order -- a fixed order. (One thread per column walking every row, as the first version
// did, was a latency chain: ~20 us for 528 rows of a few columns.)
#define SUM_ROW_LANES 16
__global__ void rows_sum_add_kernel(float *out, const float *part, size_t ld, int cols, int rows)
{
    __shared__ float red[SUM_ROW_LANES][33];
    const int c = blockIdx.x * 32 + threadIdx.x, r0 = threadIdx.y;
    float s = 0.0f;
    if (c < cols) {
#pragma unroll 4
        for (int r = r0; r < rows; r += SUM_ROW_LANES) s += part[(size_t)r * ld + c];
    }
    red[r0][threadIdx.x] = s;
    __syncthreads();
    if (r0 != 0 || c >= cols) return;
    float tot = 0.0f;
    for (int r = 0; r < SUM_ROW_LANES; r++) tot += red[r][threadIdx.x];
    out[c] += tot;
}

void gpu_rows_sum_add(gpu_ctx_t *g, float *out, const float *part, size_t ld, int cols, int rows)
{
    if (!out || cols <= 0 || rows <= 0) return;
    rows_sum_add_kernel<<<CEIL_DIV(cols, 32), dim3(32, SUM_ROW_LANES), 0, g->stream>>>(out, part, ld, cols, rows);
    KERNEL_CHECK();
}

// ----------------------------------------------------------------------------
// launchers

template <int A> static void act_fwd(gpu_ctx_t *g, void *y, const void *x, size_t n)
{
    if (!n) return;
    ACT_DISPATCH(g->act, T, act_fwd_kernel<A, T><<<grid_for(g, n, BLOCK), BLOCK, 0, g->stream>>>(
                                (T *)y, (const T *)x, n));
    KERNEL_CHECK();
}

template <int A> static void act_bwd(gpu_ctx_t *g, void *dx, const void *dy, const void *x, size_t n)
{
    if (!n || !dx) return;
    ACT_DISPATCH(g->act, T, act_bwd_kernel<A, T><<<grid_for(g, n, BLOCK), BLOCK, 0, g->stream>>>(
                                (T *)dx, (const T *)dy, (const T *)x, n));
    KERNEL_CHECK();
}

void relu_forward_gpu(gpu_ctx_t *g, void *y, const void *x, size_t n) { act_fwd<ACT_RELU>(g, y, x, n); }
void gelu_forward_gpu(gpu_ctx_t *g, void *y, const void *x, size_t n) { act_fwd<ACT_GELU>(g, y, x, n); }
void silu_forward_gpu(gpu_ctx_t *g, void *y, const void *x, size_t n) { act_fwd<ACT_SILU>(g, y, x, n); }
void softplus_forward_gpu(gpu_ctx_t *g, void *y, const void *x, size_t n)
{
    act_fwd<ACT_SOFTPLUS>(g, y, x, n);
}
void relu_backward_gpu(gpu_ctx_t *g, void *dx, const void *dy, const void *x, size_t n)
{
    act_bwd<ACT_RELU>(g, dx, dy, x, n);
}
void gelu_backward_gpu(gpu_ctx_t *g, void *dx, const void *dy, const void *x, size_t n)
{
    act_bwd<ACT_GELU>(g, dx, dy, x, n);
}
void silu_backward_gpu(gpu_ctx_t *g, void *dx, const void *dy, const void *x, size_t n)
{
    act_bwd<ACT_SILU>(g, dx, dy, x, n);
}
void softplus_backward_gpu(gpu_ctx_t *g, void *dx, const void *dy, const void *x, size_t n)
{
    act_bwd<ACT_SOFTPLUS>(g, dx, dy, x, n);
}

void add_forward_gpu(gpu_ctx_t *g, void *y, const void *a, const void *b, size_t n)
{
    if (!n) return;
    ACT_DISPATCH(g->act, T, add_kernel<T><<<grid_for(g, n, BLOCK), BLOCK, 0, g->stream>>>(
                                (T *)y, (const T *)a, (const T *)b, n));
    KERNEL_CHECK();
}

void gpu_accumulate(gpu_ctx_t *g, void *dst, const void *src, size_t n)
{
    if (!n) return;
    ACT_DISPATCH(g->act, T, accumulate_kernel<T><<<grid_for(g, n, BLOCK), BLOCK, 0, g->stream>>>(
                                (T *)dst, (const T *)src, n));
    KERNEL_CHECK();
}

void gpu_add_to_f32(gpu_ctx_t *g, float *dst, const void *src, gpu_dtype_t ts, size_t n)
{
    if (!n) return;
    ACT_DISPATCH(ts, T, add_to_f32_kernel<T><<<grid_for(g, n, BLOCK), BLOCK, 0, g->stream>>>(
                            dst, (const T *)src, n));
    KERNEL_CHECK();
}

void bias_add_gpu(gpu_ctx_t *g, void *y, const float *b, size_t rows, int C)
{
    size_t n = rows * (size_t)C;
    if (!n) return;
    // 16-byte vectors where C and y allow (a 64-bit modulo per element was most of the time)
    const int vec = vec16_width(gpu_dtype_size(g->act), C, { y });
    ACT_DISPATCH(g->act, T, {
        if (vec == 1)
            bias_add_kernel<T, 1><<<grid_for(g, n, BLOCK), BLOCK, 0, g->stream>>>((T *)y, b, n, C);
        else
            bias_add_kernel<T, 16 / sizeof(T)><<<grid_for(g, n / vec, BLOCK), BLOCK, 0, g->stream>>>(
                (T *)y, b, n, C);
    });
    KERNEL_CHECK();
}

void bias_grad_gpu(gpu_ctx_t *g, float *db, const void *dy, size_t rows, int C)
{
    if (!rows || !db) return;
    int nch = gpu_reduce_chunks(g, rows, 1, (size_t)C, 1, 64);
    size_t chunk = CEIL_DIV(rows, (size_t)nch);
    nch = (int)CEIL_DIV(rows, chunk);
    ACT_DISPATCH(g->act, T, colsum_partial_kernel<T><<<nch, dim3(32, 8), 0, g->stream>>>(
                                g->red, (const T *)dy, rows, C, chunk));
    KERNEL_CHECK();
    gpu_rows_sum_add(g, db, g->red, (size_t)C, C, nch);
}
