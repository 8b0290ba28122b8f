/*
dataset_intensity.c -- each channel's foreground intensity statistics over a dataset's training
cases: nnU-Net's intensity fingerprint, from which its CT normalisation is formed (clip to the
0.5 and 99.5 percentiles, then z-score with the mean and std).

As nnU-Net v2 does, every labelled non-test case contributes the same number of samples
(FINGERPRINT_SAMPLES) drawn from its foreground voxels (label > 0) of the raw image, so a large
case does not outweigh a small one; mean, std (population) and the percentiles (numpy's linear
interpolation) are over the pooled samples. Unlike nnU-Net, which draws them at random with
replacement, the samples are evenly spaced over the foreground voxels in memory order, so the
figures are the same on every run and a resume normalises as its first run did.
*/
#include "dataset.h"
#include "check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FINGERPRINT_SAMPLES 10000

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

// numpy.percentile(v, p) of sorted v[0..n): linear interpolation between the closest ranks.
static double percentile(const float *v, size_t n, double p)
{
    double rank = p / 100.0 * (double)(n - 1);
    size_t lo = (size_t)floor(rank), hi = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (rank - (double)lo) * ((double)v[hi] - v[lo]);
}

// Append FINGERPRINT_SAMPLES values of channel ch at the foreground voxels of c (none when it
// has no foreground). *out grows as needed.
static void sample_case(const case_t *c, int ch, float **out, size_t *n, size_t *cap)
{
    size_t vox = volume_voxels(&c->image), fg = 0;
    for (size_t i = 0; i < vox; i++) fg += c->label[i] > 0;
    if (!fg) return;
    if (*n + FINGERPRINT_SAMPLES > *cap) {
        *cap = 2 * (*n + FINGERPRINT_SAMPLES);
        *out = xrealloc(*out, *cap * sizeof(float));
    }
    const float *img = c->image.data + (size_t)ch * vox;
    // sample k is the floor(k * fg / S)-th foreground voxel: every one when fg >= S, each about
    // S / fg times when fg < S
    size_t k = 0, seen = 0;
    for (size_t i = 0; i < vox && k < FINGERPRINT_SAMPLES; i++) {
        if (c->label[i] == 0) continue;
        while (k < FINGERPRINT_SAMPLES && (size_t)((double)k * fg / FINGERPRINT_SAMPLES) == seen)
            (*out)[(*n)++] = img[i], k++;
        seen++;
    }
}

// Statistics of one channel's pooled samples v[0..n) (sorted here) into fp.
static void summarise(float *v, size_t n, intensity_fingerprint_t *fp)
{
    double sum = 0, sq = 0;
    for (size_t i = 0; i < n; i++) sum += v[i];
    fp->mean = sum / (double)n;
    for (size_t i = 0; i < n; i++) sq += ((double)v[i] - fp->mean) * ((double)v[i] - fp->mean);
    fp->std = sqrt(sq / (double)n);
    qsort(v, n, sizeof *v, cmp_float);
    fp->min = v[0];
    fp->max = v[n - 1];
    fp->p00_5 = percentile(v, n, 0.5);
    fp->p99_5 = percentile(v, n, 99.5);
    fp->samples = (long long)n;
}

int dataset_intensity_fingerprints(const dataset_t *ds, intensity_fingerprint_t *fps, char *err)
{
    const int C = ds->n_channels;
    float **v = xcalloc((size_t)C, sizeof *v);
    size_t *n = xcalloc((size_t)C, sizeof *n), *cap = xcalloc((size_t)C, sizeof *cap);
    intensity_fingerprint_t tally;                  // cases, empty, skipped: the same for every channel
    memset(&tally, 0, sizeof tally);
    for (int i = 0; i < ds->n_cases; i++) {         // each case read once, all its channels sampled
        if (!ds->cases[i].label || !strcmp(ds->cases[i].split, "test")) continue;
        case_t c;
        char e2[ERR_LEN];
        if (dataset_load_case(ds, i, &c, e2)) {      // the loader skips such a case too
            if (!tally.skipped++) snprintf(tally.first_problem, sizeof tally.first_problem, "%s", e2);
            continue;
        }
        size_t before = n[0];
        for (int ch = 0; ch < C; ch++) sample_case(&c, ch, &v[ch], &n[ch], &cap[ch]);
        tally.cases += n[0] > before;
        tally.empty += n[0] == before;
        case_free(&c);
    }
    int rc = 0;
    if (!n[0])
        rc = set_err(err, "%s: no foreground voxel in any training case%s%s", ds->dir,
                     tally.skipped ? "; first unusable case: " : "", tally.skipped ? tally.first_problem : "");
    for (int ch = 0; ch < C; ch++) {
        fps[ch] = tally;
        fps[ch].channel = ch;
        if (!rc) summarise(v[ch], n[ch], &fps[ch]);
        free(v[ch]);
    }
    free(v);
    free(n);
    free(cap);
    return rc;
}
