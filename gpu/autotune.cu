/*
autotune.cu -- the timing half of the one-time plan autotuning that conv_cudnn.cu (cuDNN
execution plans) and gemm.cu (cuBLASLt algorithms) do when they build a plan: whether tuning is
on, a CUDA-event stopwatch for one candidate on the context's stream, and the choice rule.
Tuning happens once per plan (shape, type, beta), never inside a timed or captured step; the
rule is a pure function of the measured times, so a run's choice is fixed once its plans exist.
*/
#include "gpu_internal.h"
#include <stdlib.h>
#include <time.h>

int gpu_autotune_enabled(const gpu_ctx_t *g)
{
    // A captured stream cannot be synchronised: plans built during a capture keep the
    // heuristic's first choice.
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(g->stream, &cs) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    if (cs != cudaStreamCaptureStatusNone) return 0;
    const char *v = getenv("SRM_GPU_AUTOTUNE");
    if (v && *v) return *v != '0';
    // Default: on, except with the deterministic switch, where the heuristic's order (the
    // same in every process) keeps runs bit-identical across processes, not only within one.
    return !g->deterministic;
}

int gpu_tuner_init(gpu_tuner_t *t)
{
    t->e0 = t->e1 = NULL;
    if (cudaEventCreate(&t->e0) != cudaSuccess || cudaEventCreate(&t->e1) != cudaSuccess) {
        (void)cudaGetLastError();
        gpu_tuner_free(t);
        return -1;
    }
    return 0;
}

void gpu_tuner_free(gpu_tuner_t *t)
{
    if (t->e0) (void)cudaEventDestroy(t->e0);
    if (t->e1) (void)cudaEventDestroy(t->e1);
    t->e0 = t->e1 = NULL;
}

float gpu_tuner_time(gpu_tuner_t *t, cudaStream_t s, int (*fn)(void *), void *ctx, int reps)
{
    if (cudaEventRecord(t->e0, s) != cudaSuccess) goto fail;
    for (int r = 0; r < reps; r++)
        if (fn(ctx)) {
            // The library refused the launch: drain what was queued, report "no time".
            if (cudaStreamSynchronize(s) != cudaSuccess) goto fail;
            return -1.0f;
        }
    if (cudaEventRecord(t->e1, s) != cudaSuccess) goto fail;
    if (cudaEventSynchronize(t->e1) != cudaSuccess) goto fail;
    {
        float ms = 0.0f;
        if (cudaEventElapsedTime(&ms, t->e0, t->e1) != cudaSuccess) goto fail;
        return ms / (float)reps;
    }
fail:
    (void)cudaGetLastError();
    return -1.0f;
}

int gpu_tune_pick(const float *ms, int n)
{
    int best = -1;
    for (int i = 0; i < n; i++)
        if (ms[i] >= 0.0f && (best < 0 || ms[i] < ms[best])) best = i;
    // Hysteresis toward the heuristic's first choice: a 3 % win is needed to move off it, so
    // timing noise between near-equal candidates does not flip the choice from run to run.
    if (best > 0 && ms[0] >= 0.0f && ms[best] > 0.97f * ms[0]) best = 0;
    return best;
}

double gpu_wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
