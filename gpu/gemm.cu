/*
gemm.cu -- linear over channels through cuBLASLt. In channels-last a linear layer is one plain
GEMM over all N*L tokens: x (M, Cin) row-major, w (Cout, Cin), y (M, Cout).

cuBLASLt is column-major, so every row-major (r, c) matrix is read as its (c, r) transpose:
  forward   y^T  (Cout x M)   = op_T(w: Cin x Cout) * x^T (Cin x M)      [+ bias epilogue]
  dx        dx^T (Cin x M)   += w^T (Cin x Cout)   * dy^T (Cout x M)
  dw        dw^T (Cin x Cout) += x^T (Cin x M)     * op_T(dy^T: Cout x M)
Compute is CUBLAS_COMPUTE_32F in both modes (never the TF32 fast path); in bf16 mode A and B
are bf16, the weight gradient is accumulated straight into fp32. Matmul descriptors, layouts
and the heuristic's algorithm are cached per shape (built on first use, as conv plans are).
Where cuBLASLt offers no algorithm (bf16 rows that are not multiples of 16 bytes, e.g. Cout 5),
the same GEMM goes through cublasGemmEx, same types, fp32 compute, our workspace.
Autotuning (autotune.cu says when it is on): the heuristic's first GEMM_CANDS algorithms are
kept and, at the plan's first run, timed on that run's own operands (gemm_tune); the fastest is
used from then on, the first run included.
*/
#include "gpu_internal.h"
#include <stdlib.h>
#include <string.h>

enum { GK_FWD = 0, GK_DX = 1, GK_DW = 2 };
// Autotuning: how many of the heuristic's algorithms are timed, runs per timing (after one warm-up).
enum { GEMM_CANDS = 8, GEMM_REPS = 5 };

typedef struct {
    int kind, bias;
    int64_t m, n, k, lda, ldb, ldc;
    int ab_type, cd_type;   // cudaDataType_t
    int align[3];           // pointer alignment of A, B, C/D in bytes (<= 16)
} gemm_key_t;

typedef struct {
    gemm_key_t key;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
    size_t ws;
    cublasLtMatmulAlgo_t cand[GEMM_CANDS];   // the heuristic's first GEMM_CANDS algorithms, in its order
    size_t cand_ws[GEMM_CANDS];
    int ncand;
    int tuned;              // 1 once the first run has chosen among cand (or could not)
    int fused_bias;         // 0: the bias epilogue had no algorithm, bias added separately
    int gemm_ex;            // 1: cuBLASLt has no algorithm (e.g. bf16 rows not 16-byte multiples):
                            //    plain cublasGemmEx, same types and fp32 compute
} gemm_plan_t;

struct gemm_cache {
    gemm_plan_t *plans;
    int n, cap;
    int tuned, timed, switched;     // autotuning totals, logged when the context goes
    double tune_s, gain_ms;
};


void gpu_gemm_cache_init(gpu_ctx_t *g) { g->gemm = (gemm_cache *)xcalloc(1, sizeof *g->gemm); }

void gpu_gemm_cache_free(gpu_ctx_t *g)
{
    gemm_cache *c = g->gemm;
    if (!c) return;
    if (c->tuned)
        log_msg('I', "cuBLASLt autotune: %d GEMM plans built by timing, %d algorithms timed in "
                "%.3f s; %d differ from the heuristic's first, together %.3f ms faster per run",
                c->tuned, c->timed, c->tune_s, c->switched, c->gain_ms);
    for (int i = 0; i < c->n; i++) {
        CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(c->plans[i].a));
        CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(c->plans[i].b));
        CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(c->plans[i].c));
        CUBLAS_CHECK(cublasLtMatmulDescDestroy(c->plans[i].op));
    }
    free(c->plans);
    free(c);
    g->gemm = NULL;
}

static int ptr_align(const void *p)
{
    uintptr_t u = (uintptr_t)p;
    int a = 16;
    while (a > 1 && (u % (uintptr_t)a)) a /= 2;
    return a;
}

// Try to get an algorithm for the op as configured; returns 1 on success.
static int pick_algo(gpu_ctx_t *g, gemm_plan_t *p)
{
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = g->ws_bytes;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &ws, sizeof ws));
    uint32_t al[3] = { (uint32_t)p->key.align[0], (uint32_t)p->key.align[1],
                       (uint32_t)p->key.align[2] };
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0], sizeof al[0]));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1], sizeof al[1]));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2], sizeof al[2]));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[2], sizeof al[2]));
    cublasLtMatmulHeuristicResult_t res[GEMM_CANDS];
    int nres = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(g->lt, p->op, p->a, p->b, p->c, p->c, pref,
                                                       GEMM_CANDS, res, &nres);
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    if (st != CUBLAS_STATUS_SUCCESS || nres < 1) return 0;
    p->ncand = 0;
    for (int i = 0; i < nres; i++) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
        p->cand[p->ncand] = res[i].algo;
        p->cand_ws[p->ncand++] = res[i].workspaceSize;
    }
    if (!p->ncand) return 0;
    p->algo = p->cand[0];
    p->ws = p->cand_ws[0];
    return 1;
}

static void set_bias_epilogue(gemm_plan_t *p, int on)
{
    cublasLtEpilogue_t epi = on ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                                sizeof epi));
    if (on) {
        // Our biases are fp32 in both modes.
        cudaDataType_t bt = CUDA_R_32F;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                    &bt, sizeof bt));
    }
}

static gemm_plan_t *get_plan(gpu_ctx_t *g, const gemm_key_t *k)
{
    gemm_cache *c = g->gemm;
    for (int i = 0; i < c->n; i++)
        if (!memcmp(&c->plans[i].key, k, sizeof *k)) return &c->plans[i];

    gemm_plan_t P;
    memset(&P, 0, sizeof P);
    P.key = *k;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&P.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = k->kind == GK_FWD ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t tb = k->kind == GK_DW ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(P.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(P.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    // Stored shapes (column-major rows x cols) before op().
    int64_t ar = ta == CUBLAS_OP_N ? k->m : k->k, ac = ta == CUBLAS_OP_N ? k->k : k->m;
    int64_t br = tb == CUBLAS_OP_N ? k->k : k->n, bc = tb == CUBLAS_OP_N ? k->n : k->k;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&P.a, (cudaDataType_t)k->ab_type, ar, ac, k->lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&P.b, (cudaDataType_t)k->ab_type, br, bc, k->ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&P.c, (cudaDataType_t)k->cd_type, k->m, k->n, k->ldc));

    P.fused_bias = 0;
    if (k->bias) {
        set_bias_epilogue(&P, 1);
        P.fused_bias = pick_algo(g, &P);
        if (!P.fused_bias) set_bias_epilogue(&P, 0);
    }
    if (!P.fused_bias && !pick_algo(g, &P)) P.gemm_ex = 1;
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 32;
        c->plans = (gemm_plan_t *)xrealloc(c->plans, (size_t)c->cap * sizeof *c->plans);
    }
    c->plans[c->n] = P;
    return &c->plans[c->n++];
}

// ---- one-time timing of the heuristic's candidates --------------------------------------------
typedef struct {
    gpu_ctx_t *g;
    const gemm_plan_t *p;
    cublasLtMatrixLayout_t b, c;    // the plan's, or the proxy's (a prefix of the columns)
    const cublasLtMatmulAlgo_t *algo;
    const void *A, *B;
    void *C;
    float beta;
} gemm_run_t;

static int gemm_exec(void *ctx)
{
    const gemm_run_t *r = (const gemm_run_t *)ctx;
    const float alpha = 1.0f;
    return cublasLtMatmul(r->g->lt, r->p->op, &alpha, r->A, r->p->a, r->B, r->b, &r->beta, r->C,
                          r->c, r->C, r->c, r->algo, r->g->ws, r->g->ws_bytes,
                          r->g->stream) != CUBLAS_STATUS_SUCCESS;
}

// Bytes a column-major (rows, cols, ld) matrix spans.
static size_t span(int64_t rows, int64_t cols, int64_t ld, size_t es)
{
    return ((size_t)(cols - 1) * (size_t)ld + (size_t)rows) * es;
}

static int overlaps(const void *p, size_t np, const void *q, size_t nq)
{
    const char *a = (const char *)p, *b = (const char *)q;
    return a < b + nq && b < a + np;
}

// Time the candidates on this run's operands and set p->algo / p->ws to the chosen one. An
// output written with beta 0 is simply rewritten by the real run that follows. With beta != 0
// the output (or, when it is larger than the reduction scratch, which is dead between ops, a
// prefix of its columns: a proxy GEMM over the first n' tokens) is saved to the scratch first
// and restored after, so the real run accumulates into the original values.
static void gemm_tune(gpu_ctx_t *g, gemm_plan_t *p, const void *A, const void *B, void *C,
                      float beta)
{
    const gemm_key_t *k = &p->key;
    const double t0 = gpu_wall_s();
    const size_t es_ab = k->ab_type == CUDA_R_32F ? 4 : 2, es_c = k->cd_type == CUDA_R_32F ? 4 : 2;
    const int ta_n = k->kind != GK_FWD, tb_n = k->kind != GK_DW;
    const size_t nA = ta_n ? span(k->m, k->k, k->lda, es_ab) : span(k->k, k->m, k->lda, es_ab);
    const size_t nB = tb_n ? span(k->k, k->n, k->ldb, es_ab) : span(k->n, k->k, k->ldb, es_ab);
    size_t nC = span(k->m, k->n, k->ldc, es_c);
    const int verbose = getenv("SRM_GPU_VERBOSE") && *getenv("SRM_GPU_VERBOSE") != '0';
    if (overlaps(C, nC, A, nA) || overlaps(C, nC, B, nB)) return;   // not ours to rewrite
    gemm_run_t r = { g, p, p->b, p->c, NULL, A, B, C, beta };
    const size_t red = g->red_floats * sizeof(float);
    int64_t n = k->n;
    if (beta != 0.0f && nC > red) {
        // Proxy over the first n' columns of B and C (tokens, for dx): same algorithm, same
        // per-tile work, a third or more of the problem at the model's shapes.
        if (k->kind != GK_DX || red / es_c < (size_t)k->m) return;
        n = (int64_t)((red / es_c - (size_t)k->m) / (size_t)k->ldc) + 1;
        if (n < 1 || n >= k->n) return;
        nC = span(k->m, n, k->ldc, es_c);
        CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&r.b, (cudaDataType_t)k->ab_type, k->k, n, k->ldb));
        CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&r.c, (cudaDataType_t)k->cd_type, k->m, n, k->ldc));
    }
    if (beta != 0.0f)
        CUDA_CHECK(cudaMemcpyAsync(g->red, C, nC, cudaMemcpyDeviceToDevice, g->stream));
    float ms[GEMM_CANDS];
    int timed = 0, best = 0;
    gpu_tuner_t tu;
    if (gpu_tuner_init(&tu) == 0) {
        for (int i = 0; i < p->ncand; i++) {
            ms[i] = -1.0f;
            if (p->cand_ws[i] > g->ws_bytes) continue;
            r.algo = &p->cand[i];
            if (gpu_tuner_time(&tu, g->stream, gemm_exec, &r, 1) < 0.0f) continue;  // warm-up
            ms[i] = gpu_tuner_time(&tu, g->stream, gemm_exec, &r, GEMM_REPS);
            timed += ms[i] >= 0.0f;
        }
        gpu_tuner_free(&tu);
        best = gpu_tune_pick(ms, p->ncand);
        if (best < 0) {
            log_msg('W', "GEMM %s m=%lld n=%lld k=%lld: no candidate ran while timing; using the "
                    "heuristic's first", k->kind == GK_FWD ? "fwd" : k->kind == GK_DX ? "dx" : "dw",
                    (long long)k->m, (long long)k->n, (long long)k->k);
            best = 0;
        }
    } else {
        log_msg('W', "GEMM autotune: no CUDA events; using the heuristic's first algorithm");
    }
    if (beta != 0.0f)
        CUDA_CHECK(cudaMemcpyAsync(C, g->red, nC, cudaMemcpyDeviceToDevice, g->stream));
    if (r.b != p->b) {
        CUDA_CHECK(cudaStreamSynchronize(g->stream));
        CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(r.b));
        CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(r.c));
    }
    p->algo = p->cand[best];
    p->ws = p->cand_ws[best];
    gemm_cache *c = g->gemm;
    c->tuned++;
    c->timed += timed;
    c->tune_s += gpu_wall_s() - t0;
    if (best) {
        c->switched++;
        c->gain_ms += (double)(ms[0] - ms[best]) * (double)k->n / (double)n;
    }
    if (verbose)
        log_msg('I', "GEMM %s m=%lld n=%lld k=%lld%s: %d of %d algorithms timed; first %.4f ms, "
                "chosen #%d %.4f ms", k->kind == GK_FWD ? "fwd" : k->kind == GK_DX ? "dx" : "dw",
                (long long)k->m, (long long)k->n, (long long)k->k,
                n < k->n ? " (proxy of the first columns)" : "", timed, p->ncand,
                timed ? ms[0] : -1.0, best, timed ? ms[best] : -1.0);
}


static void run(gpu_ctx_t *g, gemm_plan_t *p, const void *A, const void *B, void *C, float beta,
                const float *bias)
{
    if (p->gemm_ex) {
        const gemm_key_t *k = &p->key;
        cublasOperation_t ta = k->kind == GK_FWD ? CUBLAS_OP_T : CUBLAS_OP_N;
        cublasOperation_t tb = k->kind == GK_DW ? CUBLAS_OP_T : CUBLAS_OP_N;
        float alpha = 1.0f;
        ASSERT(k->m < INT32_MAX && k->n < INT32_MAX && k->k < INT32_MAX);
        CUBLAS_CHECK(cublasGemmEx(g->cublas, ta, tb, (int)k->m, (int)k->n, (int)k->k, &alpha, A,
                                  (cudaDataType_t)k->ab_type, (int)k->lda, B,
                                  (cudaDataType_t)k->ab_type, (int)k->ldb, &beta, C,
                                  (cudaDataType_t)k->cd_type, (int)k->ldc, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
        return;
    }
    if (p->fused_bias)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                    &bias, sizeof bias));
    if (!p->tuned) {            // first run: choose among the heuristic's candidates by timing
        p->tuned = 1;
        if (p->ncand > 1 && gpu_autotune_enabled(g)) gemm_tune(g, p, A, B, C, beta);
    }
    float alpha = 1.0f;
    ASSERT(p->ws <= g->ws_bytes);
    CUBLAS_CHECK(cublasLtMatmul(g->lt, p->op, &alpha, A, p->a, B, p->b, &beta, C, p->c, C, p->c,
                                &p->algo, g->ws, g->ws_bytes, g->stream));
}

// A and B of the context's act type; C/D fp32 when cd_f32, else the act type.
static gemm_key_t make_key(const gpu_ctx_t *g, int kind, int64_t m, int64_t n, int64_t k,
                           int64_t lda, int64_t ldb, int64_t ldc, int cd_f32, const void *A,
                           const void *B, const void *C, int bias)
{
    gemm_key_t key;
    memset(&key, 0, sizeof key);
    key.kind = kind; key.bias = bias;
    key.m = m; key.n = n; key.k = k; key.lda = lda; key.ldb = ldb; key.ldc = ldc;
    key.ab_type = g->act == GPU_F32 ? CUDA_R_32F : CUDA_R_16BF;
    key.cd_type = cd_f32 ? CUDA_R_32F : key.ab_type;
    key.align[0] = ptr_align(A); key.align[1] = ptr_align(B); key.align[2] = ptr_align(C);
    return key;
}

void linear_forward_gpu(gpu_ctx_t *g, void *y, const void *x, const void *w, const float *b,
                        linear_shape_t s)
{
    int64_t M = (int64_t)s.N * (int64_t)s.L;
    int64_t ldx = s.x_nstride ? (int64_t)s.x_nstride : s.Cin;
    int64_t ldy = s.y_nstride ? (int64_t)s.y_nstride : s.Cout;
    gemm_key_t k = make_key(g, GK_FWD, s.Cout, M, s.Cin, s.Cin, ldx, ldy, 0, w, x, y, b != NULL);
    gemm_plan_t *p = get_plan(g, &k);
    run(g, p, w, x, y, 0.0f, b);
    if (b && !p->fused_bias) {
        ASSERT(ldy == s.Cout);          // the separate bias kernel wants dense rows
        bias_add_gpu(g, y, b, (size_t)M, s.Cout);
    }
}

// dx (+)= dy w: beta 1 adds, 0 writes (the GEMM then reads no old dx)
static void linear_dx(gpu_ctx_t *g, void *dx, const void *dy, const void *w, linear_shape_t s,
                      float beta)
{
    const int64_t M = (int64_t)s.N * (int64_t)s.L;
    const int64_t ldx = s.x_nstride ? (int64_t)s.x_nstride : s.Cin;
    const int64_t ldy = s.y_nstride ? (int64_t)s.y_nstride : s.Cout;
    gemm_key_t k = make_key(g, GK_DX, s.Cin, M, s.Cout, s.Cin, ldy, ldx, 0, w, dy, dx, 0);
    run(g, get_plan(g, &k), w, dy, dx, beta, NULL);
}

void linear_dx_gpu(gpu_ctx_t *g, void *dx, const void *dy, const void *w, linear_shape_t s)
{
    linear_dx(g, dx, dy, w, s, 0.0f);
}

// dx += dy W, dw += dy^T x (A / B of the act type), db += the column sums of dy.
void linear_backward_gpu(gpu_ctx_t *g, void *dx, float *dw, float *db, const void *dy,
                         const void *x, const void *w, linear_shape_t s)
{
    int64_t M = (int64_t)s.N * (int64_t)s.L;
    int64_t ldx = s.x_nstride ? (int64_t)s.x_nstride : s.Cin;
    int64_t ldy = s.y_nstride ? (int64_t)s.y_nstride : s.Cout;
    if (dx) linear_dx(g, dx, dy, w, s, 1.0f);
    if (dw) {
        gemm_key_t k = make_key(g, GK_DW, s.Cin, s.Cout, M, ldx, ldy, s.Cin, 1, x, dy, dw, 0);
        run(g, get_plan(g, &k), x, dy, dw, 1.0f, NULL);
    }
    if (db) {
        ASSERT(s.y_nstride == 0 || s.y_nstride == (size_t)s.Cout);   // dense dy rows
        bias_grad_gpu(g, db, dy, (size_t)s.N * s.L, s.Cout);
    }
}
