/*
dataset_intensity.c -- each channel's foreground intensity statistics over a dataset's training
cases: nnU-Net's intensity fingerprint, from which its CT normalisation is formed (clip to the
0.5 and 99.5 percentiles, then z-score with the mean and std).

nnU-Net v2 draws 1e8 / (cases) foreground voxels (label > 0) of each labelled case's raw image at
random, with replacement, and takes mean, std and percentiles of the pool: every case weighs the
same, whatever its size, and at that many samples the figures are those of the mixture of the
cases' foreground distributions. Here that mixture is computed directly and the same on every
run (a resume normalises as its first run did): a case contributes its foreground voxels --
evenly spaced in memory order when it has more than FINGERPRINT_POOL / cases (at least
FINGERPRINT_MIN_PER_CASE), so memory stays bounded -- each weighing 1 / (its count). Mean and
(population) std are weighted; a percentile is read off the sorted values at the weight's
cumulative midpoints, linearly interpolated (numpy: np.interp(p / 100, midpoints, values)).
10,000 evenly spaced samples a case, as before, put BTCV's 0.5 percentile at -113 HU where the
cases' foreground has it at -159 (nnU-Net: -160).
*/
#include "dataset.h"
#include "check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FINGERPRINT_POOL 10000000L      // values kept a channel over all cases
#define FINGERPRINT_MIN_PER_CASE 10000L

typedef struct { float v, w; } sample_t;

static int cmp_sample(const void *a, const void *b)
{
    float x = ((const sample_t *)a)->v, y = ((const sample_t *)b)->v;
    return (x > y) - (x < y);
}

// The percentile p of sorted weighted values s[0..n) (weights summing to total): linear
// interpolation between the values at their weights' cumulative midpoints.
static double percentile(const sample_t *s, size_t n, double total, double p)
{
    double q = p / 100.0 * total, c = 0, prev_mid = 0;
    for (size_t i = 0; i < n; i++) {
        double mid = c + 0.5 * s[i].w;
        if (q <= mid) {
            if (i == 0) return s[0].v;
            return s[i - 1].v + (q - prev_mid) / (mid - prev_mid) * ((double)s[i].v - s[i - 1].v);
        }
        prev_mid = mid;
        c += s[i].w;
    }
    return s[n - 1].v;
}

// Append channel ch's values at up to cap foreground voxels of c (all when it has fewer; else
// the floor(k * F / cap)-th of its F, k = 0..cap-1), each weighing 1 / (their count).
static void sample_case(const case_t *c, int ch, size_t cap, sample_t **out, size_t *n, size_t *room)
{
    size_t vox = volume_voxels(&c->image), fg = 0;
    for (size_t i = 0; i < vox; i++) fg += c->label[i] > 0;
    if (!fg) return;
    size_t take = fg < cap ? fg : cap;
    if (*n + take > *room) {
        *room = 2 * (*n + take);
        *out = xrealloc(*out, *room * sizeof **out);
    }
    const float *img = c->image.data + (size_t)ch * vox;
    const float w = 1.0f / (float)take;
    size_t k = 0, seen = 0;
    for (size_t i = 0; i < vox && k < take; i++) {
        if (c->label[i] == 0) continue;
        if ((size_t)((double)k * fg / take) == seen) (*out)[(*n)++] = (sample_t){ img[i], w }, k++;
        seen++;
    }
}

// Statistics of one channel's pooled weighted values s[0..n) (sorted here) into fp.
static void summarise(sample_t *s, size_t n, intensity_fingerprint_t *fp)
{
    double sw = 0, sum = 0, sq = 0;
    for (size_t i = 0; i < n; i++) sw += s[i].w, sum += (double)s[i].w * s[i].v;
    fp->mean = sum / sw;
    for (size_t i = 0; i < n; i++) sq += s[i].w * ((double)s[i].v - fp->mean) * ((double)s[i].v - fp->mean);
    fp->std = sqrt(sq / sw);
    qsort(s, n, sizeof *s, cmp_sample);
    fp->min = s[0].v;
    fp->max = s[n - 1].v;
    fp->p00_5 = percentile(s, n, sw, 0.5);
    fp->p99_5 = percentile(s, n, sw, 99.5);
    fp->samples = (long long)n;
}

int dataset_intensity_fingerprints(const dataset_t *ds, intensity_fingerprint_t *fps, char *err)
{
    const int C = ds->n_channels;
    long labelled = 0;
    for (int i = 0; i < ds->n_cases; i++) labelled += ds->cases[i].label && strcmp(ds->cases[i].split, "test");
    size_t cap = (size_t)(labelled ? FINGERPRINT_POOL / labelled : FINGERPRINT_POOL);
    if (cap < FINGERPRINT_MIN_PER_CASE) cap = FINGERPRINT_MIN_PER_CASE;
    sample_t **v = xcalloc((size_t)C, sizeof *v);
    size_t *n = xcalloc((size_t)C, sizeof *n), *room = xcalloc((size_t)C, sizeof *room);
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
        for (int ch = 0; ch < C; ch++) sample_case(&c, ch, cap, &v[ch], &n[ch], &room[ch]);
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
    free(room);
    return rc;
}
