/*
train_step.cu -- one training step of the whole model as one call: zero grads -> input layout ->
forward -> loss -> backward -> Adam, all on the context's stream with no allocation and no host
sync inside. The first step runs eagerly (it also builds the GEMM plans) and is then captured
into a CUDA graph; later steps upload x, labels and the Adam scalars into fixed device buffers
and replay the graph, so launch overhead stays out of the step. The learning rate and the bias
corrections reach the Adam kernel through a device struct (gm_adam_scalars_t) written before
each launch: the same graph serves every lr of a schedule.
Adam arithmetic is adam.cu's (torch.optim.Adam / AdamW), with the per-step scalars read from
device memory; it writes the bf16 weight copy in the same pass.
*/
#include "model_internal.cuh"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static size_t vox(const int s[3]) { return (size_t)s[0] * s[1] * s[2]; }

void gm_upload_inputs(gpu_model_t *gm, const float *x, const uint8_t *labels)
{
    const gm_plan_t *p = &gm->plan;
    CUDA_CHECK(cudaMemcpyAsync(gm->x_stage, x, p->in_numel * sizeof(float),
                               cudaMemcpyHostToDevice, gm->g->stream));
    if (labels)
        CUDA_CHECK(cudaMemcpyAsync(gm->labels, labels, (size_t)p->N * vox(p->dims),
                                   cudaMemcpyHostToDevice, gm->g->stream));
}

// sigmoid Dice alone: the total is the Dice term
__global__ void loss_total_kernel(float *l) { l[2] = l[0]; }

// Input layout, forward, loss (into gm->loss[2]) and, with backward_too, dlogits and backward.
void gm_enqueue_forward_loss(gpu_model_t *gm, int backward_too, gm_prof_t *pr)
{
    gpu_ctx_t *g = gm->g;
    const gm_plan_t *p = &gm->plan;
    const model_t *m = gm->m;
    const train_cfg_t *tc = gm->tc;
    const int N = p->N, K = m->cfg.classes;
    const size_t S = vox(p->dims);
    gm_prof(pr, g, GPU_KIND_COPY);
    stem_s2d_input_gpu(g, p->x, gm->x_stage, gm_stem_shape(m, N, p->dims));
    gm_forward(g, p, &gm->q, m, pr);

    gm_prof(pr, g, GPU_KIND_LOSS);
    if (tc->loss != LOSS_DICE_SIGMOID) {
        // softmax Dice (+ CE): loss and, with the backward, dlogits (written) in two passes
        const double w = tc->loss == LOSS_DICE_CE ? tc->ce_weight : 0.0;
        dice_ce_softmax_gpu(g, gm->loss, backward_too ? p->dlogits : NULL, p->logits, gm->labels,
                            N, K, S, tc->dice, w, 1.0);
        if (!backward_too) return;
    } else {
        dice_sigmoid_forward_gpu(g, &gm->loss[0], p->logits, gm->labels, N, S, tc->regions,
                                 tc->dice);
        loss_total_kernel<<<1, 1, 0, g->stream>>>(gm->loss);
        KERNEL_CHECK();
        if (!backward_too) return;
        gm_prof(pr, g, GPU_KIND_ELEMENTWISE);
        gpu_memset(g, p->dlogits, 0, p->out_numel * gm->q.es);
        gm_prof(pr, g, GPU_KIND_LOSS);
        dice_sigmoid_backward_gpu(g, p->dlogits, p->logits, gm->labels, N, S, tc->regions,
                                  tc->dice, 1.0);
    }
    gm_backward(g, p, &gm->q, gm->grads, m, pr);
}

// ---- Adam with device scalars ------------------------------------------------------------------
typedef struct { float b1, b2, eps, wd; int decoupled; } adam_const_t;

__global__ void adam_dev_kernel(float *p, float *m, float *v, const float *g, bf16 *p16, size_t n,
                                adam_const_t a, const gm_adam_scalars_t *sc)
{
    const float lr = sc->lr, step_size = sc->step_size, inv_bc2_sqrt = sc->inv_bc2_sqrt;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float pi = p[i], gi = g[i];
        if (a.decoupled) pi *= 1.0f - lr * a.wd;
        else gi += a.wd * pi;
        float mi = a.b1 * m[i] + (1.0f - a.b1) * gi;
        float vi = a.b2 * v[i] + (1.0f - a.b2) * gi * gi;
        pi -= step_size * mi / (sqrtf(vi) * inv_bc2_sqrt + a.eps);
        m[i] = mi;
        v[i] = vi;
        p[i] = pi;
        if (p16) p16[i] = __float2bfloat16_rn(pi);
    }
}

// Host scalars of step `step` into the device struct (outside the graph, before its launch).
void gm_set_adam_scalars(gpu_model_t *gm, float lr, long step)
{
    ASSERT(step >= 1);
    const adam_cfg_t c = gm->tc->adam;
    double bc1 = 1.0 - pow((double)c.beta1, (double)step);
    double bc2 = 1.0 - pow((double)c.beta2, (double)step);
    // Pageable source: cudaMemcpyAsync has staged it when it returns, so a local is safe.
    gm_adam_scalars_t host;
    host.lr = lr;
    host.step_size = (float)(lr / bc1);
    host.inv_bc2_sqrt = (float)(1.0 / sqrt(bc2));
    CUDA_CHECK(cudaMemcpyAsync(gm->adam_dev, &host, sizeof host, cudaMemcpyHostToDevice,
                               gm->g->stream));
}

void gm_enqueue_step(gpu_model_t *gm, gm_prof_t *pr)
{
    gpu_ctx_t *g = gm->g;
    gm_prof(pr, g, GPU_KIND_ELEMENTWISE);
    gpu_memset(g, gm->grads, 0, gm->numel * sizeof(float));
    gm_enqueue_forward_loss(gm, 1, pr);
    gm_prof(pr, g, GPU_KIND_ADAM);
    const adam_cfg_t c = gm->tc->adam;
    adam_const_t a = { c.beta1, c.beta2, c.eps, c.weight_decay, c.decoupled };
    adam_dev_kernel<<<grid_for(g, gm->numel, 256), 256, 0, g->stream>>>(
        gm->params, gm->adam_m, gm->adam_v, gm->grads, (bf16 *)gm->params16, gm->numel, a,
        gm->adam_dev);
    KERNEL_CHECK();
}

static void enqueue_step_body(void *gm) { gm_enqueue_step((gpu_model_t *)gm, NULL); }

// Capture the step body into gm->graph; on any failure keep stepping eagerly.
static void capture(gpu_model_t *gm)
{
    const char *why = NULL;
    gm->graph = gpu_graph_capture(gm->g, enqueue_step_body, gm, &why);
    if (!gm->graph) {
        gm->graph_failed = 1;
        log_msg('W', "gpu model: CUDA graph capture failed (%s); steps run eagerly", why);
    }
}

static float read_loss(gpu_model_t *gm)
{
    float l[4];
    gpu_download(gm->g, l, gm->loss, sizeof l);
    return l[2];
}

double gpu_model_forward_loss(gpu_model_t *gm, const float *x, const uint8_t *labels)
{
    gm_upload_inputs(gm, x, labels);
    gm_enqueue_forward_loss(gm, 0, NULL);
    return read_loss(gm);
}

void gpu_model_get_logits(gpu_model_t *gm, float *logits)
{
    const gm_plan_t *p = &gm->plan;
    const size_t S = vox(p->dims), K = (size_t)gm->m->cfg.classes, n = p->out_numel;
    const size_t es = gm->q.es;
    char *raw = (char *)xmalloc(n * es);
    gpu_download(gm->g, raw, p->logits, n * es);
    // (N, S, K) act -> (N, K, S) f32 on the host
    for (int b = 0; b < p->N; b++)
        for (size_t s = 0; s < S; s++)
            for (size_t k = 0; k < K; k++) {
                size_t src = ((size_t)b * S + s) * K + k;
                float v = es == 4 ? ((const float *)raw)[src]
                                  : gm_bf16_to_f32(((const uint16_t *)raw)[src]);
                logits[((size_t)b * K + k) * S + s] = v;
            }
    free(raw);
}

double gpu_model_grads(gpu_model_t *gm, const float *x, const uint8_t *labels)
{
    gm_upload_inputs(gm, x, labels);
    gpu_memset(gm->g, gm->grads, 0, gm->numel * sizeof(float));
    gm_enqueue_forward_loss(gm, 1, NULL);
    return read_loss(gm);
}

// Enqueue one step (graph replay when available); no host sync.
static void step_async(gpu_model_t *gm, const float *x, const uint8_t *labels, float lr, long step)
{
    gm_upload_inputs(gm, x, labels);
    gm_set_adam_scalars(gm, lr, step);
    if (gm->graph && gm->use_graph) {
        CUDA_CHECK(cudaGraphLaunch(gm->graph, gm->g->stream));
        return;
    }
    gm_enqueue_step(gm, NULL);
    if (gm->use_graph && !gm->graph && !gm->graph_failed) capture(gm);   // records, runs nothing
}

void gpu_model_step_begin(gpu_model_t *gm, const float *x, const uint8_t *labels, float lr, long step)
{
    if (!gm->step_timer) gm->step_timer = gpu_timer_new(gm->g);
    gpu_timer_start(gm->step_timer);
    step_async(gm, x, labels, lr, step);
    gpu_timer_stop(gm->step_timer);
}

double gpu_model_step_end(gpu_model_t *gm, float *gpu_ms)
{
    const float ms = gpu_timer_ms(gm->step_timer);      // waits for the step
    if (gpu_ms) *gpu_ms = ms;
    return read_loss(gm);
}

// The trainer's two halves back to back: the GPU tests check the very path srm-trainer runs.
double gpu_model_step(gpu_model_t *gm, const float *x, const uint8_t *labels, float lr, long step)
{
    gpu_model_step_begin(gm, x, labels, lr, step);
    return gpu_model_step_end(gm, NULL);
}

void gpu_model_time_steps(gpu_model_t *gm, const float *x, const uint8_t *labels, int warm, int n,
                          float *ms)
{
    gpu_timer_t *t = gpu_timer_new(gm->g);
    const float lr = gm->tc->adam.lr;
    for (int i = 0; i < warm; i++) step_async(gm, x, labels, lr, i + 1);
    gpu_sync(gm->g);
    // Inputs are uploaded before the start event: the row measures the step, not the PCIe copy.
    for (int i = 0; i < n; i++) {
        gm_upload_inputs(gm, x, labels);
        gm_set_adam_scalars(gm, lr, warm + i + 1);
        gpu_timer_start(t);
        if (gm->graph && gm->use_graph) CUDA_CHECK(cudaGraphLaunch(gm->graph, gm->g->stream));
        else gm_enqueue_step(gm, NULL);
        gpu_timer_stop(t);
        ms[i] = gpu_timer_ms(t);
    }
    gpu_timer_free(&t);
}

void gpu_model_profile_step(gpu_model_t *gm, const float *x, const uint8_t *labels, long step,
                            double ms[GPU_KIND_COUNT], double *total_ms)
{
    gm_prof_t pr;
    pr.cap = 8192;
    pr.n = 0;
    pr.ev = (cudaEvent_t *)xcalloc((size_t)pr.cap, sizeof *pr.ev);
    pr.kind = (int *)xcalloc((size_t)pr.cap, sizeof *pr.kind);
    for (int i = 0; i < pr.cap; i++) CUDA_CHECK(cudaEventCreate(&pr.ev[i]));
    gm_upload_inputs(gm, x, labels);
    gm_set_adam_scalars(gm, gm->tc->adam.lr, step);
    gpu_sync(gm->g);
    gm_enqueue_step(gm, &pr);
    gm_prof(&pr, gm->g, -1);                // closing boundary
    CUDA_CHECK(cudaEventSynchronize(pr.ev[pr.n - 1]));
    for (int k = 0; k < GPU_KIND_COUNT; k++) ms[k] = 0;
    for (int i = 0; i + 1 < pr.n; i++) {
        float e = 0;
        CUDA_CHECK(cudaEventElapsedTime(&e, pr.ev[i], pr.ev[i + 1]));
        if (pr.kind[i] >= 0 && pr.kind[i] < GPU_KIND_COUNT) ms[pr.kind[i]] += e;
    }
    float tot = 0;
    CUDA_CHECK(cudaEventElapsedTime(&tot, pr.ev[0], pr.ev[pr.n - 1]));
    *total_ms = tot;
    for (int i = 0; i < pr.cap; i++) CUDA_CHECK(cudaEventDestroy(pr.ev[i]));
    free(pr.ev);
    free(pr.kind);
}
