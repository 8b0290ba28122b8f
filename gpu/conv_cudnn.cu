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
fallback list) filtered by the precision policy, and cached; a step only executes them. With
autotuning on (autotune.cu), up to TUNE_MAX of those candidates are timed once when the plan is
built and the fastest kept (what cudnn.benchmark does), else the heuristic's first.
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
    void *bscratch;            // weight gradients through blocks: the input's blocks, then
    size_t bscratch_bytes;     //   the block weight's gradient (act)
    void *tune_scratch;        // gpu_conv_tune_scratch: memory autotuning may overwrite
    size_t tune_scratch_bytes;
    // autotuning totals, and what the last log line covered
    int tuned, timed, switched, logged, logged_timed, logged_switched;
    double tune_s, gain_ms, logged_s, logged_gain;
};

// Engines needing more workspace than this are skipped (memory is a target of the project).
static const int64_t WS_CAP = (int64_t)512 << 20;
static const int64_t UID_X = 1, UID_W = 2, UID_Y = 3;
// Autotuning: at most TUNE_MAX candidates per problem, each timed as the mean of TUNE_REPS runs
// after one warm-up. Candidates after the heuristic's first may need at most TUNE_WS_CAP of
// workspace (or the first's, if larger): the tracked peak (2.82 GiB of a 2.9 GiB budget) has
// no room for bigger workspaces. Without a scratch region, temporary test tensors up to
// TUNE_TMP_MAX may be allocated (tests and first-use paths; model set-up passes its arena).
enum { TUNE_MAX = 12, TUNE_REPS = 3 };
static const int64_t TUNE_WS_CAP = (int64_t)48 << 20;
static const size_t TUNE_TMP_MAX = (size_t)64 << 20;
static const double TUNE_COLLECT_S = 0.5;      // wall time for building extra candidate plans

static void log_tuning(conv_cache *c);

void gpu_conv_cache_init(gpu_ctx_t *g) { g->conv = (conv_cache *)xcalloc(1, sizeof *g->conv); }

void gpu_conv_cache_free(gpu_ctx_t *g)
{
    conv_cache *c = g->conv;
    if (!c) return;
    log_tuning(c);                          // plans built on first use, never frozen
    for (int i = 0; i < c->n; i++) {
        CUDNN_CHECK(cudnnBackendDestroyDescriptor(c->plans[i].plan));
        for (int j = c->plans[i].nkeep; j-- > 0;)
            CUDNN_CHECK(cudnnBackendDestroyDescriptor(c->plans[i].keep[j]));
    }
    free(c->plans);
    gpu_free(g, c->wscratch);
    gpu_free(g, c->bscratch);
    free(c);
    g->conv = NULL;
}

void gpu_conv_freeze(gpu_ctx_t *g, int frozen)
{
    g->conv->frozen = frozen;
    if (frozen) log_tuning(g->conv);        // once per batch of prepared plans
}

void gpu_conv_tune_scratch(gpu_ctx_t *g, void *p, size_t bytes)
{
    g->conv->tune_scratch = p;
    g->conv->tune_scratch_bytes = p ? bytes : 0;
}

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
// *rtc: the engine compiles its kernel at plan finalization (can take 0.1-1 s a plan).
static int engine_allowed(const gpu_ctx_t *g, cudnnBackendDescriptor_t cfg, int relax,
                          int64_t *engine_id, int *rtc)
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
    cudnnBackendBehaviorNote_t beh[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
    int64_t nb = 0;
    *rtc = 0;
    if (cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                 CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &nb, beh) == CUDNN_STATUS_SUCCESS)
        for (int64_t i = 0; i < nb; i++) *rtc |= beh[i] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION;
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

// ---- candidate plans -------------------------------------------------------------------------
// A finalized execution plan of one engine config, kept until the choice is made.
typedef struct {
    cudnnBackendDescriptor_t plan, cfg;
    int64_t ws, engine;
    char *json;             // the plan's JSON (NULL if cuDNN gives none): spots duplicates
} cand_t;

static void cand_free(cand_t *c)
{
    if (c->plan) CUDNN_CHECK(cudnnBackendDestroyDescriptor(c->plan));
    if (c->cfg) CUDNN_CHECK(cudnnBackendDestroyDescriptor(c->cfg));
    free(c->json);
    memset(c, 0, sizeof *c);
}

static char *plan_json(cudnnBackendDescriptor_t p)
{
    int64_t n = 0;
    if (cudnnBackendGetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR,
                                 0, &n, NULL) != CUDNN_STATUS_SUCCESS || n <= 0)
        return NULL;
    char *s = (char *)xmalloc((size_t)n + 1);
    int64_t got = 0;
    if (cudnnBackendGetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR,
                                 n, &got, s) != CUDNN_STATUS_SUCCESS) {
        free(s);
        return NULL;
    }
    s[got < n ? got : n] = 0;
    return s;
}

// Append the configs of one heuristics mode, in its order, that obey the policy (relax as in
// engine_allowed), finalize, and need at most the workspace cap, until *n reaches max. The
// first candidate may use up to WS_CAP; later ones only max(its workspace, TUNE_WS_CAP), so
// tuning never grows the workspace (and the peak) past what heuristics alone would take.
static void collect_candidates(gpu_ctx_t *g, cudnnBackendDescriptor_t graph,
                               cudnnBackendHeurMode_t mode, int relax, cand_t *cand, int *n,
                               int max, int *n_tried, double deadline)
{
    cudnnBackendDescriptor_t heur;
    CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur));
    set_attr(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph);
    set_attr(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    if (cudnnBackendFinalize(heur) != CUDNN_STATUS_SUCCESS) {   // a mode may not apply
        CUDNN_CHECK(cudnnBackendDestroyDescriptor(heur));
        return;
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
    for (int64_t i = 0; i < got && *n < max; i++) {
        int64_t engine_id = -1;
        int rtc = 0;
        if (!engine_allowed(g, cfgs[i], relax, &engine_id, &rtc)) continue;
        // Extra candidates for timing: no run-time compiled engines (their finalization alone
        // costs more set-up time than tuning is worth), and a bound on the time spent here.
        if (*n > 0 && (rtc || gpu_wall_s() > deadline)) continue;
        (*n_tried)++;
        cudnnBackendDescriptor_t p;
        CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &p));
        set_attr(p, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &g->cudnn);
        set_attr(p, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                 &cfgs[i]);
        int64_t ws = 0, n1 = 0;
        const int64_t cap = *n == 0 ? WS_CAP : (cand[0].ws > TUNE_WS_CAP ? cand[0].ws : TUNE_WS_CAP);
        // An engine config the heuristics list may still refuse this problem: try the next.
        if (cudnnBackendFinalize(p) != CUDNN_STATUS_SUCCESS ||
            cudnnBackendGetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                     CUDNN_TYPE_INT64, 1, &n1, &ws) != CUDNN_STATUS_SUCCESS ||
            ws > cap) {
            CUDNN_CHECK(cudnnBackendDestroyDescriptor(p));
            continue;
        }
        char *js = max > 1 ? plan_json(p) : NULL;
        int dup = 0;
        for (int j = 0; j < *n && js && !dup; j++) dup = cand[j].json && !strcmp(cand[j].json, js);
        if (dup) {          // mode A and the fallback list share engines
            free(js);
            CUDNN_CHECK(cudnnBackendDestroyDescriptor(p));
            continue;
        }
        cand[*n].plan = p;
        cand[*n].cfg = cfgs[i];
        cand[*n].ws = ws;
        cand[*n].engine = engine_id;
        cand[*n].json = js;
        cfgs[i] = NULL;     // owned by the candidate now
        (*n)++;
    }
    for (int64_t i = 0; i < count; i++)
        if (cfgs[i]) CUDNN_CHECK(cudnnBackendDestroyDescriptor(cfgs[i]));
    free(cfgs);
    CUDNN_CHECK(cudnnBackendDestroyDescriptor(heur));
}

// ---- one-time timing of the candidates (what cudnn.benchmark does) --------------------------
static size_t vox(const int d[3]) { return (size_t)d[0] * d[1] * d[2]; }
static size_t round256(size_t b) { return (b + 255) & ~(size_t)255; }

typedef struct {
    gpu_ctx_t *g;
    cudnnBackendDescriptor_t plan, vp;
} tune_run_t;

static int tune_exec(void *ctx)
{
    tune_run_t *r = (tune_run_t *)ctx;
    return cudnnBackendExecute(r->g->cudnn, r->plan, r->vp) != CUDNN_STATUS_SUCCESS;
}

// Tensors to time on, in this order of preference: the registered scratch (model set-up: the
// activation arena before its first step), the caller's own tensors when the operation
// overwrites its output (beta 0: the real execution that follows rewrites it), or a temporary
// allocation of at most TUNE_TMP_MAX. Returns 0 when there is nothing suitable.
static int tune_tensors(gpu_ctx_t *g, const conv_key_t *k, void *const real[3], void *ptrs[3],
                        void **tmp)
{
    const size_t es = k->dtype == CUDNN_DATA_FLOAT ? 4 : 2;
    const size_t bytes[3] = { round256(es * k->N * k->C * vox(k->big)),
                              round256(es * k->K * k->C * vox(k->k)),
                              round256(es * k->N * k->K * vox(k->small)) };
    const size_t need = bytes[0] + bytes[1] + bytes[2];
    conv_cache *c = g->conv;
    char *base = NULL;
    *tmp = NULL;
    if (c->tune_scratch && need <= c->tune_scratch_bytes) {
        base = (char *)c->tune_scratch;
    } else if (real && !k->beta_one) {
        for (int i = 0; i < 3; i++) ptrs[i] = real[i];
        return 1;
    } else if (need <= TUNE_TMP_MAX) {
        base = (char *)gpu_malloc(g, need, "conv autotune tensors");
        *tmp = base;
    } else {
        return 0;
    }
    // Finite, non-zero values (0x3C3C.. is ~0.0115 in bf16 and in fp32) so no engine meets NaNs.
    gpu_memset(g, base, 0x3C, need);
    ptrs[0] = base;
    ptrs[1] = base + bytes[0];
    ptrs[2] = base + bytes[0] + bytes[1];
    return 1;
}

// The variant pack of one convolution: ptrs = { x, w, y } (the UID_X, UID_W, UID_Y tensors) and
// the workspace; the caller destroys it.
static cudnnBackendDescriptor_t variant_pack(void *ptrs[3], void *ws)
{
    int64_t uids[3] = { UID_X, UID_W, UID_Y };
    cudnnBackendDescriptor_t vp;
    CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp));
    set_attr(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids);
    set_attr(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, ptrs);
    set_attr(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    CUDNN_CHECK(cudnnBackendFinalize(vp));
    return vp;
}

// Time every candidate once (1 warm-up run, then the mean of TUNE_REPS) and return the index
// to keep: gpu_tune_pick over the times, 0 when timing is impossible or fails (logged).
static int tune_choose(gpu_ctx_t *g, const conv_key_t *k, const char *what, cand_t *cand, int n,
                       void *const real[3])
{
    conv_cache *c = g->conv;
    const double t0 = gpu_wall_s();
    void *ptrs[3], *tmp = NULL;
    if (!tune_tensors(g, k, real, ptrs, &tmp)) {
        if (verbose_plans())
            log_msg('I', "conv %s: no memory to time %d candidates on; heuristic's first", what, n);
        return 0;
    }
    int64_t maxws = 0;
    for (int i = 0; i < n; i++) maxws = cand[i].ws > maxws ? cand[i].ws : maxws;
    gpu_workspace_reserve(g, (size_t)maxws);
    cudnnBackendDescriptor_t vp = variant_pack(ptrs, g->ws);
    float ms[TUNE_MAX];
    int timed = 0, best = 0;
    gpu_tuner_t tu;
    if (gpu_tuner_init(&tu) == 0) {
        float fastest = -1.0f;
        for (int i = 0; i < n; i++) {
            tune_run_t r = { g, cand[i].plan, vp };
            // warm-up (first launch: lazy module loading), then one timed run; a candidate 4x
            // slower than the best so far keeps that time and is not run again (some engines
            // take 10-100x longer: they would dominate the set-up time).
            ms[i] = gpu_tuner_time(&tu, g->stream, tune_exec, &r, 1);
            if (ms[i] >= 0.0f) ms[i] = gpu_tuner_time(&tu, g->stream, tune_exec, &r, 1);
            if (ms[i] >= 0.0f && (fastest < 0.0f || ms[i] < 4.0f * fastest))
                ms[i] = gpu_tuner_time(&tu, g->stream, tune_exec, &r, TUNE_REPS);
            timed += ms[i] >= 0.0f;
            if (ms[i] >= 0.0f && (fastest < 0.0f || ms[i] < fastest)) fastest = ms[i];
        }
        gpu_tuner_free(&tu);
        best = gpu_tune_pick(ms, n);
        if (best < 0) {
            log_msg('W', "conv %s: none of %d candidate plans ran while timing; using the "
                    "heuristic's first", what, n);
            best = 0;
        }
    } else {
        log_msg('W', "conv %s: no CUDA events for timing; using the heuristic's first plan", what);
    }
    CUDNN_CHECK(cudnnBackendDestroyDescriptor(vp));
    if (tmp) {
        CUDA_CHECK(cudaStreamSynchronize(g->stream));
        gpu_free(g, tmp);
    }
    c->tuned++;
    c->timed += timed;
    c->tune_s += gpu_wall_s() - t0;
    if (best != 0) {
        c->switched++;
        c->gain_ms += ms[0] - ms[best];
    }
    if (verbose_plans())
        log_msg('I', "conv %s: %d candidates timed; heuristic's first (engine %lld) %.4f ms, "
                "chosen #%d (engine %lld) %.4f ms", what, timed, (long long)cand[0].engine,
                timed ? ms[0] : -1.0, best, (long long)cand[best].engine, timed ? ms[best] : -1.0);
    return best;
}

static void log_tuning(conv_cache *c)
{
    if (c->tuned == c->logged) return;
    log_msg('I', "cuDNN autotune: %d conv plans built by timing, %d candidate plans timed in "
            "%.2f s; %d differ from the heuristic's first, together %.3f ms faster per execution",
            c->tuned - c->logged, c->timed - c->logged_timed, c->tune_s - c->logged_s,
            c->switched - c->logged_switched, c->gain_ms - c->logged_gain);
    c->logged = c->tuned;
    c->logged_timed = c->timed;
    c->logged_s = c->tune_s;
    c->logged_switched = c->switched;
    c->logged_gain = c->gain_ms;
}

// real: the tensors of the execution that asked for the plan (x, w, y of the problem), or
// NULL when the plan is prepared ahead.
static conv_plan_t *build_plan(gpu_ctx_t *g, const conv_key_t *k, void *const real[3])
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

    // Candidates: heuristics mode A in its order, then the fallback list. Without tuning the
    // first one is kept (as before tuning existed); with tuning up to TUNE_MAX are timed.
    // Only if neither list has an engine within the policy, relax it one step at a time,
    // loudly (the tests then show the consequence).
    const int tune = gpu_autotune_enabled(g);
    const int max = tune ? TUNE_MAX : 1;
    cand_t cand[TUNE_MAX];
    memset(cand, 0, sizeof cand);
    int n = 0, tried = 0, relax;
    const double deadline = gpu_wall_s() + TUNE_COLLECT_S;
    for (relax = 0; relax < 3 && !n; relax++) {
        collect_candidates(g, graph, CUDNN_HEUR_MODE_A, relax, cand, &n, max, &tried, deadline);
        if (n < max)
            collect_candidates(g, graph, CUDNN_HEUR_MODE_FALLBACK, relax, cand, &n, max, &tried,
                               deadline);
        if (!n && relax == 0 && !g->deterministic) relax++;    // nothing to relax there
    }
    if (!n)
        DIE("no cuDNN engine at all for conv %s (%d configs tried)", what, tried);
    const int best = n > 1 ? tune_choose(g, k, what, cand, n, real) : 0;
    for (int i = 0; i < n; i++)
        if (i != best) cand_free(&cand[i]);
    P.plan = cand[best].plan;
    P.ws = cand[best].ws;
    const int64_t engine = cand[best].engine;
    cudnnBackendDescriptor_t cfg = cand[best].cfg;
    free(cand[best].json);
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

static conv_plan_t *get_plan(gpu_ctx_t *g, const conv_key_t *k, void *const real[3])
{
    conv_cache *c = g->conv;
    for (int i = 0; i < c->n; i++)
        if (!memcmp(&c->plans[i].key, k, sizeof *k)) return &c->plans[i];
    return build_plan(g, k, real);
}

static void execute(gpu_ctx_t *g, const conv_plan_t *p, void *x, void *w, void *y)
{
    void *ptrs[3] = { x, w, y };
    for (int i = 0; i < 3; i++) ASSERT(((uintptr_t)ptrs[i] & 15) == 0);   // BYTE_ALIGNMENT 16
    ASSERT((size_t)p->ws <= g->ws_bytes);
    cudnnBackendDescriptor_t vp = variant_pack(ptrs, g->ws);
    CUDNN_CHECK(cudnnBackendExecute(g->cudnn, p->plan, vp));
    CUDNN_CHECK(cudnnBackendDestroyDescriptor(vp));
}

// The plan of problem k (built, and timed on these tensors if allowed, on first use) on x, w, y.
static void run_conv(gpu_ctx_t *g, const conv_key_t *k, void *x, void *w, void *y)
{
    void *real[3] = { x, w, y };
    execute(g, get_plan(g, k, real), x, w, y);
}

// ---- problems of the four public ops ------------------------------------------------------
// The cuDNN problem of a conv, x (N, Cin, in) -> y (N, Cout, out) (transposed = 0), or of a
// transposed conv (1), whose output y_T (N, Cout, out) is the conv problem's x (C = Cout, big =
// out) and whose input x_T (N, Cin, in) is the conv problem's y (K = Cin, small = in).
static conv_key_t problem_of(const gpu_ctx_t *g, conv3d_shape_t s, int transposed, int kind,
                             int beta_one)
{
    conv_key_t k;
    memset(&k, 0, sizeof k);
    k.kind = kind;
    k.N = s.N;
    k.C = transposed ? s.Cout : s.Cin;
    k.K = transposed ? s.Cin : s.Cout;
    if (transposed) conv_transpose3d_out_dims(&s, k.big);
    else conv3d_out_dims(&s, k.small);
    int *in_side = transposed ? k.small : k.big;
    for (int i = 0; i < 3; i++) {
        in_side[i] = s.in[i]; k.k[i] = s.k[i]; k.stride[i] = s.stride[i]; k.pad[i] = s.pad[i];
    }
    k.dtype = g->act == GPU_F32 ? CUDNN_DATA_FLOAT : CUDNN_DATA_BFLOAT16;
    k.beta_one = beta_one;
    return k;
}
static conv_key_t conv_problem(const gpu_ctx_t *g, conv3d_shape_t s, int kind, int beta_one)
{
    return problem_of(g, s, 0, kind, beta_one);
}
static conv_key_t convT_problem(const gpu_ctx_t *g, conv3d_shape_t s, int kind, int beta_one)
{
    return problem_of(g, s, 1, kind, beta_one);
}

// Grow a scratch buffer of the cache to at least `bytes` (outside a frozen step only).
static void grow_scratch(gpu_ctx_t *g, void **buf, size_t *have, size_t bytes, const char *what)
{
    if (bytes <= *have) return;
    if (g->conv->frozen) DIE("%s of %zu bytes was not prepared", what, bytes);
    CUDA_CHECK(cudaStreamSynchronize(g->stream));
    gpu_free(g, *buf);
    *buf = gpu_malloc(g, bytes, what);
    *have = bytes;
}

// bf16 mode: weight gradients go through a bf16 scratch of the weight's size.
static void reserve_wscratch(gpu_ctx_t *g, size_t nw)
{
    if (g->act == GPU_F32) return;
    grow_scratch(g, &g->conv->wscratch, &g->conv->wscratch_bytes, nw * sizeof(bf16),
                 "bf16 conv weight-gradient scratch");
}

// ---- weight gradients of k5 s2 p2 convolutions through 2x2x2 blocks (conv_wgrad_blocks.cu) --
// Where the output has BLOCKS_MIN_VOX < voxels <= BLOCKS_MAX_VOX a sample, as measured on an
// H100 (gpu/PERF_NOTES.md v34) for the CMMB conv5 of M at 128^3 (two per step: the conv and its
// transposed twin share the problem): level 2 (192 channels, 16^3 -> 8^3) 0.32 ms with
// cuDNN's best plan (0.55 at batch 2; 15 TFLOP/s), 0.066 ms through blocks (copy and fold
// included); level 1 (32^3 -> 16^3) 0.064 vs 0.048 before the blocks' 6 MB copy and fold (not
// worth the scratch); level 0 0.14 vs 0.10 likewise; level 3 (4^3 outputs) 0.028 ms with
// cuDNN's plan in the training step but 0.151 through blocks (3072 channels of 64 voxels).
#define BLOCKS_MIN_VOX 64
#define BLOCKS_MAX_VOX 512
static int blocks_wgrad(const conv_key_t *k)
{
    const size_t v = vox(k->small);
    if (k->kind != CK_BWD_FILTER || v <= BLOCKS_MIN_VOX || v > BLOCKS_MAX_VOX) return 0;
    for (int a = 0; a < 3; a++)
        if (k->k[a] != 5 || k->stride[a] != 2 || k->pad[a] != 2 || k->big[a] != 2 * k->small[a])
            return 0;
    return 1;
}
// The blocks' problem of k (written, not accumulated: the fold adds it up).
static conv_key_t blocks_key(const conv_key_t *k)
{
    conv_key_t b = *k;
    b.C = 8 * k->C;
    for (int a = 0; a < 3; a++) {
        b.big[a] = k->small[a];
        b.k[a] = 3; b.stride[a] = 1; b.pad[a] = 1;
    }
    b.beta_one = 0;
    return b;
}
// bscratch bytes of k's blocks: the input's blocks, then the block weight's gradient
static size_t blocks_bytes(const gpu_ctx_t *g, const conv_key_t *k, size_t *dwb_off)
{
    const size_t es = gpu_dtype_size(g->act);
    *dwb_off = gpu_arena_round((size_t)k->N * 8 * k->C * vox(k->small) * es);
    return *dwb_off + (size_t)k->K * 8 * k->C * 27 * es;
}
// Grows the scratch to k's blocks; returns where the block weight's gradient starts in it.
static size_t reserve_bscratch(gpu_ctx_t *g, const conv_key_t *k)
{
    size_t off;
    grow_scratch(g, &g->conv->bscratch, &g->conv->bscratch_bytes, blocks_bytes(g, k, &off),
                 "conv weight-gradient blocks scratch");
    return off;
}

int conv3d_wgrad_through_blocks(const gpu_ctx_t *g, conv3d_shape_t s, int transposed)
{
    const conv_key_t k = problem_of(g, s, transposed, CK_BWD_FILTER, 0);
    return blocks_wgrad(&k);
}

// Prepare the weight gradient of problem k: its plan (or its blocks' plan) and scratch.
static void prepare_wgrad(gpu_ctx_t *g, const conv_key_t *k)
{
    if (blocks_wgrad(k)) {
        const conv_key_t kb = blocks_key(k);
        get_plan(g, &kb, NULL);
        reserve_bscratch(g, k);
        return;
    }
    get_plan(g, k, NULL);
    reserve_wscratch(g, (size_t)k->K * k->C * vox(k->k));
}

// Weight gradient of one problem: fp32 accumulates in place, bf16 goes through the scratch.
static void weight_grad(gpu_ctx_t *g, const conv_key_t *kf, float *dw, void *xa, void *ya)
{
    size_t nw = (size_t)kf->K * kf->C * vox(kf->k);
    if (blocks_wgrad(kf)) {
        const conv_key_t kb = blocks_key(kf);
        const size_t off = reserve_bscratch(g, kf);
        char *xb = (char *)g->conv->bscratch, *dwb = xb + off;
        wgrad_blocks_input_gpu(g, xb, xa, kf->N, kf->C, kf->big);
        run_conv(g, &kb, xb, dwb, ya);
        wgrad_blocks_fold_gpu(g, dw, dwb, kf->K, kf->C);
        return;
    }
    if (g->act == GPU_F32) {
        run_conv(g, kf, xa, dw, ya);
        return;
    }
    reserve_wscratch(g, nw);
    run_conv(g, kf, xa, g->conv->wscratch, ya);
    gpu_add_to_f32(g, dw, g->conv->wscratch, GPU_BF16, nw);
}

void conv3d_forward_gpu(gpu_ctx_t *g, void *y, const void *x, const void *w, const float *b,
                        conv3d_shape_t s)
{
    conv_key_t k = conv_problem(g, s, CK_FWD, 0);
    run_conv(g, &k, (void *)x, (void *)w, y);
    if (b) bias_add_gpu(g, y, b, (size_t)s.N * vox(k.small), s.Cout);
}

void conv3d_backward_gpu(gpu_ctx_t *g, void *dx, float *dw, float *db, const void *dy,
                         const void *x, const void *w, conv3d_shape_t s)
{
    if (dx) {
        conv_key_t k = conv_problem(g, s, CK_BWD_DATA, 1);
        run_conv(g, &k, dx, (void *)w, (void *)dy);
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
    run_conv(g, &k, y, (void *)w, (void *)x);
    if (b) bias_add_gpu(g, y, b, (size_t)s.N * vox(k.big), s.Cout);
}

void conv_transpose3d_backward_gpu(gpu_ctx_t *g, void *dx, float *dw, float *db, const void *dy,
                                   const void *x, const void *w, conv3d_shape_t s)
{
    if (dx) {
        conv_key_t k = convT_problem(g, s, CK_FWD, 1);
        run_conv(g, &k, (void *)dy, (void *)w, dx);
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

void conv3d_prepare_gpu(gpu_ctx_t *g, conv3d_shape_t s, int with_dx)
{
    conv_key_t k0 = conv_problem(g, s, CK_FWD, 0);
    conv_key_t k2 = conv_problem(g, s, CK_BWD_FILTER, g->act == GPU_F32);
    get_plan(g, &k0, NULL);
    if (with_dx) {
        conv_key_t k1 = conv_problem(g, s, CK_BWD_DATA, 1);
        get_plan(g, &k1, NULL);
    }
    prepare_wgrad(g, &k2);
}

void conv_transpose3d_prepare_gpu(gpu_ctx_t *g, conv3d_shape_t s)
{
    conv_key_t k0 = convT_problem(g, s, CK_BWD_DATA, 0);
    conv_key_t k1 = convT_problem(g, s, CK_FWD, 1);
    conv_key_t k2 = convT_problem(g, s, CK_BWD_FILTER, g->act == GPU_F32);
    get_plan(g, &k0, NULL);
    get_plan(g, &k1, NULL);
    prepare_wgrad(g, &k2);
}
