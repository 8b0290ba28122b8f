/*
conv_cudnn.cu -- ALL cuDNN calls of the project: 3D convolution and transposed convolution,
forward and backward, through the cuDNN 9 graph/backend C API (cudnn_graph.h), channels-last
(NDHWC) tensors and filters, fp32 or bf16 I/O, fp32 accumulation.

Every op is one of the three cuDNN convolution operations on a "conv problem"
x (N, C, big) * w (K, C, k) -> y (N, K, small):
  conv forward       = FWD(x -> y)            convT forward       = BWD_DATA(x_T as dy -> y_T)
  conv backward dx   = BWD_DATA(dy -> dx)     convT backward dx   = FWD(dy_T -> dx_T)
  conv backward dw   = BWD_FILTER(x, dy)      convT backward dw   = BWD_FILTER(dy_T as x, x_T)
Plans are built once per (operation, shape, type, beta), by heuristics (mode A, then the
fallback list) filtered by the precision policy, and cached; a step only executes them.
Policy: strict fp32 drops engines noted TENSOR_CORE (TF32), DOWN_CONVERT_INPUTS,
REDUCED_PRECISION_REDUCTION, FFT and WINOGRAD; the deterministic switch drops NONDETERMINISTIC.
Backward accumulates through beta = 1, except bf16 weight gradients: cuDNN writes them (beta 0)
in bf16 to a scratch buffer which is then added into the fp32 master gradient.
Biases are not fused: bias_add_gpu / bias_grad_gpu (elementwise.cu) handle them.
*/
#include "gpu_internal.h"
#include <stdlib.h>
#include <string.h>

enum { CK_FWD = 0, CK_BWD_DATA = 1, CK_BWD_FILTER = 2 };
static const char *kind_name[] = { "forward", "backward-data", "backward-filter" };

// All ints, so memcmp on a zeroed key is exact.
typedef struct {
    int kind, N, C, K;
    int big[3], small[3], k[3], stride[3], pad[3];
    int dtype;          // cudnnDataType_t of every tensor of the operation
    int beta_one;       // 1: accumulate into the output
} conv_key_t;

#define PLAN_DESCS 8
typedef struct {
    conv_key_t key;
    cudnnBackendDescriptor_t plan;
    cudnnBackendDescriptor_t keep[PLAN_DESCS];  // descriptors the plan was built from
    int nkeep;
    int64_t ws;
} conv_plan_t;

struct conv_cache {
    conv_plan_t *plans;
    int n, cap;
    int frozen;
    size_t max_ws;
    void *wscratch;            // bf16 weight-gradient scratch (bf16 mode)
    size_t wscratch_bytes;
};

// Engines needing more workspace than this are skipped (memory is a target of the project).
static const int64_t WS_CAP = (int64_t)512 << 20;
static const int64_t UID_X = 1, UID_W = 2, UID_Y = 3;

void gpu_conv_cache_init(gpu_ctx_t *g) { g->conv = (conv_cache *)xcalloc(1, sizeof *g->conv); }

void gpu_conv_cache_free(gpu_ctx_t *g)
{
    conv_cache *c = g->conv;
    if (!c) return;
    for (int i = 0; i < c->n; i++) {
        CUDNN_CHECK(cudnnBackendDestroyDescriptor(c->plans[i].plan));
        for (int j = c->plans[i].nkeep; j-- > 0;)
            CUDNN_CHECK(cudnnBackendDestroyDescriptor(c->plans[i].keep[j]));
    }
    free(c->plans);
    gpu_free(g, c->wscratch);
    free(c);
    g->conv = NULL;
}

void gpu_conv_freeze(gpu_ctx_t *g, int frozen) { g->conv->frozen = frozen; }

void gpu_conv_plan_stats(const gpu_ctx_t *g, int *nplans, size_t *max_ws)
{
    *nplans = g->conv->n;
    *max_ws = g->conv->max_ws;
}

static int verbose_plans(void)
{
    const char *v = getenv("SRM_GPU_VERBOSE");
    return v && *v && *v != '0';
}

// ---- descriptor building -------------------------------------------------------------------
static void key_describe(const conv_key_t *k, char *buf, size_t len)
{
    snprintf(buf, len,
             "%s N=%d C=%d K=%d big=%dx%dx%d small=%dx%dx%d k=%dx%dx%d stride=%d,%d,%d "
             "pad=%d,%d,%d %s beta=%d",
             kind_name[k->kind], k->N, k->C, k->K, k->big[0], k->big[1], k->big[2], k->small[0],
             k->small[1], k->small[2], k->k[0], k->k[1], k->k[2], k->stride[0], k->stride[1],
             k->stride[2], k->pad[0], k->pad[1], k->pad[2],
             k->dtype == CUDNN_DATA_FLOAT ? "f32" : "bf16", k->beta_one);
}

static void set_attr(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                     cudnnBackendAttributeType_t type, int64_t count, const void *val)
{
    CUDNN_CHECK(cudnnBackendSetAttribute(d, name, type, count, val));
}

// A channels-last tensor (or filter): logical dims (n, c, s0, s1, s2), c fastest in memory.
static cudnnBackendDescriptor_t make_tensor(int64_t uid, cudnnDataType_t dt, int n, int c,
                                            const int sp[3])
{
    int64_t dims[5] = { n, c, sp[0], sp[1], sp[2] };
    int64_t strides[5];
    strides[1] = 1;
    strides[4] = c;
    strides[3] = (int64_t)sp[2] * c;
    strides[2] = (int64_t)sp[1] * sp[2] * c;
    strides[0] = (int64_t)sp[0] * sp[1] * sp[2] * c;
    int64_t align = 16;
    cudnnBackendDescriptor_t t;
    CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, &t));
    set_attr(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt);
    set_attr(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 5, dims);
    set_attr(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 5, strides);
    set_attr(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    set_attr(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align);
    CUDNN_CHECK(cudnnBackendFinalize(t));
    return t;
}

static cudnnBackendDescriptor_t make_conv_desc(const conv_key_t *k)
{
    int64_t nsp = 3, dil[3] = { 1, 1, 1 }, str[3], pad[3];
    for (int i = 0; i < 3; i++) { str[i] = k->stride[i]; pad[i] = k->pad[i]; }
    cudnnDataType_t comp = CUDNN_DATA_FLOAT;           // fp32 accumulation in both modes
    cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    cudnnBackendDescriptor_t c;
    CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, &c));
    set_attr(c, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &nsp);
    set_attr(c, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp);
    set_attr(c, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode);
    set_attr(c, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 3, dil);
    set_attr(c, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 3, str);
    set_attr(c, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 3, pad);
    set_attr(c, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 3, pad);
    CUDNN_CHECK(cudnnBackendFinalize(c));
    return c;
}

static cudnnBackendDescriptor_t make_op(const conv_key_t *k, cudnnBackendDescriptor_t x,
                                        cudnnBackendDescriptor_t w, cudnnBackendDescriptor_t y,
                                        cudnnBackendDescriptor_t conv)
{
    static const cudnnBackendDescriptorType_t type[3] = {
        CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
        CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
        CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR };
    float alpha = 1.0f, beta = k->beta_one ? 1.0f : 0.0f;
    cudnnBackendDescriptor_t op;
    CUDNN_CHECK(cudnnBackendCreateDescriptor(type[k->kind], &op));
    const cudnnBackendAttributeType_t D = CUDNN_TYPE_BACKEND_DESCRIPTOR, F = CUDNN_TYPE_FLOAT;
    if (k->kind == CK_FWD) {
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, D, 1, &x);
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, D, 1, &w);
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, D, 1, &y);
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, D, 1, &conv);
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, F, 1, &alpha);
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, F, 1, &beta);
    } else if (k->kind == CK_BWD_DATA) {
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, D, 1, &x);
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W, D, 1, &w);
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, D, 1, &y);
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC, D, 1, &conv);
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, F, 1, &alpha);
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA, F, 1, &beta);
    } else {
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, D, 1, &x);
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW, D, 1, &w);
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, D, 1, &y);
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC, D, 1, &conv);
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, F, 1, &alpha);
        set_attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA, F, 1, &beta);
    }
    CUDNN_CHECK(cudnnBackendFinalize(op));
    return op;
}

// Does the engine of cfg obey the precision and determinism policy? relax: 1 ignores the
// determinism switch, 2 also the precision policy (last resorts, logged by the caller).
static int engine_allowed(const gpu_ctx_t *g, cudnnBackendDescriptor_t cfg, int relax,
                          int64_t *engine_id)
{
    cudnnBackendDescriptor_t eng;
    CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng));
    int64_t cnt = 0;
    CUDNN_CHECK(cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE,
                                         CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cnt, &eng));
    cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    int64_t nn = 0;
    CUDNN_CHECK(cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
                                         CUDNN_TYPE_NUMERICAL_NOTE, CUDNN_NUMERICAL_NOTE_TYPE_COUNT,
                                         &nn, notes));
    CUDNN_CHECK(cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1,
                                         &cnt, engine_id));
    CUDNN_CHECK(cudnnBackendDestroyDescriptor(eng));
    for (int64_t i = 0; i < nn; i++) {
        cudnnBackendNumericalNote_t n = notes[i];
        if (relax < 1 && g->deterministic && n == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) return 0;
        if (relax < 2 && g->act == GPU_F32 &&
            (n == CUDNN_NUMERICAL_NOTE_TENSOR_CORE || n == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS ||
             n == CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION ||
             n == CUDNN_NUMERICAL_NOTE_FFT || n == CUDNN_NUMERICAL_NOTE_WINOGRAD ||
             n == CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_4x4 ||
             n == CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_6x6 ||
             n == CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_13x13))
            return 0;
    }
    return 1;
}

// Try the engine configs of one heuristics mode in order; returns a finalized plan or NULL.
// On success *cfg_out is the chosen config (the caller keeps it alive with the plan).
static cudnnBackendDescriptor_t plan_from_heuristics(gpu_ctx_t *g, cudnnBackendDescriptor_t graph,
                                                     cudnnBackendHeurMode_t mode,
                                                     int relax, cudnnBackendDescriptor_t *cfg_out,
                                                     int64_t *ws_out, int64_t *engine_out,
                                                     int *n_tried)
{
    cudnnBackendDescriptor_t heur;
    CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur));
    set_attr(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph);
    set_attr(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    if (cudnnBackendFinalize(heur) != CUDNN_STATUS_SUCCESS) {   // a mode may not apply
        CUDNN_CHECK(cudnnBackendDestroyDescriptor(heur));
        return NULL;
    }
    int64_t count = 0;
    CUDNN_CHECK(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                         CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, NULL));
    cudnnBackendDescriptor_t *cfgs =
        (cudnnBackendDescriptor_t *)xcalloc(count ? (size_t)count : 1, sizeof *cfgs);
    for (int64_t i = 0; i < count; i++)
        CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfgs[i]));
    int64_t got = 0;
    if (count)
        CUDNN_CHECK(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                             CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got, cfgs));
    cudnnBackendDescriptor_t plan = NULL;
    int chosen = -1;
    for (int64_t i = 0; i < got && !plan; i++) {
        int64_t engine_id = -1;
        if (!engine_allowed(g, cfgs[i], relax, &engine_id)) continue;
        (*n_tried)++;
        cudnnBackendDescriptor_t p;
        CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &p));
        set_attr(p, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &g->cudnn);
        set_attr(p, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                 &cfgs[i]);
        int64_t ws = 0, n1 = 0;
        // An engine config the heuristics list may still refuse this problem: try the next.
        if (cudnnBackendFinalize(p) == CUDNN_STATUS_SUCCESS &&
            cudnnBackendGetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                     CUDNN_TYPE_INT64, 1, &n1, &ws) == CUDNN_STATUS_SUCCESS &&
            ws <= WS_CAP) {
            plan = p;
            chosen = (int)i;
            *ws_out = ws;
            *engine_out = engine_id;
        } else {
            CUDNN_CHECK(cudnnBackendDestroyDescriptor(p));
        }
    }
    for (int64_t i = 0; i < count; i++)
        if (i != chosen) CUDNN_CHECK(cudnnBackendDestroyDescriptor(cfgs[i]));
    *cfg_out = chosen >= 0 ? cfgs[chosen] : NULL;
    free(cfgs);
    CUDNN_CHECK(cudnnBackendDestroyDescriptor(heur));
    return plan;
}

static conv_plan_t *build_plan(gpu_ctx_t *g, const conv_key_t *k)
{
    char what[320];
    key_describe(k, what, sizeof what);
    if (g->conv->frozen)
        DIE("conv plan %s was not prepared before gpu_conv_freeze (a plan would be built inside "
            "the step)", what);

    cudnnDataType_t dt = (cudnnDataType_t)k->dtype;
    conv_plan_t P;
    memset(&P, 0, sizeof P);
    P.key = *k;
    cudnnBackendDescriptor_t x = make_tensor(UID_X, dt, k->N, k->C, k->big);
    cudnnBackendDescriptor_t w = make_tensor(UID_W, dt, k->K, k->C, k->k);
    cudnnBackendDescriptor_t y = make_tensor(UID_Y, dt, k->N, k->K, k->small);
    cudnnBackendDescriptor_t conv = make_conv_desc(k);
    cudnnBackendDescriptor_t op = make_op(k, x, w, y, conv);
    cudnnBackendDescriptor_t graph;
    CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph));
    set_attr(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op);
    set_attr(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &g->cudnn);
    cudnnStatus_t st = cudnnBackendFinalize(graph);
    if (st != CUDNN_STATUS_SUCCESS)
        DIE("cuDNN refuses the operation graph of conv %s: %s", what, cudnnGetErrorString(st));

    // Heuristics mode A, then the fallback list; only if neither has an engine within the
    // policy, relax it one step at a time, loudly (the tests then show the consequence).
    cudnnBackendDescriptor_t cfg = NULL;
    int tried = 0, relax;
    int64_t engine = -1;
    for (relax = 0; relax < 3 && !P.plan; relax++) {
        P.plan = plan_from_heuristics(g, graph, CUDNN_HEUR_MODE_A, relax, &cfg, &P.ws, &engine,
                                      &tried);
        if (!P.plan)
            P.plan = plan_from_heuristics(g, graph, CUDNN_HEUR_MODE_FALLBACK, relax, &cfg, &P.ws,
                                          &engine, &tried);
        if (!P.plan && relax == 0 && !g->deterministic) relax++;    // nothing to relax there
    }
    if (!P.plan)
        DIE("no cuDNN engine at all for conv %s (%d configs tried)", what, tried);
    if (relax > 1)
        log_msg('W', "conv %s: no engine within the %s%s policy; using engine %lld outside it",
                what, g->act == GPU_F32 ? "strict fp32" : "bf16",
                g->deterministic ? ", deterministic" : "", (long long)engine);
    if (verbose_plans())
        log_msg('I', "conv plan %s: engine %lld, workspace %lld bytes", what, (long long)engine,
                (long long)P.ws);
    cudnnBackendDescriptor_t keep[PLAN_DESCS] = { cfg, graph, op, conv, y, w, x };
    P.nkeep = 7;
    memcpy(P.keep, keep, sizeof keep);

    conv_cache *c = g->conv;
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 64;
        c->plans = (conv_plan_t *)xrealloc(c->plans, (size_t)c->cap * sizeof *c->plans);
    }
    c->plans[c->n] = P;
    if ((size_t)P.ws > c->max_ws) c->max_ws = (size_t)P.ws;
    gpu_workspace_reserve(g, (size_t)P.ws);
    return &c->plans[c->n++];
}

static conv_plan_t *get_plan(gpu_ctx_t *g, const conv_key_t *k)
{
    conv_cache *c = g->conv;
    for (int i = 0; i < c->n; i++)
        if (!memcmp(&c->plans[i].key, k, sizeof *k)) return &c->plans[i];
    return build_plan(g, k);
}

static void execute(gpu_ctx_t *g, const conv_plan_t *p, void *x, void *w, void *y)
{
    void *ptrs[3] = { x, w, y };
    int64_t uids[3] = { UID_X, UID_W, UID_Y };
    for (int i = 0; i < 3; i++) ASSERT(((uintptr_t)ptrs[i] & 15) == 0);   // BYTE_ALIGNMENT 16
    ASSERT((size_t)p->ws <= g->ws_bytes);
    void *ws = g->ws;
    cudnnBackendDescriptor_t vp;
    CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp));
    set_attr(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids);
    set_attr(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, ptrs);
    set_attr(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    CUDNN_CHECK(cudnnBackendFinalize(vp));
    CUDNN_CHECK(cudnnBackendExecute(g->cudnn, p->plan, vp));
    CUDNN_CHECK(cudnnBackendDestroyDescriptor(vp));
}

// ---- problems of the four public ops ------------------------------------------------------
// conv: x (N, Cin, in) -> y (N, Cout, out)
static conv_key_t conv_problem(const gpu_ctx_t *g, conv3d_shape_t s, int kind, int beta_one)
{
    conv_key_t k;
    memset(&k, 0, sizeof k);
    k.kind = kind;
    k.N = s.N; k.C = s.Cin; k.K = s.Cout;
    conv3d_out_dims(&s, k.small);
    for (int i = 0; i < 3; i++) {
        k.big[i] = s.in[i]; k.k[i] = s.k[i]; k.stride[i] = s.stride[i]; k.pad[i] = s.pad[i];
    }
    k.dtype = g->act == GPU_F32 ? CUDNN_DATA_FLOAT : CUDNN_DATA_BFLOAT16;
    k.beta_one = beta_one;
    return k;
}

// convT: its output y_T (N, Cout, out) is the conv problem's x (C = Cout, big = out), its
// input x_T (N, Cin, in) is the conv problem's y (K = Cin, small = in).
static conv_key_t convT_problem(const gpu_ctx_t *g, conv3d_shape_t s, int kind, int beta_one)
{
    conv_key_t k;
    memset(&k, 0, sizeof k);
    k.kind = kind;
    k.N = s.N; k.C = s.Cout; k.K = s.Cin;
    conv_transpose3d_out_dims(&s, k.big);
    for (int i = 0; i < 3; i++) {
        k.small[i] = s.in[i]; k.k[i] = s.k[i]; k.stride[i] = s.stride[i]; k.pad[i] = s.pad[i];
    }
    k.dtype = g->act == GPU_F32 ? CUDNN_DATA_FLOAT : CUDNN_DATA_BFLOAT16;
    k.beta_one = beta_one;
    return k;
}

static size_t vox(const int d[3]) { return (size_t)d[0] * d[1] * d[2]; }

// bf16 mode: weight gradients go through a bf16 scratch of the weight's size.
static void reserve_wscratch(gpu_ctx_t *g, size_t nw)
{
    if (g->act == GPU_F32) return;
    size_t bytes = nw * sizeof(bf16);
    conv_cache *c = g->conv;
    if (bytes <= c->wscratch_bytes) return;
    if (c->frozen) DIE("conv weight-gradient scratch of %zu bytes was not prepared", bytes);
    CUDA_CHECK(cudaStreamSynchronize(g->stream));
    gpu_free(g, c->wscratch);
    c->wscratch = gpu_malloc(g, bytes, "bf16 conv weight-gradient scratch");
    c->wscratch_bytes = bytes;
}

// Weight gradient of one problem: fp32 accumulates in place, bf16 goes through the scratch.
static void weight_grad(gpu_ctx_t *g, const conv_key_t *kf, float *dw, void *xa, void *ya)
{
    size_t nw = (size_t)kf->K * kf->C * vox(kf->k);
    if (g->act == GPU_F32) {
        execute(g, get_plan(g, kf), xa, dw, ya);
        return;
    }
    reserve_wscratch(g, nw);
    execute(g, get_plan(g, kf), xa, g->conv->wscratch, ya);
    gpu_add_to_f32(g, dw, g->conv->wscratch, GPU_BF16, nw);
}

void conv3d_forward_gpu(gpu_ctx_t *g, void *y, const void *x, const void *w, const float *b,
                        conv3d_shape_t s)
{
    conv_key_t k = conv_problem(g, s, CK_FWD, 0);
    execute(g, get_plan(g, &k), (void *)x, (void *)w, y);
    if (b) bias_add_gpu(g, y, b, (size_t)s.N * vox(k.small), s.Cout);
}

void conv3d_backward_gpu(gpu_ctx_t *g, void *dx, float *dw, float *db, const void *dy,
                         const void *x, const void *w, conv3d_shape_t s)
{
    if (dx) {
        conv_key_t k = conv_problem(g, s, CK_BWD_DATA, 1);
        execute(g, get_plan(g, &k), dx, (void *)w, (void *)dy);
    }
    if (dw) {
        conv_key_t k = conv_problem(g, s, CK_BWD_FILTER, g->act == GPU_F32);
        weight_grad(g, &k, dw, (void *)x, (void *)dy);
    }
    if (db) {
        int out[3];
        conv3d_out_dims(&s, out);
        bias_grad_gpu(g, db, dy, (size_t)s.N * vox(out), s.Cout);
    }
}

void conv_transpose3d_forward_gpu(gpu_ctx_t *g, void *y, const void *x, const void *w,
                                  const float *b, conv3d_shape_t s)
{
    conv_key_t k = convT_problem(g, s, CK_BWD_DATA, 0);
    execute(g, get_plan(g, &k), y, (void *)w, (void *)x);
    if (b) bias_add_gpu(g, y, b, (size_t)s.N * vox(k.big), s.Cout);
}

void conv_transpose3d_backward_gpu(gpu_ctx_t *g, void *dx, float *dw, float *db, const void *dy,
                                   const void *x, const void *w, conv3d_shape_t s)
{
    if (dx) {
        conv_key_t k = convT_problem(g, s, CK_FWD, 1);
        execute(g, get_plan(g, &k), (void *)dy, (void *)w, dx);
    }
    if (dw) {
        conv_key_t k = convT_problem(g, s, CK_BWD_FILTER, g->act == GPU_F32);
        weight_grad(g, &k, dw, (void *)dy, (void *)x);
    }
    if (db) {
        int out[3];
        conv_transpose3d_out_dims(&s, out);
        bias_grad_gpu(g, db, dy, (size_t)s.N * vox(out), s.Cout);
    }
}

void conv3d_prepare_gpu(gpu_ctx_t *g, conv3d_shape_t s)
{
    conv_key_t k0 = conv_problem(g, s, CK_FWD, 0);
    conv_key_t k1 = conv_problem(g, s, CK_BWD_DATA, 1);
    conv_key_t k2 = conv_problem(g, s, CK_BWD_FILTER, g->act == GPU_F32);
    get_plan(g, &k0);
    get_plan(g, &k1);
    get_plan(g, &k2);
    reserve_wscratch(g, (size_t)s.Cout * s.Cin * vox(s.k));
}

void conv_transpose3d_prepare_gpu(gpu_ctx_t *g, conv3d_shape_t s)
{
    conv_key_t k0 = convT_problem(g, s, CK_BWD_DATA, 0);
    conv_key_t k1 = convT_problem(g, s, CK_FWD, 1);
    conv_key_t k2 = convT_problem(g, s, CK_BWD_FILTER, g->act == GPU_F32);
    get_plan(g, &k0);
    get_plan(g, &k1);
    get_plan(g, &k2);
    reserve_wscratch(g, (size_t)s.Cout * s.Cin * vox(s.k));
}
