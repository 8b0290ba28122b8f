/*
test_model_train.c -- a few training steps on a tiny synthetic problem reduce the loss:
the tiny model (width 8, variant M), patch 32x32x48, batch 2, two classes (a ball and the
background; the input is the mask plus noise). 6 Adam steps at lr 3e-3 (cosine schedule)
in float must lower the softmax-Dice(+CE) loss, and the double step must agree with the float
step on the first loss. Also checks the cosine schedule's end points.
*/
#define _GNU_SOURCE
#include "test.h"
#include "model_test_util.h"
#include <math.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (!getenv("OMP_WAIT_POLICY")) {   // see test_model_grad.c
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
    }
    (void)argc;
    EXPECT(lr_cosine(1e-3f, 0, 100) == 1e-3f && fabsf(lr_cosine(1e-3f, 50, 100) - 5e-4f) < 1e-9f &&
           lr_cosine(1e-3f, 100, 100) < 1e-12f, "cosine schedule");

    const int dims[3] = { 32, 32, 48 }, N = 2;
    tmodel_t t;
    tmodel_init(&t, MODEL_M, 8, 1, 2, dims, N, 21, 1);
    size_t S = (size_t)dims[0] * dims[1] * dims[2];
    rng_t r = rng_seed(5);
    for (int n = 0; n < N; n++) {
        double c[3] = { 10 + 12 * rng_uniform(&r), 10 + 12 * rng_uniform(&r), 14 + 20 * rng_uniform(&r) };
        for (int d = 0; d < dims[0]; d++)
            for (int h = 0; h < dims[1]; h++)
                for (int w = 0; w < dims[2]; w++) {
                    size_t i = ((size_t)d * dims[1] + h) * dims[2] + w;
                    double q = (d - c[0]) * (d - c[0]) + (h - c[1]) * (h - c[1]) + (w - c[2]) * (w - c[2]);
                    t.labels[n * S + i] = q < 64;
                    t.xf[n * S + i] = (float)(t.labels[n * S + i] + 0.3 * rng_normal(&r));
                }
    }
    for (size_t i = 0; i < t.p.in_numel; i++) t.xd[i] = t.xf[i];
    t.tc.loss = LOSS_DICE_CE;

    size_t np = t.m.table.numel;
    float *am = xcalloc(np, 4), *av = xcalloc(np, 4);
    double *amd = xcalloc(np, 8), *avd = xcalloc(np, 8);
    double ld = model_train_step_cpu_f64(t.pd, t.gd, amd, avd, t.wsd, t.xd, t.labels, &t.tc, 3e-3f, 1, &t.m, &t.p);
    const int steps = 6;
    double first = 0, last = 0, t0 = now_s();
    for (int s = 1; s <= steps; s++) {
        float lr = lr_cosine(3e-3f, s - 1, steps);
        double l = model_train_step_cpu(t.pf, t.gf, am, av, t.wsf, t.xf, t.labels, &t.tc, lr, s, &t.m, &t.p);
        printf("step %d lr %.2e loss %.5f\n", s, lr, l);
        if (s == 1) first = l;
        last = l;
    }
    EXPECT(fabs(first - ld) < 1e-5 * fabs(ld), "float step-1 loss %.7f vs double %.7f", first, ld);
    EXPECT(last < first - 0.05, "loss %.4f -> %.4f did not go down", first, last);
    int finite = 1;
    for (size_t i = 0; i < np; i++) finite &= isfinite(t.pf[i]);
    EXPECT(finite, "parameters finite");
    printf("%d steps (32x32x48, batch 2, tiny M) in %.1fs\n", steps, now_s() - t0);
    free(am); free(av); free(amd); free(avd);
    tmodel_free(&t);
    return test_summary();
}
