/*
mamba_kernels.cuh -- device helpers shared by the Mamba kernels (causal_conv1d.cu,
selective_scan*.cu, mamba_layer.cu): the ToM token order pi(j) of tom_index() in
common/op_shapes.c, softplus with threshold 20, sigmoid, and the scan's chunk length.
Only .cu files include this (after gpu_internal.h).
*/
#ifndef SRM_MAMBA_KERNELS_CUH
#define SRM_MAMBA_KERNELS_CUH

// Tokens per scan chunk: one warp lane per token in the backward, states of a chunk kept in
// registers (selective_scan_bwd.cu), and the granularity of the saved boundary states.
#define SCAN_T 32
#define SCAN_NS 16

// pi(j): position in the original order of the j-th scanned token (architecture.md §5.4), in
// index type I (size_t in the scans, unsigned in the conv1d backward's 32-bit tiles).
// m = L / nslices, formed once by the caller (a division per token costs ~20 instructions).
template <typename I>
__device__ __forceinline__ I tom_pi(int order, I j, I L, I nslices, I m)
{
    if (order == TOM_FORWARD) return j;
    if (order == TOM_REVERSE) return L - 1 - j;
    return (j % nslices) * m + j / nslices;
}

// 2^x with the MUFU instruction alone (relative error ~2^-22, flushes denormal results to 0):
// the state decays exp(dt A) are computed as exp2(dt * A log2(e)), A pre-scaled once.
#define LOG2E_F 1.4426950408889634f
__device__ __forceinline__ float ex2_fast(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// The same instruction, but never merged with an identical one: the backward recomputes the
// decays of its forward recompute on purpose (keeping 32 of them live costs more registers
// than the extra MUFU; selective_scan_bwd.cu), and a plain asm statement would be CSE'd.
__device__ __forceinline__ float ex2_fast_again(float x)
{
    float y;
    asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// 2^x to ~1 ulp with unbiased rounding, for the strict fp32 mode: the MUFU approximation above
// is off by up to 2^-22 with a systematic sign, and a state whose decay a = exp(dt A) is close to
// 1 (dt = 1e-3, A = -1: a memory of ~1000 tokens) turns a bias e of a into a bias of about
// e / (1 - a) of h -- 2e-4 relative, which the fp32 gradient checks of the whole model (1e-4)
// see. Range reduction x = n + f (exact), e^(f ln2) by a degree-7 polynomial (|f ln2| <= 0.35:
// truncation 5e-9 relative), 2^n by the exponent bits; results below 2^-125 flush to 0.
__device__ __forceinline__ float exp2_acc(float x)
{
    if (x < -125.0f) return 0.0f;
    const float n = rintf(x), r = (x - n) * 0.69314718055994531f;
    float p = 1.0f / 5040.0f;
    p = fmaf(p, r, 1.0f / 720.0f);
    p = fmaf(p, r, 1.0f / 120.0f);
    p = fmaf(p, r, 1.0f / 24.0f);
    p = fmaf(p, r, 1.0f / 6.0f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    return p * __int_as_float(((int)n + 127) << 23);
}
// The scan's decays: exact (strict fp32 mode) or the MUFU instruction (bf16 mode, where the
// bf16 inputs dominate the error). The mode is a template argument only: as a run-time flag it
// put a branch on every decay (v12, v50).
template <int EXACT> __device__ __forceinline__ float scan_ex2(float x)
{
    if constexpr (EXACT) return exp2_acc(x);
    else return ex2_fast(x);
}

__device__ __forceinline__ float softplus20_f(float v) { return v > 20.0f ? v : log1pf(expf(v)); }
// softplus for bf16 layers without log1pf / expf (~45 instructions a use; this ~16, two of them
// MUFU): softplus(v) = max(v, 0) + log1p(e), e = exp(-|v|) in (0, 1] by the MUFU exponential,
// and log1p(e) = 2 atanh(s) = 2 s (1 + s^2/3 + ... + s^12/13), s = e / (2 + e) in (0, 1/3]
// (truncation < (1/9)^7 / 15 = 1.4e-8 relative; the MUFU pair ~2^-22 each). Relative error
// a few 1e-7 for |v| <= 5, growing to ~4e-6 at v = -85 with the rounding of |v| log2(e)
// (test_gpu_mamba's step-size check), far under bf16's 4e-3. The threshold holds by itself:
// for v > 20, log1p(e) < 2.1e-9 is under half an ulp of v. e comes back for the derivative.
__device__ __forceinline__ float softplus_fast(float v, float &e)
{
    e = ex2_fast(-fabsf(v) * LOG2E_F);
    const float sv = __fdividef(e, 2.0f + e), s2 = sv * sv;
    float p = 1.0f / 13.0f;
    p = fmaf(p, s2, 1.0f / 11.0f);
    p = fmaf(p, s2, 1.0f / 9.0f);
    p = fmaf(p, s2, 1.0f / 7.0f);
    p = fmaf(p, s2, 1.0f / 5.0f);
    p = fmaf(p, s2, 1.0f / 3.0f);
    p = fmaf(p, s2, 1.0f);
    return fmaf(2.0f * sv, p, fmaxf(v, 0.0f));
}
// The step size delta = softplus(raw) of a layer of element type T: the fast form above for
// bf16 layers, softplus20_f for fp32 ones. Every scan kernel forms it through this (or
// softplus20_d below, the same operations), so the forward and the backward's recomputes agree
// bit for bit.
template <typename T> __device__ __forceinline__ float softplus20_t(float v)
{
    if constexpr (sizeof(T) == 2) { float e; return softplus_fast(v, e); }
    else return softplus20_f(v);
}
// The sigmoid for a layer of element type T: bf16 layers take the fast exponential and division
// (relative error ~1e-7, far under bf16's 4e-3 rounding; the accurate pair costs ~16 issue
// slots per use), fp32 layers the accurate one.
template <typename T> __device__ __forceinline__ float sigmoid_t(float v)
{
    if constexpr (sizeof(T) == 2) return __fdividef(1.0f, 1.0f + __expf(-v));
    else return sigmoid_f(v);
}
// softplus20_t<T>(v) (the same operations, bit for bit) and its derivative sigmoid(v): for
// bf16 from the same exponential, sigmoid(v) = 1 / (1 + e) for v >= 0 and e / (1 + e) below;
// for fp32 as before (sharing the exponential there doubled scan_bwd_main's spills)
template <typename T> __device__ __forceinline__ float softplus20_d(float v, float &dsp)
{
    if constexpr (sizeof(T) == 2) {
        float e;
        const float dt = softplus_fast(v, e);
        const float r = __fdividef(1.0f, 1.0f + e);
        dsp = v >= 0.0f ? r : e * r;
        return dt;
    } else {
        const float dt = softplus20_f(v);
        dsp = v > 20.0f ? 1.0f : sigmoid_f(v);
        return dt;
    }
}

// 16-byte asynchronous global -> shared copies (sm_80+): the copy runs while the thread goes on
// and costs no registers until it is waited for. bytes = 16, or 0 for a zero fill (the source
// is then not read, but must still be a valid address).
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, int bytes)
{
    const unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(sa), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// every copy this thread committed has landed (other threads' need a barrier after this)
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// ---- selective scan internals shared by selective_scan.cu and selective_scan_bwd.cu ----
// Kernel view of scan_gpu_t (passed by value).
struct scan_kdir {
    const void *u, *xdt, *B, *C, *z;
    const float *Wdt, *A_log, *D, *bias;
    const float *A;         // -exp(A_log), (E, 16): formed once per call (scan_prepare_A)
    void *du, *dB, *dC, *dxdt;
    float *dWdt, *ddelta, *dA_log, *dD, *dbias;
    int order;
};
struct scan_k {
    int N, E, ndir, nch;
    int R;                  // scan_gpu_t.R
    int exact;              // 1: exp2_acc for the decays (strict fp32 mode), 0: ex2_fast
    int ow;                 // scan_gpu_t.overwrite
    size_t L, nslices, ldbc, ldz;
    size_t m;               // L / nslices, tom_pi's slice length (formed once, on the host)
    scan_kdir d[3];
};
scan_k scan_kernel_args(const gpu_ctx_t *g, const scan_gpu_t *s);

// srow[t] = n L + pi(j0 + t), the original-order row (dy / y / z) of each of a chunk's tokens,
// one thread per token (blockDim >= SCAN_T): in the slice order pi is a 64-bit div / mod, as
// many instructions as a token's 16-state update, so once per token, not per (token, channel).
// Tail tokens (t >= tn) get row 0, never read. The caller synchronizes before reading srow.
__device__ __forceinline__ void scan_chunk_rows(size_t *srow, const scan_k &k, int order, int n,
                                                size_t j0, int tn)
{
    if (threadIdx.x < SCAN_T)
        srow[threadIdx.x] = (int)threadIdx.x < tn
            ? (size_t)n * k.L + tom_pi(order, j0 + threadIdx.x, k.L, k.nslices, k.m) : 0;
}

// The fused dt projection: delta_raw(t, e) = sum_r x_dt(t, r) W_dt(e, r), fp32, one fmaf per r
// from r = 0 up. Every scan kernel forms it through scan_dt_tokens, so the forward, the
// backward's recomputes and its gradients see bit-identical step sizes.
// xs: the chunk's x_dt staged in shared memory transposed, x_dt(t, r) at xs[r * SCAN_T + t]
// (zeros past tn): a thread's 32 tokens of one r are contiguous (16-byte loads, no index math).
template <typename T>
__device__ __forceinline__ void scan_stage_xdt(float *xs, const scan_k &k, const scan_kdir &P, int n,
                                               size_t j0, int tn)
{
    const T *x = (const T *)P.xdt;
    for (int i = threadIdx.x; i < SCAN_T * k.R; i += blockDim.x) {
        const int t = i / k.R, r = i % k.R;
        xs[r * SCAN_T + t] = t < tn ? to_f(x[((size_t)n * k.L + j0 + t) * k.ldbc + r]) : 0.0f;
    }
}
// ws: the W_dt rows of channels [e0, e0 + cols) (past E: zeros), one coalesced copy per block,
// so each thread's row comes from shared memory, not R dependent global round trips
__device__ __forceinline__ void scan_stage_wdt(float *ws, const scan_k &k, const scan_kdir &P,
                                               int e0, int cols)
{
    for (int i = threadIdx.x; i < cols * k.R; i += blockDim.x)
        ws[i] = e0 + i / k.R < k.E ? P.Wdt[(size_t)e0 * k.R + i] : 0.0f;
}
// tokens t0, t0 + STRIDE, ... (NT of them) of the chunk for one channel (w: its W_dt row, in
// shared or global memory); contiguous tokens (STRIDE 1, t0 a multiple of 4) load 16 bytes
template <int NT, int STRIDE = 1>
__device__ __forceinline__ void scan_dt_tokens(float (&a)[NT], const float *xs, int t0,
                                               const float *w, int R)
{
#pragma unroll
    for (int t = 0; t < NT; t++) a[t] = 0.0f;
    for (int r = 0; r < R; r++) {
        const float wr = w[r], *xr = xs + r * SCAN_T + t0;
        if constexpr (STRIDE == 1) {
            const float4 *x4 = (const float4 *)xr;
#pragma unroll
            for (int q = 0; q < NT / 4; q++) {
                const float4 v = x4[q];
                a[4 * q] = fmaf(v.x, wr, a[4 * q]);
                a[4 * q + 1] = fmaf(v.y, wr, a[4 * q + 1]);
                a[4 * q + 2] = fmaf(v.z, wr, a[4 * q + 2]);
                a[4 * q + 3] = fmaf(v.w, wr, a[4 * q + 3]);
            }
        } else {
#pragma unroll
            for (int q = 0; q < NT; q++) a[q] = fmaf(xr[q * STRIDE], wr, a[q]);
        }
    }
}
// The step sizes delta = softplus20_t<T>(delta_raw + bias) of tokens [t0, t0 + nt) of the chunk
// (the whole chunk by default; nt a multiple of SCAN_T / 4) for the thread's channel into
// dts[(t - t0) * eb + el], a quarter of the chunk at a time (all 32 accumulators at once raised
// the adjoint summary from 56 to 68 registers, 12 -> 9 blocks per SM; halves 61). The softplus
// is formed here, eight independent tokens at once, not in the token walks that read dts: there
// its dependent chain (two MUFU round trips, eight FMAs) stood in front of each token's decays
// and cost the emit 6-20 % (v51).
template <typename T>
__device__ __forceinline__ void scan_delta_to_shared(float *dts, int eb, int el, const float *xs,
                                                     const float *w, int R, float bias, int t0 = 0,
                                                     int nt = SCAN_T)
{
    constexpr int NT = SCAN_T / 4;
#pragma unroll 1
    for (int h = 0; h < nt; h += NT) {
        float a[NT];
        scan_dt_tokens(a, xs, t0 + h, w, R);
#pragma unroll
        for (int t = 0; t < NT; t++) dts[(h + t) * eb + el] = softplus20_t<T>(a[t] + bias);
    }
}
// A channel's 16 values of A = -exp(A_log) (0 past E), loaded by the thread-per-channel kernels
// before their staging, so the loads' latency hides under it (waiting for them after the barrier
// was the emit's largest single stall under ncu, ~9 % of its samples); scan_A_of scales them to
// A log2(e) after it (exp(dt A) = 2^(dt A log2 e)).
__device__ __forceinline__ void scan_ld_A(float (&a)[SCAN_NS], const scan_kdir &P, int e, int E)
{
#pragma unroll
    for (int s = 0; s < SCAN_NS; s++) a[s] = e < E ? P.A[e * SCAN_NS + s] : 0.0f;
}
__device__ __forceinline__ void scan_A_of(float (&a)[SCAN_NS])
{
#pragma unroll
    for (int s = 0; s < SCAN_NS; s++) a[s] *= LOG2E_F;
}
// The chunk's B and / or C columns (NULL: not wanted) into shared memory as f32 [t][s], zeros
// past tn. Loads go out in batches of SCAN_BC_BATCH per thread before their stores: a load after
// a shared store may not move above it (the pointers could alias), so the plain loop waited one
// round trip per element (4-6 % of each thread-per-channel kernel's stall samples under ncu).
#define SCAN_BC_BATCH 4
template <typename T>
__device__ __forceinline__ void scan_stage_bc(float (*Bs)[SCAN_NS], float (*Cs)[SCAN_NS],
                                              const scan_k &k, const scan_kdir &P, int n,
                                              size_t j0, int tn)
{
    const T *B = (const T *)P.B, *C = (const T *)P.C;
    for (int i0 = 0; i0 < SCAN_T * SCAN_NS; i0 += SCAN_BC_BATCH * blockDim.x) {
        T bv[SCAN_BC_BATCH], cv[SCAN_BC_BATCH];
#pragma unroll
        for (int q = 0; q < SCAN_BC_BATCH; q++) {
            const int i = i0 + q * blockDim.x + threadIdx.x, t = i / SCAN_NS;
            const bool ok = i < SCAN_T * SCAN_NS && t < tn;
            const size_t r = ((size_t)n * k.L + j0 + t) * k.ldbc + i % SCAN_NS;
            bv[q] = Bs && ok ? B[r] : from_f<T>(0.0f);
            cv[q] = Cs && ok ? C[r] : from_f<T>(0.0f);
        }
#pragma unroll
        for (int q = 0; q < SCAN_BC_BATCH; q++) {
            const int i = i0 + q * blockDim.x + threadIdx.x;
            if (i >= SCAN_T * SCAN_NS) break;
            if (Bs) Bs[i / SCAN_NS][i % SCAN_NS] = to_f(bv[q]);
            if (Cs) Cs[i / SCAN_NS][i % SCAN_NS] = to_f(cv[q]);
        }
    }
}
// The common start of the thread-per-channel kernels (forward summary and emit, adjoint
// summary): B / C as wanted (scan_stage_bc), the tokens' original rows (srow, NULL: not
// wanted), x_dt and the W_dt rows of channels [e0, e0 + eb). The caller synchronizes.
template <typename T>
__device__ __forceinline__ void scan_chan_stage(float (*Bs)[SCAN_NS], float (*Cs)[SCAN_NS],
                                                size_t *srow, float *xs, float *ws,
                                                const scan_k &k, const scan_kdir &P, int n,
                                                size_t j0, int tn, int e0, int eb)
{
    scan_stage_bc<T>(Bs, Cs, k, P, n, j0, tn);
    if (srow) scan_chunk_rows(srow, k, P.order, n, j0, tn);
    scan_stage_xdt<T>(xs, k, P, n, j0, tn);
    scan_stage_wdt(ws, k, P, e0, eb);
}
// dynamic shared memory of the forward's thread-per-channel kernels: a per-(token, channel)
// array of `per` bytes per element (SCAN_T x eb), then the staged x_dt (SCAN_T x R f32) and W_dt
// rows (eb x R f32). scan_chan_shm sizes it, scan_chan_carve cuts the kernel's extern buffer
// into it. (The adjoint summary holds half a chunk and staged rows: bsum_shm.)
static inline size_t scan_chan_shm(int eb, int R, size_t per)
{
    return (size_t)SCAN_T * eb * per + (size_t)(SCAN_T + eb) * R * sizeof(float);
}
template <typename E>
__device__ __forceinline__ E *scan_chan_carve(float4 *shm, int eb, int R, float *&xs, float *&ws)
{
    E *arr = (E *)shm;                              // [t * eb + channel]
    xs = (float *)(arr + SCAN_T * eb);              // [r * SCAN_T + t]: x_dt (scan_stage_xdt)
    ws = xs + SCAN_T * R;                           // [channel * R + r]: W_dt (scan_stage_wdt)
    return arr;
}
// Lets `kernel` take `bytes` of dynamic shared memory where that and its static shared memory
// pass the default 48 KB (wide x_dt: R = 64 at 128 channels is 72 KB in the forward summary).
// Only ever raises the kernel's limit: a captured graph may hold an earlier, larger launch.
// Not stream-ordered.
template <typename K>
static inline void scan_allow_shm(K kernel, size_t bytes)
{
    cudaFuncAttributes fa;
    CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
    if (bytes + fa.sharedSizeBytes > 48 * 1024 && bytes > (size_t)fa.maxDynamicSharedSizeBytes)
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// Channels per block of the thread-per-channel scan kernels (forward summary and emit, adjoint
// summary): E split into ceil(E / 128) blocks of equal width, a multiple of 32 -- 96 at E = 96
// and 192, 128 at 384 and 768. One block of 768 threads per chunk left the small levels
// (L = 64 / 512 -> 2 / 16 chunks) on a few SMs, MUFU-bound there.
static inline int scan_block_width(int E)
{
    const int parts = (E + 127) / 128;
    return ((E + parts - 1) / parts + 31) / 32 * 32;
}

// Workspace views (f32): S (ndir, N, nch, E) chunk sums of delta; yf (ndir, N, L, E) the
// forward's per-direction outputs for small shapes (NULL otherwise; over the views behind it,
// which only the backward uses); big (ndir, N, nch, E, 16);
// Dp, bp (ndir, N, nch, E) partial dD / ddelta_bias of each chunk; aux (scan_bwd_aux_bytes):
// the backward's channel-split dB / dC / dx_dt partials, then its column sums over row
// ranges; Wp (ndir, N, nch, E, R) partial dW_dt of each chunk.
struct scan_ws { float *A, *S, *yf, *big, *Dp, *bp, *aux, *Wp; };
scan_ws scan_workspace_views(void *ws, const scan_gpu_t *s);
// k.d[*].A = w.A + d E 16, filled with -exp(A_log) of every direction: every scan kernel reads A
// from there instead of forming 16 exponentials per thread (per chunk, per pair)
void scan_prepare_A(gpu_ctx_t *g, scan_k &k, const scan_ws &w);
size_t scan_bwd_aux_bytes(const scan_gpu_t *s);

// In place over buf (ndir, N, nch, E*16): per (dir, n, column), with a_c = exp(A * S[c, e]),
// replaces the chunk-local values b_c by the carry INTO each chunk of h -> a_c h + b_c run over
// the chunks in order (reverse = 0: from chunk 0, h = 0 before it; reverse = 1: from the last).
void scan_carry_pass(gpu_ctx_t *g, float *buf, const float *S, const scan_k &k, int reverse);

#endif
