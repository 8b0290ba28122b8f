/*
trainer_backend.c -- one training step on the chosen device. The CPU path is the float reference
of common/nn (model_train_step_cpu: zero grads, forward, loss, backward, Adam), working in place
on the trainer's host buffers. The GPU path (built with CUDA) uses gpu.h's whole-model step when
a GPU answers; --device auto falls back to the CPU when none does.
*/
#include "trainer_internal.h"
#include "check.h"
#include <stdlib.h>
#include <string.h>
#if SRM_CUDA
#include "gpu.h"
// Asked before gpu_ctx_new, which exits when no GPU is usable: --device auto must fall back.
extern int cudaGetDeviceCount(int *count);
#endif

struct train_backend {
    const model_t *m;
    model_plan_t plan;
    train_cfg_t tc;
    float *params, *adam_m, *adam_v;    // host buffers (the trainer's)
    float *grads, *ws;                  // CPU: gradients and the workspace of the plan
    double cpu_loss, cpu_busy_s;        // CPU: the step run by tb_step_begin
#if SRM_CUDA
    gpu_ctx_t *g;                       // GPU: context and the whole-model step (gpu.h)
    gpu_model_t *gm;
#endif
};

#if SRM_CUDA
static int gpu_present(void)
{
    int n = 0;
    return cudaGetDeviceCount(&n) == 0 && n > 0;
}

// 1 on the GPU, 0 when the caller should fall back to the CPU, -1 with err.
static int open_gpu(train_backend_t *b, const trainer_cfg_t *c, char *err)
{
    if (!gpu_present()) {
        if (c->device == TRAIN_DEV_GPU) return set_err(err, "--device gpu: no usable CUDA device");
        log_msg('I', "no usable CUDA device: training on the CPU reference");
        return 0;
    }
    gpu_cfg_t gc = GPU_CFG_DEFAULT;
    gc.deterministic = c->deterministic;
    b->g = gpu_ctx_new(gc);
    b->gm = gpu_model_new(b->g, b->m, &b->tc, c->batch, c->patch, err);
    if (!b->gm) { gpu_ctx_destroy(&b->g); return -1; }
    char desc[256];
    gpu_describe(b->g, desc, sizeof desc);
    log_msg('I', "training on the GPU (%s): %.1f MB of parameters and optimizer state, arena for batch %d at %dx%dx%d",
            desc, (double)gpu_model_param_bytes(b->gm) / 1e6, c->batch, c->patch[0], c->patch[1], c->patch[2]);
    return 1;
}
#endif

train_backend_t *tb_open(const trainer_cfg_t *c, const model_t *m, float *params, float *adam_m,
                         float *adam_v, int *lasting, char *err)
{
    *lasting = 0;
    train_backend_t *b = xcalloc(1, sizeof *b);
    b->m = m;
    b->tc = c->tc;
    b->params = params;
    b->adam_m = adam_m;
    b->adam_v = adam_v;
#if SRM_CUDA
    if (c->device != TRAIN_DEV_CPU) {
        int rc = open_gpu(b, c, err);
        if (rc < 0) { *lasting = c->device == TRAIN_DEV_GPU && !gpu_present(); free(b); return NULL; }
        if (rc > 0) return b;
    }
#endif
    if (model_plan(&b->plan, m, c->batch, c->patch, err)) { free(b); return NULL; }
    b->grads = malloc(m->table.numel * sizeof *b->grads);
    b->ws = malloc(b->plan.total * sizeof *b->ws);
    if (!b->grads || !b->ws) {
        set_err(err, "cannot allocate %.1f MB for the CPU workspace (batch %d, patch %dx%dx%d)",
                (double)(b->plan.total + m->table.numel) * 4 / 1e6, c->batch, c->patch[0], c->patch[1], c->patch[2]);
        free(b->grads); free(b->ws); free(b);
        return NULL;
    }
    log_msg('I', "training on the CPU: workspace %.1f MB for batch %d at %dx%dx%d",
            (double)b->plan.total * 4 / 1e6, c->batch, c->patch[0], c->patch[1], c->patch[2]);
    return b;
}

#if SRM_CUDA
#define ON_GPU(b) ((b)->gm != NULL)
#else
#define ON_GPU(b) ((void)(b), 0)
#endif

const char *tb_device(const train_backend_t *b) { return ON_GPU(b) ? "gpu" : "cpu"; }

// The CPU works on the host buffers directly; the GPU keeps its own copies.
void tb_upload(train_backend_t *b)
{
#if SRM_CUDA
    if (b->gm) {
        gpu_model_set_params(b->gm, b->params);
        gpu_model_set_adam(b->gm, b->adam_m, b->adam_v);
    }
#else
    (void)b;
#endif
}

void tb_download(train_backend_t *b)
{
#if SRM_CUDA
    if (b->gm) {
        gpu_model_get_params(b->gm, b->params);
        gpu_model_get_adam(b->gm, b->adam_m, b->adam_v);
    }
#else
    (void)b;
#endif
}

size_t tb_mem_peak(const train_backend_t *b)
{
#if SRM_CUDA
    if (b->g) return gpu_mem_stats(b->g).peak;
#else
    (void)b;
#endif
    return 0;
}

void tb_step_begin(train_backend_t *b, const float *x, const uint8_t *labels, float lr, long adam_step)
{
#if SRM_CUDA
    if (b->gm) { gpu_model_step_begin(b->gm, x, labels, lr, adam_step); return; }
#endif
    const double t0 = trainer_now();
    b->cpu_loss = model_train_step_cpu(b->params, b->grads, b->adam_m, b->adam_v, b->ws, x, labels, &b->tc,
                                       lr, adam_step, b->m, &b->plan);
    b->cpu_busy_s = trainer_now() - t0;
}

double tb_step_end(train_backend_t *b, double *busy_s)
{
#if SRM_CUDA
    if (b->gm) {
        float ms = 0;
        const double loss = gpu_model_step_end(b->gm, &ms);
        *busy_s = 1e-3 * ms;
        return loss;
    }
#endif
    *busy_s = b->cpu_busy_s;
    return b->cpu_loss;
}

void tb_close(train_backend_t **pb)
{
    train_backend_t *b = *pb;
    if (!b) return;
#if SRM_CUDA
    gpu_model_free(&b->gm);
    if (b->g) gpu_ctx_destroy(&b->g);
#endif
    free(b->grads);
    free(b->ws);
    free(b);
    *pb = NULL;
}
