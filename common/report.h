/*
report.h -- what srm-report makes of a finished run: the evaluator's Dice against wall-clock
time, the time at which a chosen Dice first passes thresholds, the final per-case table, and
overlay pictures of predictions over their source scans.

Partners: report_metrics.c (RUN/metrics.jsonl -> report_run_t), report_tables.c (markdown),
report_curve.c (dice_vs_time.png), report_overlay.c (prediction over image PNGs),
report_raster.c (pixels: lines, fills, blits shared by the two pictures).
Times are seconds since the run's start t0 (report_run_t.t0, see report_read_metrics).
*/
#ifndef SRM_REPORT_H
#define SRM_REPORT_H
#include <stdint.h>
#include <stdio.h>
#include "plot.h"

#define REPORT_MAX_FG   32          // foreground classes or regions per evaluation
#define REPORT_NAME_LEN 48

typedef struct {
    double t;                       // wall_time - t0, seconds
    uint64_t step;
    double key;                     // the --key value (NaN when missing/null)
    double mean;                    // mean_dice (NaN when null)
    double fg[REPORT_MAX_FG];       // dice_mean_per_class (NaN: no case defines it)
} report_eval_t;

typedef struct {
    int nfg;                                    // foreground entries of the evaluations
    char fg_names[REPORT_MAX_FG][REPORT_NAME_LEN];   // "WT", "TC", "ET" or "1", "2", ...
    char key[REPORT_NAME_LEN];                  // metric followed by the time-to-Dice table
    int n_eval;
    report_eval_t *ev;                          // evaluator lines, ordered by time
    int n_train;
    double *train_t;                            // (n_train) trainer lines: time since t0
    uint64_t *train_step;                       // (n_train)
    double t0;                                  // unix seconds of the start
    char t0_source[256];                        // where t0 came from (for the report)
    // The final evaluation: the evaluator line marked final with the highest step (else the
    // last one): per-case Dice [ncases][nfg] (NaN = null: class absent from reference and
    // prediction), HD95 likewise, and the case ids.
    uint64_t final_step;
    int final_marked;                           // 1: that line is marked final (predictions follow it)
    double final_t;
    int final_ncases;
    char (*final_ids)[128];
    double *final_dice, *final_hd95;
    double final_class_mean[REPORT_MAX_FG];
    int final_undefined[REPORT_MAX_FG];
} report_run_t;

// Read RUN/metrics.jsonl. key: the metric for the time-to-Dice table (NULL: "dice_WT" when the
// evaluations have it, else "mean_dice"). t0: the run's start in unix seconds, or NaN to take
// it from started_at_path (a file holding one number, written by pipelines/brats.sh and
// btcv.sh before train.sh starts) when that exists, else the earliest wall_time in the file
// (which is after loading: the first trainer report). Returns 0, or -1 with err naming the
// file and line for an unreadable file, a malformed line or no evaluator line at all.
int report_read_metrics(const char *path, const char *key, double t0, const char *started_at_path,
                        report_run_t *r, char *err);
void report_run_free(report_run_t *r);

// Time (seconds since t0) of the first evaluation whose key value is >= thr, or NaN when none
// is; *step receives its step (untouched when none).
double report_time_to(const report_run_t *r, double thr, uint64_t *step);

// Seconds since t0 of the trainer's last report at or before step (NaN when none).
double report_train_time_at(const report_run_t *r, uint64_t step);

// Markdown on out: the time-to-Dice table for thresholds thr[0..nthr), then the final
// evaluation's per-case Dice table (names: optional display names of the foreground entries,
// NULL entries fall back to fg_names).
void report_print_tables(FILE *out, const report_run_t *r, const double *thr, int nthr,
                         const char *const *names);

// dice_vs_time.png: mean Dice and each foreground entry against seconds since t0; thresholds
// thr[0..nthr) as dotted grey lines. 0 or -1 + err.
int report_curve_png(const char *path, const report_run_t *r, const double *thr, int nthr,
                     const char *const *names, char *err);

// One overlay picture: axial, coronal and sagittal slices of image channel `channel` through
// the reference label's centre of mass (the prediction's when the reference is NULL or empty),
// grey with window [lo, hi] (lo >= hi: the 0.5..99.5 percentiles of the channel), reference
// label as outlines, prediction filled translucent, one colour per label value.
// The prediction must be on the image's grid: same dims and affine (tolerance of the dataset
// check, dataset.h), else -1 with err naming both files. The reference likewise.
typedef struct {
    const char *image;              // NIfTI, 3D or 4D (channels on the 4th axis)
    int channel;                    // channel of `image` to show
    const char *reference;          // label map or NULL
    const char *prediction;         // label map (RUN/predictions/<case>.nii.gz)
    double lo, hi;                  // grey window; lo >= hi: automatic
    const char *title;              // printed above the panels (NULL: none)
} report_overlay_t;
int report_overlay_png(const char *path, const report_overlay_t *o, char *err);

// ---- report_raster.c: drawing on plot_image_t (clipped to the image) -----------------------
void raster_fill(plot_image_t *img, int x0, int y0, int x1, int y1, const uint8_t rgb[3]);
void raster_line(plot_image_t *img, int x0, int y0, int x1, int y1, const uint8_t rgb[3], int dotted);
// Blend rgb over pixel (x, y) with opacity alpha in [0, 1].
void raster_blend(plot_image_t *img, int x, int y, const uint8_t rgb[3], double alpha);
// A new white image of w x h; 0 or -1 + err for a size outside 1..16384.
int raster_new(plot_image_t *img, int w, int h, char *err);
// Colour for label value / series index k (a fixed palette of distinct colours, cycled).
const uint8_t *raster_colour(int k);

#endif
