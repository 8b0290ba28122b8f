/*
loss.cu -- training losses on channels-last logits (N, S, K): softmax Dice with one-hot labels,
cross-entropy, and sigmoid Dice over label regions. Twin of common/ops/loss.c (MONAI DiceLoss
semantics, dice_cfg_t in ops.h). Forward writes the loss into one device float (no host sync
in a step); backward recomputes the sums it needs and ACCUMULATES scale * dloss/dlogits.

Sums are deterministic and two-stage: blocks of 256 threads each reduce one chunk of voxels
(tree reduction in shared memory, fixed order) into per-chunk partials; one thread per
(n, slot) adds the chunks in order in double; one thread turns the sums into the loss.
Softmax over K is computed per voxel from K contiguous logits (max-shifted, as the CPU twin).
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
// CE: 1 slot; sigmoid Dice: I[r], P[r], G[r] (3R).
template <typename T>
__global__ void loss_partial_kernel(float *part, const T *logits, const uint8_t *labels,
                                    loss_args_t a, members_t mem, size_t chunk)
{
    __shared__ float sh[BLOCK];
    const int n = blockIdx.y, k = blockIdx.x, nch = gridDim.x, K = a.K;
    const int slots = a.kind == L_CE ? 1 : 3 * K;
    const size_t s0 = (size_t)k * chunk, s1 = min(a.S, s0 + chunk);
    float accI[KMAX_GPU], accP[KMAX_GPU], accG[KMAX_GPU], acc = 0.0f;
    for (int q = 0; q < KMAX_GPU; q++) accI[q] = accP[q] = accG[q] = 0.0f;
    for (size_t s = s0 + threadIdx.x; s < s1; s += BLOCK) {
        const T *lg = logits + ((size_t)n * a.S + s) * K;
        int lab = labels[(size_t)n * a.S + s];
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
        float t = block_sum(acc, sh);
        if (threadIdx.x == 0) o[0] = t;
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

// stage 3: the loss value
__global__ void loss_final_kernel(float *loss, const float *sums, loss_args_t a)
{
    if (threadIdx.x || blockIdx.x) return;
    double total = 0;
    if (a.kind == L_CE) {
        for (int n = 0; n < a.N; n++) total += sums[n];
        *loss = (float)(total / ((double)a.N * (double)a.S));
        return;
    }
    for (int n = 0; n < a.N; n++)
        for (int k = a.k0; k < a.K; k++) total += dice_term(sums + ((size_t)n * a.K + k) * 3, a.c);
    *loss = (float)(total / ((double)a.N * (a.K - a.k0)));
}

// backward: one thread per voxel, all K channels of it
template <typename T>
__global__ void loss_grad_kernel(T *dlogits, const T *logits, const uint8_t *labels,
                                 const float *sums, loss_args_t a, members_t mem, float f)
{
    const int K = a.K;
    const size_t total = (size_t)a.N * a.S;
    for (size_t v = (size_t)blockIdx.x * blockDim.x + threadIdx.x; v < total;
         v += (size_t)gridDim.x * blockDim.x) {
        const T *lg = logits + v * K;
        T *dl = dlogits + v * K;
        int lab = labels[v];
        size_t n = v / a.S;
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
// launchers

// Stage 1 and 2 into the reduction scratch; returns the sums (N, slots).
static float *loss_sums(gpu_ctx_t *g, const void *logits, const uint8_t *labels,
                        const loss_args_t *a, const members_t *mem)
{
    ASSERT(a->N > 0 && a->K >= 1 && a->K <= KMAX_GPU && a->S > 0);
    int slots = a->kind == L_CE ? 1 : 3 * a->K;
    size_t reserve = (size_t)a->N * slots;
    int nch = gpu_reduce_chunks(g, a->S, a->N, (size_t)slots, 1, 4 * BLOCK);
    while (nch > 1 && (size_t)a->N * nch * slots + reserve > g->red_floats) nch--;
    size_t chunk = CEIL_DIV(a->S, (size_t)nch);
    nch = (int)CEIL_DIV(a->S, chunk);
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
    const float *sums = a.kind == L_CE ? g->red : loss_sums(g, logits, labels, &a, mem);
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
    loss_backward(g, dlogits, logits, labels, args(L_CE, N, K, S, c, 0), &no_members,
                  scale / ((double)N * (double)S));
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
