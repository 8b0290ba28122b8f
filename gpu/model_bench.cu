/*
model_bench.cu -- measurements behind two parts of srm-bench's table.
1. The scan-only replay behind the "all selective scans of one training step" row: every ToM
   layer of the model at the training plan's shapes, its forward scan (three directions in one
   launch, as mamba_layer.cu runs it) and its backward scans (one direction per launch, or
   the three in one where mamba_layer.cu runs them so: selective_scan_backward_small), on
   random inputs, timed with CUDA events: the same launches with the same shapes, alone --
   launched one by one and as two CUDA graphs (the training step runs them in its graph).
2. The Mamba layers' bucket of the per-kind breakdown split by part: the profiled eager step
   of train_step.cu with mamba_layer.cu's gpu_mark points armed (gpu_timer.cu), so that step's
   kinds and parts come from the same events' stream order.
*/
#include "model_internal.cuh"
#include <cuda_profiler_api.h>
#include <stdlib.h>
#include <string.h>

static size_t vox(const int s[3]) { return (size_t)s[0] * s[1] * s[2]; }

// Deterministic pseudo-random fill in [lo, hi) (splitmix64 of the index and seed).
template <typename T>
__global__ void fill_kernel(T *x, size_t n, float lo, float hi, unsigned long long seed)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        unsigned long long z = seed + 0x9E3779B97F4A7C15ull * (i + 1);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        float u = (float)(z >> 40) * (1.0f / 16777216.0f);
        x[i] = from_f<T>(lo + (hi - lo) * u);
    }
}

static void fill(gpu_ctx_t *g, void *x, gpu_dtype_t t, size_t n, float lo, float hi,
                 unsigned long long seed)
{
    if (t == GPU_F32)
        fill_kernel<float><<<grid_for(g, n, 256), 256, 0, g->stream>>>((float *)x, n, lo, hi, seed);
    else
        fill_kernel<bf16><<<grid_for(g, n, 256), 256, 0, g->stream>>>((bf16 *)x, n, lo, hi, seed);
    KERNEL_CHECK();
}

typedef struct { mamba_layer_t t; size_t L; } tom_t;

static int list_toms(const gpu_model_t *gm, tom_t *out)
{
    int n = 0;
    for (int i = 0; i < MODEL_LEVELS; i++) {
        const model_level_t *ML = &gm->m->lv[i];
        const gm_level_t *L = &gm->plan.lv[i];
        if (ML->has_tom_a) {
            out[n].t = ML->tom_a;
            out[n].t.nslices = MODEL_TOM_A_SLICES;
            out[n++].L = vox(L->hp);
        }
        for (int k = 0; k < ML->nstage; k++)
            if (ML->stage_kind[k] == STAGE_TOM) {
                out[n].t = ML->stage_tom[k];
                out[n].t.nslices = (size_t)L->s[0];
                out[n++].L = vox(L->s);
            }
    }
    return n;
}

static scan_gpu_t scan_of(const tom_t *tm, int N, int ndir)
{
    scan_gpu_t s;
    memset(&s, 0, sizeof s);
    s.N = N; s.E = tm->t.E; s.L = tm->L; s.nslices = tm->t.nslices;
    s.ldbc = mamba_layer_gpu_xdbl_ld(&tm->t);
    s.ldz = 2 * (size_t)tm->t.E;
    s.ndir = ndir;
    s.R = tm->t.R;
    return s;
}

// Direction k of layer tm alone (the calls over several directions take dir[0] of each):
// forward inputs set (B, C from x_dbl, the gate from
// xz[:, E:]); the backward adds the gradient pointers.
static scan_gpu_t dir_scan(const tom_t *tm, int N, int k, size_t es, const char *u, const float *Wdt,
                           const char *xd, const char *xz, const float *A_log, const float *D,
                           const float *bias)
{
    scan_gpu_t s = scan_of(tm, N, 1);
    scan_dir_gpu_t *sd = &s.dir[0];
    sd->order = (tom_order_t)k;
    sd->u = u; sd->x_dt = xd; sd->W_dt = Wdt;
    sd->B = xd + (size_t)tm->t.R * es; sd->C = xd + ((size_t)tm->t.R + tm->t.NS) * es;
    sd->z = xz + (size_t)tm->t.E * es;
    sd->A_log = A_log; sd->D = D; sd->delta_bias = bias;
    return s;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// The replay's layers, buffers and shapes (the largest layer's sizes).
typedef struct {
    gpu_ctx_t *g;
    tom_t toms[MODEL_LEVELS * (MODEL_STAGE_MAX + 1)];
    int nt, N;
    size_t es;
    char *u, *xd, *xz, *y, *gy, *du, *dxz, *dxd;
    float *states, *par, *A_log, *D, *bias, *Wdt, *grads;
    void *wsp;
} replay_t;

// Every layer's forward scans, as mamba_layer_forward_gpu: the three directions in one call,
// the pre-gate y summed, then the gate (the work of mamba_ssm's scan with z).
static void replay_forward(const replay_t *r)
{
    for (int i = 0; i < r->nt; i++) {
        const tom_t *tm = &r->toms[i];
        scan_gpu_t s3 = scan_of(tm, r->N, 3);
        const size_t NL = (size_t)r->N * tm->L, NLE = NL * tm->t.E;
        for (int k = 0; k < 3; k++) {
            s3.dir[k] = dir_scan(tm, r->N, k, r->es, r->u + k * NLE * r->es, r->Wdt, r->xd, r->xz,
                                 r->A_log, r->D, r->bias).dir[0];
            s3.dir[k].z = NULL;
        }
        selective_scan_forward_gpu(r->g, r->y, 0, r->states, r->wsp, &s3);
        mamba_gate_forward_gpu(r->g, r->gy, r->y, r->xz, NL, tm->t.E);
    }
}

// Every layer's backward scans, as mamba_layer_backward_gpu: dz (and G again, into du here)
// from the saved pre-gate y (here gy), then the directions one at a time or the three in one
// call, the dt_proj backward fused.
static void replay_backward(const replay_t *r)
{
    for (int i = 0; i < r->nt; i++) {
        const tom_t *tm = &r->toms[i];
        const size_t NL = (size_t)r->N * tm->L, NLE = NL * tm->t.E;
        const size_t NLP = NL * mamba_layer_gpu_xdbl_ld(&tm->t);
        const size_t epi = (size_t)tm->t.E * tm->t.NS, eri = (size_t)tm->t.E * tm->t.R;
        scan_gpu_t s3 = scan_of(tm, r->N, 3);
        mamba_gate_backward_gpu(r->g, r->dxz, r->du, r->y, r->gy, r->xz, NL, tm->t.E);
        const int nd = selective_scan_backward_small(r->g, r->N, tm->t.E, tm->L) ? 3 : 1;
        for (int k0 = 0; k0 < 3; k0 += nd) {
            scan_gpu_t s = scan_of(tm, r->N, nd);
            s.overwrite = 1;
            for (int j = 0; j < nd; j++) {
                scan_dir_gpu_t *sd = &s.dir[j];
                *sd = dir_scan(tm, r->N, k0 + j, r->es, r->u + j * NLE * r->es, r->Wdt, r->xd,
                               r->xz, r->A_log, r->D, r->bias).dir[0];
                char *dx = r->dxd + j * NLP * r->es;
                float *gr = r->grads + j * (3 * epi + eri);
                sd->du = r->du + j * NLE * r->es;
                sd->dx_dt = dx;
                sd->dB = dx + (size_t)tm->t.R * r->es;
                sd->dC = dx + ((size_t)tm->t.R + tm->t.NS) * r->es;
                sd->dA_log = gr; sd->dD = gr + epi; sd->ddelta_bias = gr + 2 * epi;
                sd->dW_dt = gr + 3 * epi;
            }
            selective_scan_backward_gpu(r->g, r->y, r->states + selective_scan_dir_states(&s3, k0),
                                        r->wsp, &s);
        }
    }
}

// the replays in the shape gpu_graph_capture takes
static void replay_forward_fn(void *r) { replay_forward((const replay_t *)r); }
static void replay_backward_fn(void *r) { replay_backward((const replay_t *)r); }

// fn's launches captured into one CUDA graph (as the training step runs them); NULL where
// capture fails (then only the eager figures are reported).
static cudaGraphExec_t replay_graph(replay_t *r, void (*fn)(void *))
{
    const char *why = NULL;
    cudaGraphExec_t exec = gpu_graph_capture(r->g, fn, r, &why);
    if (!exec) log_msg('W', "scan replay: CUDA graph capture failed (%s)", why);
    return exec;
}

// Median ms of n timed runs of the forward and the backward (after warm untimed ones), launched
// eagerly (graph NULL) or as the two graphs.
static void replay_time(const replay_t *r, cudaGraphExec_t gf, cudaGraphExec_t gb, int warm,
                        int n, double *fwd_ms, double *bwd_ms)
{
    gpu_timer_t *tf = gpu_timer_new(r->g), *tb = gpu_timer_new(r->g);
    double *f = (double *)xcalloc((size_t)n, sizeof *f), *b = (double *)xcalloc((size_t)n, sizeof *b);
    for (int i = 0; i < warm + n; i++) {
        gpu_timer_start(tf);
        if (gf) CUDA_CHECK(cudaGraphLaunch(gf, r->g->stream));
        else replay_forward(r);
        gpu_timer_stop(tf);
        gpu_timer_start(tb);
        if (gb) CUDA_CHECK(cudaGraphLaunch(gb, r->g->stream));
        else replay_backward(r);
        gpu_timer_stop(tb);
        double fm = gpu_timer_ms(tf), bm = gpu_timer_ms(tb);
        if (i >= warm) { f[i - warm] = fm; b[i - warm] = bm; }
    }
    qsort(f, (size_t)n, sizeof *f, cmp_d);
    qsort(b, (size_t)n, sizeof *b, cmp_d);
    *fwd_ms = f[n / 2];
    *bwd_ms = b[n / 2];
    free(f);
    free(b);
    gpu_timer_free(&tf);
    gpu_timer_free(&tb);
}

void gpu_model_time_scans(gpu_model_t *gm, int warm, int n, gpu_scan_times_t *out)
{
    replay_t r;
    memset(&r, 0, sizeof r);
    memset(out, 0, sizeof *out);
    gpu_ctx_t *g = r.g = gm->g;
    const gpu_dtype_t t = g->act;
    r.es = gpu_dtype_size(t);
    const int N = r.N = gm->N;
    const int nt = r.nt = list_toms(gm, r.toms);
    if (!nt) return;
    // buffers for the largest layer; du and dx_dbl for three directions where the backward
    // runs them together
    size_t nle = 0, nlp = 0, st = 0, ws = 0, ep = 0, er = 0, dun = 0, dxn = 0;
    for (int i = 0; i < nt; i++) {
        const tom_t *tm = &r.toms[i];
        const size_t NL = (size_t)N * tm->L;
        scan_gpu_t s3 = scan_of(tm, N, 3);
        const size_t nd = selective_scan_backward_small(g, N, tm->t.E, tm->L) ? 3 : 1;
        if (NL * tm->t.E > nle) nle = NL * tm->t.E;
        if (NL * s3.ldbc > nlp) nlp = NL * s3.ldbc;
        if (nd * NL * tm->t.E > dun) dun = nd * NL * tm->t.E;
        if (nd * NL * s3.ldbc > dxn) dxn = nd * NL * s3.ldbc;
        if (selective_scan_states_bytes(&s3) > st) st = selective_scan_states_bytes(&s3);
        if (selective_scan_workspace_bytes(&s3) > ws) ws = selective_scan_workspace_bytes(&s3);
        const size_t eps = (size_t)tm->t.E * (size_t)tm->t.NS;
        if (eps > ep) ep = eps;
        if ((size_t)tm->t.E * tm->t.R > er) er = (size_t)tm->t.E * tm->t.R;
    }
    const size_t es = r.es;
    // three directions' u: the layer's forward scans them in one call
    r.u = (char *)gpu_malloc(g, 3 * nle * es, "scan bench u");
    r.xd = (char *)gpu_malloc(g, nlp * es, "scan bench x_dbl");
    r.xz = (char *)gpu_malloc(g, 2 * nle * es, "scan bench xz");
    r.y = (char *)gpu_malloc(g, nle * es, "scan bench y / dy");
    r.gy = (char *)gpu_malloc(g, nle * es, "scan bench G");
    r.du = (char *)gpu_malloc(g, dun * es, "scan bench du");
    r.dxz = (char *)gpu_malloc(g, 2 * nle * es, "scan bench dxz");
    r.dxd = (char *)gpu_malloc(g, dxn * es, "scan bench dx_dbl");
    r.states = (float *)gpu_malloc(g, st, "scan bench states");
    r.wsp = gpu_malloc(g, ws, "scan bench workspace");
    // A_log, D, bias, W_dt, then per direction dA_log, dD, dbias, dW_dt
    r.par = (float *)gpu_malloc(g, (3 * ep + er + 3 * (3 * ep + er)) * sizeof(float),
                                "scan bench params");
    fill(g, r.u, t, 3 * nle, -1, 1, 1);
    fill(g, r.xd, t, nlp, -1, 1, 3);
    fill(g, r.xz, t, 2 * nle, -1, 1, 4);
    fill(g, r.y, t, nle, -1, 1, 5);
    fill(g, r.dxz, t, 2 * nle, -1, 1, 9);
    r.A_log = r.par; r.D = r.par + ep; r.bias = r.par + 2 * ep;
    r.Wdt = r.par + 3 * ep; r.grads = r.Wdt + er;  // the fused dt projection's W_dt; gradients
    fill(g, r.A_log, GPU_F32, ep, 0.0f, 2.8f, 6);
    fill(g, r.D, GPU_F32, ep, 0.5f, 1.5f, 7);
    fill(g, r.bias, GPU_F32, ep, -4.0f, -2.0f, 8);
    fill(g, r.Wdt, GPU_F32, er, -0.5f, 0.5f, 10);
    gpu_memset(g, r.grads, 0, 3 * (3 * ep + er) * sizeof(float));

    replay_time(&r, NULL, NULL, warm, n, &out->fwd_ms, &out->bwd_ms);
    // one more eager replay between cudaProfilerStart / Stop: a profiler started with its
    // collection off (ncu --profile-from-start off) sees exactly one step's scan launches
    CUDA_CHECK(cudaProfilerStart());
    replay_forward(&r);
    replay_backward(&r);
    CUDA_CHECK(cudaProfilerStop());
    cudaGraphExec_t gf = replay_graph(&r, replay_forward_fn);
    cudaGraphExec_t gb = gf ? replay_graph(&r, replay_backward_fn) : NULL;
    if (gf && gb) {
        replay_time(&r, gf, gb, warm, n, &out->graph_fwd_ms, &out->graph_bwd_ms);
        out->graph_ok = 1;
    }
    if (gf) CUDA_CHECK(cudaGraphExecDestroy(gf));
    if (gb) CUDA_CHECK(cudaGraphExecDestroy(gb));
    gpu_sync(g);
    void *bufs[] = { r.u, r.xd, r.xz, r.y, r.gy, r.du, r.dxz, r.dxd, r.states, r.wsp, r.par };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) gpu_free(g, bufs[i]);
}

// ---- the Mamba layers' parts -------------------------------------------------------------------
const char *gpu_mpart_name(int part)
{
    static const char *names[GPU_MPART_COUNT] = {
        "LayerNorm fwd", "LayerNorm recompute (bwd)", "LayerNorm bwd",
        "in_proj GEMM fwd", "in_proj GEMM recompute (bwd: xz)", "in_proj GEMM bwd (dT, dW_in)",
        "conv1d + SiLU fwd (3 directions)", "conv1d + SiLU recompute (bwd)", "conv1d + SiLU bwd",
        "x_proj GEMM fwd", "x_proj GEMM bwd",
        "selective scan fwd (3 directions, dt_proj, sum)",
        "selective scan bwd (3 directions, dt_proj)",
        "out_proj GEMM fwd", "out_proj GEMM bwd (dG, dW_out)",
        "gate Y SiLU(z): G fwd, G again + dz bwd" };
    return part >= 0 && part < GPU_MPART_COUNT ? names[part] : "?";
}

int gpu_model_profile_step_parts(gpu_model_t *gm, const float *x, const uint8_t *labels,
                                 long step, double ms[GPU_KIND_COUNT], double *total_ms,
                                 double parts[GPU_MPART_COUNT], int *count, char *err)
{
    // 14 marks per layer forward and 40 per backward: 648 for the 12 ToM layers of M
    gpu_marks_t *mk = gpu_marks_new(gm->g, 4096);
    if (gpu_marks_arm(mk, err)) {
        gpu_marks_free(&mk);
        gpu_model_profile_step(gm, x, labels, step, ms, total_ms);
        return -1;
    }
    gpu_model_profile_step(gm, x, labels, step, ms, total_ms);
    gpu_marks_disarm();
    const int rc = gpu_marks_sum(mk, parts, count, GPU_MPART_COUNT, err);
    gpu_marks_free(&mk);
    return rc;
}
