/*
metrics.c -- Dice per class and per region, means over the defined classes, and the region ->
label conversion of BraTS-style training (metrics.h has the rules). HD95 is metrics_hd95.c.
Counts are accumulated in size_t, so volumes of any size give exact Dice.
*/
#include "metrics.h"
#include "check.h"
#include "labels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static double dice_from_counts(size_t inter, size_t np, size_t nr)
{
    if (np + nr == 0) return NAN;                       // absent from both: undefined
    return 2.0 * (double)inter / (double)(np + nr);
}

void metrics_dice(double *dice, const uint8_t *pred, const uint8_t *ref, size_t n, int K)
{
    ASSERT(K >= 1 && K <= METRICS_MAX_CLASSES);
    size_t np[METRICS_MAX_CLASSES] = { 0 }, nr[METRICS_MAX_CLASSES] = { 0 }, ni[METRICS_MAX_CLASSES] = { 0 };
    for (size_t i = 0; i < n; i++) {
        np[pred[i]]++;                                  // 256 slots: any uint8 is a valid index
        nr[ref[i]]++;
        if (pred[i] == ref[i]) ni[pred[i]]++;
    }
    for (int c = 0; c < K; c++) dice[c] = dice_from_counts(ni[c], np[c], nr[c]);
}

double metrics_mean_defined(const double *dice, int first, int K, int *n_undefined)
{
    double sum = 0;
    int n = 0, undef = 0;
    for (int c = first; c < K; c++) {
        if (isnan(dice[c])) { undef++; continue; }
        sum += dice[c];
        n++;
    }
    if (n_undefined) *n_undefined = undef;
    return n ? sum / n : NAN;
}

// ---- regions ---------------------------------------------------------------------------------

static int parse_label(const char *s, const char *end, int *out)
{
    if (s == end || end - s > 3) return -1;
    int v = 0;
    for (const char *p = s; p < end; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (*p - '0');
    }
    if (v > LABEL_MAX_CLASS) return -1;
    *out = v;
    return 0;
}

int metrics_region_parse(metrics_region_t *r, const char *text, char *err)
{
    memset(r, 0, sizeof *r);
    const char *colon = strchr(text, ':');
    if (!colon) return set_err(err, "region '%s': expected LABELS:OUT, e.g. 1,2,4:2", text);
    int out;
    if (parse_label(colon + 1, colon + strlen(colon), &out))
        return set_err(err, "region '%s': output label is not an integer 0..%d", text, LABEL_MAX_CLASS);
    r->out_label = (uint8_t)out;
    const char *s = text;
    while (s < colon) {
        const char *comma = memchr(s, ',', (size_t)(colon - s));
        const char *end = comma ? comma : colon;
        int v;
        if (parse_label(s, end, &v)) return set_err(err, "region '%s': label list must be integers 0..%d", text, LABEL_MAX_CLASS);
        if (r->nlabels == METRICS_MAX_REGION_LABELS)
            return set_err(err, "region '%s': more than %d labels", text, METRICS_MAX_REGION_LABELS);
        r->labels[r->nlabels++] = (uint8_t)v;
        s = comma ? comma + 1 : colon;
    }
    if (!r->nlabels) return set_err(err, "region '%s': no labels before ':'", text);
    return 0;
}

static void region_lut(uint8_t lut[256], const metrics_region_t *r)
{
    memset(lut, 0, 256);
    for (int k = 0; k < r->nlabels; k++) lut[r->labels[k]] = 1;
}

void metrics_region_mask(uint8_t *mask, const uint8_t *labels, size_t n, const metrics_region_t *r)
{
    uint8_t lut[256];
    region_lut(lut, r);
    for (size_t i = 0; i < n; i++) mask[i] = lut[labels[i]];
}

void metrics_region_dice(double *dice, const uint8_t *pred, const uint8_t *ref, size_t n,
                         const metrics_region_t *regions, int nr)
{
    for (int j = 0; j < nr; j++) {
        uint8_t lut[256];
        region_lut(lut, &regions[j]);
        size_t a = 0, b = 0, ab = 0;
        for (size_t i = 0; i < n; i++) {
            uint8_t p = lut[pred[i]], q = lut[ref[i]];
            a += p;
            b += q;
            ab += p & q;
        }
        dice[j] = dice_from_counts(ab, a, b);
    }
}

void metrics_regions_to_labels(uint8_t *labels, const uint8_t *masks, size_t n,
                               const metrics_region_t *regions, int nr)
{
    memset(labels, 0, n);
    for (int j = 0; j < nr; j++) {                     // inner regions overwrite outer ones
        const uint8_t *m = masks + (size_t)j * n;
        uint8_t out = regions[j].out_label;
        for (size_t i = 0; i < n; i++)
            if (m[i]) labels[i] = out;
    }
}
