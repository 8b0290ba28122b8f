/*
dataset.h -- what a dataset folder holds: its cases, channels, labels and splits; loading a case.

Three layouts are discovered by dataset_open (anchors.md §B1):
  MSD        dataset.json with a "training" list of {"image", "label"} paths ("./imagesTr/x.nii.gz"),
             4D multi-channel images, "modality" {"0": "CT"}, labels int-string -> name; MONAI's
             datalists add a "validation" list (split "validation") and "testing"; an nnU-Net v1
             task's listed X.nii.gz stands for its X_0000.nii.gz, X_0001.nii.gz ... channel files.
  nnU-Net v2 dataset.json with "channel_names" and no "training" list; images {CASE}_{XXXX}<ending>
             (one file per channel) in imagesTr/ (and imagesTs/), labels {CASE}<ending> in labelsTr/,
             labels name -> int (or a list of more than one int: a region; [v] is v), splits_final.json folds.
  plain      imagesTr/ + labelsTr/ pairs and no dataset.json; labels undeclared.
A "split" key {"train": [ids], "validation": [...], "test": [...]} is honoured in any layout.
Files whose name starts with '.' (macOS "._x" resource forks) are never taken as cases.
Partners: dataset.c (discovery), dataset_folds.c (splits, folds), dataset_case.c (loading and
checks), dataset_report.c (the JSON report of srm-inspect --dataset), dataset_intensity.c (the
foreground intensity fingerprint).
*/
#ifndef SRM_DATASET_H
#define SRM_DATASET_H
#include <stdio.h>
#include <stdint.h>
#include "volume.h"

typedef enum { DATASET_MSD, DATASET_NNUNET, DATASET_PLAIN } dataset_layout_t;
// A channel's normalisation, named as nnU-Net's channel_names: "CT" (clip + scale, or clip +
// z-score), "noNorm" (none), "rescale_to_0_1" (min-max over the image), "rgb_to_0_1" (/ 255);
// any other name (MR, T1, FLAIR, "zscore", ...) is a z-score, MODALITY_MR.
typedef enum { MODALITY_MR = 0, MODALITY_CT = 1, MODALITY_NONORM = 2, MODALITY_RESCALE01 = 3,
               MODALITY_RGB01 = 4 } modality_t;
#define MODALITY_COUNT 5

// The modality of a channel name (nnU-Net's rule, names case-insensitive), and the name a
// modality is written with (preprocessing settings, reports: "MR" for the z-score).
modality_t modality_of_name(const char *name);
const char *modality_name(modality_t m);

typedef struct {
    char *id;           // case id: the file name without channel suffix and ending
    int n_images;       // image files: 1 (3D or 4D) for MSD/plain single files, C for nnU-Net
    char **images;      // full paths; may not exist (dataset_open reads no image, except the
                        // header of the plain layout's first one for its channel count)
    char *label;        // full path, or NULL (test cases)
    char split[16];     // "train", "validation", "test"
    int fold;           // MSD entry "fold" key, -1 when absent
} dataset_case_t;

#define DATASET_ID_MAX 127      // longest case id (WIRE_ID_LEN - 1: ids travel on the wire)

typedef struct {
    char *name;         // label name ("spleen")
    int n_values;       // 1 for a plain label, >1 (or a list in JSON) for an nnU-Net region
    int values[16];     // label values this entry covers
} dataset_label_t;

typedef struct {
    char *dir;
    dataset_layout_t layout;
    int n_cases;
    dataset_case_t *cases;
    int n_channels;              // declared channels (plain layout: inferred from file names)
    char **channel_names;        // [n_channels]
    modality_t *modality;        // [n_channels]; modality_of_name of the channel names
    int n_labels;                // declared labels, 0 = undeclared (plain layout)
    dataset_label_t *labels;     // [n_labels]
    int has_regions;             // some label is a region (list of values)
    int n_region_order;          // "regions_class_order": the label each region's output writes
    int region_order[16];        // (nnU-Net), in the labels' order; 0 when absent
    int num_classes;             // max declared label value + 1 ("ignore" aside); 0 when undeclared
    int ignore_label;            // the declared "ignore" value (loaded as LABEL_IGNORE), -1 when none
    int n_folds;                 // folds in splits_final.json, 0 when absent
    char ***fold_val;            // [n_folds][...] validation ids of each fold, NULL-terminated
    char ***fold_train;          // [n_folds][...] training ids of each fold, NULL-terminated
    int n_problems;              // problems seen during discovery (unknown ids in split lists...)
    char **problems;
} dataset_t;

// Discover the dataset in dir. Returns 0, or -1 with err ("<dir>/dataset.json: ...") when the
// folder or its JSON cannot be used at all. Problems with single entries are kept in
// ds->problems and do not fail the call. Free with dataset_free.
int dataset_open(const char *dir, dataset_t *ds, char *err);
void dataset_free(dataset_t *ds);

// The case id of an image or label path: its file name without the NIfTI ending (.nii.gz,
// .nii) and, with strip_channel, without a _DDDD channel suffix. malloc'd.
char *dataset_id_of_path(const char *path, int strip_channel);
// The label map l read from path as class bytes (*out, malloc'd) under the dataset's rules: one
// channel on the grid of the image named `image` (dim, affine); every voxel an integer (floats
// within 1e-4), a declared class (without declared labels any of 0..LABEL_MAX_CLASS) or the
// "ignore" value (-> LABEL_IGNORE). 0, or -1 with err naming the file and the first bad voxel.
int dataset_label_bytes(const dataset_t *ds, const char *path, const volume_t *l, const int dim[3],
                        const double affine[4][4], const char *image, uint8_t **out, char *err);
// nnU-Net region-based training declared in dataset.json (a label that is a list of values):
// every label but background and "ignore" is then a region (nnU-Net's rule), written into out as
// srm-trainer's --regions "NAME=V,V:OUT;..." -- names reduced to [A-Za-z0-9_-], OUT from
// "regions_class_order" (without it, or of another length, no ":OUT": the evaluator's
// smallest-value rule). Returns the number of regions, 0 without regions (out ""), -1 when it
// does not fit in cap.
int dataset_regions_spec(const dataset_t *ds, char *out, size_t cap);
// Whether a label file may hold value v: one of the declared labels' values (the "ignore" one
// included), or without declared labels any class value 0..LABEL_MAX_CLASS.
int dataset_label_declared(const dataset_t *ds, int v);
// The channel number of a path whose file name ends in <id>_DDDD.nii[.gz] (id not empty), and
// in *stem_len the length of the path before "_DDDD"; -1 (stem_len untouched) without one.
int dataset_channel_of_path(const char *path, size_t *stem_len);

// Index of the case with this id, or -1.
int dataset_find(const dataset_t *ds, const char *id);

// Cases for a selection, in dataset order: a split name ("train", "validation", "test", "all"),
// or "foldK/train" / "foldK/val" (K a fold number of dataset_fold, or "all"). *idx is malloc'd (free it). Returns 0 or -1 + err.
int dataset_select(const dataset_t *ds, const char *sel, int **idx, int *n, char *err);

// Fold k: training and validation case indices. Sources in order of preference:
// splits_final.json (fold k = entry k), MSD "fold" keys (val = cases with fold == k), else a
// generated 5-fold split of the labelled non-test cases that is nnU-Net v2's, case for case
// (sklearn's KFold(5, shuffle=True, random_state=12345) over the sorted ids; with 2..4 such
// cases, one fold a case, where sklearn refuses). A k beyond those folds (not with fold keys) is
// nnU-Net's seeded random 80:20 split (RandomState(12345 + k) over the sorted ids); k =
// DATASET_FOLD_ALL is nnU-Net's fold "all": every labelled non-test case trains and validates.
// Returns 0 or -1 + err (unknown id, a fold without training or validation cases).
#define DATASET_FOLD_ALL (-1)
#define DATASET_FOLD_MAX 999                // the largest fold number the stages take
int dataset_fold(const dataset_t *ds, int k, int **train, int *n_train, int **val, int *n_val,
                 char *err);
// Take the folds of the splits_final.json at path instead of the dataset's own (a run keeps the
// folds it began with: srm-loader --splits). 0, or -1 + err (unreadable, not a list of folds).
int dataset_read_splits_file(dataset_t *ds, const char *path, char *err);
// Where dataset_fold's folds come from ("splits_final.json", "fold keys" of an MSD dataset.json,
// or "generated") and how many there are (splits_final.json's entries; the largest fold key + 1;
// 5, or the labelled non-test cases when fewer, 0 below 2).
const char *dataset_fold_source(const dataset_t *ds, int *n_folds);
// 1 when dataset_fold's fold k is beyond the split's folds: nnU-Net's seeded random 80:20 split.
int dataset_fold_is_random(const dataset_t *ds, int k);

// Print a JSON object describing dir: layout, channels, labels, each case with its split,
// dims and problems (missing files, unreadable images, shape/geometry mismatch, label values
// outside the declared classes, NaN/Inf, empty foreground), and every dataset-level problem.
// Reads every case. Returns 0 when the report was written (even with problems), -1 + err when
// the dataset cannot be opened at all.
int dataset_print_report(const char *dir, FILE *out, char *err);

// A channel's foreground intensities over the labelled non-test cases (dataset_intensity.c):
// nnU-Net's intensity fingerprint, the statistics of its CT normalisation.
typedef struct {
    int channel;
    int cases;                  // cases that gave samples
    int empty;                  // labelled cases without foreground (no samples)
    int skipped;                // cases that could not be loaded (the loader skips them too)
    char first_problem[512];    // the first of those, as dataset_load_case says it
    long long samples;
    double mean, std, min, max, p00_5, p99_5;
} intensity_fingerprint_t;

// Fill fps[0 .. n_channels) (reads every labelled non-test case once). 0, or -1 + err when no
// case has a foreground voxel.
int dataset_intensity_fingerprints(const dataset_t *ds, intensity_fingerprint_t *fps, char *err);

// ---- one case in memory -------------------------------------------------------------------

#define CASE_MAX_CHANNELS 8

typedef struct {
    char id[128];
    volume_t image;     // (C, D, H, W) float, all channels stacked; affine of the first channel
    uint8_t *label;     // (D, H, W) or NULL; same grid as the image
    modality_t modality[CASE_MAX_CHANNELS];
} case_t;

// Largest allowed difference between image and label affines: |a - b| <= ATOL + RTOL*|a|; an
// origin off by less than half the finest voxel is taken too, with a warning (nnU-Net trains on).
#define CASE_AFFINE_ATOL 1e-3
#define CASE_AFFINE_RTOL 1e-4

// Read the image files paths[0..n) (one or more channels each, one grid, finite values) into
// c->image, their channels stacked in order. 0, or -1 with err naming the file (c->image empty).
int case_read_images(case_t *c, const char *const *paths, int n, char *err);

// Load case i: all channels stacked, label checked (integer within 1e-4, inside the declared
// values or [0, 255] when undeclared) and converted to uint8. Returns 0, or -1 with a one-line
// err naming the file and problem: shape or geometry mismatch, label outside the classes,
// non-integer label, NaN/Inf, channel count different from the declared one.
int dataset_load_case(const dataset_t *ds, int i, case_t *c, char *err);
void case_free(case_t *c);

#endif
