/*
bench.c -- srm-bench: the performance table of issue 7 for everything the GPU alone can measure
(variant M, width 48, 1 input channel, 14 classes, bf16): training step at 128^3 batch 1 and 2
and 96^3 batch 1 (CUDA events, median of --steps steps after --warm), peak GPU memory while
training 128^3 batch 1 (our tracked cudaMalloc peak and the cudaMemGetInfo difference),
inference of one 128^3 window, the selective scans of one training step (scan-only replay), a
per-kernel-kind breakdown of one step (then the Mamba layers' bucket split by part in a second
profiled step, with mamba_layer.cu's marks on), and sliding-window inference over a 240x240x155 volume
(overlap 0.5, windows batched). Each row next to the PyTorch baseline and the target.
Run by `make bench` (scripts/bench.sh). Needs a GPU; prints one table on stdout.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "check.h"
#include "model.h"
#include "rng.h"

#if !SRM_CUDA
// CPU-only build (make CUDA=0): there is nothing to measure.
int main(void)
{
    log_set_name("bench");
    log_msg('E', "srm-bench measures the GPU: rebuild with make CUDA=1 on a machine with nvcc");
    return 1;
}
#else
#include "gpu.h"

typedef struct {
    int steps, warm, window_batch, vol[3];
    double overlap;
    double data_wait_pct;           // measured by scripts/data_wait.sh (bench.sh), < 0: not given
    const char *data_wait_what;     // how it was measured
} opts_t;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static float median(float *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_f);
    return n % 2 ? v[n / 2] : 0.5f * (v[n / 2 - 1] + v[n / 2]);
}

static const double GiB = 1024.0 * 1024.0 * 1024.0;

typedef struct {
    float step_ms;
    double peak_gib, meminfo_gib, arena_gib, param_gib;
    double kind_ms[GPU_KIND_COUNT], kind_total;
    gpu_scan_times_t scan;
    double part_ms[GPU_MPART_COUNT];    // the Mamba bucket by part, from a second profiled step
    int part_n[GPU_MPART_COUNT];        // intervals summed into each part
    double marked_mamba, marked_total;  // that step's Mamba bucket and first-to-last ms
    int parts_ok;
} train_res_t;

// Random input (standard normal) and labels for batch N at dims.
static void make_batch(int N, int cin, int K, const int d[3], float **x, uint8_t **lab, uint64_t s)
{
    const size_t S = (size_t)d[0] * d[1] * d[2];
    rng_t r = rng_seed(s);
    *x = xmalloc((size_t)N * cin * S * sizeof(float));
    *lab = xmalloc((size_t)N * S);
    for (size_t i = 0; i < (size_t)N * cin * S; i++) (*x)[i] = (float)rng_normal(&r);
    for (size_t i = 0; i < (size_t)N * S; i++) (*lab)[i] = (uint8_t)rng_below(&r, (uint64_t)K);
}

// The number of intervals behind each Mamba part (per step, all ToM layers): a part with none
// means a mark point never fired; the counts are multiples of the layer count (see gpu.h).
static void log_parts(const train_res_t *r)
{
    char line[2048];
    size_t at = 0;
    for (int k = 0; k < GPU_MPART_COUNT && at < sizeof line; k++) {
        int w = snprintf(line + at, sizeof line - at, "%s%s x%d", k ? ", " : "",
                         gpu_mpart_name(k), r->part_n[k]);
        if (w < 0) break;
        at += (size_t)w;
        if (!r->part_n[k]) log_msg('W', "Mamba part \"%s\" was never marked", gpu_mpart_name(k));
    }
    log_msg('I', "Mamba parts marked: %s", line);
}

static void bench_train(const opts_t *o, const model_t *m, int N, int D, int full,
                        train_res_t *res)
{
    char err[ERR_LEN];
    const int dims[3] = { D, D, D };
    gpu_ctx_t *g = gpu_ctx_new(GPU_CFG_DEFAULT);
    size_t free0 = 0, total = 0, free1 = 0;
    gpu_mem_info(g, &free0, &total);
    const size_t held0 = gpu_mem_stats(g).current;
    train_cfg_t tc = train_cfg_default();
    gpu_model_t *gm = gpu_model_new(g, m, &tc, N, dims, err);
    if (!gm) DIE("bench: %s", err);
    float *params = xmalloc(m->table.numel * sizeof(float));
    model_init_params(m, params, 1);
    gpu_model_set_params(gm, params);
    float *x;
    uint8_t *lab;
    make_batch(N, m->cfg.in_channels, m->cfg.classes, dims, &x, &lab, 7);
    float *ms = xcalloc((size_t)o->steps, sizeof *ms);
    gpu_model_time_steps(gm, x, lab, o->warm, o->steps, ms);
    res->step_ms = median(ms, o->steps);
    gpu_sync(g);
    gpu_mem_info(g, &free1, &total);
    res->peak_gib = (double)gpu_mem_stats(g).peak / GiB;
    res->meminfo_gib = ((double)free0 - (double)free1 + (double)held0) / GiB;
    res->param_gib = (double)gpu_model_param_bytes(gm) / GiB;
    res->arena_gib = (double)gpu_model_arena_bytes(g, m, N, dims, err) / GiB;
    if (full) {
        gpu_model_profile_step(gm, x, lab, o->warm + o->steps + 1, res->kind_ms, &res->kind_total);
        // the parts in a second eager step with mamba_layer.cu's marks on, so the rows above
        // stay the measurement they always were and the marks' own cost shows as the
        // difference between the two Mamba buckets
        double k2[GPU_KIND_COUNT];
        res->parts_ok = !gpu_model_profile_step_parts(gm, x, lab, o->warm + o->steps + 2, k2,
                                                      &res->marked_total, res->part_ms,
                                                      res->part_n, err);
        res->marked_mamba = k2[GPU_KIND_MAMBA];
        if (!res->parts_ok) log_msg('W', "Mamba parts not measured: %s", err);
        else log_parts(res);
        gpu_model_time_scans(gm, 2, o->steps, &res->scan);
    }
    free(ms); free(x); free(lab); free(params);
    gpu_model_free(&gm);
    gpu_ctx_destroy(&g);
}

static float bench_infer(const opts_t *o, const model_t *m)
{
    char err[ERR_LEN];
    const int dims[3] = { 128, 128, 128 };
    gpu_ctx_t *g = gpu_ctx_new(GPU_CFG_DEFAULT);
    gpu_infer_t *gi = gpu_infer_new(g, m, 1, dims, NULL, err);
    if (!gi) DIE("bench: %s", err);
    float *params = xmalloc(m->table.numel * sizeof(float));
    model_init_params(m, params, 1);
    gpu_infer_set_params(gi, params);
    float *x;
    uint8_t *lab;
    make_batch(1, m->cfg.in_channels, m->cfg.classes, dims, &x, &lab, 9);
    float *ms = xcalloc((size_t)o->steps, sizeof *ms);
    gpu_infer_time(gi, x, o->warm, o->steps, ms);
    float r = median(ms, o->steps);
    free(ms); free(x); free(lab); free(params);
    gpu_infer_free(&gi);
    gpu_ctx_destroy(&g);
    return r;
}

static double bench_sliding(const opts_t *o, const model_t *m, int *nwin)
{
    char err[ERR_LEN];
    const int dims[3] = { 128, 128, 128 };
    gpu_ctx_t *g = gpu_ctx_new(GPU_CFG_DEFAULT);
    gpu_infer_t *gi = gpu_infer_new(g, m, o->window_batch, dims, NULL, err);
    if (!gi) DIE("bench: %s", err);
    float *params = xmalloc(m->table.numel * sizeof(float));
    model_init_params(m, params, 1);
    gpu_infer_set_params(gi, params);
    const size_t V = (size_t)o->vol[0] * o->vol[1] * o->vol[2];
    float *vol = xmalloc((size_t)m->cfg.in_channels * V * sizeof(float));
    rng_t r = rng_seed(11);
    for (size_t i = 0; i < (size_t)m->cfg.in_channels * V; i++) vol[i] = (float)rng_normal(&r);
    uint8_t *lab = xmalloc(V);
    float t[3];
    for (int k = 0; k < 4; k++) {       // one warm-up, three timed (host clock: upload to labels)
        double t0 = now_s();
        if (gpu_infer_sliding(gi, vol, o->vol, o->overlap, NULL, lab, nwin, err))
            DIE("bench: %s", err);
        if (k) t[k - 1] = (float)(now_s() - t0);
    }
    free(vol); free(lab); free(params);
    gpu_infer_free(&gi);
    gpu_ctx_destroy(&g);
    return median(t, 3);
}

static void usage(void)
{
    fprintf(stderr, "usage: srm-bench [--steps N (20)] [--warm N (5)] [--window-batch N (4)]\n"
                    "                 [--volume DxHxW (240x240x155)] [--overlap F (0.5)]\n"
                    "                 [--data-wait PCT --data-wait-what TEXT]   (the pipeline's row,\n"
                    "                 measured by scripts/data_wait.sh: scripts/bench.sh passes it)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    log_set_name("bench");
    opts_t o = { .steps = 20, .warm = 5, .window_batch = 4, .vol = { 240, 240, 155 },
                 .overlap = 0.5, .data_wait_pct = -1, .data_wait_what = "" };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (!strcmp(a, "--steps")) o.steps = atoi(v);
        else if (!strcmp(a, "--warm")) o.warm = atoi(v);
        else if (!strcmp(a, "--window-batch")) o.window_batch = atoi(v);
        else if (!strcmp(a, "--overlap")) o.overlap = atof(v);
        else if (!strcmp(a, "--data-wait")) o.data_wait_pct = atof(v);
        else if (!strcmp(a, "--data-wait-what")) o.data_wait_what = v;
        else if (!strcmp(a, "--volume")) {
            if (sscanf(v, "%dx%dx%d", &o.vol[0], &o.vol[1], &o.vol[2]) != 3) usage();
        } else usage();
        i++;
    }
    if (o.steps < 1 || o.warm < 0 || o.window_batch < 1) usage();

    char err[ERR_LEN];
    model_t m;
    model_cfg_t cfg = model_cfg_default();       // M, width 48, 1 input channel, 14 classes
    if (model_describe(&m, &cfg, err)) DIE("%s", err);

    char desc[512];
    {
        gpu_ctx_t *g = gpu_ctx_new(GPU_CFG_DEFAULT);
        gpu_describe(g, desc, sizeof desc);
        gpu_ctx_destroy(&g);
    }
    log_msg('I', "%s", desc);
    train_res_t r1, r2, r3;
    memset(&r1, 0, sizeof r1); memset(&r2, 0, sizeof r2); memset(&r3, 0, sizeof r3);
    log_msg('I', "training 128^3 batch 1 (with profile and scan replay)");
    bench_train(&o, &m, 1, 128, 1, &r1);
    log_msg('I', "training 128^3 batch 2");
    bench_train(&o, &m, 2, 128, 0, &r2);
    log_msg('I', "training 96^3 batch 1");
    bench_train(&o, &m, 1, 96, 0, &r3);
    log_msg('I', "inference 128^3");
    float inf = bench_infer(&o, &m);
    log_msg('I', "sliding window %dx%dx%d", o.vol[0], o.vol[1], o.vol[2]);
    int nwin = 0;
    double sw = bench_sliding(&o, &m, &nwin);

    printf("srm-bench: %s; cudnnGetVersion() = %zu\n", desc, gpu_cudnn_version());
    printf("variant M, width 48, 1 input channel, 14 classes, bf16; %zu parameters; "
           "CUDA events, median of %d after %d warm-up\n\n", m.table.numel, o.steps, o.warm);
    printf("| measure | PyTorch + mamba_ssm | target | ours |\n|---|---|---|---|\n");
    printf("| training step, 128³, batch 1 (fwd, loss, bwd, Adam) | 138.3 ms | ≤ 46 ms | %.1f ms |\n",
           r1.step_ms);
    printf("| training step, 128³, batch 2 | 201.2 ms | ≤ 67 ms | %.1f ms |\n", r2.step_ms);
    printf("| training step, 96³, batch 1 | 103.5 ms (its best, fp32) | ≤ 35 ms | %.1f ms |\n",
           r3.step_ms);
    printf("| peak GPU memory while training, 128³, batch 1 (tracked cudaMalloc peak) | 5.77 GiB "
           "| ≤ 2.9 GiB | %.2f GiB |\n", r1.peak_gib);
    printf("| same, cudaMemGetInfo difference (context excluded) | — | — | %.2f GiB |\n",
           r1.meminfo_gib);
    printf("| inference, one 128³ window | 44.7 ms | ≤ 15 ms | %.1f ms |\n", inf);
    // the scans as the training step runs them: in a CUDA graph; launched one by one too
    const gpu_scan_times_t *sc = &r1.scan;
    printf("| all selective scans of one training step (fwd + bwd, scan-only replay) | 62.7 ms "
           "| ≤ 10 ms | ");
    if (sc->graph_ok)
        printf("%.1f ms (fwd %.1f + bwd %.1f) as a CUDA graph, as the step runs them; ",
               sc->graph_fwd_ms + sc->graph_bwd_ms, sc->graph_fwd_ms, sc->graph_bwd_ms);
    printf("%.1f ms (fwd %.1f + bwd %.1f) launched one by one%s |\n", sc->fwd_ms + sc->bwd_ms,
           sc->fwd_ms, sc->bwd_ms, sc->graph_ok ? "" : " (graph capture failed)");
    if (o.data_wait_pct >= 0)
        printf("| trainer's data wait, 128³ batch 2 (srm-trainer's counters: %s) | — | ≤ 5 %% | "
               "%.1f %% |\n", o.data_wait_what, o.data_wait_pct);
    else
        printf("| trainer's data wait, 128³ batch 2 | — | ≤ 5 %% | not measured (scripts/bench.sh "
               "measures it when given a dataset) |\n");
    printf("| sliding-window inference, %dx%dx%d, overlap %.2g, %d windows in batches of %d | — "
           "| — | %.2f s per case |\n", o.vol[0], o.vol[1], o.vol[2], o.overlap, nwin,
           o.window_batch, sw);
    printf("\nmemory at 128³ batch 1: parameters + gradients + Adam m, v + bf16 copy %.2f GiB, "
           "activation arena %.2f GiB\n", r1.param_gib, r1.arena_gib);
    printf("\nper-kernel-kind breakdown, one eager bf16 step at 128³ batch 1 (CUDA events around "
           "every op; %.1f ms between the first and last event):\n\n", r1.kind_total);
    printf("| kind | ms per step | share |\n|---|---|---|\n");
    double sum = 0;
    for (int k = 0; k < GPU_KIND_COUNT; k++) sum += r1.kind_ms[k];
    for (int k = 0; k < GPU_KIND_COUNT; k++)
        printf("| %s | %.2f | %.1f %% |\n", gpu_kind_name(k), r1.kind_ms[k],
               sum > 0 ? 100.0 * r1.kind_ms[k] / sum : 0.0);
    printf("| (of the Mamba layers: selective scans, from the replay) | %.2f | %.1f %% |\n",
           sc->fwd_ms + sc->bwd_ms, sum > 0 ? 100.0 * (sc->fwd_ms + sc->bwd_ms) / sum : 0.0);
    // the Mamba layers' bucket by part, from a second step with the marks on: the part rows
    // and "other" sum to that step's bucket (its own row)
    if (r1.parts_ok) {
        printf("| · Mamba layers again, a step with the part marks on (the rows below sum to it; "
               "%.1f ms first to last event) | %.2f | %.1f %% |\n", r1.marked_total,
               r1.marked_mamba, sum > 0 ? 100.0 * r1.marked_mamba / sum : 0.0);
        double in_parts = 0;
        for (int k = 0; k < GPU_MPART_COUNT; k++) {
            in_parts += r1.part_ms[k];
            printf("| · Mamba: %s | %.2f | %.1f %% |\n", gpu_mpart_name(k), r1.part_ms[k],
                   sum > 0 ? 100.0 * r1.part_ms[k] / sum : 0.0);
        }
        const double rest = r1.marked_mamba - in_parts;
        // the marks nest inside the layer calls, so "other" is only the event gaps: a negative
        // or large rest means a mark outside a Mamba op or a layer path left unmarked
        if (rest < -0.05 || rest > 0.05 * r1.marked_mamba)
            log_msg('W', "Mamba parts sum to %.2f ms of a %.2f ms bucket: check the marks in "
                    "gpu/mamba_layer.cu", in_parts, r1.marked_mamba);
        printf("| · Mamba: other (gaps around the marked parts) | %.2f | %.1f %% |\n", rest,
               sum > 0 ? 100.0 * rest / sum : 0.0);
    } else {
        printf("| · Mamba: parts not measured (see the log) | — | — |\n");
    }
    model_free(&m);
    return 0;
}
#endif
