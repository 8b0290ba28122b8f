/*
trainer_args.c -- srm-trainer's command line. Defaults are the paper's recipe (architecture.md
"Training defaults": Adam lr 1e-4, betas 0.9/0.999, eps 1e-8, weight decay 1e-5 added to the
gradient, cosine annealing to 0 over the run's total steps, softmax Dice). --describe keeps the
exact behaviour of issue 4 (parameter table on stdout).
*/
#include "trainer.h"
#include "check.h"
#include "cli.h"
#include "labels.h"
#include "stage.h"
#include "wire_msgs.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void trainer_usage(void *file)
{
    fprintf((FILE *)file,
        "usage: srm-trainer --describe [--model M|P|R|no-tom] [--preset tiny|demo|full]\n"
        "                   [--width W] [--in-channels N] [--classes K]\n"
        "       srm-trainer [options]           train on patch batches from the augmenters\n"
        "model:    --model M|P|R|no-tom  --preset tiny|demo|full  --width W  --in-channels C  --classes K\n"
        "data:     --patch D,H,W (96,96,96)  --batch B (1)\n"
        "loss:     --loss dice|dice-ce|sigmoid-dice (dice)  --regions \"WT=1,2,3,4;TC=1,3,4;ET=4\"\n"
        "          (--regions implies sigmoid-dice; output channels = number of regions)\n"
        "          --dice-smooth NR,DR (1e-5,1e-5; sigmoid-dice 0,1e-5)  --dice-squared-pred 0|1 (0; sigmoid-dice 1):\n"
        "          MONAI DiceLoss's smooth_nr, smooth_dr and squared_pred; sigmoid-dice defaults to the\n"
        "          SegResMamba authors' BraTS loss\n"
        "optim:    --lr F (1e-4)  --weight-decay F (1e-5)  --adamw   cosine schedule over --steps\n"
        "length:   --steps N (1000) | --epochs E --steps-per-epoch S\n"
        "          --max-minutes M: stop after M minutes from the start (final checkpoint and evaluation\n"
        "          follow); the cosine schedule's length is estimated from the step time after a short\n"
        "          warm-up and kept in the checkpoints; --steps then caps it (default: no cap)\n"
        "          --val-every N (0: off; a validated step is also checkpointed)  --ckpt-every N (100)  --log-every N (10)  --seed S (0)\n"
        "device:   --device auto|cpu|gpu (auto)  --deterministic\n"
        "resume:   --resume (ask the exporter for latest; also looks in --spool)  --resume-file PATH\n"
        "sockets:  --patches EP (PULL bind)  --evaljobs EP (PUSH bind)  --metrics EP (PULL bind)\n"
        "          --exporter EP (DEALER connect)  --allow-remote\n"
        "          --curve-server KEY --authorized FILE (bound sockets)\n"
        "          --curve-client KEY --server-key FILE (the exporter connection)\n"
        "          --run-id ID (put in eval jobs; validation metrics of another run are ignored)\n"
        "checkpoints: --spool DIR (unacknowledged checkpoints; default /tmp/srm-trainer-PID)\n"
        "          --preprocessing FILE (the loader's --write-preprocessing output: kept in every\n"
        "          checkpoint so that predicting applies the training's preprocessing)\n"
        "          --ack-timeout S (60)  --final-ack-timeout S (60)  --final-eval-timeout S (600)\n"
        "          --final-eval-resend S (30: offer the final eval job again while no validation\n"
        "          came -- an evaluator killed meanwhile lost it; a live one skips the copy)\n"
        "          --resume-timeout S (30)  --batch-timeout S (120: warn when no batch comes; when for S s every batch was dropped, at least 10, stop with exit 78)\n"
        "          --exporter-resend S (10: metrics lines wait until the exporter acknowledges them;\n"
        "          one is sent again when lost: a later one was acknowledged, or nothing was for S s)\n");
}

// "WT=1,2,3,4;TC=1,3,4;ET=4": one region per ';' piece, NAME=label values (0..LABEL_MAX_CLASS),
// optionally ":OUT", the label its output is written as (nnU-Net's regions_class_order): the
// loss does not use it; it travels in the spec to the evaluator and the checkpoints.
static int parse_regions(trainer_cfg_t *c, const char *s, char *err)
{
    if (strlen(s) >= sizeof c->region_spec) return set_err(err, "--regions: too long");
    snprintf(c->region_spec, sizeof c->region_spec, "%s", s);
    memset(&c->regions, 0, sizeof c->regions);
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    char *save = NULL;
    for (char *piece = strtok_r(buf, ";", &save); piece; piece = strtok_r(NULL, ";", &save)) {
        if (c->regions.R == REGIONS_MAX) return set_err(err, "--regions: more than %d regions", REGIONS_MAX);
        char *eq = strchr(piece, '=');
        if (!eq || eq == piece || eq - piece >= TRAIN_REGION_NAME)
            return set_err(err, "--regions: '%s' is not NAME=v1,v2,...", piece);
        int r = c->regions.R++;
        snprintf(c->region_names[r], TRAIN_REGION_NAME, "%.*s", (int)(eq - piece), piece);
        const char *q = eq + 1;
        int n = 0;
        while (*q && *q != ':') {
            char *end;
            long v = strtol(q, &end, 10);
            if (end == q || v < 0 || v > LABEL_MAX_CLASS || (*end && *end != ',' && *end != ':'))
                return set_err(err, "--regions: bad label value in '%s' (0..%d)", piece, LABEL_MAX_CLASS);
            c->regions.member[r][v] = 1;
            n++;
            q = *end == ',' ? end + 1 : end;
        }
        if (*q == ':') {
            char *end;
            long out = strtol(q + 1, &end, 10);
            if (end == q + 1 || *end || out < 0 || out > LABEL_MAX_CLASS)
                return set_err(err, "--regions: bad output label in '%s' (:0..%d)", piece, LABEL_MAX_CLASS);
        }
        if (!n) return set_err(err, "--regions: region '%s' has no label values", c->region_names[r]);
    }
    if (!c->regions.R) return set_err(err, "--regions: no region in '%s'", s);
    // nested or disjoint, as the evaluator's decoding into a label map needs (eval_regions_parse)
    for (int a = 0; a < c->regions.R; a++)
        for (int b = a + 1; b < c->regions.R; b++)
            if (labels_regions_cross(c->regions.member[a], c->regions.member[b]))
                return set_err(err, "--regions: %s and %s overlap without one holding the other: a label map cannot "
                               "show such regions (give nested or disjoint ones)", c->region_names[a], c->region_names[b]);
    return 0;
}

static void cfg_defaults(trainer_cfg_t *c)
{
    memset(c, 0, sizeof *c);
    c->model = model_cfg_default();
    c->tc = train_cfg_default();
    c->patch[0] = c->patch[1] = c->patch[2] = 96;
    c->batch = 1;
    c->steps = 1000;
    c->ckpt_every = 100;
    c->log_every = 10;
    c->ack_timeout_s = 60;
    c->exporter_resend_s = 10;
    c->final_ack_timeout_s = 60;
    c->final_eval_timeout_s = 600;
    c->final_eval_resend_s = 30;
    c->resume_timeout_s = 30;
    c->batch_timeout_s = 120;
}

const char *trainer_loss_name(loss_kind_t k)
{
    return k == LOSS_DICE ? "dice" : k == LOSS_DICE_CE ? "dice-ce" : "sigmoid-dice";
}

int trainer_parse_args(trainer_cfg_t *c, int argc, char **argv, char *err)
{
    cfg_defaults(c);
    long epochs = 0, per_epoch = 0;
    int steps_given = 0, loss_given = 0, squared = -1;
    double lr = c->tc.adam.lr, wd = c->tc.adam.weight_decay, smooth[2] = { -1, -1 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        // switches without a value
        if (!strcmp(a, "--describe")) { c->describe = 1; continue; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { trainer_usage(stdout); return 1; }
        if (!strcmp(a, "--resume")) { c->resume = 1; continue; }
        if (!strcmp(a, "--adamw")) { c->tc.adam.decoupled = 1; continue; }
        if (!strcmp(a, "--allow-remote")) { c->allow_remote = 1; continue; }
        if (!strcmp(a, "--deterministic")) { c->deterministic = 1; continue; }
        if (i + 1 >= argc) return set_err(err, "%s: missing value (or unknown flag)", a);
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(a, "--model")) rc = model_variant_parse(v, &c->model.variant, err);
        else if (!strcmp(a, "--preset")) rc = model_cfg_preset(&c->model, v, err);
        else if (!strcmp(a, "--width")) rc = cli_int(a, v, 1, 1000000, &c->model.width, err);
        else if (!strcmp(a, "--in-channels")) rc = cli_int(a, v, 1, 1000000, &c->model.in_channels, err);
        else if (!strcmp(a, "--classes")) rc = cli_int(a, v, 1, 1000000, &c->model.classes, err);
        else if (!strcmp(a, "--device")) {
            if (!strcmp(v, "auto")) c->device = TRAIN_DEV_AUTO;
            else if (!strcmp(v, "cpu")) c->device = TRAIN_DEV_CPU;
            else if (!strcmp(v, "gpu")) c->device = TRAIN_DEV_GPU;
            else rc = set_err(err, "--device: '%s' is not auto, cpu or gpu", v);
            // a lasting fact of this binary, not a failure a restart mends (exit 78)
            if (!SRM_CUDA && c->device == TRAIN_DEV_GPU)
                rc = set_err(err, "--device gpu: this srm-trainer was built without CUDA (make CUDA=1)");
        } else if (!strcmp(a, "--loss")) {
            loss_given = 1;
            if (!strcmp(v, "dice")) c->tc.loss = LOSS_DICE;
            else if (!strcmp(v, "dice-ce")) c->tc.loss = LOSS_DICE_CE;
            else if (!strcmp(v, "sigmoid-dice")) c->tc.loss = LOSS_DICE_SIGMOID;
            else rc = set_err(err, "--loss: '%s' is not dice, dice-ce or sigmoid-dice", v);
        } else if (!strcmp(a, "--regions")) rc = parse_regions(c, v, err);
        else if (!strcmp(a, "--lr")) rc = cli_double(a, v, 1e-12, 10, &lr, err);
        else if (!strcmp(a, "--weight-decay")) rc = cli_double(a, v, 0, 10, &wd, err);
        else if (!strcmp(a, "--dice-squared-pred")) rc = cli_int(a, v, 0, 1, &squared, err);
        else if (!strcmp(a, "--dice-smooth")) {
            rc = cli_doubles(a, v, smooth, 2, err);
            if (!rc && (smooth[0] < 0 || smooth[1] <= 0 || smooth[0] > 1e3 || smooth[1] > 1e3))
                rc = set_err(err, "--dice-smooth: NR in [0, 1000], DR in (0, 1000]: '%s'", v);
        }
        else if (!strcmp(a, "--patch")) rc = cli_dims3(a, v, 16, 4096, 16, c->patch, err);
        else if (!strcmp(a, "--batch")) rc = cli_int(a, v, 1, 1024, &c->batch, err);
        else if (!strcmp(a, "--steps")) { steps_given = 1; rc = cli_long(a, v, 1, 1000000000L, &c->steps, err); }
        else if (!strcmp(a, "--max-minutes")) rc = cli_double(a, v, 0.001, 1e6, &c->max_minutes, err);
        else if (!strcmp(a, "--epochs")) rc = cli_long(a, v, 1, 1000000L, &epochs, err);
        else if (!strcmp(a, "--steps-per-epoch")) rc = cli_long(a, v, 1, 100000000L, &per_epoch, err);
        else if (!strcmp(a, "--val-every")) rc = cli_long(a, v, 0, 1000000000L, &c->val_every, err);
        else if (!strcmp(a, "--ckpt-every")) rc = cli_long(a, v, 0, 1000000000L, &c->ckpt_every, err);
        else if (!strcmp(a, "--log-every")) rc = cli_long(a, v, 1, 1000000000L, &c->log_every, err);
        else if (!strcmp(a, "--seed")) {            // < 2^63: the checkpoint's JSON keeps it exactly
            long s = 0;
            rc = cli_long(a, v, 0, 0x7fffffffffffffffL, &s, err);
            c->seed = (uint64_t)s;
        } else if (!strcmp(a, "--resume-file")) c->resume_file = v;
        else if (!strcmp(a, "--preprocessing")) c->prep_file = v;
        else if (!strcmp(a, "--patches")) c->patches_ep = v;
        else if (!strcmp(a, "--evaljobs")) c->evaljobs_ep = v;
        else if (!strcmp(a, "--metrics")) c->metrics_ep = v;
        else if (!strcmp(a, "--exporter")) c->exporter_ep = v;
        else if (!strcmp(a, "--curve-server")) c->curve_server = v;
        else if (!strcmp(a, "--authorized")) c->authorized = v;
        else if (!strcmp(a, "--curve-client")) c->curve_client = v;
        else if (!strcmp(a, "--server-key")) c->server_key = v;
        else if (!strcmp(a, "--run-id")) {
            if (!wire_token_ok(v)) return set_err(err, "--run-id: '%s' is not 1..63 of [A-Za-z0-9_.:-]", v);
            c->run_id = v;
        }
        else if (!strcmp(a, "--spool")) c->spool_dir = v;
        else if (!strcmp(a, "--ack-timeout")) rc = cli_double(a, v, 0.1, 86400, &c->ack_timeout_s, err);
        else if (!strcmp(a, "--exporter-resend")) rc = cli_double(a, v, 0.1, 86400, &c->exporter_resend_s, err);
        else if (!strcmp(a, "--final-ack-timeout")) rc = cli_double(a, v, 0, 86400, &c->final_ack_timeout_s, err);
        else if (!strcmp(a, "--final-eval-timeout")) rc = cli_double(a, v, 0, 86400, &c->final_eval_timeout_s, err);
        else if (!strcmp(a, "--final-eval-resend")) rc = cli_double(a, v, 0.5, 86400, &c->final_eval_resend_s, err);
        else if (!strcmp(a, "--resume-timeout")) rc = cli_double(a, v, 0.1, 86400, &c->resume_timeout_s, err);
        else if (!strcmp(a, "--batch-timeout")) rc = cli_double(a, v, 0, 86400, &c->batch_timeout_s, err);
        else rc = set_err(err, "unknown flag %s", a);
        if (rc) return -1;
    }
    if (model_cfg_check(&c->model, err)) return -1;
    if (c->describe) return 0;

    c->tc.adam.lr = (float)lr;
    c->tc.adam.weight_decay = (float)wd;
    if (epochs || per_epoch) {
        if (!epochs || !per_epoch) return set_err(err, "--epochs and --steps-per-epoch go together");
        if (steps_given) return set_err(err, "give --steps or --epochs/--steps-per-epoch, not both");
        c->steps = epochs * per_epoch;
        steps_given = 1;
    }
    if (c->max_minutes > 0 && !steps_given) c->steps = 1000000000L;    // the budget alone decides
    if (c->region_spec[0]) {
        if (loss_given && c->tc.loss != LOSS_DICE_SIGMOID)
            return set_err(err, "--regions needs --loss sigmoid-dice");
        c->tc.loss = LOSS_DICE_SIGMOID;
        c->model.classes = c->regions.R;    // one sigmoid output channel per region
    } else if (c->tc.loss == LOSS_DICE_SIGMOID) {
        return set_err(err, "--loss sigmoid-dice needs --regions");
    }
    // The SegResMamba authors' BraTS loss (brats_train.py: DiceLoss(smooth_nr=0, smooth_dr=1e-5,
    // squared_pred=True, sigmoid=True)); MONAI's DiceLoss defaults for the softmax losses.
    if (c->tc.loss == LOSS_DICE_SIGMOID) { c->tc.dice.squared_pred = 1; c->tc.dice.smooth_nr = 0; c->tc.dice.smooth_dr = 1e-5; }
    if (squared >= 0) c->tc.dice.squared_pred = squared;
    if (smooth[0] >= 0) { c->tc.dice.smooth_nr = smooth[0]; c->tc.dice.smooth_dr = smooth[1]; }
    c->tc.regions = NULL;                   // set by trainer_run to its own copy's regions
    if (c->model.classes < 2 && c->tc.loss != LOSS_DICE_SIGMOID)
        return set_err(err, "--classes: softmax training needs at least 2 classes");
    if (c->model.classes > LABEL_MAX_CLASS + 1)
        return set_err(err, "--classes: at most %d (labels are u8, %d marks ignored voxels)", LABEL_MAX_CLASS + 1, LABEL_IGNORE);
    if (!c->patches_ep) return set_err(err, "--patches ENDPOINT is required for training");
    if (c->resume && c->resume_file) return set_err(err, "give --resume or --resume-file, not both");
    if (c->resume && !c->exporter_ep) return set_err(err, "--resume asks the exporter: give --exporter");
    if (!!c->curve_server != !!c->authorized) return set_err(err, "--curve-server and --authorized go together");
    if (!!c->curve_client != !!c->server_key) return set_err(err, "--curve-client and --server-key go together");
    if (stage_key_files_check(c->curve_server, NULL, c->authorized, err) ||
        stage_key_files_check(c->curve_client, c->server_key, NULL, err))
        return -1;
    return 0;
}
