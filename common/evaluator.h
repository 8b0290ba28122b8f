/*
evaluator.h -- srm-evaluator's pieces. Two modes:
  file mode     --model FILE... (native checkpoint or safetensors, also weights trained elsewhere
                with the names of params_M_btcv.txt; several: an ensemble whose logits are
                averaged, as nnU-Net's folds) on --images FILE... [--labels FILE...] or
                --dataset DIR --split S; --out DIR gets one NIfTI per image on its source grid
                (uint8 label map, or float32 logits with --logits); Dice/HD95 lines on stdout.
  service mode  --jobs EP: PULL eval jobs (`checkpoint` messages of kind "weights"/"final" from
                the trainer), fetch the validation cases from the loader (--cases EP, DEALER),
                score them and send a `metrics` message to the exporter (--exporter EP, DEALER)
                and the trainer (--metrics EP, PUSH, never blocking); after a final job also the
                predictions (`volume` kind "prediction") to the exporter.
Both run sliding-window inference (sliding_window.h) on the preprocessed grid, undo the
preprocessing (preprocess.h) and score on the source grid (metrics.h, system.md's rules).
Files: evaluator_cfg.c (flags), evaluator_model.c (weights, CPU/GPU network), evaluator_case.c
(segment + score one case), evaluator_report.c (lines, metrics message), evaluator_files.c,
evaluator_service.c, evaluator_job.c (decoding eval jobs and loader replies; evaluator_internal.h).
*/
#ifndef SRM_EVALUATOR_H
#define SRM_EVALUATOR_H
#include <stdint.h>
#include "check.h"
#include "metrics.h"
#include "model.h"
#include "preprocess.h"
#include "sliding_window.h"
#include "stage.h"
#include "wire_msgs.h"

#define EVAL_MAX_FILES   4096
#define EVAL_MAX_MODELS  16
#define EVAL_MAX_REGIONS 8
#define EVAL_MAX_FG      (METRICS_MAX_CLASSES - 1)

typedef enum { EVAL_DEVICE_AUTO = 0, EVAL_DEVICE_CPU, EVAL_DEVICE_GPU } eval_device_t;
typedef enum { EVAL_PRED_FINAL = 0, EVAL_PRED_EVERY, EVAL_PRED_NEVER } eval_pred_when_t;

// How the network's outputs become labels: softmax classes, or sigmoid regions (BraTS).
typedef struct {
    int nregions;                               // 0: softmax over the model's classes
    metrics_region_t regions[EVAL_MAX_REGIONS]; // outer to inner
    char names[EVAL_MAX_REGIONS][WIRE_NAME_LEN];
} eval_labels_t;

typedef struct {
    // file mode
    const char *model_path;         // models[0]
    const char *models[EVAL_MAX_MODELS];        // --model: one, or an ensemble (logits averaged)
    int n_models;
    const char *images[EVAL_MAX_FILES], *labels[EVAL_MAX_FILES];
    int n_images, n_labels;
    int n_cases;                    // the images as cases: case k is images[case_first[k]] and the
    int case_first[EVAL_MAX_FILES], case_nch[EVAL_MAX_FILES];   // case_nch[k] - 1 after it (channels;
                                    // > 1: nnU-Net channel files, case id CASE of CASE_0000)
    const char *dataset;            // file mode: cases to segment; service mode: source labels
    char split[64];                 // dataset_select selection (validation)
    const char *out_dir;
    int logits;                     // write float logits (K on the 4th axis) instead of labels
    int keep_done;                  // --continue: a case whose OUT/<case>.nii.gz exists is not
                                    // segmented again (scored from that file when it has a reference)
    // service mode
    const char *jobs_ep, *cases_ep, *exporter_ep, *metrics_ep;
    const char *curve_client, *server_key;      // CURVE: own key file, server's public key file
    eval_pred_when_t predictions;
    long max_jobs;                  // stop after this many jobs (0: run until stopped)
    int exit_after_final;           // stop after a final job (and its predictions)
    int case_timeout_s;             // wait for one loader reply at most this long
    double exporter_resend_s;       // resend metrics / a prediction the exporter has not acked
    // model (used when the weights carry no configuration)
    model_cfg_t model;
    eval_device_t device;
    // inference and scoring
    sw_cfg_t sw;
    int window_given;               // --window given: it wins over a job's patch size
    eval_labels_t lab;
    int hd95;                       // 1: compute HD95 (default)
    int deterministic;              // --deterministic: GPU inference bit-identical run after run
    uint8_t keep_largest[256];      // --keep-largest: classes whose largest component alone stays
    int keep_given;
    // preprocessing (file mode): the model's settings when it carries them, else the defaults;
    // the loader's flags, when given, win over either
    preprocess_cfg_t prep;
    int force_modality;             // --norm: every channel's modality_t; -1: not given
    int spacing_given;              // --spacing given
    int n_modality;                 // > 0: each channel's modality (the model's settings), which
    modality_t modality[CASE_MAX_CHANNELS];     // replaces the dataset's (MR for bare images)
} eval_cfg_t;

// srm-evaluator's exit status for a service (--jobs) whose arguments are bad: sysexits'
// EX_CONFIG, which pipelines/lib.sh does not restart.
#define EVAL_EXIT_CONFIG 78

// Parse argv. 0, 1 for --help (usage printed), -1 with err.
int eval_parse(eval_cfg_t *c, int argc, char **argv, char *err);
// --images as cases for a model of C channels (n_cases, case_first, case_nch;
// images reordered): one file per case, or nnU-Net's one file per channel (CASE_0000 ..
// CASE_<C-1>) grouped into case CASE; --labels must give one file per case. 0, or -1 with err
// naming the files.
int eval_group_channels(eval_cfg_t *c, int C, char *err);
// Case k's id: CASE for grouped channel files and a lone CASE_0000, else the file name without
// .nii / .nii.gz. Returns its length (>= cap: cut short in id).
int eval_case_id(const eval_cfg_t *c, int k, char *id, size_t cap);
void eval_usage(void *file);
// "WT=1,2,3,4;TC=1,3,4;ET=4" (out label: smallest value of a region not in a later one) or
// "1,2,4:2;1,4:1;4:4" (metrics_region_parse pieces). 0 or -1 + err.
int eval_regions_parse(eval_labels_t *l, const char *text, char *err);

// ---- the network --------------------------------------------------------------------------
typedef struct eval_model eval_model_t;

// Weights from a file or from bytes (a job's blob): native checkpoint ("SRMCKPT") or
// safetensors, told apart by content. The configuration comes from the file (checkpoint header,
// safetensors __metadata__), else from fallback. NULL with err naming the source and problem.
eval_model_t *eval_model_load_file(const char *path, const model_cfg_t *fallback, char *err);
eval_model_t *eval_model_load_bytes(const void *data, size_t n, const char *what,
                                    const model_cfg_t *fallback, char *err);
void eval_model_free(eval_model_t **em);
const model_cfg_t *eval_model_cfg(const eval_model_t *em);
// The preprocessing settings the weights carry (preprocess_settings.c JSON), "" when none.
const char *eval_model_prep(const eval_model_t *em);
// Choose the device and size the buffers for windows of sw->roi, sw->batch at a time.
// 0 or -1 + err (no GPU when asked for one, window not a multiple of 16).
int eval_model_prepare(eval_model_t *em, const sw_cfg_t *sw, eval_device_t dev, char *err);
const char *eval_model_device(const eval_model_t *em);     // "cpu" or "gpu"
// Before eval_model_prepare: on the GPU, only deterministic engines chosen the same way in every
// process (no autotuning), so that a case predicts bit-identically run after run.
void eval_model_deterministic(eval_model_t *em);
// Take src's weights into the prepared dst when both have the same configuration (a new job
// for the same model keeps dst's device buffers). 1 taken, 0 configurations differ.
int eval_model_adopt(eval_model_t *dst, const eval_model_t *src);
// The sliding-window callback (ctx = eval_model_t *).
int eval_model_net(void *ctx, float *y, const float *x, int n, char *err);
// From now on a window batch asked for after st was told to stop fails ("stopping"), so that
// SIGTERM ends a case in a window's time, not a whole case's (service mode).
void eval_model_stop_on(eval_model_t *em, const stage_t *st);

// ---- one case -------------------------------------------------------------------------------
typedef struct {
    char id[WIRE_ID_LEN];
    int ok;
    char error[ERR_LEN];
    int nfg;                        // foreground classes (K - 1) or regions scored
    double dice[EVAL_MAX_FG];       // NaN: undefined (absent from reference and prediction)
    double hd95[EVAL_MAX_FG];       // mm; NaN: undefined (an empty mask) or not computed
    double mean_dice;               // over the defined entries; NaN when none
    double seconds;
} eval_result_t;

// Segment the preprocessed image x (C, rec->out_dim) with the n models of ems (n > 1: their
// sliding-window logits averaged, as nnU-Net ensembles folds) and bring the result to the
// source grid: labels (rec->src_dim) always; logits (K, rec->src_dim) when not NULL. The models
// share their classes and input channels. 0 or -1 + err.
// keep (NULL: none) names the label values whose largest 26-connected component alone stays in
// the labels (components.h); logits are left as the network gave them.
int eval_segment(eval_model_t *const *ems, int n, const sw_cfg_t *sw, const eval_labels_t *lab, const uint8_t *keep,
                 const float *x, const preprocess_record_t *rec, uint8_t *labels, float *logits, char *err);
// The first voxel of the reference ref (n voxels) that scoring would silently drop: a label
// >= K for softmax classes (with regions, a label in no region is background for each, as in
// training: none); LABEL_IGNORE when ignore_ok is 0 (a label file's own 255 -- a 0/255 mask -- is no ignore label; a dataset's
// declared one was mapped to it on load). -1 when none.
int64_t eval_ref_unscorable(const uint8_t *ref, size_t n, int K, const eval_labels_t *lab, int ignore_ok);
// Score pred against ref (both on one grid dim with voxel size spacing, mm) into r; voxels the
// reference labels LABEL_IGNORE are left out of every metric.
void eval_score(eval_result_t *r, const uint8_t *pred, const uint8_t *ref, const int dim[3],
                const double spacing[3], int K, const eval_labels_t *lab, int hd95);
// Voxel sizes (column norms) of an affine.
void eval_affine_spacing(const double a[4][4], double spacing[3]);

// ---- reporting ---------------------------------------------------------------------------------
// Name of foreground entry j: the region's name, or the class number ("1", "2", ...).
void eval_fg_name(const eval_labels_t *lab, int j, char *out, size_t cap);
// "case ID: dice 1=0.9123 2=null ... mean=0.8 hd95 1=2.1 ..." per case (the hd95 part when
// hd95 was computed, null where undefined), and a "mean (N of M cases):" line.
void eval_print_case(const eval_result_t *r, const eval_labels_t *lab, int hd95);
void eval_print_summary(const eval_result_t *rs, int n, const eval_labels_t *lab, int hd95);
// The `metrics` message of one evaluation (source "evaluator"): mean_dice, dice_<name>, mean_hd95,
// cases_ok, cases_failed values; per-case `dice` and `hd95` [cases, fg] f32 arrays; a JSON
// document with the failures and settings. o must be freed by the caller. 0 or -1 + err.
int eval_metrics_msg(wire_out_t *o, uint64_t step, const eval_result_t *rs, int n,
                     const eval_labels_t *lab, const char *extra_json, char *err);

// ---- modes --------------------------------------------------------------------------------------
// File mode: the number of cases that failed (0: all done), or -1 + err when nothing could run
// (bad model, unreadable dataset, every case failed).
int eval_run_files(const eval_cfg_t *c, char *err);
int eval_run_service(const eval_cfg_t *c, stage_t *st, char *err);

#endif
