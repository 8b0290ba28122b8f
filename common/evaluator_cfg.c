/*
evaluator_cfg.c -- srm-evaluator's command line: mode (file or service), model fallback
configuration, sliding window, label regions, preprocessing flags spelled as the loader's
(--spacing, --norm), endpoints and CURVE key files.
*/
#include "evaluator.h"
#include "check.h"
#include "cli.h"
#include "labels.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void eval_usage(void *file)
{
    fprintf((FILE *)file,
        "usage: srm-evaluator --model FILE... (--images F... [--labels F...] | --dataset DIR [--split S]) [--out DIR] [options]\n"
        "       srm-evaluator --jobs EP --cases EP [--exporter EP] [--metrics EP] [options]\n"
        "file mode:\n"
        "  --model FILE...       native checkpoint or safetensors (incl. params_M_btcv.txt names);\n"
        "                        several (up to 16): an ensemble, their logits averaged as nnU-Net\n"
        "                        ensembles its folds (same classes, channels and preprocessing)\n"
        "  --images F...         images to segment: each file one case (4D = channels), or one file\n"
        "                        per channel named CASE_0000, CASE_0001, ... (nnU-Net): one case CASE\n"
        "  --labels F...         reference label maps, one per image, to score\n"
        "  --dataset DIR         segment and score the cases of a dataset (--split, default validation);\n"
        "                        in service mode: read the reference labels from here by case id\n"
        "  --out DIR             write <case>.nii.gz on each source image's grid\n"
        "  --logits              write float32 logits (classes on the 4th axis) instead of labels;\n"
        "                        outside the image's foreground box certain background (+20 background,\n"
        "                        -20 the other classes or regions)\n"
        "  --continue            leave cases whose OUT/<case>.nii.gz exists (a run stopped part way):\n"
        "                        not segmented again, scored from that file when there is a reference\n"
        "service mode:\n"
        "  --jobs EP             trainer's evaljobs endpoint (PULL, connect)\n"
        "  --cases EP            loader's cases endpoint (DEALER, connect)\n"
        "  --exporter EP         exporter endpoint (DEALER, connect) for metrics and predictions\n"
        "  --metrics EP          trainer's metrics endpoint (PUSH, connect, never blocks)\n"
        "  --predictions final|every|never   when to send predictions (final: after a final job)\n"
        "  --max-jobs N          exit after N jobs (0: until SIGINT/SIGTERM)\n"
        "  --exit-after-final    exit after a final job and its predictions\n"
        "  --case-timeout S      wait this long for one loader reply (600)\n"
        "  --exporter-resend S   metrics and predictions wait until the exporter acknowledges them;\n"
        "                        one is sent again when lost: a later one was acknowledged, or\n"
        "                        nothing was for S seconds (10)\n"
        "  --curve-client KEY --server-key KEY   CURVE on tcp endpoints (scripts/keys.sh)\n"
        "model (when the weights do not carry their configuration):\n"
        "  --variant M|P|R|no-tom --preset tiny|demo|full --width W --in-channels C --classes K\n"
        "inference:\n"
        "  --device auto|cpu|gpu  --window D,H,W (multiples of 16; default the job's patch, else 96^3)\n"
        "  --deterministic       GPU: the same logits run after run (no autotuned engine choice)\n"
        "  --overlap F (0.5)  --blend gaussian|constant  --sigma-scale F (0.125)  --sw-batch N (1)\n"
        "  --mirror              test-time mirroring as nnU-Net's: every window also mirrored along\n"
        "                        each set of axes, the 8 outputs flipped back and averaged (8x time)\n"
        "  --regions \"WT=1,2,3,4;TC=1,3,4;ET=4\"   sigmoid outputs are label regions (BraTS)\n"
        "  --keep-largest all|V,V...   postprocessing: only the largest 26-connected component of each\n"
        "                        of these labels (all: every label, each on its own) stays, the rest\n"
        "                        becomes background (MONAI's KeepLargestConnectedComponent)\n"
        "  --no-hd95             skip HD95\n"
        "preprocessing (file mode; default: the settings the model was trained with, which\n"
        "checkpoints and safetensors exports of srm-trainer carry; these flags override them):\n"
        "  --spacing X,Y,Z|none  --norm ct:LO,HI|ct-z:MEAN,STD[,LO,HI]|mr-fg|mr-all\n");
}

static int parse_window(eval_cfg_t *c, const char *s, char *err)
{
    if (cli_dims3("--window", s, 16, 1024, 16, c->sw.roi, err)) return -1;
    c->window_given = 1;
    return 0;
}

// --keep-largest all | V,V,... (label values 1..LABEL_MAX_CLASS).
static int parse_keep(eval_cfg_t *c, const char *s, char *err)
{
    memset(c->keep_largest, 0, sizeof c->keep_largest);
    c->keep_given = 1;
    if (!strcmp(s, "all")) {
        memset(c->keep_largest + 1, 1, LABEL_MAX_CLASS);
        return 0;
    }
    for (const char *p = s;;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > LABEL_MAX_CLASS || (*end && *end != ','))
            return set_err(err, "--keep-largest: '%s' is not all or label values 1..%d, comma-separated", s, LABEL_MAX_CLASS);
        c->keep_largest[v] = 1;
        if (!*end) return 0;
        p = end + 1;
    }
}

static int parse_choice(const char *flag, const char *s, const char *const *names, int n, int *out, char *err)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(s, names[i])) { *out = i; return 0; }
    return set_err(err, "%s: '%s' is not one of the choices (see --help)", flag, s);
}

// Consume the file names after a list flag (up to the next "--" flag).
static int take_files(const char **dst, int *n, int argc, char **argv, int *i, const char *flag, char *err)
{
    const int cap = strcmp(flag, "--model") ? EVAL_MAX_FILES : EVAL_MAX_MODELS;
    while (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2) != 0) {
        if (*n >= cap) return set_err(err, "%s: more than %d files", flag, cap);
        dst[(*n)++] = argv[++*i];
    }
    return *n ? 0 : set_err(err, "%s: no file given", flag);
}

static void defaults(eval_cfg_t *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->split, sizeof c->split, "validation");
    c->model = model_cfg_default();
    sw_cfg_default(&c->sw);
    c->hd95 = 1;
    c->case_timeout_s = 600;
    c->exporter_resend_s = 10;
    c->force_modality = -1;
    preprocess_cfg_default(&c->prep);
    c->prep.blank_ok = 1;           // a blank scan is segmented (to 0s, warned), not refused
}

// One flag with a value. 0, or -1 + err.
static int flag_value(eval_cfg_t *c, const char *a, const char *v, char *err)
{
    static const char *const devs[] = { "auto", "cpu", "gpu" }, *const blends[] = { "constant", "gaussian" },
                             *const preds[] = { "final", "every", "never" };
    int k;
    if (!strcmp(a, "--dataset")) c->dataset = v;
    else if (!strcmp(a, "--split")) snprintf(c->split, sizeof c->split, "%s", v);
    else if (!strcmp(a, "--out")) c->out_dir = v;
    else if (!strcmp(a, "--jobs")) c->jobs_ep = v;
    else if (!strcmp(a, "--cases")) c->cases_ep = v;
    else if (!strcmp(a, "--exporter")) c->exporter_ep = v;
    else if (!strcmp(a, "--metrics")) c->metrics_ep = v;
    else if (!strcmp(a, "--curve-client")) c->curve_client = v;
    else if (!strcmp(a, "--server-key")) c->server_key = v;
    else if (!strcmp(a, "--predictions")) {
        if (parse_choice(a, v, preds, 3, &k, err)) return -1;
        c->predictions = (eval_pred_when_t)k;
    } else if (!strcmp(a, "--max-jobs")) return cli_long(a, v, 0, 1L << 40, &c->max_jobs, err);
    else if (!strcmp(a, "--case-timeout")) return cli_int(a, v, 1, 86400, &c->case_timeout_s, err);
    else if (!strcmp(a, "--exporter-resend")) return cli_double(a, v, 0.1, 86400, &c->exporter_resend_s, err);
    else if (!strcmp(a, "--variant")) return model_variant_parse(v, &c->model.variant, err);
    else if (!strcmp(a, "--preset")) return model_cfg_preset(&c->model, v, err);
    else if (!strcmp(a, "--width")) return cli_int(a, v, 8, 4096, &c->model.width, err);
    else if (!strcmp(a, "--in-channels")) return cli_int(a, v, 1, CASE_MAX_CHANNELS, &c->model.in_channels, err);
    else if (!strcmp(a, "--classes")) return cli_int(a, v, 1, METRICS_MAX_CLASSES, &c->model.classes, err);
    else if (!strcmp(a, "--device")) {
        if (parse_choice(a, v, devs, 3, &k, err)) return -1;
        c->device = (eval_device_t)k;
    } else if (!strcmp(a, "--window") || !strcmp(a, "--patch")) return parse_window(c, v, err);
    else if (!strcmp(a, "--overlap")) return cli_double(a, v, 0, 0.95, &c->sw.overlap, err);
    else if (!strcmp(a, "--blend")) {
        if (parse_choice(a, v, blends, 2, &k, err)) return -1;
        c->sw.blend = (sw_blend_t)k;
    } else if (!strcmp(a, "--sigma-scale")) return cli_double(a, v, 1e-3, 10, &c->sw.sigma_scale, err);
    else if (!strcmp(a, "--sw-batch")) return cli_int(a, v, 1, 64, &c->sw.batch, err);
    else if (!strcmp(a, "--regions")) return eval_regions_parse(&c->lab, v, err);
    else if (!strcmp(a, "--keep-largest")) return parse_keep(c, v, err);
    else if (!strcmp(a, "--spacing")) { c->spacing_given = 1; return cli_spacing(v, c->prep.target_spacing, err); }
    else if (!strcmp(a, "--norm")) return cli_norm(v, &c->prep, &c->force_modality, err);
    else return set_err(err, "unknown flag %s", a);
    return 0;
}

int eval_parse(eval_cfg_t *c, int argc, char **argv, char *err)
{
    defaults(c);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
        if (!strcmp(a, "--logits")) { c->logits = 1; continue; }
        if (!strcmp(a, "--no-hd95")) { c->hd95 = 0; continue; }
        if (!strcmp(a, "--exit-after-final")) { c->exit_after_final = 1; continue; }
        if (!strcmp(a, "--mirror")) { c->sw.mirror = 1; continue; }
        if (!strcmp(a, "--continue")) { c->keep_done = 1; continue; }
        if (!strcmp(a, "--deterministic")) { c->deterministic = 1; continue; }
        if (!strcmp(a, "--model")) {
            if (c->n_models) return set_err(err, "--model given twice: list an ensemble's files after one --model");
            if (take_files(c->models, &c->n_models, argc, argv, &i, a, err)) return -1;
            c->model_path = c->models[0];
            continue;
        }
        if (!strcmp(a, "--images")) { if (take_files(c->images, &c->n_images, argc, argv, &i, a, err)) return -1; continue; }
        if (!strcmp(a, "--labels")) { if (take_files(c->labels, &c->n_labels, argc, argv, &i, a, err)) return -1; continue; }
        if (i + 1 >= argc) return set_err(err, "%s: missing value (or unknown flag)", a);
        if (flag_value(c, a, argv[++i], err)) return -1;
    }
    int service = c->jobs_ep != NULL;
    if (service && c->model_path) return set_err(err, "--jobs (service mode) and --model (file mode) exclude each other");
    if (!service && !c->model_path) return set_err(err, "give --model FILE (file mode) or --jobs EP (service mode)");
    if (service && !c->cases_ep) return set_err(err, "service mode needs --cases EP (the loader's cases socket)");
    if (!service && !c->n_images == !c->dataset) return set_err(err, "file mode needs exactly one of --images or --dataset");
    if (c->n_labels && !c->n_images) return set_err(err, "--labels needs --images (a dataset has its own labels)");
    if (!service && !c->out_dir && !c->n_labels && !c->dataset) return set_err(err, "nothing to do: give --out DIR or --labels");
    if (c->keep_done && (service || !c->out_dir)) return set_err(err, "--continue needs --out DIR (file mode): the predictions to keep");
    if (c->keep_done && c->logits && (c->n_labels || c->dataset))
        return set_err(err, "--continue with --logits: kept logits files are not scored again; leave out --logits or the references");
    if (!c->curve_client != !c->server_key) return set_err(err, "CURVE needs both --curve-client and --server-key");
    if (stage_key_files_check(c->curve_client, c->server_key, NULL, err)) return -1;
    return model_cfg_check(&c->model, err);
}

// ---- regions ----------------------------------------------------------------------------------

// "1,2,4" into r's labels. 0 or -1.
static int region_values(metrics_region_t *r, const char *s, size_t len, char *err)
{
    char buf[128];
    if (len == 0 || len >= sizeof buf) return set_err(err, "--regions: empty or too long region '%.*s'", (int)len, s);
    memcpy(buf, s, len);
    buf[len] = 0;
    r->nlabels = 0;
    for (char *p = buf, *tok; (tok = strsep(&p, ",")); ) {
        char *end;
        long v = strtol(tok, &end, 10);
        if (!*tok || *end || v < 1 || v > LABEL_MAX_CLASS)
            return set_err(err, "--regions: '%s' is not a label value in [1, %d]", tok, LABEL_MAX_CLASS);
        if (r->nlabels >= METRICS_MAX_REGION_LABELS) return set_err(err, "--regions: more than %d labels in a region", METRICS_MAX_REGION_LABELS);
        r->labels[r->nlabels++] = (uint8_t)v;
    }
    return 0;
}

static int in_region(const metrics_region_t *r, int v)
{
    for (int i = 0; i < r->nlabels; i++)
        if (r->labels[i] == v) return 1;
    return 0;
}

int eval_regions_parse(eval_labels_t *l, const char *text, char *err)
{
    memset(l, 0, sizeof *l);
    int explicit_out[EVAL_MAX_REGIONS] = { 0 };
    const char *p = text;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (l->nregions >= EVAL_MAX_REGIONS) return set_err(err, "--regions: more than %d regions", EVAL_MAX_REGIONS);
        int j = l->nregions;
        metrics_region_t *r = &l->regions[j];
        const char *eq = memchr(p, '=', len), *vals = p;
        size_t vlen = len;
        if (eq) {
            if (eq == p || (size_t)(eq - p) >= WIRE_NAME_LEN) return set_err(err, "--regions: bad name in '%.*s'", (int)len, p);
            memcpy(l->names[j], p, (size_t)(eq - p));
            vals = eq + 1;
            vlen = len - (size_t)(eq - p) - 1;
        } else {
            snprintf(l->names[j], WIRE_NAME_LEN, "region%d", j + 1);
        }
        const char *colon = memchr(vals, ':', vlen);
        if (colon) {
            char piece[160];
            if (vlen >= sizeof piece) return set_err(err, "--regions: region too long");
            memcpy(piece, vals, vlen);
            piece[vlen] = 0;
            char e2[ERR_LEN];
            if (metrics_region_parse(r, piece, e2)) return set_err(err, "--regions: %s", e2);
            explicit_out[j] = 1;
        } else if (region_values(r, vals, vlen, err)) {
            return -1;
        }
        l->nregions++;
        p = end ? end + 1 : p + len;
    }
    if (!l->nregions) return set_err(err, "--regions: no region in '%s'", text);
    // any two nested or disjoint (nnU-Net's BraTS regions are), as a label map can show them
    uint8_t member[EVAL_MAX_REGIONS][256] = { { 0 } };
    for (int r = 0; r < l->nregions; r++)
        for (int i = 0; i < l->regions[r].nlabels; i++) member[r][l->regions[r].labels[i]] = 1;
    for (int a = 0; a < l->nregions; a++)
        for (int b = a + 1; b < l->nregions; b++)
            if (labels_regions_cross(member[a], member[b]))
                return set_err(err, "--regions: %s and %s overlap without one holding the other: a label map cannot "
                               "show such regions (give nested or disjoint ones)", l->names[a], l->names[b]);
    // Output label without ':': the smallest value of the region that no later (inner) region
    // holds -- WT=1,2,3,4;TC=1,3,4;ET=4 gives 2, 1, 4: the usual BraTS rule.
    for (int j = 0; j < l->nregions; j++) {
        if (explicit_out[j]) continue;
        int best = 256;
        for (int i = 0; i < l->regions[j].nlabels; i++) {
            int v = l->regions[j].labels[i], inner = 0;
            for (int k = j + 1; k < l->nregions; k++) inner |= in_region(&l->regions[k], v);
            if (!inner && v < best) best = v;
        }
        if (best == 256) return set_err(err, "--regions: region %s has no value of its own (every value is in a later region)", l->names[j]);
        l->regions[j].out_label = (uint8_t)best;
    }
    return 0;
}
