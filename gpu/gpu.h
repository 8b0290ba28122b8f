/*
gpu.h -- the ONE C header of the GPU backend (CUDA, cuDNN, cuBLASLt). Plain C: stages and tests
compiled by gcc include it and link $(BUILD)/libsrmgpu.a. No CUDA type appears here.

Conventions (the CPU twins' rules of common/ops/ops.h hold unless said otherwise):
  - Every op is the twin of <op>_cpu: same name with _gpu, same argument order, gpu_ctx_t first.
    Everything runs asynchronously on the context's one stream.
  - Layout: activations are CHANNELS-LAST on the GPU, (N, D, H, W, C) = (N, S, C), end to end.
    Shape comments below use that order. The input enters as the stem's 2x2x2 blocks
    (stem_s2d_input_gpu); conv weights are converted on the host (below).
  - Precision: the context's activation type `act` (gpu_act_dtype) is float in the strict fp32
    mode (GPU_F32: FMA math, no TF32, for tests) and bf16 in the default mode (GPU_BF16).
    Arguments typed `void *` hold `act` elements: activations, their gradients, conv and linear
    weights (the bf16 copy in bf16 mode). Arguments typed `float *` are always fp32: biases,
    norm affine parameters, norm statistics, every parameter gradient, losses, Adam state.
    Accumulation is always fp32.
  - Conv weights on the GPU are channels-last too: conv (Cout, kD, kH, kW, Cin), transposed conv
    (Cin, kD, kH, kW, Cout): the PyTorch layout (A, B, k) transposed per A to (A, k, B) when
    parameters are uploaded (model_plan_gpu.cu's gm_params_layout). Linear weights keep
    (Cout, Cin).
  - Forward writes (=); backward ACCUMULATES (+=) into every gradient; NULL = not computed.
  - Nothing here allocates inside a training step except where a comment says "prepare":
    cuDNN plans and workspaces are built by conv*_prepare_gpu (or on first use before
    gpu_conv_freeze(g, 1)); gpu_malloc / gpu_arena_new are for set-up.
  - Failures of CUDA/cuDNN/cuBLAS calls are fatal (exit 1 with the failing statement).
*/
#ifndef SRM_GPU_H
#define SRM_GPU_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "ops.h"

// ---- context -----------------------------------------------------------------
typedef struct gpu_ctx gpu_ctx_t;

typedef enum { GPU_F32 = 0, GPU_BF16 = 1 } gpu_dtype_t;
size_t gpu_dtype_size(gpu_dtype_t t);

typedef struct {
    int device;                 // CUDA device ordinal
    gpu_dtype_t act;            // GPU_F32: strict fp32 mode; GPU_BF16: bf16 activations
    int deterministic;          // 1: only deterministic cuDNN engines (our kernels always are)
    size_t workspace_bytes;     // initial shared cuDNN/cuBLASLt workspace (grows at prepare)
} gpu_cfg_t;

#define GPU_CFG_DEFAULT ((gpu_cfg_t){ .device = 0, .act = GPU_BF16, .deterministic = 0, \
                                      .workspace_bytes = (size_t)32 << 20 })

gpu_ctx_t  *gpu_ctx_new(gpu_cfg_t cfg);      // DIEs when there is no usable GPU
void        gpu_ctx_destroy(gpu_ctx_t **g);  // frees everything the context allocated; *g = NULL
gpu_dtype_t gpu_act_dtype(const gpu_ctx_t *g);
void        gpu_sync(gpu_ctx_t *g);          // wait for the stream
// The context's cudaStream_t, as void * (for CUDA graph capture by model code).
void       *gpu_stream(gpu_ctx_t *g);
// "NVIDIA H100 80GB HBM3, 132 SMs, CUDA runtime 13000, cuDNN 91400 (built 91900), cuBLAS 130000"
void        gpu_describe(const gpu_ctx_t *g, char *buf, size_t len);
size_t      gpu_cudnn_version(void);         // cudnnGetVersion() of the library loaded at run time

// ---- memory: cudaMalloc only, every byte we hold is counted -------------------
// current / peak: bytes held through cudaMalloc by this context (buffers, arenas, workspaces
// handed to cuDNN/cuBLASLt), not the CUDA context or the libraries' own code.
typedef struct { size_t current, peak, count; } gpu_mem_stats_t;

void           *gpu_malloc(gpu_ctx_t *g, size_t bytes, const char *what);   // 256-byte aligned
void            gpu_free(gpu_ctx_t *g, void *p);                             // NULL is a no-op
gpu_mem_stats_t gpu_mem_stats(const gpu_ctx_t *g);
void            gpu_mem_reset_peak(gpu_ctx_t *g);                            // peak = current
// Bytes free and total on the device (cudaMemGetInfo).
void            gpu_mem_info(gpu_ctx_t *g, size_t *free_bytes, size_t *total_bytes);

void gpu_upload(gpu_ctx_t *g, void *dst_dev, const void *src_host, size_t bytes);   // synchronous
void gpu_download(gpu_ctx_t *g, void *dst_host, const void *src_dev, size_t bytes); // synchronous
void gpu_copy(gpu_ctx_t *g, void *dst_dev, const void *src_dev, size_t bytes);      // async
void gpu_memset(gpu_ctx_t *g, void *dst_dev, int byte, size_t bytes);               // async
// Fill with all-ones bytes: NaN in both fp32 and bf16, so unwritten outputs show in tests.
void gpu_poison(gpu_ctx_t *g, void *dst_dev, size_t bytes);

// An activation arena: one cudaMalloc sized before the first step, bump allocation inside it.
#define GPU_ARENA_ALIGN 256
typedef struct gpu_arena gpu_arena_t;
static inline size_t gpu_arena_round(size_t bytes)
{
    return (bytes + GPU_ARENA_ALIGN - 1) / GPU_ARENA_ALIGN * GPU_ARENA_ALIGN;
}
gpu_arena_t *gpu_arena_new(gpu_ctx_t *g, size_t capacity, const char *what);
void        *gpu_arena_alloc(gpu_arena_t *a, size_t bytes);   // DIEs when the arena is too small
size_t       gpu_arena_mark(const gpu_arena_t *a);            // current offset
void         gpu_arena_reset(gpu_arena_t *a, size_t mark);    // frees everything after mark
size_t       gpu_arena_high_water(const gpu_arena_t *a);
size_t       gpu_arena_capacity(const gpu_arena_t *a);
void         gpu_arena_destroy(gpu_arena_t **a);

// ---- type conversion (convert.cu) -----------------------------------------------------
// y = (ty) x elementwise, n elements (round to nearest even into bf16).
void gpu_convert(gpu_ctx_t *g, void *y, gpu_dtype_t ty, const void *x, gpu_dtype_t tx, size_t n);

// ---- 3D convolution and transposed convolution through cuDNN (conv_cudnn.cu) --------------
// conv:  y (N, out, Cout)  x (N, in, Cin)  w (Cout, k, Cin)  b (Cout) f32 or NULL
// convT: y (N, out, Cout)  x (N, in, Cin)  w (Cin, k, Cout)  b (Cout) f32 or NULL
// dw, db: f32 (the master gradient), accumulated.
void conv3d_forward_gpu(gpu_ctx_t *g, void *y, const void *x, const void *w, const float *b,
                        conv3d_shape_t s);
void conv3d_backward_gpu(gpu_ctx_t *g, void *dx, float *dw, float *db, const void *dy,
                         const void *x, const void *w, conv3d_shape_t s);
void conv_transpose3d_forward_gpu(gpu_ctx_t *g, void *y, const void *x, const void *w,
                                  const float *b, conv3d_shape_t s);
void conv_transpose3d_backward_gpu(gpu_ctx_t *g, void *dx, float *dw, float *db, const void *dy,
                                   const void *x, const void *w, conv3d_shape_t s);
// Whether the weight gradient of this conv (transposed: of this ConvTranspose) runs through the
// input's 2x2x2 blocks (conv_wgrad_blocks.cu) instead of cuDNN's plan for it: k5 s2 p2 with
// 64 < output voxels <= 512 a sample. For tests, which must know which path they checked.
int conv3d_wgrad_through_blocks(const gpu_ctx_t *g, conv3d_shape_t s, int transposed);
// prepare: build (and cache) the forward and backward plans of one layer now and grow the
// workspace to fit them (with_dx 0: no input gradient, a first layer). With
// gpu_conv_freeze(g, 1), a conv whose plan was not prepared DIEs instead of building a plan
// inside the step.
void conv3d_prepare_gpu(gpu_ctx_t *g, conv3d_shape_t s, int with_dx);
void conv_transpose3d_prepare_gpu(gpu_ctx_t *g, conv3d_shape_t s);
void gpu_conv_freeze(gpu_ctx_t *g, int frozen);
// The stem (k7 s2 p3 over even extents) as a k4 s1 p1 convolution of the input's 2x2x2 blocks
// behind a zero block (stem_s2d.cu says why and how): stem_s2d_shape gives that convolution's
// shape; the input goes up as blocks (x: the host's channels-first f32 volume, staged on the
// device; y: act, stem_s2d_input_numel elements (N, D/2 + 1, H/2 + 1, W/2 + 1, 8 Cin)); the
// block weight w2 (act, (K, 4, 4, 4, 8 Cin)) is formed from the stem weight w (act,
// (K, 7, 7, 7, Cin)); dw (f32, the stem's) += the fold of dw2 (f32, w2's).
conv3d_shape_t stem_s2d_shape(conv3d_shape_t stem);
size_t stem_s2d_input_numel(conv3d_shape_t stem);
void stem_s2d_input_gpu(gpu_ctx_t *g, void *y, const float *x, conv3d_shape_t stem);
void stem_s2d_weight_gpu(gpu_ctx_t *g, void *w2, const void *w, conv3d_shape_t stem);
void stem_s2d_grad_fold_gpu(gpu_ctx_t *g, float *dw, const float *dw2, conv3d_shape_t stem);
// The head, a transposed conv with kernel 2 and stride 2 (s as for conv_transpose3d_*), as a
// GEMM and a depth-to-space copy (head_d2s.cu). wl (act, (8 Cout, Cin)) is formed from w (act,
// the transposed-conv layout) by head_d2s_weight_gpu; yb / dyb are temporaries of y's size
// (act). The backward accumulates dx, dw, db (f32) like conv_transpose3d_backward_gpu; dwl
// (f32, wl's size) is its scratch; NULL dx / dw / db are not computed.
void head_d2s_weight_gpu(gpu_ctx_t *g, void *wl, const void *w, conv3d_shape_t s);
void head_d2s_forward_gpu(gpu_ctx_t *g, void *y, void *yb, const void *x, const void *wl,
                          const float *b, conv3d_shape_t s);
void head_d2s_backward_gpu(gpu_ctx_t *g, void *dx, float *dw, float *dwl, float *db, void *dyb,
                           const void *dy, const void *x, const void *wl, conv3d_shape_t s);
// Number of cached plans and the largest workspace one needs (for logs and tests).
void gpu_conv_plan_stats(const gpu_ctx_t *g, int *nplans, size_t *max_workspace);

// ---- linear over channels = one GEMM in channels-last (gemm.cu) ------------------------
// y (N*L, Cout)  x (N*L, Cin)  w (Cout, Cin) act  b (Cout) f32 or NULL; dw, db f32.
// On the GPU s.x_nstride / s.y_nstride are ROW strides: elements between consecutive tokens
// (0 = dense Cin / Cout), so a channel slice of a wider channels-last tensor works in place.
void linear_forward_gpu(gpu_ctx_t *g, void *y, const void *x, const void *w, const float *b,
                        linear_shape_t s);
void linear_backward_gpu(gpu_ctx_t *g, void *dx, float *dw, float *db, const void *dy,
                         const void *x, const void *w, linear_shape_t s);
// dx = dy w, written rather than accumulated (no zeroing pass before it, no read of the old dx)
void linear_dx_gpu(gpu_ctx_t *g, void *dx, const void *dy, const void *w, linear_shape_t s);

// ---- norms (norm.cu); x, y, dx, dy: (N, S, C); statistics f32 --------------------------
// relu = 1 fuses the ReLU that follows the norm (IN -> ReLU, GN -> ReLU): forward writes
// relu(norm(x)); backward takes the gradient of that composition (it recomputes the mask).
// mean, rstd: (N*C) for InstanceNorm, (N*G) for GroupNorm, written by forward.
void instancenorm_forward_gpu(gpu_ctx_t *g, void *y, float *mean, float *rstd, const void *x,
                              int N, int C, size_t S, double eps, int relu);
void instancenorm_backward_gpu(gpu_ctx_t *g, void *dx, const void *dy, const void *x,
                               const float *mean, const float *rstd, int N, int C, size_t S,
                               int relu);
// gamma, beta: (C) f32; a NULL beta reads as zeros (the backward needs it only when relu = 1).
void groupnorm_forward_gpu(gpu_ctx_t *g, void *y, float *mean, float *rstd, const void *x,
                           const float *gamma, const float *beta, int N, int C, int G, size_t S,
                           double eps, int relu);
void groupnorm_backward_gpu(gpu_ctx_t *g, void *dx, float *dgamma, float *dbeta, const void *dy,
                            const void *x, const float *mean, const float *rstd,
                            const float *gamma, const float *beta, int N, int C, int G, size_t S,
                            int relu);

// ---- elementwise (elementwise.cu); n elements of act type; y may alias x ----------------
void relu_forward_gpu(gpu_ctx_t *g, void *y, const void *x, size_t n);
void relu_backward_gpu(gpu_ctx_t *g, void *dx, const void *dy, const void *x, size_t n);
void gelu_forward_gpu(gpu_ctx_t *g, void *y, const void *x, size_t n);      // exact erf form
void gelu_backward_gpu(gpu_ctx_t *g, void *dx, const void *dy, const void *x, size_t n);
void silu_forward_gpu(gpu_ctx_t *g, void *y, const void *x, size_t n);
void silu_backward_gpu(gpu_ctx_t *g, void *dx, const void *dy, const void *x, size_t n);
void softplus_forward_gpu(gpu_ctx_t *g, void *y, const void *x, size_t n);  // threshold 20
void softplus_backward_gpu(gpu_ctx_t *g, void *dx, const void *dy, const void *x, size_t n);
void add_forward_gpu(gpu_ctx_t *g, void *y, const void *a, const void *b, size_t n);
// dst += src (act type): residual gradients.
void gpu_accumulate(gpu_ctx_t *g, void *dst, const void *src, size_t n);
// y (rows, C) += b (C) f32;   db (C) += column sums of dy (rows, C) (deterministic).
void bias_add_gpu(gpu_ctx_t *g, void *y, const float *b, size_t rows, int C);
void bias_grad_gpu(gpu_ctx_t *g, float *db, const void *dy, size_t rows, int C);

// ---- trilinear x2 upsampling, align_corners = False (upsample.cu) ---------------------
// y (N, 2D, 2H, 2W, C)  x (N, D, H, W, C); backward: dx += (gather, deterministic)
void upsample_trilinear2x_forward_gpu(gpu_ctx_t *g, void *y, const void *x, int N, int C,
                                      const int in[3]);
void upsample_trilinear2x_backward_gpu(gpu_ctx_t *g, void *dx, const void *dy, int N, int C,
                                       const int in[3]);

// ---- zero padding and cropping (pad_crop.cu); y (N, out, C), x (N, in, C) ---------------
void pad_crop3d_forward_gpu(gpu_ctx_t *g, void *y, const void *x, int N, int C, const int in[3],
                            const int out[3], const int off[3]);
void pad_crop3d_backward_gpu(gpu_ctx_t *g, void *dx, const void *dy, int N, int C,
                             const int in[3], const int out[3], const int off[3]);

// ---- losses (loss.cu); logits (N, S, K) act, labels (N, S) uint8 on the device ------------
// Forward writes the loss into *loss (one f32 on the device: no host sync inside a step).
// Backward ACCUMULATES scale * dloss/dlogits into dlogits (act type).
void dice_softmax_forward_gpu(gpu_ctx_t *g, float *loss, const void *logits,
                              const uint8_t *labels, int N, int K, size_t S, dice_cfg_t c);
void dice_softmax_backward_gpu(gpu_ctx_t *g, void *dlogits, const void *logits,
                               const uint8_t *labels, int N, int K, size_t S, dice_cfg_t c,
                               double scale);
// The training step's softmax Dice + ce_weight x cross-entropy (ce_weight 0: Dice alone) in
// two passes: loss[0] Dice, loss[1] CE (always formed), loss[2] = loss[0] + ce_weight loss[1];
// with dlogits (else NULL), scale x d loss[2] / d logits is WRITTEN (not accumulated). Uses the
// context's reduction scratch.
void dice_ce_softmax_gpu(gpu_ctx_t *g, float *loss, void *dlogits, const void *logits,
                         const uint8_t *labels, int N, int K, size_t S, dice_cfg_t c,
                         double ce_weight, double scale);
void cross_entropy_forward_gpu(gpu_ctx_t *g, float *loss, const void *logits,
                               const uint8_t *labels, int N, int K, size_t S);
void cross_entropy_backward_gpu(gpu_ctx_t *g, void *dlogits, const void *logits,
                                const uint8_t *labels, int N, int K, size_t S, double scale);
// logits (N, S, R); reg is a host struct (passed to the kernels by value).
void dice_sigmoid_forward_gpu(gpu_ctx_t *g, float *loss, const void *logits,
                              const uint8_t *labels, int N, size_t S, const regions_t *reg,
                              dice_cfg_t c);
void dice_sigmoid_backward_gpu(gpu_ctx_t *g, void *dlogits, const void *logits,
                               const uint8_t *labels, int N, size_t S, const regions_t *reg,
                               dice_cfg_t c, double scale);

// ---- Adam / AdamW over the whole fp32 parameter buffer, one kernel (adam.cu) ----------
// p, m, v, grad: (n) f32. p_bf16: (n) bf16 copy of the updated p written in the same pass
// (the weights the matmuls read in bf16 mode), or NULL.
void adam_update_gpu(gpu_ctx_t *g, float *p, float *m, float *v, const float *grad,
                     void *p_bf16, size_t n, adam_cfg_t c, long step);

// ---- Mamba: layernorm, causal conv1d, selective scan, ToM layer ----
// (layernorm.cu, causal_conv1d.cu, selective_scan*.cu, mamba_layer.cu; owner: the Mamba part.)
// Token-major (N, L, C) activations of `act` type; ToM orders as tom_index() (common/op_shapes.c).
#include "mamba_layer.h"

// LayerNorm over the C channels of every token. x, y, dx, dy: (N*L, C)  gamma, beta: (C) f32
// mean, rstd: (N*L) f32, written by forward. Backward accumulates dx, dgamma, dbeta (any NULL).
void layernorm_forward_gpu(gpu_ctx_t *g, void *y, float *mean, float *rstd, const void *x,
                           const float *gamma, const float *beta, int N, int C, size_t L,
                           double eps);
void layernorm_backward_gpu(gpu_ctx_t *g, void *dx, float *dgamma, float *dbeta, const void *dy,
                            const void *x, const float *mean, const float *rstd,
                            const float *gamma, int N, int C, size_t L);

// Depthwise causal conv1d (zero history) in direction `order`, the ToM order fused into the
// load: y[n, j, e] = act(b[e] + sum_i w[e, i] * x[n, pi(j - K + 1 + i), e]), act = SiLU when
// silu = 1. x: rows of row stride ldx (a channel slice of xz: ldx = 2E) in ORIGINAL order;
// y, dy: (N, L, E) dense in SCANNED order. w: (E, K) f32, b: (E) f32 (K <= 4).
// Backward: dy is the gradient of y (after the SiLU when silu = 1; the pre-activation is
// recomputed from x, w, b); dx (row stride ldx, original order), dw, db accumulate -- dx is
// written instead where dx_overwrite = 1 (all N L rows, channels 0 .. E-1; the old values are
// not read).
void causal_conv1d_forward_gpu(gpu_ctx_t *g, void *y, const void *x, size_t ldx, const float *w,
                               const float *b, int N, int E, size_t L, int K, tom_order_t order,
                               size_t nslices, int silu);
void causal_conv1d_backward_gpu(gpu_ctx_t *g, void *dx, float *dw, float *db, const void *dy,
                                const void *x, size_t ldx, const float *w, const float *b, int N,
                                int E, size_t L, int K, tom_order_t order, size_t nslices,
                                int silu, int dx_overwrite);

// Selective scan of up to 3 ToM directions in one launch (d_state NS = 16 only), with the
// Mamba dt projection fused in. Per direction: the SCANNED-order inputs u, x_dt, B, C and the
// ORIGINAL-order z (gate y * silu(z), NULL = none); y / dy in ORIGINAL order (pi fused).
// The step sizes are delta = softplus(x_dt W_dt^T + delta_bias) (threshold 20), the projection
// computed inside the kernels in fp32 from the fp32 W_dt, r ascending -- the same value in the
// forward and in the backward's recomputes, and never stored (architecture.md §8: the step
// size sets the decays exp(dt A) of a long-memory state, where a bf16 delta's 2^-9 error is
// amplified ~1/(1-a)). A_log: (E, 16) f32 (A = -exp(A_log) is fused), D, delta_bias: (E) f32.
#define SCAN_RMAX 64            // the widest x_dt (dt rank R)
typedef struct {
    tom_order_t order;
    const void *u;              // (N, L, E) scanned order, act
    const void *x_dt;           // (N, L, ldbc) scanned order, act: columns [0, R) (x_dbl's dt part)
    const float *W_dt;          // (E, R) f32
    const void *B, *C;          // (N, L, ldbc) scanned order: 16 columns each
    const void *z;              // (N, L, ldz) original order, or NULL
    const float *A_log, *D, *delta_bias;
    // backward outputs, ACCUMULATED (+=; see overwrite), any may be NULL; same orders and
    // strides as inputs; each direction of one call needs its own (asserted: a shared one would
    // be updated by two directions' blocks at once)
    void *du, *dB, *dC;         // act. No dz: it needs the pre-gate y, which the Mamba layer
                                // saves from the forward (mamba_gate_backward_gpu)
    void *dx_dt;                // like x_dt: dx_dt = ddelta_raw W_dt (fp32 sums, fixed order)
    float *dW_dt;               // (E, R): ddelta_raw^T x_dt
    float *ddelta;              // (N, L, E) f32: the gradient of delta_raw (x_dt W_dt^T), for
                                // tests; the layer leaves it NULL and ddelta stays in registers
    float *dA_log, *dD, *ddelta_bias;
} scan_dir_gpu_t;

typedef struct {
    int N, E;
    size_t L, nslices;
    size_t ldbc, ldz;           // row strides (elements) of x_dt / B / C and of z
    int ndir;                   // 1..3 entries of dir[] used
    int R;                      // columns of x_dt (dt rank, 1..SCAN_RMAX)
    int overwrite;              // backward: du, dB, dC, dx_dt, ddelta written (=), not added, so
                                // the caller need not zero them; dA_log, dD, ddelta_bias,
                                // dW_dt are added
    scan_dir_gpu_t dir[3];
} scan_gpu_t;

// Chunk-boundary states saved by forward for backward: bytes for `s` (f32).
size_t selective_scan_states_bytes(const scan_gpu_t *s);
// Where direction d's states start (floats) inside the states of a multi-direction forward: a
// backward call starting at direction d reads states + selective_scan_dir_states(s, d).
size_t selective_scan_dir_states(const scan_gpu_t *s, int d);
// Workspace (device bytes) forward / backward need; the same buffer may serve both.
size_t selective_scan_workspace_bytes(const scan_gpu_t *s);
// The smaller workspace the forward alone needs (its start is the same views: A, the chunk sums
// S and, for small shapes, the directions' fp32 outputs).
size_t selective_scan_forward_workspace_bytes(const scan_gpu_t *s);
// y: (N, L, E) original order; accumulate = 0: y = sum over the directions, 1: y += that sum.
void selective_scan_forward_gpu(gpu_ctx_t *g, void *y, int accumulate, float *states,
                                void *workspace, const scan_gpu_t *s);
// dy: (N, L, E) original order (the gradient of y, shared by all directions).
void selective_scan_backward_gpu(gpu_ctx_t *g, const void *dy, const float *states,
                                 void *workspace, const scan_gpu_t *s);
// The step size delta = softplus(raw) (threshold 20) of n raw values as the scan kernels form
// it for the context's mode (bf16: a fast form, relative error ~1e-6), its derivative dsp and
// delta again as the backward kernel's combined form gives it (dt_bwd: the same bits as dt).
// Device f32 arrays; for the tests.
void selective_scan_step_size_gpu(gpu_ctx_t *g, float *dt, float *dsp, float *dt_bwd,
                                  const float *raw, size_t n);
// Whether the backward of ONE direction of this shape gives the GPU too few blocks to fill it
// (fewer than 16 chunk-and-channel blocks an SM: its kernels are then latency-bound, and three
// directions in one call take less than three times one). The Mamba layer runs its three
// directions' backward as one call where this holds (every level but the largest).
int selective_scan_backward_small(const gpu_ctx_t *g, int N, int E, size_t L);

// The Mamba gate in original token order, n rows: G = Y * silu(z) and its backward
// dz = dG * Y * silu'(z), Y being the pre-gate output summed over the directions (the layer's
// forward scans with z = NULL and saves Y, as mamba_ssm saves `out`; G is formed from it for
// out_proj). xz, dxz: (n, 2E) rows [x | z]; the backward writes dxz's z half only (the layer's
// first conv backward writes the x half: causal_conv1d_backward_gpu's dx_overwrite), and G
// again where G is not NULL (dW_out needs it). Y, G, dG: (n, E). All act.
void mamba_gate_forward_gpu(gpu_ctx_t *g, void *G, const void *Y, const void *xz, size_t n, int E);
void mamba_gate_backward_gpu(gpu_ctx_t *g, void *dxz, void *G, const void *dG, const void *Y,
                             const void *xz, size_t n, int E);

// The whole ToM MambaLayer (common/nn/mamba_layer.h) on the GPU, token-major: x, y, dx, dy
// (N, L, C) act. m: offsets (elements) into the device parameter buffer: params (f32 master:
// norm, A_log, D, conv, dt bias), params_act (the act-type copy the GEMMs read: `params` itself
// in f32 mode, the bf16 copy adam_update_gpu writes in bf16 mode); dparams: f32, accumulated.
// saved: written by forward, read by backward; scratch: temporary, for either.
size_t mamba_layer_gpu_saved_bytes(const gpu_ctx_t *g, const mamba_layer_t *m, int N, size_t L);
size_t mamba_layer_gpu_scratch_bytes(const gpu_ctx_t *g, const mamba_layer_t *m, int N, size_t L);
// The row stride (elements) of the layer's x_dbl = [dt | B | C]: R + 32 rounded up to 8.
size_t mamba_layer_gpu_xdbl_ld(const mamba_layer_t *m);
void mamba_layer_forward_gpu(gpu_ctx_t *g, void *y, void *saved, void *scratch, const void *x,
                             const float *params, const void *params_act, const mamba_layer_t *m,
                             int N, size_t L);
void mamba_layer_backward_gpu(gpu_ctx_t *g, void *dx, float *dparams, void *scratch,
                              const void *dy, const void *x, const void *saved,
                              const float *params, const void *params_act,
                              const mamba_layer_t *m, int N, size_t L);

// CUDA-event timing of the stream's work (gpu_timer.cu): ms waits for the stop event.
typedef struct gpu_timer gpu_timer_t;
gpu_timer_t *gpu_timer_new(gpu_ctx_t *g);
void         gpu_timer_start(gpu_timer_t *t);
void         gpu_timer_stop(gpu_timer_t *t);
float        gpu_timer_ms(gpu_timer_t *t);
void         gpu_timer_free(gpu_timer_t **t);
// ---- end of the Mamba section ----

// ---- whole model ----
// (model_plan_gpu.cu, model_fwd.cu, model_bwd.cu, train_step.cu, infer.cu, model_bench.cu;
// owner: the whole-model part.) SegResMamba (common/model.h) on the GPU: the SAME op sequence as
// common/nn/model_forward.c / model_backward.c over the SAME parameter table and offsets, so
// params, grads and Adam m, v are the CPU buffers. One exception, on the device only: every 3D
// conv / transposed-conv weight with a kernel of more than one voxel is kept channels-last there
// (conv (Cout, k, Cin), convT (Cin, k, Cout), see the conventions above). The conversion happens
// on the host in gpu_model_set_* / gpu_model_get_* and nowhere else, so checkpoints and the CPU
// model never see it. Host tensors below are channels-first fp32 (N, C, D, H, W) as on the CPU.
#include "model.h"

typedef struct gpu_model gpu_model_t;

// Bytes of the activation arena for batch N and patch dims (0 with err when the plan is invalid):
// the size function run on the same plan gpu_model_new lays out.
size_t gpu_model_arena_bytes(gpu_ctx_t *g, const model_t *m, int N, const int dims[3], char *err);
// Allocates params, grads, Adam m, v (zeroed), the bf16 weight copy (bf16 mode) and the arena,
// prepares every conv plan and freezes plan building: nothing is allocated by a step afterwards.
// m and tc must outlive the model. NULL with err for an invalid configuration.
gpu_model_t *gpu_model_new(gpu_ctx_t *g, const model_t *m, const train_cfg_t *tc, int N,
                           const int dims[3], char *err);
void gpu_model_free(gpu_model_t **gm);

// Host buffers of m->table.numel floats, PyTorch layout.
void gpu_model_set_params(gpu_model_t *gm, const float *params);
void gpu_model_get_params(gpu_model_t *gm, float *params);
void gpu_model_get_grads(gpu_model_t *gm, float *grads);
void gpu_model_set_adam(gpu_model_t *gm, const float *m, const float *v);
void gpu_model_get_adam(gpu_model_t *gm, float *m, float *v);
size_t gpu_model_param_bytes(const gpu_model_t *gm);   // device bytes of params+grads+m+v(+bf16)

// x: (N, Cin, D, H, W), labels: (N, D, H, W) class indices (region label values for sigmoid Dice).
// Forward and loss only; the logits stay readable through gpu_model_get_logits. Returns the loss.
double gpu_model_forward_loss(gpu_model_t *gm, const float *x, const uint8_t *labels);
void   gpu_model_get_logits(gpu_model_t *gm, float *logits);         // (N, K, D, H, W)
// Zero grads, forward, loss, backward (no Adam), eagerly. Returns the loss.
double gpu_model_grads(gpu_model_t *gm, const float *x, const uint8_t *labels);
// One training step as one call: zero grads, forward, loss, backward, Adam (step 1-based, lr e.g.
// lr_cosine). The first step runs eagerly and is captured into a CUDA graph; later steps upload
// x, labels and the Adam scalars (lr through a device scalar) and replay it. Returns the loss
// before the update (waits for the stream).
double gpu_model_step(gpu_model_t *gm, const float *x, const uint8_t *labels, float lr, long step);
// The same step in two halves, so that the host can prepare the next batch while the GPU runs:
// begin uploads x and labels (from pageable memory: both may be overwritten as soon as it
// returns) and enqueues the step; end waits for it and returns the loss and, in *gpu_ms, the
// device time from the upload to the end of the step (CUDA events).
void   gpu_model_step_begin(gpu_model_t *gm, const float *x, const uint8_t *labels, float lr, long step);
double gpu_model_step_end(gpu_model_t *gm, float *gpu_ms);
// 1 (default; SRM_GPU_NO_GRAPH=1 turns it off): steps replay the captured graph; 0: eager steps.
void   gpu_model_use_graph(gpu_model_t *gm, int on);

// ---- measurement (model_bench.cu, train_step.cu) ----
// n steps after `warm` unmeasured ones, each timed with CUDA events: ms[n].
void gpu_model_time_steps(gpu_model_t *gm, const float *x, const uint8_t *labels, int warm, int n,
                          float *ms);
typedef enum {
    GPU_KIND_CONV = 0, GPU_KIND_MAMBA, GPU_KIND_NORM, GPU_KIND_GEMM, GPU_KIND_ELEMENTWISE,
    GPU_KIND_COPY, GPU_KIND_LOSS, GPU_KIND_ADAM, GPU_KIND_COUNT
} gpu_kind_t;
const char *gpu_kind_name(int kind);
// One eager step with CUDA events around every op: device ms per kind (ms[GPU_KIND_COUNT]) and
// the whole step's ms between its first and last event. Mamba layers are one kind (their scans,
// GEMMs, conv1d and LayerNorm); gpu_model_time_scans splits the scans out.
void gpu_model_profile_step(gpu_model_t *gm, const float *x, const uint8_t *labels, long step,
                            double ms[GPU_KIND_COUNT], double *total_ms);
// The selective scans of one training step replayed alone (same shapes, every ToM layer, all
// three directions, forward then backward, each with the layer's gate pass: the work of
// mamba_ssm's scan with z) on random inputs: ms of the forward and the backward scans per
// replay, median of n after warm, launched one by one (fwd_ms, bwd_ms) and as two CUDA graphs
// (graph_*: as the training step's graph runs them; graph_ok 0 where capture failed).
typedef struct {
    double fwd_ms, bwd_ms, graph_fwd_ms, graph_bwd_ms;
    int graph_ok;
} gpu_scan_times_t;
void gpu_model_time_scans(gpu_model_t *gm, int warm, int n, gpu_scan_times_t *out);
// The Mamba layers' bucket split by part (mamba_layer.cu marks each part, model_bench.cu names
// them): forward, the backward's recomputes (rc) and the backward proper. The gate Y * SiLU(z)
// and its backward are their own part (gate).
typedef enum {
    GPU_MPART_LN_FWD = 0, GPU_MPART_LN_RC, GPU_MPART_LN_BWD,
    GPU_MPART_IN_FWD, GPU_MPART_IN_RC, GPU_MPART_IN_BWD,
    GPU_MPART_CONV_FWD, GPU_MPART_CONV_RC, GPU_MPART_CONV_BWD,
    GPU_MPART_XPROJ_FWD, GPU_MPART_XPROJ_BWD,
    GPU_MPART_SCAN_FWD, GPU_MPART_SCAN_BWD,
    GPU_MPART_OUT_FWD, GPU_MPART_OUT_BWD,
    GPU_MPART_GATE,
    GPU_MPART_COUNT
} gpu_mpart_t;
#define GPU_MPART_END (-1)      // closes a layer call's last part
const char *gpu_mpart_name(int part);
// gpu_model_profile_step with the Mamba layers' parts marked in the same step: parts[] in ms
// and count[] the intervals summed into each (NULL: not wanted). The parts sum to at most
// ms[GPU_KIND_MAMBA]; the rest is the gaps between a layer's first / last mark and the ops
// around it. Returns -1 with err (kinds still filled) when the marks could not be summed.
int gpu_model_profile_step_parts(gpu_model_t *gm, const float *x, const uint8_t *labels,
                                 long step, double ms[GPU_KIND_COUNT], double *total_ms,
                                 double parts[GPU_MPART_COUNT], int *count, char *err);

// ---- inference (infer.cu): forward only, no saved tensors, temporaries reused per level ----
typedef struct gpu_infer gpu_infer_t;
// A batch of N windows of dims. share: NULL = own parameter buffers (gpu_infer_set_params), else
// read gm's device parameters (no copy).
gpu_infer_t *gpu_infer_new(gpu_ctx_t *g, const model_t *m, int N, const int dims[3],
                           gpu_model_t *share, char *err);
void gpu_infer_free(gpu_infer_t **gi);
void gpu_infer_set_params(gpu_infer_t *gi, const float *params);    // PyTorch layout, host
size_t gpu_infer_arena_bytes(const gpu_infer_t *gi);
// x: (N, Cin, D, H, W) -> logits (N, K, D, H, W) (NULL: left on the device)
void gpu_infer_run(gpu_infer_t *gi, const float *x, float *logits);
// Forward of the uploaded x only, timed with CUDA events: ms[n] after warm.
void gpu_infer_time(gpu_infer_t *gi, const float *x, int warm, int n, float *ms);
// Sliding-window inference over vol (Cin, D, H, W) (MONAI semantics: windows of the dims given at
// creation, step int(dim * (1 - overlap)), last window flush with the end, zero padding where the
// volume is smaller, constant weights), N windows per batch. Writes the averaged logits
// (K, D, H, W) and/or the argmax labels (D, H, W) (either may be NULL). -1 with err on bad input.
int gpu_infer_sliding(gpu_infer_t *gi, const float *vol, const int vdims[3], double overlap,
                      float *logits, uint8_t *labels, int *nwindows, char *err);
// ---- end of the whole-model section ----

#ifdef __cplusplus
}
#endif
#endif
