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
Two typed variants serve the Mamba dt_proj, whose output delta is fp32 in both modes:
linear_forward_f32out_gpu (act inputs, fp32 output) and linear_backward_f32_gpu (all fp32).
Where cuBLASLt offers no algorithm (bf16 rows that are not multiples of 16 bytes, e.g. Cout 5),
the same GEMM goes through cublasGemmEx, same types, fp32 compute, our workspace.
*/
#include "gpu_internal.h"
#include <stdlib.h>
#include <string.h>

enum { GK_FWD = 0, GK_DX = 1, GK_DW = 2 };

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
    int fused_bias;         // 0: the bias epilogue had no algorithm, bias added separately
    int gemm_ex;            // 1: cuBLASLt has no algorithm (e.g. bf16 rows not 16-byte multiples):
                            //    plain cublasGemmEx, same types and fp32 compute
} gemm_plan_t;

struct gemm_cache {
    gemm_plan_t *plans;
    int n, cap;
};

void gpu_gemm_cache_init(gpu_ctx_t *g) { g->gemm = (gemm_cache *)xcalloc(1, sizeof *g->gemm); }

void gpu_gemm_cache_free(gpu_ctx_t *g)
{
    gemm_cache *c = g->gemm;
    if (!c) return;
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
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(g->lt, p->op, p->a, p->b, p->c, p->c, pref,
                                                       1, &res, &nres);
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    if (st != CUBLAS_STATUS_SUCCESS || nres < 1) return 0;
    p->algo = res.algo;
    p->ws = res.workspaceSize;
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
    float alpha = 1.0f;
    ASSERT(p->ws <= g->ws_bytes);
    CUBLAS_CHECK(cublasLtMatmul(g->lt, p->op, &alpha, A, p->a, B, p->b, &beta, C, p->c, C, p->c,
                                &p->algo, g->ws, g->ws_bytes, g->stream));
}

// ab: the element type of A and B (GPU_F32 / GPU_BF16); C/D are fp32 when cd_f32, else ab.
static gemm_key_t make_key_t(gpu_dtype_t ab, int kind, int64_t m, int64_t n, int64_t k,
                             int64_t lda, int64_t ldb, int64_t ldc, int cd_f32, const void *A,
                             const void *B, const void *C, int bias)
{
    gemm_key_t key;
    memset(&key, 0, sizeof key);
    key.kind = kind; key.bias = bias;
    key.m = m; key.n = n; key.k = k; key.lda = lda; key.ldb = ldb; key.ldc = ldc;
    key.ab_type = ab == GPU_F32 ? CUDA_R_32F : CUDA_R_16BF;
    key.cd_type = cd_f32 ? CUDA_R_32F : key.ab_type;
    key.align[0] = ptr_align(A); key.align[1] = ptr_align(B); key.align[2] = ptr_align(C);
    return key;
}

static gemm_key_t make_key(const gpu_ctx_t *g, int kind, int64_t m, int64_t n, int64_t k,
                           int64_t lda, int64_t ldb, int64_t ldc, int cd_f32, const void *A,
                           const void *B, const void *C, int bias)
{
    return make_key_t(g->act, kind, m, n, k, lda, ldb, ldc, cd_f32, A, B, C, bias);
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

void linear_backward_gpu(gpu_ctx_t *g, void *dx, float *dw, float *db, const void *dy,
                         const void *x, const void *w, linear_shape_t s)
{
    int64_t M = (int64_t)s.N * (int64_t)s.L;
    int64_t ldx = s.x_nstride ? (int64_t)s.x_nstride : s.Cin;
    int64_t ldy = s.y_nstride ? (int64_t)s.y_nstride : s.Cout;
    if (dx) {
        gemm_key_t k = make_key(g, GK_DX, s.Cin, M, s.Cout, s.Cin, ldy, ldx, 0, w, dy, dx, 0);
        run(g, get_plan(g, &k), w, dy, dx, 1.0f, NULL);
    }
    if (dw) {
        gemm_key_t k = make_key(g, GK_DW, s.Cin, s.Cout, M, ldx, ldy, s.Cin, 1, x, dy, dw, 0);
        run(g, get_plan(g, &k), x, dy, dw, 1.0f, NULL);
    }
    if (db) {
        ASSERT(ldy == s.Cout);
        bias_grad_gpu(g, db, dy, (size_t)M, s.Cout);
    }
}

void linear_forward_f32out_gpu(gpu_ctx_t *g, float *y, const void *x, const void *w,
                               linear_shape_t s)
{
    int64_t M = (int64_t)s.N * (int64_t)s.L;
    int64_t ldx = s.x_nstride ? (int64_t)s.x_nstride : s.Cin;
    int64_t ldy = s.y_nstride ? (int64_t)s.y_nstride : s.Cout;
    gemm_key_t k = make_key(g, GK_FWD, s.Cout, M, s.Cin, s.Cin, ldx, ldy, 1, w, x, y, 0);
    run(g, get_plan(g, &k), w, x, y, 0.0f, NULL);
}

void linear_backward_f32_gpu(gpu_ctx_t *g, float *dx, float *dw, const float *dy, const float *x,
                             const float *w, linear_shape_t s)
{
    int64_t M = (int64_t)s.N * (int64_t)s.L;
    int64_t ldx = s.x_nstride ? (int64_t)s.x_nstride : s.Cin;
    int64_t ldy = s.y_nstride ? (int64_t)s.y_nstride : s.Cout;
    if (dx) {
        gemm_key_t k = make_key_t(GPU_F32, GK_DX, s.Cin, M, s.Cout, s.Cin, ldy, ldx, 1, w, dy, dx, 0);
        run(g, get_plan(g, &k), w, dy, dx, 0.0f, NULL);
    }
    if (dw) {
        gemm_key_t k = make_key_t(GPU_F32, GK_DW, s.Cin, s.Cout, M, ldx, ldy, s.Cin, 1, x, dy, dw, 0);
        run(g, get_plan(g, &k), x, dy, dw, 1.0f, NULL);
    }
}
