/*
model_internal.cuh -- what the whole-model files of gpu/ share (model_plan_gpu.cu, model_fwd.cu,
model_bwd.cu, train_step.cu, infer.cu, model_bench.cu) and nothing else sees: the buffer plan of
one forward/backward (device pointers into one arena), the parameter views, the per-op profiling
hook and struct gpu_model. Only .cu files include this; the public API is gpu.h's
"whole model" section.
*/
#ifndef SRM_MODEL_INTERNAL_CUH
#define SRM_MODEL_INTERNAL_CUH
#include "gpu_internal.h"

#define GM_IN_EPS 1e-5      // InstanceNorm3d / GroupNorm eps (model_forward.c)

// ---- buffer plan: every tensor of one forward (and backward) has a fixed device address ------
// Activations are act-type, channels-last (N, S, C); statistics f32. In training every field is
// its own buffer except the ones marked "temp", which alias the shared temporaries below, and
// each Mamba layer's scratch, which overlaps the saved tensors of LATER layers (dead while it
// runs: model_plan_gpu.cu's lay_out says why); the inference plan (infer.cu) aliases far more
// (temporaries reused level after level, one Mamba scratch for all).
typedef struct {
    int s[3], h[3], hp[3], pad_a, crop_off[3];      // extents (model_plan()'s geometry)
    size_t numel_s, numel_h, numel_hp, numel_2h;    // N*d*voxels
    void *X;                                        // level input (stem / downsample output)
    void *dn_c, *dn_n;                              // downsample conv3 output; IN of it (temp)
    float *dn_mean, *dn_rstd;
    void *p1, *a1, *p3, *a3;                        // CMMB conv outputs (saved) and their
    float *p1_mean, *p1_rstd, *p3_mean, *p3_rstd;   //   ReLU(IN(.)) (temp, recomputed)
    void *ta_in, *ta_out, *ta_saved;                // ToM_A input (saved), output, Mamba saved
    void *ta_scratch;                               // its Mamba scratch (NULL: plan's scratch)
    void *b;                                        // proj4 input (saved)
    void *p4, *a4, *p5, *a5;
    float *p4_mean, *p4_rstd, *p5_mean, *p5_rstd;
    void *Y;                                        // X + crop(a5): stage input
    void *st_out[MODEL_STAGE_MAX], *st_saved[MODEL_STAGE_MAX];
    void *st_scratch[MODEL_STAGE_MAX];              // per ToM stage (NULL: plan's scratch)
    void *x;                                        // level output (== last stage output)
    void *xn;                                       // IN(x): fc1 and next downsample input
    float *xn_mean, *xn_rstd;
    void *h1, *g1;                                  // fc1 output (saved), GELU(h1) (temp)
    void *skip;                                     // fc2 output
} gm_level_t;

typedef struct {
    int s[3];
    size_t numel;                                   // N*c*voxels at s
    void *u;                                        // conv1x1 output, coarse (temp)
    void *v;                                        // upsample(u) + skip (saved)
    void *r1, *c1, *r2, *out;                       // r1, r2 temp (ReLU(GN(.)) recomputed)
    float *n1_mean, *n1_rstd, *n2_mean, *n2_rstd;
} gm_dec_t;

#define GM_ACCT_MAX 48

typedef struct {
    int N, dims[3];
    size_t in_numel, out_numel;                     // N*Cin*S, N*K*S
    gm_level_t lv[MODEL_LEVELS];
    gm_dec_t dec[3];
    void *x;                                        // input as 2x2x2 blocks, channels-last act
                                                    // (gm_x_numel; stem_s2d.cu)
    void *stem_w;                                   // the stem's block weight (act; formed by
                                                    // every forward from the stem weight)
    float *stem_dw;                                 // its f32 gradient (training only)
    void *head_w;                                   // the head's GEMM weight (act; formed by
    float *head_dw;                                 //   every forward; head_d2s.cu), its f32
                                                    //   gradient (training only)
    void *head_yb, *head_dyb;                       // the head's block-form temporaries, logits-
                                                    //   sized: forward (free then: Ta in
                                                    //   training), backward (training: Tg)
    void *logits, *dlogits;                         // (N, S, K)
    void *scratch;                                  // one Mamba scratch for every layer
                                                    // (inference; training: NULL, per layer)
    // backward temporaries (training only); bytes of each
    void *Ta, *Tg, *DX, *XN[2], *Tr;
    float *tmean, *trstd;                           // statistics of recomputed norms
    void *dskip[MODEL_LEVELS];                      // d skip_i; d out of decoder 2-i
    size_t bytes;                                   // arena bytes of the whole plan
    // where the bytes go (filled by gm_plan_training, printed by gm_plan_log)
    struct { const char *what; size_t bytes; } acct[GM_ACCT_MAX];
    int nacct;
} gm_plan_t;

// Lay the training plan out from `base` (NULL: only count; plan->bytes is the total).
int gm_plan_training(gm_plan_t *p, gpu_ctx_t *g, const model_t *m, int N, const int dims[3],
                     char *base, char *err);
// The plan's byte accounting, one log line per item (also works on a counting-pass plan).
void gm_plan_log(const gm_plan_t *p);
// Geometry only (extents, numels) from model_plan(); pointers NULL.
int gm_plan_geometry(gm_plan_t *p, const model_t *m, int N, const int dims[3], char *err);

// The Mamba scratch of a layer: its own (training plan) or the plan's shared one (inference).
static inline void *gm_scratch(const gm_plan_t *p, void *own) { return own ? own : p->scratch; }

// Bump allocation over a plan's base (NULL base: counting pass, pointers stay NULL).
typedef struct { char *base; size_t off, high; } gm_bump_t;
static inline void *gm_take(gm_bump_t *b, size_t bytes)
{
    void *r = b->base ? b->base + b->off : NULL;
    b->off += gpu_arena_round(bytes ? bytes : 1);
    if (b->off > b->high) b->high = b->off;
    return r;
}

// ---- parameters -------------------------------------------------------------------------------
typedef struct {
    const float *p;     // fp32 master (device layout)
    const void *pa;     // act-type copy the convs and GEMMs read (== p in f32 mode)
    size_t es;          // bytes of one act element
} gm_params_t;

static inline const void *gm_w(const gm_params_t *q, size_t off)
{
    return (const char *)q->pa + off * q->es;
}
static inline const float *gm_b(const gm_params_t *q, size_t off)
{
    return off == PARAM_NONE ? NULL : q->p + off;
}
static inline float *gm_gb(float *G, size_t off) { return off == PARAM_NONE ? NULL : G + off; }

// The stem convolution's shape at batch N and input extents dims (run as stem_s2d_shape of it).
static inline conv3d_shape_t gm_stem_shape(const model_t *m, int N, const int dims[3])
{
    const conv_p_t *c = &m->lv[0].stem;
    return conv3d_shape(N, c->cin, c->cout, dims, c->k, 2, 3);
}
// The head's transposed-conv shape (k2 s2 over decoder 2's output) at batch N.
static inline conv3d_shape_t gm_head_shape(const model_t *m, int N, const int s[3])
{
    return conv3d_shape(N, m->out.cin, m->out.cout, s, 2, 2, 0);
}
// Elements of the plan's input x (the stem's blocks; stem_s2d.cu).
static inline size_t gm_x_numel(const model_t *m, const gm_plan_t *p)
{
    return stem_s2d_input_numel(gm_stem_shape(m, p->N, p->dims));
}
// Elements of the stem's block weight (stem_s2d.cu).
static inline size_t gm_stem_w_numel(const model_t *m, const gm_plan_t *p)
{
    const conv3d_shape_t s = stem_s2d_shape(gm_stem_shape(m, p->N, p->dims));
    return (size_t)s.Cout * s.Cin * s.k[0] * s.k[1] * s.k[2];
}

// Prepare (cuDNN plans, weight-gradient scratch) every conv the model runs at batch N and dims.
void gm_prepare_convs(gpu_ctx_t *g, const model_t *m, const gm_plan_t *p);

// ---- per-op profiling: an event before every op, tagged with the op's kind ------------------
typedef struct {
    cudaEvent_t *ev;
    int *kind;
    int n, cap;
} gm_prof_t;
// Record the boundary before an op of `kind` (no-op when pr is NULL).
void gm_prof(gm_prof_t *pr, gpu_ctx_t *g, int kind);

// ---- the passes (model_fwd.cu, model_bwd.cu) -------------------------------------------------
// Forward from p->x to p->logits. With train = 0 nothing backward needs is assumed kept.
void gm_forward(gpu_ctx_t *g, const gm_plan_t *p, const gm_params_t *q, const model_t *m,
                gm_prof_t *pr);
// Backward from p->dlogits; ACCUMULATES parameter gradients into G (device layout).
void gm_backward(gpu_ctx_t *g, const gm_plan_t *p, const gm_params_t *q, float *G,
                 const model_t *m, gm_prof_t *pr);

// ---- the training state ----------------------------------------------------------------------
typedef struct { float lr, step_size, inv_bc2_sqrt; } gm_adam_scalars_t;

struct gpu_model {
    gpu_ctx_t *g;
    const model_t *m;
    const train_cfg_t *tc;
    int N, dims[3];
    size_t numel;                   // parameters
    float *params, *grads, *adam_m, *adam_v;
    void *params16;                 // bf16 copy (bf16 mode), else NULL
    gm_params_t q;
    float *x_stage;                 // (N, Cin, S) fp32 upload target
    uint8_t *labels;                // (N, S)
    float *loss;                    // [dice, ce, total]
    gm_adam_scalars_t *adam_dev;    // device scalars read by the Adam kernel
    gpu_arena_t *arena;
    gm_plan_t plan;
    int use_graph;
    cudaGraphExec_t graph;          // NULL until captured
    int graph_failed;
    gpu_timer_t *step_timer;        // upload -> end of step (gpu_model_step_begin / _end)
    size_t param_bytes;
};

// train_step.cu: the pieces of one step, enqueued on the stream.
void gm_upload_inputs(gpu_model_t *gm, const float *x, const uint8_t *labels);
void gm_enqueue_forward_loss(gpu_model_t *gm, int backward_too, gm_prof_t *pr);
void gm_enqueue_step(gpu_model_t *gm, gm_prof_t *pr);
void gm_set_adam_scalars(gpu_model_t *gm, float lr, long step);

// Host conversion of the conv weights between the PyTorch layout and the device layout.
// dir = +1: PyTorch -> device, -1: device -> PyTorch. src and dst are whole parameter buffers.
void gm_params_layout(const model_t *m, float *dst, const float *src, int dir);
// A PyTorch-layout host buffer of all parameters -> dev (f32, device layout); dev16 (NULL: none)
// gets its bf16 copy (enqueued on the stream; the upload itself is done when it returns).
void gm_params_upload(gpu_ctx_t *g, const model_t *m, float *dev, void *dev16, const float *host);
// n zeroed fp32 parameters on the device (*p, labelled what) and, when activations are bf16, their
// zeroed bf16 copy (*p16, labelled what16; else NULL); q reads them. Returns the bytes taken.
size_t gm_params_alloc(gpu_ctx_t *g, size_t n, const char *what, const char *what16, float **p,
                       void **p16, gm_params_t *q);

// Host bf16 -> f32 (downloads of act-type tensors).
float gm_bf16_to_f32(uint16_t h);

#endif
