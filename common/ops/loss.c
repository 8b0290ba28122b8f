/*
loss.c -- training losses on the CPU: softmax Dice with one-hot labels, cross-entropy, and
sigmoid Dice over (possibly overlapping) label regions (BraTS WT/TC/ET).

Dice follows MONAI DiceLoss (reduction "mean", batch=False): per (n, k) term
1 - (2 I + smooth_nr) / (P + G + smooth_dr), averaged over the N*K' terms (ops.h dice_cfg_t).
Voxel sums run over fixed blocks of BLOCK voxels that are then added in block order, so the
result is the same for any thread count. Every backward accumulates scale * dloss/dlogits.
Label values are checked by the loader; here a label >= K is a bug (ASSERT), except
LABEL_IGNORE (labels.h): such voxels are in no sum and get no gradient, and cross-entropy is the
mean over the batch's other voxels (0 when there are none). Twin: gpu/loss.cu.
*/
#include "real.h"
#include "check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 4096
#define KMAX 255                                // classes 0..LABEL_MAX_CLASS

// ----------------------------------------------------------------------------
// helpers

// p[k] = softmax over k of lg[k*S] (one voxel of a (K, S) slab), max-shifted for stability.
// Returns log(sum exp(lg - max)) + max, i.e. logsumexp.
static double softmax_voxel(const real *lg, size_t S, int K, double *p)
{
    double mx = lg[0];
    for (int k = 1; k < K; k++) if (lg[(size_t)k * S] > mx) mx = lg[(size_t)k * S];
    double z = 0;
    for (int k = 0; k < K; k++) { p[k] = exp(lg[(size_t)k * S] - mx); z += p[k]; }
    for (int k = 0; k < K; k++) p[k] /= z;
    return mx + log(z);
}

static double sigmoid(double v)
{
    if (v >= 0) return 1.0 / (1.0 + exp(-v));
    double e = exp(v);
    return e / (1.0 + e);
}

static size_t nblocks(size_t S) { return (S + BLOCK - 1) / BLOCK; }

// part: (N, nb, K, 3) per-block sums -> sums: (N, K, 3), blocks added in order.
static void reduce_blocks(double *sums, const double *part, int N, size_t nb, int K)
{
    memset(sums, 0, (size_t)N * K * 3 * sizeof *sums);
    for (int n = 0; n < N; n++)
        for (size_t b = 0; b < nb; b++)
            for (int q = 0; q < K * 3; q++)
                sums[(size_t)n * K * 3 + q] += part[((size_t)n * nb + b) * K * 3 + q];
}

// One Dice term: value, and the derivatives of the term with respect to one voxel's p given g.
static double dice_term(const double *s, dice_cfg_t c)
{
    return 1.0 - (2.0 * s[0] + c.smooth_nr) / (s[1] + s[2] + c.smooth_dr);
}
// d term / d p at a voxel with prediction p and target g; s = {I, P, G}.
static double dice_dterm(const double *s, dice_cfg_t c, double p, double g)
{
    double num = 2.0 * s[0] + c.smooth_nr, den = s[1] + s[2] + c.smooth_dr;
    double dP = c.squared_pred ? 2.0 * p : 1.0;
    return -(2.0 * g / den - num * dP / (den * den));
}

// ----------------------------------------------------------------------------
// softmax Dice, one-hot labels

// sums: (N, K, 3) = {I = sum p g, P = sum p (or p^2), G = sum g (g^2 = g for one-hot)}
static void softmax_dice_sums(double *sums, const real *logits, const uint8_t *labels,
                              int N, int K, size_t S, dice_cfg_t c)
{
    size_t nb = nblocks(S);
    double *part = xcalloc((size_t)N * nb * K * 3, sizeof *part);
    #pragma omp parallel for schedule(dynamic, 1)
    for (long t = 0; t < (long)(N * nb); t++) {
        int n = (int)(t / nb);
        size_t b = (size_t)t % nb, s0 = b * BLOCK, s1 = s0 + BLOCK < S ? s0 + BLOCK : S;
        double *ps = part + (size_t)t * K * 3, p[KMAX];
        const real *lg = logits + (size_t)n * K * S;
        for (size_t s = s0; s < s1; s++) {
            int lab = labels[(size_t)n * S + s];
            if (lab == LABEL_IGNORE) continue;
            ASSERT(lab < K);
            softmax_voxel(lg + s, S, K, p);
            for (int k = 0; k < K; k++) {
                ps[k * 3 + 1] += c.squared_pred ? p[k] * p[k] : p[k];
            }
            ps[lab * 3 + 0] += p[lab];
            ps[lab * 3 + 2] += 1.0;
        }
    }
    reduce_blocks(sums, part, N, nb, K);
    free(part);
}

// logits: (N, K, S)   labels: (N, S)
double OP(dice_softmax_forward)(const real *logits, const uint8_t *labels, int N, int K, size_t S,
                                dice_cfg_t c)
{
    ASSERT(N > 0 && K >= 1 && K <= KMAX && S > 0);
    int k0 = c.include_background ? 0 : 1;
    ASSERT(K - k0 >= 1);
    double *sums = xmalloc((size_t)N * K * 3 * sizeof *sums);
    softmax_dice_sums(sums, logits, labels, N, K, S, c);
    double total = 0;
    for (int n = 0; n < N; n++)
        for (int k = k0; k < K; k++) total += dice_term(sums + ((size_t)n * K + k) * 3, c);
    free(sums);
    return total / ((double)N * (K - k0));
}

// dlogits, logits: (N, K, S)   labels: (N, S). Accumulates scale * dloss/dlogits.
void OP(dice_softmax_backward)(real *dlogits, const real *logits, const uint8_t *labels,
                               int N, int K, size_t S, dice_cfg_t c, double scale)
{
    ASSERT(N > 0 && K >= 1 && K <= KMAX && S > 0);
    int k0 = c.include_background ? 0 : 1;
    ASSERT(K - k0 >= 1);
    double *sums = xmalloc((size_t)N * K * 3 * sizeof *sums);
    softmax_dice_sums(sums, logits, labels, N, K, S, c);
    const double f = scale / ((double)N * (K - k0));
    #pragma omp parallel for schedule(static)
    for (long t = 0; t < (long)(N * S); t++) {
        int n = (int)(t / S);
        size_t s = (size_t)t % S;
        int lab = labels[t];
        if (lab == LABEL_IGNORE) continue;
        const real *lg = logits + (size_t)n * K * S + s;
        real *dl = dlogits + (size_t)n * K * S + s;
        double p[KMAX], dp[KMAX], dot = 0;
        softmax_voxel(lg, S, K, p);
        for (int k = 0; k < K; k++) {
            dp[k] = k < k0 ? 0.0 : f * dice_dterm(sums + ((size_t)n * K + k) * 3, c, p[k], k == lab);
            dot += p[k] * dp[k];
        }
        // softmax Jacobian: dlogit_j = p_j (dp_j - sum_k p_k dp_k)
        for (int k = 0; k < K; k++)
            dl[(size_t)k * S] = (real)((double)dl[(size_t)k * S] + p[k] * (dp[k] - dot));
    }
    free(sums);
}

// ----------------------------------------------------------------------------
// cross-entropy: mean over the M labelled voxels (all N*S but the ignored ones) of
// logsumexp(logits) - logits[label]

static size_t labelled_voxels(const uint8_t *labels, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += labels[i] != LABEL_IGNORE;
    return m;
}

double OP(cross_entropy_forward)(const real *logits, const uint8_t *labels, int N, int K, size_t S)
{
    ASSERT(N > 0 && K >= 1 && K <= KMAX && S > 0);
    size_t nb = nblocks(S), m = labelled_voxels(labels, (size_t)N * S);
    if (m == 0) return 0.0;
    double *part = xcalloc((size_t)N * nb, sizeof *part);
    #pragma omp parallel for schedule(dynamic, 1)
    for (long t = 0; t < (long)(N * nb); t++) {
        int n = (int)(t / nb);
        size_t b = (size_t)t % nb, s0 = b * BLOCK, s1 = s0 + BLOCK < S ? s0 + BLOCK : S;
        const real *lg = logits + (size_t)n * K * S;
        double p[KMAX], acc = 0;
        for (size_t s = s0; s < s1; s++) {
            int lab = labels[(size_t)n * S + s];
            if (lab == LABEL_IGNORE) continue;
            ASSERT(lab < K);
            acc += softmax_voxel(lg + s, S, K, p) - lg[(size_t)lab * S + s];
        }
        part[t] = acc;
    }
    double total = 0;
    for (size_t i = 0; i < (size_t)N * nb; i++) total += part[i];
    free(part);
    return total / (double)m;
}

// dlogits, logits: (N, K, S)   labels: (N, S). dloss/dlogit_k = (p_k - [k == label]) / M
void OP(cross_entropy_backward)(real *dlogits, const real *logits, const uint8_t *labels,
                                int N, int K, size_t S, double scale)
{
    ASSERT(N > 0 && K >= 1 && K <= KMAX && S > 0);
    size_t m = labelled_voxels(labels, (size_t)N * S);
    if (m == 0) return;
    const double f = scale / (double)m;
    #pragma omp parallel for schedule(static)
    for (long t = 0; t < (long)(N * S); t++) {
        int n = (int)(t / S);
        size_t s = (size_t)t % S;
        int lab = labels[t];
        if (lab == LABEL_IGNORE) continue;
        ASSERT(lab < K);
        const real *lg = logits + (size_t)n * K * S + s;
        real *dl = dlogits + (size_t)n * K * S + s;
        double p[KMAX];
        softmax_voxel(lg, S, K, p);
        for (int k = 0; k < K; k++)
            dl[(size_t)k * S] = (real)((double)dl[(size_t)k * S] + f * (p[k] - (k == lab)));
    }
}

// ----------------------------------------------------------------------------
// sigmoid Dice over regions: channel r predicts member[r][label]

// sums: (N, R, 3) = {I, P, G}; g is 0/1 so sum g^2 = sum g
static void sigmoid_dice_sums(double *sums, const real *logits, const uint8_t *labels, int N,
                              size_t S, const regions_t *reg, dice_cfg_t c)
{
    const int R = reg->R;
    size_t nb = nblocks(S);
    double *part = xcalloc((size_t)N * nb * R * 3, sizeof *part);
    #pragma omp parallel for schedule(dynamic, 1)
    for (long t = 0; t < (long)(N * nb); t++) {
        int n = (int)(t / nb);
        size_t b = (size_t)t % nb, s0 = b * BLOCK, s1 = s0 + BLOCK < S ? s0 + BLOCK : S;
        double *ps = part + (size_t)t * R * 3;
        for (int r = 0; r < R; r++) {
            const real *lg = logits + ((size_t)n * R + r) * S;
            const uint8_t *lab = labels + (size_t)n * S;
            double I = 0, P = 0, G = 0;
            for (size_t s = s0; s < s1; s++) {
                if (lab[s] == LABEL_IGNORE) continue;
                double p = sigmoid(lg[s]), g = reg->member[r][lab[s]] != 0;
                I += p * g;
                P += c.squared_pred ? p * p : p;
                G += g;
            }
            ps[r * 3 + 0] = I; ps[r * 3 + 1] = P; ps[r * 3 + 2] = G;
        }
    }
    reduce_blocks(sums, part, N, nb, R);
    free(part);
}

// logits: (N, R, S)   labels: (N, S)
double OP(dice_sigmoid_forward)(const real *logits, const uint8_t *labels, int N, size_t S,
                                const regions_t *reg, dice_cfg_t c)
{
    ASSERT(N > 0 && S > 0 && reg->R >= 1 && reg->R <= REGIONS_MAX);
    const int R = reg->R;
    double *sums = xmalloc((size_t)N * R * 3 * sizeof *sums);
    sigmoid_dice_sums(sums, logits, labels, N, S, reg, c);
    double total = 0;
    for (int q = 0; q < N * R; q++) total += dice_term(sums + (size_t)q * 3, c);
    free(sums);
    return total / ((double)N * R);
}

// dlogits, logits: (N, R, S)   labels: (N, S). Accumulates scale * dloss/dlogits.
void OP(dice_sigmoid_backward)(real *dlogits, const real *logits, const uint8_t *labels, int N,
                               size_t S, const regions_t *reg, dice_cfg_t c, double scale)
{
    ASSERT(N > 0 && S > 0 && reg->R >= 1 && reg->R <= REGIONS_MAX);
    const int R = reg->R;
    double *sums = xmalloc((size_t)N * R * 3 * sizeof *sums);
    sigmoid_dice_sums(sums, logits, labels, N, S, reg, c);
    const double f = scale / ((double)N * R);
    #pragma omp parallel for schedule(static)
    for (long q = 0; q < (long)N * R; q++) {
        int n = (int)(q / R), r = (int)(q % R);
        const real *lg = logits + (size_t)q * S;
        real *dl = dlogits + (size_t)q * S;
        const uint8_t *lab = labels + (size_t)n * S;
        const double *sq = sums + (size_t)q * 3;
        for (size_t s = 0; s < S; s++) {
            if (lab[s] == LABEL_IGNORE) continue;
            double p = sigmoid(lg[s]), g = reg->member[r][lab[s]] != 0;
            // sigmoid' = p (1 - p)
            dl[s] = (real)((double)dl[s] + f * dice_dterm(sq, c, p, g) * p * (1.0 - p));
        }
    }
    free(sums);
}
