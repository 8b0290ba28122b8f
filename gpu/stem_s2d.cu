/*
stem_s2d.cu -- the stem convolution (k7 s2 p3, Cin -> K) run as an ordinary convolution over
the input's 2x2x2 blocks ("space to depth"). Per axis, out[z] = sum_t x[2z - 3 + t] W[t], and
with x'[Z] the block Z (8 Cin channels: channel q Cin + c holds x[2Z + q] of channel c, parity
q = 4 qz + 2 qy + qx) that is out[z] = sum_j x'[z - 2 + j] W'[j] over the four blocks
j = 0..3, with W'[j][q][c] = W[2j + q - 1][c] (0 where 2j + q - 1 falls outside 0..6). Four
taps centred at -1/2 need the padding (2 before, 1 after), which cuDNN takes only
symmetrically: so the blocks are stored with one zero block in front on every axis,
x''[Z + 1] = x'[Z] (extents D/2 + 1, ...), and the stem is the k4 s1 p1 convolution of x''.
Why: with Cin = 1..4 input channels cuDNN has no tensor-core engine for the k7 s2 stem, and its
best plans took 0.84 ms (forward) + 0.68 ms (weight gradient) of a 128^3 training step on an
H100 (1.64 + 1.85 ms at batch 2; gpu/PERF_NOTES.md v31). 8 Cin channels are tensor-core sized;
the zero taps cost 512 / 343 = 1.5x the multiply-adds, on units ~16x faster (the first
version, a symmetric k5 over x' with a zero fifth tap, cost 1000 / 343 = 2.9x). The input
needs no extra pass: the upload writes x'' straight from the host layout.
The weight gradient of W' folds back into W's: each tap t of W has exactly one (j, q), so the
fold is a gather (deterministic).
Layouts: W (K, 7, 7, 7, Cin) and W' (K, 4, 4, 4, 8 Cin), the GPU's channels-last conv weights.
*/
#include "gpu_internal.h"

#define BLOCK 256
#define SK 7            // the stem's kernel (stride 2, pad 3)
#define JK 4            // taps of the block convolution (pad 1 over the front zero block)

// x' from the channels-first f32 staging of the host volume (N, Cin, D, H, W); one thread per
// x' element, so the act-typed writes are coalesced.
template <typename T>
__global__ void s2d_input_kernel(T *y, const float *x, int Cin, int D, int H, int W, size_t total)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const s2d_src s = s2d_source(i, Cin, D / 2, H / 2, W / 2, 1);
        y[i] = from_f<T>(s.in ? x[(((s.n * Cin + s.c) * D + s.z) * H + s.y) * W + s.x] : 0.0f);
    }
}

// tap t of the stem for block tap j and parity q (-1: none)
__device__ __forceinline__ int stem_tap(int j, int q)
{
    const int t = 2 * j + q - 1;
    return t >= 0 && t < SK ? t : -1;
}

// W' from W (one thread per W' element)
template <typename T>
__global__ void s2d_weight_kernel(T *w2, const T *w, int Cin, size_t total)
{
    const int C8 = 8 * Cin;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const int ch = (int)(i % C8), q = ch / Cin, c = ch % Cin;
        size_t r = i / C8;
        const int jx = (int)(r % JK); r /= JK;
        const int jy = (int)(r % JK); r /= JK;
        const int jz = (int)(r % JK);
        const size_t k = r / JK;
        const int tz = stem_tap(jz, q >> 2), ty = stem_tap(jy, (q >> 1) & 1), tx = stem_tap(jx, q & 1);
        float v = 0.0f;
        if (tz >= 0 && ty >= 0 && tx >= 0) v = to_f(w[(((k * SK + tz) * SK + ty) * SK + tx) * Cin + c]);
        w2[i] = from_f<T>(v);
    }
}

static void check_stem(const conv3d_shape_t *s)
{
    ASSERT(s->k[0] == SK && s->k[1] == SK && s->k[2] == SK);
    for (int a = 0; a < 3; a++) {
        ASSERT(s->stride[a] == 2 && s->pad[a] == 3 && s->outpad[a] == 0);
        ASSERT(s->in[a] > 0 && s->in[a] % 2 == 0);   // the model's patches are multiples of 16
    }
}

conv3d_shape_t stem_s2d_shape(conv3d_shape_t stem)
{
    check_stem(&stem);
    const int in[3] = { stem.in[0] / 2 + 1, stem.in[1] / 2 + 1, stem.in[2] / 2 + 1 };
    return conv3d_shape(stem.N, 8 * stem.Cin, stem.Cout, in, JK, 1, 1);
}

size_t stem_s2d_input_numel(conv3d_shape_t stem)
{
    const conv3d_shape_t b = stem_s2d_shape(stem);
    return (size_t)b.N * b.Cin * b.in[0] * b.in[1] * b.in[2];
}

void stem_s2d_input_gpu(gpu_ctx_t *g, void *y, const float *x, conv3d_shape_t stem)
{
    check_stem(&stem);
    const size_t total = stem_s2d_input_numel(stem);
    ACT_DISPATCH(g->act, T, s2d_input_kernel<T><<<grid_for(g, total, BLOCK), BLOCK, 0, g->stream>>>(
                                (T *)y, x, stem.Cin, stem.in[0], stem.in[1], stem.in[2], total));
    KERNEL_CHECK();
}

void stem_s2d_weight_gpu(gpu_ctx_t *g, void *w2, const void *w, conv3d_shape_t stem)
{
    check_stem(&stem);
    const size_t total = (size_t)stem.Cout * JK * JK * JK * 8 * stem.Cin;
    ACT_DISPATCH(g->act, T, s2d_weight_kernel<T><<<grid_for(g, total, BLOCK), BLOCK, 0, g->stream>>>(
                                (T *)w2, (const T *)w, stem.Cin, total));
    KERNEL_CHECK();
}

void stem_s2d_grad_fold_gpu(gpu_ctx_t *g, float *dw, const float *dw2, conv3d_shape_t stem)
{
    check_stem(&stem);
    const size_t total = (size_t)stem.Cout * SK * SK * SK * stem.Cin;
    // t = 2 j + q - 1
    blocks_fold_kernel<float, SK, JK, 1><<<grid_for(g, total, BLOCK), BLOCK, 0, g->stream>>>(
        dw, dw2, stem.Cin, total);
    KERNEL_CHECK();
}
