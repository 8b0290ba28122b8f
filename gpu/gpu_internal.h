/*
gpu_internal.h -- what the .cu files of gpu/ share and nothing else sees: struct gpu_ctx, the
element-type helpers (float / bf16 loads and stores, fp32 math inside), the launch helpers and
the internal functions one file offers another (workspace growth, reduction scratch).
Later GPU files (Mamba kernels, the whole-model step) include this to plug into the same
context, stream, allocator and workspace.
*/
#ifndef SRM_GPU_INTERNAL_H
#define SRM_GPU_INTERNAL_H
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublas_v2.h>
#include <cublasLt.h>
#include <cudnn.h>
#include "gpu.h"
#include "cuda_check.h"
extern "C" {
#include "check.h"
#include <initializer_list>
#include <stdint.h>
}

#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

typedef __nv_bfloat16 bf16;

struct gpu_alloc_rec { void *p; size_t bytes; const char *what; };
struct conv_cache;          // conv_cudnn.cu
struct gemm_cache;          // gemm.cu

struct gpu_ctx {
    int device;
    gpu_dtype_t act;                // activation element type (precision mode)
    int deterministic;
    int sm_count;                   // multiprocessors: sizes grids of the reduction kernels
    int max_threads_per_sm;
    char name[256];

    cudaStream_t stream;
    cudnnHandle_t cudnn;
    cublasHandle_t cublas;
    cublasLtHandle_t lt;

    // One workspace shared by cuDNN plans and cuBLAS(Lt): work on our one stream is serial.
    void *ws;
    size_t ws_bytes;
    // Scratch for two-stage reductions (norm statistics, bias gradients, loss sums): fixed
    // size, so the number of chunks a reduction uses adapts to it (no allocation in a step).
    float *red;
    size_t red_floats;

    // tracked allocations (memory.cu)
    gpu_alloc_rec *allocs;
    size_t nallocs, cap_allocs;
    size_t mem_current, mem_peak;

    conv_cache *conv;
    gemm_cache *gemm;
};

// ---- internal API between files ----------------------------------------------
// memory.cu: grow the shared workspace to at least `bytes` (syncs the stream first; set-up only).
void gpu_workspace_reserve(gpu_ctx_t *g, size_t bytes);
// conv_cudnn.cu / gemm.cu: create and free the per-context caches.
void gpu_conv_cache_init(gpu_ctx_t *g);
void gpu_conv_cache_free(gpu_ctx_t *g);
void gpu_gemm_cache_init(gpu_ctx_t *g);
void gpu_gemm_cache_free(gpu_ctx_t *g);
// How many row chunks a reduction over `rows` rows of `cols` partial slots per chunk may use:
// enough blocks to fill the GPU (about 4 per SM over `batch` items), at least rows_min rows
// per chunk, and within the context's reduction scratch (`slots` floats per chunk and column).
int gpu_reduce_chunks(const gpu_ctx_t *g, size_t rows, int batch, size_t cols, int slots,
                      size_t rows_min);
// elementwise.cu: dst (f32, n) += (f32) src (type ts, n).
void gpu_add_to_f32(gpu_ctx_t *g, float *dst, const void *src, gpu_dtype_t ts, size_t n);
// out[c] += sum over rows r of part[r * ld + c], c < cols, in a fixed order (the second stage of
// the column sums: bias gradients, LayerNorm's dgamma / dbeta). out NULL: nothing.
void gpu_rows_sum_add(gpu_ctx_t *g, float *out, const float *part, size_t ld, int cols, int rows);
// conv_cudnn.cu: device memory (nothing live in it) that plan autotuning may overwrite with
// its test tensors while conv plans are prepared; NULL / 0 withdraws it.
void gpu_conv_tune_scratch(gpu_ctx_t *g, void *p, size_t bytes);
// autotune.cu: the timing half of plan autotuning (conv_cudnn.cu, gemm.cu).
// Tuning on? SRM_GPU_AUTOTUNE=0/1 decides; unset: on unless deterministic. Off while capturing.
int gpu_autotune_enabled(const gpu_ctx_t *g);
typedef struct { cudaEvent_t e0, e1; } gpu_tuner_t;
int gpu_tuner_init(gpu_tuner_t *t);              // 0, or -1 when no events could be made
void gpu_tuner_free(gpu_tuner_t *t);
// Mean ms of `reps` back-to-back fn(ctx) on stream s (fn returns nonzero when the library
// refuses the launch); -1 when fn or an event call failed.
float gpu_tuner_time(gpu_tuner_t *t, cudaStream_t s, int (*fn)(void *), void *ctx, int reps);
// Index of the fastest of ms[0..n) (ms < 0: failed); stays 0 unless the best is >= 3 % faster;
// -1 when none has a time.
int gpu_tune_pick(const float *ms, int n);
double gpu_wall_s(void);                          // host monotonic clock, seconds
// device.cu: fn(arg)'s launches on g's stream captured and instantiated as one CUDA graph (the
// training step, the scan replay); NULL where capture or instantiation fails, with the CUDA
// error's text in *why and the error cleared, so the caller can go on eagerly.
cudaGraphExec_t gpu_graph_capture(gpu_ctx_t *g, void (*fn)(void *), void *arg, const char **why);

// ---- element-type helpers: storage T, arithmetic in float ---------------------
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x) { return __float2bfloat16_rn(x); }

// The logistic sigmoid with the accurate exponential, and SiLU's derivative from v and a
// sigmoid value s of it: silu'(v) = s (1 + v (1 - s)). One definition for every kernel (and the
// conv1d's host emulation) that needs them.
__host__ __device__ __forceinline__ float sigmoid_f(float v) { return 1.0f / (1.0f + expf(-v)); }
__host__ __device__ __forceinline__ float dsilu_of(float v, float s) { return s * (1.0f + v * (1.0f - s)); }

// How many channels of rows C elements wide (element size esz) a thread moves at once: 16 / esz
// (one 16-byte vector) when C is a whole number of vectors and every operand (NULL: absent)
// starts 16-byte aligned, so that every row of every operand does; else 1.
static inline int vec16_width(size_t esz, int C, std::initializer_list<const void *> ops)
{
    const int v = (int)(16 / esz);
    int ok = C % v == 0;
    for (const void *p : ops) ok = ok && (uintptr_t)p % 16 == 0;
    return ok ? v : 1;
}

// Vector loads / stores of VEC elements (VEC = 1, or 16 bytes: 4 floats or 8 bf16), fp32 inside
// (the norms, LayerNorm, upsample, bias add, the Mamba gate). p must be VEC * sizeof(T) aligned.

template <typename T, int VEC>
__device__ __forceinline__ void ld_vec(const T *p, float *v)
{
    if constexpr (VEC == 1) {
        v[0] = to_f(p[0]);
    } else if constexpr (sizeof(T) == 4) {
        static_assert(VEC == 4, "float vectors are 4 wide");
        const float4 r = *reinterpret_cast<const float4 *>(p);
        v[0] = r.x; v[1] = r.y; v[2] = r.z; v[3] = r.w;
    } else {
        static_assert(VEC == 8, "bf16 vectors are 8 wide");
        const uint4 r = *reinterpret_cast<const uint4 *>(p);
        const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&r);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 f = __bfloat1622float2(h[i]);
            v[2 * i] = f.x; v[2 * i + 1] = f.y;
        }
    }
}

template <typename T, int VEC>
__device__ __forceinline__ void st_vec(T *p, const float *v)
{
    if constexpr (VEC == 1) {
        p[0] = from_f<T>(v[0]);
    } else if constexpr (sizeof(T) == 4) {
        *reinterpret_cast<float4 *>(p) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
        uint4 r;
        __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&r);
#pragma unroll
        for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
        *reinterpret_cast<uint4 *>(p) = r;
    }
}

// Launch body for the context's activation type: `ACT_DISPATCH(g->act, T, stmt)` runs stmt
// with T = float or bf16.
#define ACT_DISPATCH(dt, T, ...)                            \
    do {                                                    \
        if ((dt) == GPU_F32) { typedef float T; __VA_ARGS__; } \
        else { typedef bf16 T; __VA_ARGS__; }               \
    } while (0)

// A 1D grid for n elements with `block` threads, capped (the kernels use grid-stride loops).
static inline unsigned grid_for(const gpu_ctx_t *g, size_t n, int block)
{
    size_t want = CEIL_DIV(n, (size_t)block);
    size_t cap = (size_t)g->sm_count * (g->max_threads_per_sm / block) * 8;
    if (want > cap) want = cap;
    return (unsigned)(want ? want : 1);
}

// ---- 2x2x2 blocks ("space to depth"): the stem (stem_s2d.cu) and the k5 s2 weight gradient
// (conv_wgrad_blocks.cu) run as ordinary convolutions over an input stored as blocks ------------
// Element i of an input stored as 2x2x2 blocks, `front` zero blocks ahead of each axis (the
// stem's layout: 1; plain blocks: 0), (N, Db + front, Hb + front, Wb + front, 8 C) for a
// (N, C, 2 Db, 2 Hb, 2 Wb) volume: its sample n, channel c and voxel (z, y, x) of the volume,
// or in = 0 for a zero block. Channel q C + c of a block holds parity q = 4 qz + 2 qy + qx.
struct s2d_src { size_t n; int c, z, y, x, in; };
__device__ __forceinline__ s2d_src s2d_source(size_t i, int C, int Db, int Hb, int Wb, int front)
{
    const int C8 = 8 * C, ch = (int)(i % C8), q = ch / C;
    size_t t = i / C8;
    const int bx = (int)(t % (Wb + front)); t /= Wb + front;
    const int by = (int)(t % (Hb + front)); t /= Hb + front;
    const int bz = (int)(t % (Db + front));
    s2d_src r;
    r.n = t / (Db + front);
    r.c = ch % C;
    r.in = bz >= front && by >= front && bx >= front;
    r.z = 2 * (bz - front) + (q >> 2);
    r.y = 2 * (by - front) + ((q >> 1) & 1);
    r.x = 2 * (bx - front) + (q & 1);
    return r;
}

// dw (K, SK^3, C) f32 += the block weight's gradient dwb (K, JK^3, 8 C) folded back: tap t of an
// axis is block tap j = (t + OFF) / 2 at parity q = (t + OFF) % 2 (t = 2j + q - OFF), so every
// dw element has one source (a gather). One thread per dw element.
template <typename Tw, int SK, int JK, int OFF>
__global__ void blocks_fold_kernel(float *dw, const Tw *dwb, int C, size_t total)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const int c = (int)(i % C);
        size_t r = i / C;
        const int tx = (int)(r % SK) + OFF; r /= SK;
        const int ty = (int)(r % SK) + OFF; r /= SK;
        const int tz = (int)(r % SK) + OFF;
        const size_t k = r / SK;
        const int q = 4 * (tz & 1) + 2 * (ty & 1) + (tx & 1);
        const size_t src = (((k * JK + (tz >> 1)) * JK + (ty >> 1)) * JK + (tx >> 1)) * 8 * C +
                           (size_t)q * C + c;
        dw[i] += to_f(dwb[src]);
    }
}

// conv_wgrad_blocks.cu: a k5 s2 p2 weight gradient through the input's 2x2x2 blocks (used by
// conv_cudnn.cu): xb (N, big/2, 8 C) act from x (N, big, C) act; dw (K, 5^3, C) f32 += the fold
// of dwb (K, 3^3, 8 C) act.
void wgrad_blocks_input_gpu(gpu_ctx_t *g, void *xb, const void *x, int N, int C, const int big[3]);
void wgrad_blocks_fold_gpu(gpu_ctx_t *g, float *dw, const void *dwb, int K, int C);

// ---- tagged marks (gpu_timer.cu): a profile's finer split of ops that are one op to gm_prof --
// gpu_mark(g, tag) records an event tagged `tag` (>= 0; < 0 closes a span) on g's stream while a
// mark list is armed for g, and does nothing else: unarmed (timed steps, graph captures,
// inference) it costs one pointer test and no CUDA call. Interval i (mark i to i + 1) is
// summed into its tag by gpu_marks_sum (ms[ntags], count[ntags] or NULL; -1 with err on
// overflow or a missing closing mark). Arm only eager work (refused during a capture).
typedef struct gpu_marks gpu_marks_t;
extern gpu_marks_t *gpu_marks_armed;
gpu_marks_t *gpu_marks_new(gpu_ctx_t *g, int cap);
int  gpu_marks_arm(gpu_marks_t *mk, char *err);
void gpu_marks_disarm(void);
void gpu_mark_record(gpu_marks_t *mk, gpu_ctx_t *g, int tag);
int  gpu_marks_sum(gpu_marks_t *mk, double *ms, int *count, int ntags, char *err);
void gpu_marks_free(gpu_marks_t **mk);
static inline void gpu_mark(gpu_ctx_t *g, int tag)
{
    if (gpu_marks_armed) gpu_mark_record(gpu_marks_armed, g, tag);
}

#endif
