/*
loss.cu -- training losses on channels-last logits (N, S, K): softmax Dice with one-hot labels,
cross-entropy, and sigmoid Dice over label regions. Twin of common/ops/loss.c (MONAI DiceLoss
semantics, dice_cfg_t in ops.h). Forward writes the loss into one device float (no host sync
in a step); backward recomputes the sums it needs and ACCUMULATES scale * dloss/dlogits.

Sums are deterministic and two-stage: blocks of 256 threads each reduce one chunk of voxels
(tree reduction in shared memory, fixed order) into per-chunk partials; one thread per
(n, slot) adds the chunks in order in double; one thread turns the sums into the loss.
Softmax over K is computed per voxel from K contiguous logits (max-shifted, as the CPU twin).
Voxels labelled LABEL_IGNORE (labels.h) are in no sum and get no gradient; cross-entropy divides
by the batch's other voxels, counted on the device (its own slot, or the Dice G sums).
*/
#include "gpu_internal.h"

#define BLOCK 256
#define KMAX_GPU 32          // classes / regions a kernel keeps in registers

enum { L_DICE_SOFTMAX, L_CE, L_DICE_SIGMOID };

typedef struct {
    int kind, N, K;          // K = classes (softmax) or regions R (sigmoid)
    size_t S;
    dice_cfg_t c;
    int k0;                  // first class in the Dice mean (softmax Dice without background: 1)
} loss_args_t;

typedef struct { uint8_t member[REGIONS_MAX][256]; } members_t;

__device__ __forceinline__ float block_sum(float v, float *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = BLOCK / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

// Softmax of one voxel's K logits: returns max and z = sum exp(l - max).
template <typename T>
__device__ __forceinline__ void softmax_mz(const T *lg, int K, float *mx, float *z)
{
    float m = to_f(lg[0]);
    for (int k = 1; k < K; k++) m = fmaxf(m, to_f(lg[k]));
    float s = 0.0f;
    for (int k = 0; k < K; k++) s += expf(to_f(lg[k]) - m);
    *mx = m;
    *z = s;
}

// ----------------------------------------------------------------------------
// stage 1: partials (N, nch, slots). Softmax Dice slots: I[k], P[k], G[k] (3K);
// CE: 2 slots (sum, labelled voxels); sigmoid Dice: I[r], P[r], G[r] (3R).
template <typename T>
__global__ void loss_partial_kernel(float *part, const T *logits, const uint8_t *labels,
                                    loss_args_t a, members_t mem, size_t chunk)
{
    __shared__ float sh[BLOCK];
    const int n = blockIdx.y, k = blockIdx.x, nch = gridDim.x, K = a.K;
    const int slots = a.kind == L_CE ? 2 : 3 * K;
    const size_t s0 = (size_t)k * chunk, s1 = min(a.S, s0 + chunk);
    float accI[KMAX_GPU], accP[KMAX_GPU], accG[KMAX_GPU], acc = 0.0f, cnt = 0.0f;
    for (int q = 0; q < KMAX_GPU; q++) accI[q] = accP[q] = accG[q] = 0.0f;
    for (size_t s = s0 + threadIdx.x; s < s1; s += BLOCK) {
        const T *lg = logits + ((size_t)n * a.S + s) * K;
        int lab = labels[(size_t)n * a.S + s];
        if (lab == LABEL_IGNORE) continue;
        if (a.kind == L_DICE_SIGMOID) {
#pragma unroll
            for (int r = 0; r < KMAX_GPU; r++) {
                if (r >= K) break;
                float p = sigmoid_f(to_f(lg[r])), t = mem.member[r][lab] ? 1.0f : 0.0f;
                accI[r] += p * t;
                accP[r] += a.c.squared_pred ? p * p : p;
                accG[r] += t;
            }
            continue;
        }
        if (lab >= K) continue;          // invalid label: a loader bug (the CPU twin ASSERTs)
        float mx, z;
        softmax_mz(lg, K, &mx, &z);
        if (a.kind == L_CE) {
            acc += mx + logf(z) - to_f(lg[lab]);
            cnt += 1.0f;
            continue;
        }
#pragma unroll
        for (int q = 0; q < KMAX_GPU; q++) {
            if (q >= K) break;
            float p = expf(to_f(lg[q]) - mx) / z;
            accP[q] += a.c.squared_pred ? p * p : p;
            if (q == lab) { accI[q] += p; accG[q] += 1.0f; }
        }
    }
    float *o = part + ((size_t)n * nch + k) * slots;
    if (a.kind == L_CE) {
        float t = block_sum(acc, sh), m = block_sum(cnt, sh);
        if (threadIdx.x == 0) { o[0] = t; o[1] = m; }
        return;
    }
#pragma unroll
    for (int q = 0; q < KMAX_GPU; q++) {
        if (q >= K) break;
        float tI = block_sum(accI[q], sh), tP = block_sum(accP[q], sh), tG = block_sum(accG[q], sh);
        if (threadIdx.x == 0) { o[3 * q] = tI; o[3 * q + 1] = tP; o[3 * q + 2] = tG; }
    }
}

// stage 2: sums (N, slots) = chunk partials added in order, in double
__global__ void loss_sum_kernel(float *sums, const float *part, int N, int nch, int slots)
{
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= N * slots) return;
    int n = t / slots, q = t % slots;
    double s = 0;
    for (int k = 0; k < nch; k++) s += part[((size_t)n * nch + k) * slots + q];
    sums[t] = (float)s;
}

__device__ __forceinline__ double dice_term(const float *s, dice_cfg_t c)
{
    return 1.0 - (2.0 * s[0] + c.smooth_nr) / ((double)s[1] + s[2] + c.smooth_dr);
}

__device__ __forceinline__ float dice_dterm(const float *s, dice_cfg_t c, float p, float t)
{
    double num = 2.0 * s[0] + c.smooth_nr, den = (double)s[1] + s[2] + c.smooth_dr;
    double dP = c.squared_pred ? 2.0 * p : 1.0;
    return (float)(-(2.0 * t / den - num * dP / (den * den)));
}

// The CE sums' labelled voxels over the batch (slots: sum, count per n).
__device__ __forceinline__ double ce_count(const float *sums, int N)
{
    double m = 0;
    for (int n = 0; n < N; n++) m += sums[2 * n + 1];
    return m;
}

// stage 3: the loss value
__global__ void loss_final_kernel(float *loss, const float *sums, loss_args_t a)
{
    if (threadIdx.x || blockIdx.x) return;
    double total = 0;
    if (a.kind == L_CE) {
        for (int n = 0; n < a.N; n++) total += sums[2 * n];
        const double m = ce_count(sums, a.N);
        *loss = m > 0 ? (float)(total / m) : 0.0f;
        return;
    }
    for (int n = 0; n < a.N; n++)
        for (int k = a.k0; k < a.K; k++) total += dice_term(sums + ((size_t)n * a.K + k) * 3, a.c);
    *loss = (float)(total / ((double)a.N * (a.K - a.k0)));
}

// backward: one thread per voxel, all K channels of it. f: the Dice mean's scale / (N K'), or
// for CE the caller's scale, divided here by the labelled voxels of the sums.
template <typename T>
__global__ void loss_grad_kernel(T *dlogits, const T *logits, const uint8_t *labels,
                                 const float *sums, loss_args_t a, members_t mem, float f)
{
    const int K = a.K;
    const size_t total = (size_t)a.N * a.S;
    if (a.kind == L_CE) f = (float)(f / fmax(ce_count(sums, a.N), 1.0));
    for (size_t v = (size_t)blockIdx.x * blockDim.x + threadIdx.x; v < total;
         v += (size_t)gridDim.x * blockDim.x) {
        const T *lg = logits + v * K;
        T *dl = dlogits + v * K;
        int lab = labels[v];
        size_t n = v / a.S;
        if (lab == LABEL_IGNORE) continue;
        if (a.kind == L_DICE_SIGMOID) {
            for (int r = 0; r < K; r++) {
                float p = sigmoid_f(to_f(lg[r])), t = mem.member[r][lab] ? 1.0f : 0.0f;
                float d = f * dice_dterm(sums + (n * K + r) * 3, a.c, p, t) * p * (1.0f - p);
                dl[r] = from_f<T>(to_f(dl[r]) + d);
            }
            continue;
        }
        if (lab >= K) continue;
        float mx, z;
        softmax_mz(lg, K, &mx, &z);
        if (a.kind == L_CE) {
            for (int k = 0; k < K; k++) {
                float p = expf(to_f(lg[k]) - mx) / z;
                dl[k] = from_f<T>(to_f(dl[k]) + f * (p - (k == lab ? 1.0f : 0.0f)));
            }
            continue;
        }
        // softmax Jacobian: dlogit_j = p_j (dp_j - sum_k p_k dp_k); two passes, p recomputed
        float dot = 0.0f;
        for (int k = a.k0; k < K; k++) {
            float p = expf(to_f(lg[k]) - mx) / z;
            dot += p * f * dice_dterm(sums + (n * K + k) * 3, a.c, p, k == lab ? 1.0f : 0.0f);
        }
        for (int k = 0; k < K; k++) {
            float p = expf(to_f(lg[k]) - mx) / z;
            float dp = k < a.k0 ? 0.0f
                                : f * dice_dterm(sums + (n * K + k) * 3, a.c, p, k == lab ? 1.0f : 0.0f);
            dl[k] = from_f<T>(to_f(dl[k]) + p * (dp - dot));
        }
    }
}

// ----------------------------------------------------------------------------
// The training step's softmax Dice + cross-entropy in two passes over the logits (the separate
// ops read them five times -- Dice sums, CE sums, CE gradient, Dice sums again, Dice gradient
// -- with one thread per voxel loading its K logits 2K bytes apart across the warp, 3K + 42
// expf and per-class double divisions: 0.70 ms of a 128^3 step on an H100, gpu/PERF_NOTES.md
// v36). Here each block stages BLOCK voxels' logits through shared memory (coalesced rows),
// each voxel's K exponentials are taken once, and the backward's per-(n, class) Dice
// derivatives are two float coefficients formed once (in double) by the final kernel.

// Sum over the block of one value per thread in a fixed order: warp shuffles, then the warps in
// order (thread 0 returns it; the others return garbage).
__device__ __forceinline__ float block_sum_fixed(float v, float *sh)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    float t = 0.0f;
    if (threadIdx.x == 0)
        for (int w = 0; w < BLOCK / 32; w++) t += sh[w];
    __syncthreads();
    return t;
}

// Stages voxels [v0, v0 + nv) of the (voxels, K) array src into tile (coalesced).
template <typename T>
__device__ __forceinline__ void stage_rows(T *tile, const T *src, size_t v0, int nv, int K)
{
    const T *p = src + v0 * K;
    for (int i = threadIdx.x; i < nv * K; i += BLOCK) tile[i] = p[i];
}

// p[k] = softmax of the voxel's K <= KM logits from the tile (exponentials once); returns
// log z + max. KM (8, 16 or 32: the launchers pick the smallest that holds K) sizes the
// per-thread arrays here and in the kernels: with 32 for every K the partial kernel's 4 x 32
// floats a thread left one block of 256 threads per SM.
template <typename T, int KM>
__device__ __forceinline__ float softmax_row(const T *lg, int K, float (&p)[KM])
{
    float m = to_f(lg[0]);
    for (int k = 1; k < K; k++) m = fmaxf(m, to_f(lg[k]));
    float z = 0.0f;
#pragma unroll
    for (int k = 0; k < KM; k++) {
        if (k >= K) break;
        p[k] = expf(to_f(lg[k]) - m);
        z += p[k];
    }
    const float iz = 1.0f / z;
#pragma unroll
    for (int k = 0; k < KM; k++) {
        if (k >= K) break;
        p[k] *= iz;
    }
    return m + logf(z);
}

// partials (N, nch, 3K + 1): I, P, G per class as loss_partial_kernel, then the CE sum
template <typename T, int KM>
__global__ void dice_ce_partial_kernel(float *part, const T *logits, const uint8_t *labels,
                                       loss_args_t a, size_t chunk)
{
    __shared__ T tile[BLOCK * KM];
    __shared__ float sh[BLOCK / 32];
    const int n = blockIdx.y, c = blockIdx.x, nch = gridDim.x, K = a.K, slots = 3 * K + 1;
    const size_t s0 = (size_t)c * chunk, s1 = min(a.S, s0 + chunk);
    float accI[KM], accP[KM], accG[KM], ce = 0.0f;
    for (int q = 0; q < KM; q++) accI[q] = accP[q] = accG[q] = 0.0f;
    for (size_t t0 = s0; t0 < s1; t0 += BLOCK) {
        const int nv = (int)min((size_t)BLOCK, s1 - t0);
        __syncthreads();                            // the previous tile is consumed
        stage_rows(tile, logits, (size_t)n * a.S + t0, nv, K);
        __syncthreads();
        if (threadIdx.x >= nv) continue;
        const int lab = labels[(size_t)n * a.S + t0 + threadIdx.x];
        if (lab >= K) continue;                     // LABEL_IGNORE (or a loader bug: CPU ASSERTs)
        const T *lg = tile + threadIdx.x * K;
        float p[KM];
        ce += softmax_row<T, KM>(lg, K, p) - to_f(lg[lab]);
#pragma unroll
        for (int q = 0; q < KM; q++) {
            if (q >= K) break;
            accP[q] += a.c.squared_pred ? p[q] * p[q] : p[q];
            if (q == lab) { accI[q] += p[q]; accG[q] += 1.0f; }
        }
    }
    float *o = part + ((size_t)n * nch + c) * slots;
#pragma unroll
    for (int q = 0; q < KM; q++) {
        if (q >= K) break;
        const float tI = block_sum_fixed(accI[q], sh), tP = block_sum_fixed(accP[q], sh);
        const float tG = block_sum_fixed(accG[q], sh);
        if (threadIdx.x == 0) { o[3 * q] = tI; o[3 * q + 1] = tP; o[3 * q + 2] = tG; }
    }
    const float tc = block_sum_fixed(ce, sh);
    if (threadIdx.x == 0) o[3 * K] = tc;
}

// loss[0] Dice, loss[1] CE, loss[2] = Dice + ce_weight CE; coef (N, K, 2): the Dice term's
// derivative d/dp_k = dP cB - t cA with cA = 2 / den, cB = num / den^2 (dice_dterm's algebra),
// then coef[N K 2] = 1 / M for CE's gradient, M the labelled voxels (the G sums; 0 when none)
__global__ void dice_ce_final_kernel(float *loss, float *coef, const float *sums, loss_args_t a,
                                     double ce_weight)
{
    if (threadIdx.x || blockIdx.x) return;
    const int K = a.K, slots = 3 * K + 1;
    double dice = 0, ce = 0, m = 0;
    for (int n = 0; n < a.N; n++) {
        ce += sums[(size_t)n * slots + 3 * K];
        for (int k = 0; k < K; k++) {
            const float *s = sums + (size_t)n * slots + 3 * k;
            m += s[2];
            const double num = 2.0 * s[0] + a.c.smooth_nr, den = (double)s[1] + s[2] + a.c.smooth_dr;
            if (k >= a.k0) dice += dice_term(s, a.c);
            coef[((size_t)n * K + k) * 2] = (float)(2.0 / den);
            coef[((size_t)n * K + k) * 2 + 1] = (float)(num / (den * den));
        }
    }
    const double d = dice / ((double)a.N * (K - a.k0)), e = m > 0 ? ce / m : 0.0;
    coef[(size_t)a.N * K * 2] = m > 0 ? (float)(1.0 / m) : 0.0f;
    loss[0] = (float)d;
    loss[1] = (float)e;
    loss[2] = (float)(d + ce_weight * e);
}

// dlogits = fd * d Dice + fce / M * d CE, written (zero at ignored voxels); one thread per
// voxel, rows staged both ways
template <typename T, int KM>
__global__ void dice_ce_grad_kernel(T *dlogits, const T *logits, const uint8_t *labels,
                                    const float *coef, loss_args_t a, float fd, float fce)
{
    __shared__ T tile[BLOCK * KM];
    const int K = a.K;
    const size_t total = (size_t)a.N * a.S;
    fce *= coef[total / a.S * K * 2];
    for (size_t v0 = (size_t)blockIdx.x * BLOCK; v0 < total; v0 += (size_t)gridDim.x * BLOCK) {
        const int nv = (int)min((size_t)BLOCK, total - v0);
        __syncthreads();                            // the previous tile is stored
        stage_rows(tile, logits, v0, nv, K);
        __syncthreads();
        if (threadIdx.x < nv) {
            const size_t v = v0 + threadIdx.x;
            const int lab = labels[v];
            T *row = tile + threadIdx.x * K;
            if (lab >= K) {
                for (int k = 0; k < K; k++) row[k] = from_f<T>(0.0f);
            } else {
                const float *cf = coef + (v / a.S) * K * 2;
                float p[KM], dp[KM], dot = 0.0f;
                softmax_row<T, KM>(row, K, p);
#pragma unroll
                for (int k = 0; k < KM; k++) {
                    if (k >= K) break;
                    const float t = k == lab ? 1.0f : 0.0f, dP = a.c.squared_pred ? 2.0f * p[k] : 1.0f;
                    dp[k] = k < a.k0 ? 0.0f : fd * (dP * cf[2 * k + 1] - t * cf[2 * k]);
                    dot += p[k] * dp[k];
                }
#pragma unroll
                for (int k = 0; k < KM; k++) {
                    if (k >= K) break;
                    const float t = k == lab ? 1.0f : 0.0f;
                    row[k] = from_f<T>(p[k] * (dp[k] - dot) + fce * (p[k] - t));
                }
            }
        }
        __syncthreads();
        T *dst = dlogits + v0 * K;
        for (int i = threadIdx.x; i < nv * K; i += BLOCK) dst[i] = tile[i];
    }
}

// ----------------------------------------------------------------------------
// launchers

// Stage 1 and 2 into the reduction scratch; returns the sums (N, slots).
// Voxel chunks of the partial-sum pass (returned; *chunk voxels each): enough blocks to fill the
// GPU, with the N x chunks x slots partials and `reserve` floats after them inside the context's
// reduction scratch.
static int loss_chunks(const gpu_ctx_t *g, int N, size_t S, int slots, size_t reserve,
                       size_t *chunk)
{
    int nch = gpu_reduce_chunks(g, S, N, (size_t)slots, 1, 4 * BLOCK);
    while (nch > 1 && (size_t)N * nch * slots + reserve > g->red_floats) nch--;
    ASSERT((size_t)N * nch * slots + reserve <= g->red_floats);
    *chunk = CEIL_DIV(S, (size_t)nch);
    return (int)CEIL_DIV(S, *chunk);
}

static float *loss_sums(gpu_ctx_t *g, const void *logits, const uint8_t *labels,
                        const loss_args_t *a, const members_t *mem)
{
    ASSERT(a->N > 0 && a->K >= 1 && a->K <= KMAX_GPU && a->S > 0);
    int slots = a->kind == L_CE ? 2 : 3 * a->K;
    size_t chunk;
    const int nch = loss_chunks(g, a->N, a->S, slots, (size_t)a->N * slots, &chunk);
    float *part = g->red, *sums = g->red + (size_t)a->N * nch * slots;
    ACT_DISPATCH(g->act, T, loss_partial_kernel<T><<<dim3(nch, a->N), BLOCK, 0, g->stream>>>(
                                part, (const T *)logits, labels, *a, *mem, chunk));
    KERNEL_CHECK();
    loss_sum_kernel<<<CEIL_DIV(a->N * slots, 128), 128, 0, g->stream>>>(sums, part, a->N, nch, slots);
    KERNEL_CHECK();
    return sums;
}

static void loss_forward(gpu_ctx_t *g, float *loss, const void *logits, const uint8_t *labels,
                         loss_args_t a, const members_t *mem)
{
    float *sums = loss_sums(g, logits, labels, &a, mem);
    loss_final_kernel<<<1, 1, 0, g->stream>>>(loss, sums, a);
    KERNEL_CHECK();
}

static void loss_backward(gpu_ctx_t *g, void *dlogits, const void *logits, const uint8_t *labels,
                          loss_args_t a, const members_t *mem, double f)
{
    const float *sums = loss_sums(g, logits, labels, &a, mem);
    size_t total = (size_t)a.N * a.S;
    ACT_DISPATCH(g->act, T, loss_grad_kernel<T><<<grid_for(g, total, BLOCK), BLOCK, 0, g->stream>>>(
                                (T *)dlogits, (const T *)logits, labels, sums, a, *mem, (float)f));
    KERNEL_CHECK();
}

static loss_args_t args(int kind, int N, int K, size_t S, dice_cfg_t c, int k0)
{
    loss_args_t a;
    a.kind = kind; a.N = N; a.K = K; a.S = S; a.c = c; a.k0 = k0;
    return a;
}

static const members_t no_members = {};

void dice_softmax_forward_gpu(gpu_ctx_t *g, float *loss, const void *logits, const uint8_t *labels,
                              int N, int K, size_t S, dice_cfg_t c)
{
    int k0 = c.include_background ? 0 : 1;
    ASSERT(K - k0 >= 1);
    loss_forward(g, loss, logits, labels, args(L_DICE_SOFTMAX, N, K, S, c, k0), &no_members);
}

void dice_softmax_backward_gpu(gpu_ctx_t *g, void *dlogits, const void *logits,
                               const uint8_t *labels, int N, int K, size_t S, dice_cfg_t c,
                               double scale)
{
    int k0 = c.include_background ? 0 : 1;
    ASSERT(K - k0 >= 1);
    loss_backward(g, dlogits, logits, labels, args(L_DICE_SOFTMAX, N, K, S, c, k0), &no_members,
                  scale / ((double)N * (K - k0)));
}

void cross_entropy_forward_gpu(gpu_ctx_t *g, float *loss, const void *logits,
                               const uint8_t *labels, int N, int K, size_t S)
{
    dice_cfg_t c = {};
    loss_forward(g, loss, logits, labels, args(L_CE, N, K, S, c, 0), &no_members);
}

void cross_entropy_backward_gpu(gpu_ctx_t *g, void *dlogits, const void *logits,
                                const uint8_t *labels, int N, int K, size_t S, double scale)
{
    dice_cfg_t c = {};
    ASSERT(N > 0 && K >= 1 && K <= KMAX_GPU && S > 0);
    loss_backward(g, dlogits, logits, labels, args(L_CE, N, K, S, c, 0), &no_members, scale);
}

static members_t members_of(const regions_t *reg)
{
    ASSERT(reg->R >= 1 && reg->R <= REGIONS_MAX);
    members_t m;
    memcpy(m.member, reg->member, sizeof m.member);
    return m;
}

void dice_sigmoid_forward_gpu(gpu_ctx_t *g, float *loss, const void *logits,
                              const uint8_t *labels, int N, size_t S, const regions_t *reg,
                              dice_cfg_t c)
{
    members_t m = members_of(reg);
    loss_forward(g, loss, logits, labels, args(L_DICE_SIGMOID, N, reg->R, S, c, 0), &m);
}

void dice_sigmoid_backward_gpu(gpu_ctx_t *g, void *dlogits, const void *logits,
                               const uint8_t *labels, int N, size_t S, const regions_t *reg,
                               dice_cfg_t c, double scale)
{
    members_t m = members_of(reg);
    loss_backward(g, dlogits, logits, labels, args(L_DICE_SIGMOID, N, reg->R, S, c, 0), &m,
                  scale / ((double)N * reg->R));
}

void dice_ce_softmax_gpu(gpu_ctx_t *g, float *loss, void *dlogits, const void *logits,
                         const uint8_t *labels, int N, int K, size_t S, dice_cfg_t c,
                         double ce_weight, double scale)
{
    const int k0 = c.include_background ? 0 : 1;
    ASSERT(N > 0 && K >= 1 && K <= KMAX_GPU && K - k0 >= 1 && S > 0);
    const loss_args_t a = args(L_DICE_SOFTMAX, N, K, S, c, k0);
    const int slots = 3 * K + 1;
    size_t chunk;       // the sums, then the (n, class) coefficients behind the partials
    const int nch = loss_chunks(g, N, S, slots, (size_t)N * slots + (size_t)N * K * 2 + 1, &chunk);
    float *part = g->red, *sums = part + (size_t)N * nch * slots, *coef = sums + (size_t)N * slots;
#define KM_DISPATCH(K, KM, ...)                                          \
    do {                                                                 \
        if ((K) <= 8) { constexpr int KM = 8; __VA_ARGS__; }             \
        else if ((K) <= 16) { constexpr int KM = 16; __VA_ARGS__; }      \
        else { constexpr int KM = KMAX_GPU; __VA_ARGS__; }               \
    } while (0)
    ACT_DISPATCH(g->act, T, KM_DISPATCH(K, KM,
        dice_ce_partial_kernel<T, KM><<<dim3(nch, N), BLOCK, 0, g->stream>>>(
            part, (const T *)logits, labels, a, chunk)));
    KERNEL_CHECK();
    loss_sum_kernel<<<CEIL_DIV(N * slots, 128), 128, 0, g->stream>>>(sums, part, N, nch, slots);
    KERNEL_CHECK();
    dice_ce_final_kernel<<<1, 1, 0, g->stream>>>(loss, coef, sums, a, ce_weight);
    KERNEL_CHECK();
    if (!dlogits) return;
    const float fd = (float)(scale / ((double)N * (K - k0)));
    const float fce = (float)(scale * ce_weight);
    const size_t tiles = CEIL_DIV((size_t)N * S, (size_t)BLOCK);
    ACT_DISPATCH(g->act, T, KM_DISPATCH(K, KM,
        dice_ce_grad_kernel<T, KM><<<grid_for(g, tiles * BLOCK, BLOCK), BLOCK, 0, g->stream>>>(
            (T *)dlogits, (const T *)logits, labels, coef, a, fd, fce)));
    KERNEL_CHECK();
#undef KM_DISPATCH
}
