/*
preprocess_settings.c -- the preprocessing a model was trained with, as a small JSON text that
travels with its weights (checkpoint header, safetensors __metadata__ "preprocessing"), so that
segmenting new images applies the training's reorientation, spacing, foreground crop and
per-channel normalisation without the user repeating the loader's flags -- nnU-Net keeps its
plans beside the weights for the same reason. Written by srm-loader (--write-preprocessing),
embedded by srm-trainer, copied by srm-exporter, applied by srm-evaluator's file mode.
  {"version":1,"modality":["CT"],"reorient":1,"spacing":[1.5,1.5,2],
   "foreground":{"mode":"auto","threshold":-500},"crop":1,"margin":[0,0,0],
   "ct":{"norm":"window","window":[-175,250],"range":[0,1],"zscore":[0,1]},"mr":{"norm":"zscore-fg"}}
spacing 0 keeps that axis. Doubles are printed with 17 significant digits (jansson), so the
settings read back are the ones written, bit for bit.
*/
#include "preprocess.h"
#include "check.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const char *const FG_NAMES[] = { "auto", "min", "threshold", "none" };
static const char *const CT_NAMES[] = { "window", "zscore", "none" };
static const char *const MR_NAMES[] = { "zscore-fg", "zscore-all", "none" };

static json_t *doubles(const double *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

char *preprocess_settings_json(const preprocess_cfg_t *c, const modality_t *mod, int C)
{
    json_t *m = json_array();
    for (int ch = 0; ch < C; ch++) json_array_append_new(m, json_string(modality_name(mod[ch])));
    const double win[2] = { c->ct_lo, c->ct_hi }, range[2] = { c->ct_b_min, c->ct_b_max },
                 z[2] = { c->ct_mean, c->ct_std };
    json_t *o = json_pack("{s:i, s:o, s:i, s:o, s:{s:s, s:f}, s:i, s:[i, i, i], s:{s:s, s:o, s:o, s:o}, s:{s:s}}",
                          "version", 1, "modality", m, "reorient", c->reorient,
                          "spacing", doubles(c->target_spacing, 3),
                          "foreground", "mode", FG_NAMES[c->fg_mode], "threshold", c->fg_threshold,
                          "crop", c->crop, "margin", c->margin[0], c->margin[1], c->margin[2],
                          "ct", "norm", CT_NAMES[c->ct_norm], "window", doubles(win, 2), "range", doubles(range, 2),
                          "zscore", doubles(z, 2), "mr", "norm", MR_NAMES[c->mr_norm]);
    ASSERT(o);
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(o);
    ASSERT(s);
    return s;
}

static int choice(const char *s, const char *const *names, int n, int *out)
{
    for (int i = 0; i < n; i++)
        if (s && !strcmp(s, names[i])) { *out = i; return 0; }
    return -1;
}

// n numbers of array a into v. 0 or -1.
static int numbers(json_t *a, double *v, int n)
{
    if (!json_is_array(a) || json_array_size(a) != (size_t)n) return -1;
    for (int i = 0; i < n; i++) {
        json_t *x = json_array_get(a, (size_t)i);
        if (!json_is_number(x)) return -1;
        v[i] = json_number_value(x);
    }
    return 0;
}

int preprocess_settings_parse(const char *text, preprocess_cfg_t *c, modality_t *mod, int *C, char *err)
{
    json_error_t je;
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!o) return set_err(err, "preprocessing settings: not JSON (%s)", je.text);
    preprocess_cfg_default(c);
    json_t *m = json_object_get(o, "modality"), *fg = json_object_get(o, "foreground"),
           *ct = json_object_get(o, "ct"), *mr = json_object_get(o, "mr");
    const char *bad = NULL;
    double sp[3], margin[3], win[2], range[2], z[2];
    int fgm = 0, ctn = 0, mrn = 0;
    if (json_integer_value(json_object_get(o, "version")) != 1) bad = "version (1 expected)";
    else if (!json_is_array(m) || json_array_size(m) < 1 || json_array_size(m) > CASE_MAX_CHANNELS) bad = "modality";
    else if (!json_is_integer(json_object_get(o, "reorient"))) bad = "reorient";
    else if (numbers(json_object_get(o, "spacing"), sp, 3)) bad = "spacing";
    else if (!json_is_object(fg) || choice(json_string_value(json_object_get(fg, "mode")), FG_NAMES, 4, &fgm) ||
             !json_is_number(json_object_get(fg, "threshold")))
        bad = "foreground";
    else if (!json_is_integer(json_object_get(o, "crop"))) bad = "crop";
    else if (numbers(json_object_get(o, "margin"), margin, 3)) bad = "margin";
    else if (!json_is_object(ct) || choice(json_string_value(json_object_get(ct, "norm")), CT_NAMES, 3, &ctn) ||
             numbers(json_object_get(ct, "window"), win, 2) || numbers(json_object_get(ct, "range"), range, 2) ||
             numbers(json_object_get(ct, "zscore"), z, 2))
        bad = "ct";
    else if (!json_is_object(mr) || choice(json_string_value(json_object_get(mr, "norm")), MR_NAMES, 3, &mrn))
        bad = "mr";
    if (!bad)
        for (int a = 0; a < 3; a++) {
            if (!(sp[a] >= 0 && sp[a] < 100)) bad = "spacing (0 keeps an axis, else (0, 100) mm)";
            if (!(margin[a] >= 0 && margin[a] <= 1024) || margin[a] != (int)margin[a]) bad = "margin (whole voxels)";
        }
    if (!bad && (!(win[0] < win[1]) || !(z[1] > 0))) bad = "ct (an empty window or a std <= 0)";
    for (size_t i = 0; !bad && i < json_array_size(m); i++) {
        const char *s = json_string_value(json_array_get(m, i));
        if (s && (!strcmp(s, "MR") || modality_of_name(s) != MODALITY_MR)) mod[i] = modality_of_name(s);
        else bad = "modality (CT, MR, noNorm, rescale_to_0_1 or rgb_to_0_1 per channel)";
    }
    if (bad) {
        json_decref(o);
        return set_err(err, "preprocessing settings: missing or bad '%s'", bad);
    }
    *C = (int)json_array_size(m);
    c->reorient = (int)json_integer_value(json_object_get(o, "reorient"));
    memcpy(c->target_spacing, sp, sizeof sp);
    c->fg_mode = (fg_mode_t)fgm;
    c->fg_threshold = json_number_value(json_object_get(fg, "threshold"));
    c->crop = (int)json_integer_value(json_object_get(o, "crop"));
    for (int a = 0; a < 3; a++) c->margin[a] = (int)margin[a];
    c->ct_norm = (ct_norm_t)ctn;
    c->ct_lo = win[0]; c->ct_hi = win[1];
    c->ct_b_min = range[0]; c->ct_b_max = range[1];
    c->ct_mean = z[0]; c->ct_std = z[1];
    c->mr_norm = (mr_norm_t)mrn;
    json_decref(o);
    return 0;
}
