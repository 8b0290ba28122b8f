/*
evaluator_model.c -- the evaluator's network: weights from a native checkpoint or a safetensors
file (or a job's bytes, through a private temporary file, since both readers take paths), the
configuration from the file or the fallback flags, and the sliding-window callback running the
CPU forward (common/nn, float) or, built with CUDA and a GPU present, gpu_infer_* (gpu/gpu.h).
*/
#define _GNU_SOURCE
#include "evaluator.h"
#include "checkpoint.h"
#include "check.h"
#include "safetensors.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if SRM_CUDA
#include "gpu.h"
// The CUDA runtime's device count (libcudart is linked into the GPU stages): asking it first
// keeps --device auto from dying in gpu_ctx_new on a machine without a usable GPU.
extern int cudaGetDeviceCount(int *count);
#endif

struct eval_model {
    model_t m;
    float *params;              // m.table layout
    char prep[CKPT_PREP_MAX];   // the preprocessing settings the file carries, "" when none
    int roi[3], batch, K, Cin;
    size_t win;                 // voxels per window
    float *ws;                  // CPU workspace (model_plan total for `batch` windows)
    size_t ws_len;
    int on_gpu;
    int deterministic;          // eval_model_deterministic: the GPU context's deterministic switch
    const stage_t *stop_on;     // a stage asked to stop ends the windows early (eval_model_stop_on)
#if SRM_CUDA
    gpu_ctx_t *g;
    gpu_infer_t *gi;
    float *xpad, *ypad;         // a full batch for the GPU when the last one is short
#endif
};

static const char CKPT_MAGIC[8] = { 'S', 'R', 'M', 'C', 'K', 'P', 'T', 0 };

static eval_model_t *build(const model_cfg_t *cfg, char *err)
{
    eval_model_t *em = xcalloc(1, sizeof *em);
    if (model_describe(&em->m, cfg, err)) { free(em); return NULL; }
    em->params = xmalloc(em->m.table.numel * sizeof(float));
    return em;
}

eval_model_t *eval_model_load_file(const char *path, const model_cfg_t *fallback, char *err)
{
    unsigned char head[8] = { 0 };
    FILE *f = fopen(path, "rb");
    if (!f) { set_err(err, "%s: cannot open: %s", path, strerror(errno)); return NULL; }
    size_t got = fread(head, 1, 8, f);
    fclose(f);
    if (got != 8) { set_err(err, "%s: shorter than 8 bytes: not a checkpoint or safetensors file", path); return NULL; }
    eval_model_t *em = NULL;
    if (!memcmp(head, CKPT_MAGIC, 8)) {
        ckpt_state_t st;
        if (ckpt_read_state(path, &st, err)) return NULL;
        if (!(em = build(&st.cfg, err))) return NULL;
        if (ckpt_read(path, &em->m, em->params, NULL, NULL, &st, err)) { eval_model_free(&em); return NULL; }
        memcpy(em->prep, st.prep, sizeof em->prep);
        return em;
    }
    model_cfg_t cfg;
    char why[ERR_LEN];
    if (safetensors_read_config(path, &cfg, why)) {
        // Weights trained elsewhere carry no configuration of ours: the flags give it.
        log_msg('I', "%s: %s; using the configuration from the flags (variant %s, width %d, %d in, %d classes)",
                path, why, model_variant_name(fallback->variant), fallback->width, fallback->in_channels,
                fallback->classes);
        cfg = *fallback;
    }
    if (!(em = build(&cfg, err))) return NULL;
    if (safetensors_read(path, &em->m, em->params, err) || safetensors_read_prep(path, em->prep, sizeof em->prep, err)) {
        eval_model_free(&em);
        return NULL;
    }
    return em;
}

eval_model_t *eval_model_load_bytes(const void *data, size_t n, const char *what,
                                    const model_cfg_t *fallback, char *err)
{
    const char *dir = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/srm-evaluator-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) { set_err(err, "%s: cannot make a temporary file in %s: %s", what, path, strerror(errno)); return NULL; }
    const char *p = data;
    size_t left = n;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            set_err(err, "%s: writing %s: %s", what, path, strerror(errno));
            close(fd);
            unlink(path);
            return NULL;
        }
        p += w;
        left -= (size_t)w;
    }
    if (close(fd)) { set_err(err, "%s: closing %s: %s", what, path, strerror(errno)); unlink(path); return NULL; }
    char e2[ERR_LEN];
    eval_model_t *em = eval_model_load_file(path, fallback, e2);
    unlink(path);
    if (!em) set_err(err, "%s: %s", what, e2);
    return em;
}

void eval_model_free(eval_model_t **pem)
{
    eval_model_t *em = *pem;
    if (!em) return;
#if SRM_CUDA
    if (em->gi) gpu_infer_free(&em->gi);
    if (em->g) gpu_ctx_destroy(&em->g);
    free(em->xpad);
    free(em->ypad);
#endif
    model_free(&em->m);
    free(em->params);
    free(em->ws);
    free(em);
    *pem = NULL;
}

const model_cfg_t *eval_model_cfg(const eval_model_t *em) { return &em->m.cfg; }
const char *eval_model_prep(const eval_model_t *em) { return em->prep; }
const char *eval_model_device(const eval_model_t *em) { return em->on_gpu ? "gpu" : "cpu"; }

int eval_model_adopt(eval_model_t *dst, const eval_model_t *src)
{
    if (memcmp(&dst->m.cfg, &src->m.cfg, sizeof dst->m.cfg) || dst->m.table.numel != src->m.table.numel) return 0;
    memcpy(dst->params, src->params, src->m.table.numel * sizeof(float));
#if SRM_CUDA
    if (dst->gi) gpu_infer_set_params(dst->gi, dst->params);
#endif
    return 1;
}

#if SRM_CUDA
static int gpu_present(void)
{
    int n = 0;
    return cudaGetDeviceCount(&n) == 0 && n > 0;
}

static int prepare_gpu(eval_model_t *em, char *err)
{
    gpu_cfg_t gc = GPU_CFG_DEFAULT;
    gc.deterministic = em->deterministic;       // the same engines in every process: same logits
    em->g = gpu_ctx_new(gc);
    em->gi = gpu_infer_new(em->g, &em->m, em->batch, em->roi, NULL, err);
    if (!em->gi) { gpu_ctx_destroy(&em->g); return -1; }
    gpu_infer_set_params(em->gi, em->params);
    em->xpad = xcalloc((size_t)em->batch * em->Cin * em->win, sizeof(float));
    em->ypad = xmalloc((size_t)em->batch * em->K * em->win * sizeof(float));
    em->on_gpu = 1;
    return 0;
}
#endif

int eval_model_prepare(eval_model_t *em, const sw_cfg_t *sw, eval_device_t dev, char *err)
{
    memcpy(em->roi, sw->roi, sizeof em->roi);
    em->batch = sw->batch;
    em->K = em->m.cfg.classes;
    em->Cin = em->m.cfg.in_channels;
    em->win = (size_t)em->roi[0] * em->roi[1] * em->roi[2];
#if SRM_CUDA
    if (dev == EVAL_DEVICE_GPU || (dev == EVAL_DEVICE_AUTO && gpu_present())) {
        if (dev == EVAL_DEVICE_GPU && !gpu_present()) return set_err(err, "--device gpu: no usable CUDA device");
        return prepare_gpu(em, err);
    }
#else
    if (dev == EVAL_DEVICE_GPU) return set_err(err, "--device gpu: this build has no CUDA (make CUDA=1)");
#endif
    model_plan_t p;
    if (model_plan(&p, &em->m, em->batch, em->roi, err)) return -1;
    // A window too large for this host (a --window far beyond the images) is an error that names
    // it, not an allocation failure that kills the process.
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    double need = (double)p.total * sizeof(float), have = pages > 0 && page > 0 ? (double)pages * page : 0;
    if (have > 0 && need > have)
        return set_err(err, "window %dx%dx%d (batch %d) needs %.1f GB for the model's activations, more than this "
                       "host's %.1f GB: give a smaller --window (the training patch is the usual one)", em->roi[0],
                       em->roi[1], em->roi[2], em->batch, need / 1e9, have / 1e9);
    free(em->ws);
    em->ws_len = p.total;
    em->ws = malloc(p.total * sizeof(float));
    if (!em->ws) return set_err(err, "window %dx%dx%d: cannot allocate %.1f GB for the model's activations: give a "
                                "smaller --window", em->roi[0], em->roi[1], em->roi[2], need / 1e9);
    return 0;
}

void eval_model_stop_on(eval_model_t *em, const stage_t *st) { em->stop_on = st; }
void eval_model_deterministic(eval_model_t *em) { em->deterministic = 1; }

int eval_model_net(void *ctx, float *y, const float *x, int n, char *err)
{
    eval_model_t *em = ctx;
    ASSERT(n >= 1 && n <= em->batch);
    if (em->stop_on && stage_stopping(em->stop_on)) return set_err(err, "stopping (asked between windows)");
#if SRM_CUDA
    if (em->on_gpu) {
        // gpu_infer runs a fixed batch: zero windows fill a short last batch.
        memcpy(em->xpad, x, (size_t)n * em->Cin * em->win * sizeof(float));
        memset(em->xpad + (size_t)n * em->Cin * em->win, 0, (size_t)(em->batch - n) * em->Cin * em->win * sizeof(float));
        gpu_infer_run(em->gi, em->xpad, em->ypad);
        memcpy(y, em->ypad, (size_t)n * em->K * em->win * sizeof(float));
        return 0;
    }
#endif
    model_plan_t p;
    if (model_plan(&p, &em->m, n, em->roi, err)) return -1;
    if (p.total > em->ws_len) {             // a smaller batch never needs more, but stay safe
        em->ws = xrealloc(em->ws, p.total * sizeof(float));
        em->ws_len = p.total;
    }
    model_forward_cpu(em->ws, em->params, x, &em->m, &p);
    memcpy(y, em->ws + p.logits, (size_t)n * em->K * em->win * sizeof(float));
    return 0;
}
