/*
cli.c -- command-line value parsing shared by the stages (see cli.h).
*/
#include "cli.h"
#include <errno.h>
#include "check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int cli_long(const char *flag, const char *s, long lo, long hi, long *out, char *err)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno == ERANGE || v < lo || v > hi)      // ERANGE: strtol saturated
        return set_err(err, "%s: '%s' is not an integer in [%ld, %ld]", flag, s, lo, hi);
    *out = v;
    return 0;
}

int cli_int(const char *flag, const char *s, int lo, int hi, int *out, char *err)
{
    long v = 0;
    if (cli_long(flag, s, lo, hi, &v, err)) return -1;
    *out = (int)v;
    return 0;
}

int cli_double(const char *flag, const char *s, double lo, double hi, double *out, char *err)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !isfinite(v) || v < lo || v > hi)
        return set_err(err, "%s: '%s' is not a number in [%g, %g]", flag, s, lo, hi);
    *out = v;
    return 0;
}

int cli_doubles(const char *flag, const char *s, double *v, int n, char *err)
{
    const char *p = s;
    for (int i = 0; i < n; i++) {
        char *end;
        v[i] = strtod(p, &end);
        if (end == p || !isfinite(v[i]) || (i + 1 < n ? *end != ',' : *end != 0))
            return set_err(err, "%s: expected %d comma-separated numbers, got '%s'", flag, n, s);
        p = end + 1;
    }
    return 0;
}

int cli_dims3(const char *flag, const char *s, int lo, int hi, int mult, int out[3], char *err)
{
    int v[3], n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno == ERANGE || n == 3 || x < lo || x > hi || x % mult) break;
        v[n++] = (int)x;
        if (!*end && n != 2) {
            if (n == 1) v[1] = v[2] = v[0];
            memcpy(out, v, sizeof v);
            return 0;
        }
        if (*end != ',') break;
        p = end + 1;
    }
    char of[40] = "";
    if (mult > 1) snprintf(of, sizeof of, ", a multiple of %d", mult);
    return set_err(err, "%s: '%s' is not D,H,W or one N, each an integer in [%d, %d]%s", flag, s, lo, hi, of);
}

int cli_spacing(const char *s, double spacing[3], char *err)
{
    if (!strcmp(s, "none")) {
        for (int d = 0; d < 3; d++) spacing[d] = 0;
        return 0;
    }
    if (cli_doubles("--spacing", s, spacing, 3, err)) return -1;
    for (int d = 0; d < 3; d++)
        if (!(spacing[d] > 0 && spacing[d] < 100))
            return set_err(err, "--spacing: %g is not in (0, 100) mm", spacing[d]);
    return 0;
}

int cli_norm(const char *s, preprocess_cfg_t *prep, int *force_modality, char *err)
{
    double v[2] = { 0, 0 };
    if (!strncmp(s, "ct:", 3)) {
        if (cli_doubles("--norm", s + 3, v, 2, err)) return -1;
        if (!(v[0] < v[1])) return set_err(err, "--norm ct: window %g,%g is empty", v[0], v[1]);
        prep->ct_norm = CT_NORM_WINDOW;
        prep->ct_lo = v[0];
        prep->ct_hi = v[1];
        *force_modality = MODALITY_CT;
    } else if (!strncmp(s, "ct-z:", 5)) {
        // MEAN,STD[,LO,HI]: nnU-Net's CT scheme (clip to the foreground's 0.5 / 99.5 percentiles
        // LO, HI, then z-score); without LO,HI nothing is clipped
        double w[4];
        int commas = 0;
        for (const char *q = s + 5; *q; q++) commas += *q == ',';
        const int n = commas >= 2 ? 4 : 2;
        if (cli_doubles("--norm ct-z", s + 5, w, n, err)) return -1;
        if (!(w[1] > 0)) return set_err(err, "--norm ct-z: std %g must be > 0", w[1]);
        if (n == 4 && !(w[2] < w[3])) return set_err(err, "--norm ct-z: clip window %g,%g is empty", w[2], w[3]);
        prep->ct_norm = CT_NORM_ZSCORE;
        prep->ct_mean = w[0];
        prep->ct_std = w[1];
        prep->ct_lo = n == 4 ? w[2] : -CT_NO_CLIP;
        prep->ct_hi = n == 4 ? w[3] : CT_NO_CLIP;
        *force_modality = MODALITY_CT;
    } else if (!strcmp(s, "mr-fg") || !strcmp(s, "mr-all")) {
        prep->mr_norm = s[3] == 'f' ? MR_NORM_ZSCORE_FG : MR_NORM_ZSCORE_ALL;
        *force_modality = MODALITY_MR;
    } else {
        return set_err(err, "--norm: '%s' is not ct:LO,HI, ct-z:MEAN,STD[,LO,HI], mr-fg or mr-all", s);
    }
    return 0;
}
