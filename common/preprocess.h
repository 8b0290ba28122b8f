/*
preprocess.h -- the once-per-case preprocessing of a loaded case, and its inverse.

Forward (preprocess_case), in nnU-Net's order:
  1. reorient to RAS (orient.h; voxels permuted/flipped, nothing interpolated)
  2. foreground mask (system.md "Foreground": label-independent body; MR: voxel != the channel's
     minimum in any channel; CT: > threshold, default -500 HU; an option overrides), its enclosed
     background filled in as nnU-Net's create_nonzero_mask does
  3. crop image and label to the mask's bounding box (+ margin), at source resolution
  4. intensity normalisation per channel (CT: clip to a window and scale, or z-score with given
     mean/std; MR: z-score over the foreground or the whole volume)
  5. resampling to the target spacing (trilinear images; labels each linear as a 0/1 map, kept
     where >= 0.5, as nnU-Net's resize_segmentation; nearest along a thick-slice axis, as
     nnU-Net's separate z: preprocess_separate_axis)
The inverse (preprocess_invert_*) runs 5, 3 and 1 backwards so a prediction on the preprocessed
grid lands on the source image's grid. preprocess_record_t holds everything it needs.

Grid convention of the resampler: "extent aligned" (nnU-Net, skimage resize, PyTorch
align_corners=False). An axis of n voxels at spacing s becomes m = round(n*s/t) voxels for target
spacing t; the first and last voxel edges coincide, so out voxel j samples source coordinate
x = (j + 0.5)*n/m - 0.5 (clamped to [0, n-1] at the borders: edge replication). The output
affine is exactly A_src @ [diag(n/m) | 0.5*n/m - 0.5], so the true output spacing is s*n/m
(within half a voxel over the extent of t) and every voxel keeps an exact world position.
Files: preprocess.c (pipeline, inverse, settings hash), preprocess_resample.c,
preprocess_normalize.c, preprocess_foreground.c.
*/
#ifndef SRM_PREPROCESS_H
#define SRM_PREPROCESS_H
#include <stdint.h>
#include "dataset.h"
#include "orient.h"

typedef enum { FG_AUTO = 0, FG_MIN, FG_THRESHOLD, FG_NONE } fg_mode_t;
typedef enum { CT_NORM_WINDOW = 0, CT_NORM_ZSCORE, CT_NORM_NONE } ct_norm_t;
// The clip window of a z-score without one (--norm ct-z:MEAN,STD): wider than any stored value
// (HU fit in int16), finite so that the settings' JSON keeps it.
#define CT_NO_CLIP 1e9
typedef enum { MR_NORM_ZSCORE_FG = 0, MR_NORM_ZSCORE_ALL, MR_NORM_NONE } mr_norm_t;

typedef struct {
    int reorient;               // 1: reorient to RAS (default)
    double target_spacing[3];   // mm along i, j, k (after reorientation); <= 0: keep that axis
    fg_mode_t fg_mode;          // FG_AUTO: MR -> FG_MIN, CT -> FG_THRESHOLD
    double fg_threshold;        // FG_THRESHOLD (and CT under FG_AUTO): voxel > threshold (-500)
    int crop;                   // 1: crop to the foreground bounding box (default)
    int margin[3];              // voxels added on each side of the box (source resolution)
    ct_norm_t ct_norm;
    double ct_lo, ct_hi;        // clip window (MONAI a_min/a_max; default -175, 250 HU)
    double ct_b_min, ct_b_max;  // CT_NORM_WINDOW output range (default 0, 1)
    double ct_mean, ct_std;     // CT_NORM_ZSCORE statistics (after clipping to ct_lo, ct_hi)
    mr_norm_t mr_norm;
    int allow_f16;              // case_cache: store non-integer images as float16 (default 1)
    int blank_ok;               // 0: a blank image (no foreground) or a constant MR channel is an
                                // error (training skips the case); 1 (segmenting a scan): not
                                // cropped / normalised to 0, as MONAI's NormalizeIntensity, warned
} preprocess_cfg_t;

// Everything needed to map the preprocessed grid back to the source grid.
typedef struct {
    int src_dim[3];
    double src_affine[4][4];
    int reoriented;
    ornt_t src_ornt;            // source orientation (orient_to_ras's `from`)
    int ras_dim[3];             // after reorientation
    double ras_affine[4][4];
    int crop_lo[3], crop_dim[3];// box in the RAS grid
    int out_dim[3];             // preprocessed grid
    double out_affine[4][4];
    double out_spacing[3];
} preprocess_record_t;

void preprocess_cfg_default(preprocess_cfg_t *cfg);
// 64-bit hash of every setting (a canonical text form; stable across builds and machines).
uint64_t preprocess_cfg_hash(const preprocess_cfg_t *cfg);

// The settings as JSON with each channel's modality (preprocess_settings.c: what travels with a
// model's weights). Returns a malloc'd string.
char *preprocess_settings_json(const preprocess_cfg_t *cfg, const modality_t *mod, int C);
// Parse that text into cfg (allow_f16 at its default) and mod[0..*C) (mod holds
// CASE_MAX_CHANNELS). 0, or -1 with err naming the field.
int preprocess_settings_parse(const char *text, preprocess_cfg_t *cfg, modality_t *mod, int *C, char *err);

// nnU-Net's target spacing for ds (preprocess_plan.c): medians over the labelled non-test cases,
// the 10th percentile on a thick-slice axis. cfg: its reorientation setting.
typedef struct {
    int cases, skipped;             // cases measured; cases that could not be loaded
    char first_problem[512];
    double median_spacing[3];       // mm along i, j, k after reorientation
    double median_shape[3];         // voxels after nnU-Net's crop to the non-zero voxels
    double target[3];
    int aniso_axis;                 // the thick-slice axis given the 10th percentile, or -1
} spacing_plan_t;
int preprocess_plan_spacing(const dataset_t *ds, const preprocess_cfg_t *cfg, spacing_plan_t *p, char *err);

// Run all steps on c in place (c->image, c->label replaced). rec may be NULL. Returns 0, or -1
// with err "<case id>: <problem>" (degenerate affine, empty foreground, zero std...).
int preprocess_case(case_t *c, const preprocess_cfg_t *cfg, preprocess_record_t *rec, char *err);

// ---- the steps -------------------------------------------------------------------------------

// Step 1 on image and label (label may be NULL). o receives the source orientation.
int preprocess_reorient(volume_t *img, uint8_t *label, ornt_t *o, char *err);

// Step 2. mask: (D, H, W) out, 1 = foreground. mod: [img->C]. Returns the foreground count.
size_t preprocess_foreground_mask(uint8_t *mask, const volume_t *img, const modality_t *mod,
                                  const preprocess_cfg_t *cfg);
// Background (0) not 6-connected to the border becomes 1 (scipy binary_fill_holes).
void preprocess_fill_holes(uint8_t *mask, const int dim[3]);
// Bounding box [lo, lo + size) of mask grown by margin and clamped to dim. Returns -1 if empty.
int preprocess_foreground_bbox(const uint8_t *mask, const int dim[3], const int margin[3],
                               int lo[3], int size[3]);
// Step 3: crop img (all channels), label and mask (each may be NULL) to the box; affine updated.
void preprocess_crop(volume_t *img, uint8_t **label, uint8_t **mask, const int lo[3], const int size[3]);

// Step 4 on channel ch of img. mask: (D, H, W) or NULL (= whole volume). Returns 0 or -1 + err
// (zero std for a z-score; the MR z-score with constant_ok sets such a channel to 0 and returns
// 1). MR z-score over a mask sets voxels outside it to 0 (nnU-Net and MONAI nonzero=True leave
// them at 0, the new mean).
int preprocess_normalize_ct(volume_t *img, int ch, const preprocess_cfg_t *cfg, char *err);
int preprocess_normalize_mr(volume_t *img, int ch, const uint8_t *mask, mr_norm_t mode, int constant_ok, char *err);
// nnU-Net's other schemes on channel ch: MODALITY_NONORM leaves it, MODALITY_RESCALE01 maps its
// [min, max] to [0, 1] (a constant channel to 0), MODALITY_RGB01 divides by 255 (values must lie
// in [0, 255]). 0 or -1 + err.
int preprocess_normalize_range(volume_t *img, int ch, modality_t mod, char *err);

// Step 5. Output extent for n voxels at spacing s and target t (t <= 0: n).
int preprocess_out_extent(int n, double s, double t);
// Resample x (C, in_dim) to y (C, out_dim): trilinear (extent aligned, see above); along
// nearest_axis (-1: none) nearest neighbour instead.
void preprocess_resample_linear(float *y, const int out_dim[3], const float *x, int C, const int in_dim[3],
                                int nearest_axis);
// A label map (D, H, W) with the same grid convention, each label interpolated linearly as a 0/1
// map and kept where it reaches 0.5, the highest such label winning (nnU-Net's
// resize_segmentation); 0 where none does.
void preprocess_resample_labels(uint8_t *y, const int out_dim[3], const uint8_t *x, const int in_dim[3],
                                int nearest_axis);
// nnU-Net's separate z (get_do_separate_z): the axis to resample by nearest neighbour between
// grids of spacings from and to -- the single coarsest axis of `from` when its largest spacing
// exceeds PREPROCESS_ANISO times its smallest, else of `to` on the same terms -- or -1. Slices
// that far apart are not blended (nnU-Net: order 0 along it, in-plane interpolation).
#define PREPROCESS_ANISO 3.0
int preprocess_separate_axis(const double from[3], const double to[3]);
// affine of the resampled grid (exact, see above).
void preprocess_resampled_affine(double out[4][4], const double in[4][4], const int in_dim[3],
                                 const int out_dim[3]);

// ---- the inverse -------------------------------------------------------------------------------

// pred: (out_dim) labels on the preprocessed grid -> dst: (src_dim) on the source grid
// (outside the crop box: 0). Returns 0 or -1 + err.
int preprocess_invert_labels(uint8_t *dst, const uint8_t *pred, const preprocess_record_t *rec, char *err);
// pred: (C, out_dim) float maps -> dst: (C, src_dim), trilinear; outside the crop box channel c
// is fill[c] (fill NULL: 0). Returns 0 or -1 + err.
int preprocess_invert_float(float *dst, const float *pred, int C, const float *fill,
                            const preprocess_record_t *rec, char *err);

#endif
