/*
augment.h -- training-patch augmentation of srm-augmenter: label-balanced crops, flips, 90-degree
rotations, MONAI intensity scale/shift, and the nnU-Net set (rotation + scaling in one
resampling pass, Gaussian noise, blur, brightness, contrast, low resolution, gamma).

One patch = augment_sample(volume, seed, sample index): every random number comes from
rng_derive(seed, volume key, sample index), so a patch is reproducible from those three alone.
Geometry: output voxel p (0..P-1 per axis) reads source voxel s = bc + A (p - pc) with
pc = (P-1)/2 and bc = origin + (P-1)/2 the box centre in the volume; A = R S Q is rotation x
scaling (rigid in mm: conjugated by the voxel spacing) x signed permutation (flips and rot90). When A is a signed permutation the patch is an
exact gather (rows copied, flips as index arithmetic, intensity fused); otherwise one trilinear
(image) / nearest (labels) resampling pass. Voxels outside the volume get the pad value
(cfg: 0 by default, as nnU-Net and MONAI pad: the background after the default normalisations --
the foreground MR z-score sets the non-foreground to 0, the CT window maps air to b_min = 0 --
but not after mr-all or ct-z, whose background is negative: --pad min there; or each channel's
minimum) and label 0. Files: augment_cfg.c (options), augment_volume.c (received volume, fg/bg indices),
augment_crop.c (centres, origins, gather), augment_resample.c, augment_intensity.c,
augment_filter.c (blur, low resolution), augment_sample.c (the per-sample pipeline).
*/
#ifndef SRM_AUGMENT_H
#define SRM_AUGMENT_H
#include <stddef.h>
#include <stdint.h>
#include "rng.h"
#include "wire.h"

#define AUG_MAX_CHANNELS 64

typedef struct {
    int patch[3];                   // D, H, W of a patch
    double pos_ratio;               // share of crops centred on label > 0 (MONAI pos/(pos+neg))
    int class_balanced;             // 1: a positive centre's class first, uniformly among those present
                                    // (nnU-Net; MONAI RandCropByLabelClasses), then a voxel of it
    double p_flip[3];               // per axis (MONAI RandFlip, nnU-Net mirroring)
    double p_rot90;                 // k*90 degrees, k in 1..3, in a plane of equal patch sizes
    double p_scale, scale_range;    // MONAI RandScaleIntensity: x * (1 + f), f ~ U(-r, r)
    double p_shift, shift_range;    // MONAI RandShiftIntensity: x + o, o ~ U(-r, r)
    // nnU-Net set (nnUNetTrainer.get_training_transforms; probabilities 0 unless --nnunet)
    double p_rotation, rotation_deg;    // three angles, each ~ U(-deg, deg); rigid in mm
    double rotation_deg_2d;             // the in-plane angle's range in dummy 2D (below): 180, as nnU-Net
    double p_scaling, scaling[2];       // one factor ~ U(scaling) for all axes (in-plane: see below),
                                        // batchgeneratorsv2's draw; < 1 zooms in
    double p_noise, noise[2];           // sigma ~ U(noise) (batchgenerators: "variance" used as sd)
    double p_blur, blur_sigma[2], blur_p_channel;   // sigma per channel and axis
    double p_brightness, brightness[2]; // multiplier per channel
    double p_contrast, contrast[2];     // per channel, range preserved
    double p_lowres, lowres[2], lowres_p_channel;   // zoom per channel, same on all axes (in dummy
                                                    // 2D not the coarse one)
    double p_gamma_inv, p_gamma, gamma[2];          // stats retained; _inv: on the negated image
    int pad_min;                    // 1: pad each channel with its minimum; 0: with pad_value
    float pad_value;
} augment_cfg_t;

// A received volume, expanded for cropping. Indices are computed once here, not per crop.
typedef struct {
    char case_id[128];
    int64_t epoch;                  // loader epoch (-1: not given)
    uint64_t key;                   // rng stream of this copy: hash of (case id, epoch)
    int C, dim[3];
    double spacing[3];              // mm along D, H, W: rotations are rigid in mm (1, 1, 1 after load)
    float *image;                   // (C, D, H, W)
    uint8_t *labels;                // (D, H, W)
    uint32_t *fg, *bg;              // linear voxel indices with label > 0 / label == 0
    size_t n_fg, n_bg;
    uint32_t cls_start[257];        // fg is grouped by label: value c at fg[cls_start[c] .. cls_start[c + 1])
    uint8_t cls_present[255];       // the label values > 0 present, ascending
    int n_cls;
    float pad[AUG_MAX_CHANNELS];    // per-channel pad value
    uint64_t next_sample;           // samples cut so far (the next sample index)
    int uses;                       // times this volume was picked
    size_t cap_image, cap_vox, cap_fg, cap_bg;     // allocated lengths, kept for reuse
} aug_volume_t;

// What one sample did: reported in the patch batch and checked by the tests.
typedef struct {
    int origin[3];                  // box corner (d, h, w) in the volume; negative = padded
    int centre[3];                  // the drawn centre voxel
    int positive;                   // 1: centre drawn from label > 0
    double A[3][3];                 // the sampling matrix used
    int resampled;                  // 1: trilinear pass, 0: exact gather
} aug_info_t;

void augment_cfg_default(augment_cfg_t *cfg);
void augment_cfg_nnunet(augment_cfg_t *cfg);            // nnU-Net's probabilities
// Parse one option (flag without its value in `flag`, value in `val`). Returns 1 when the flag
// is an augmentation option and was applied, 0 when it is not ours, -1 with err on a bad value.
// --nnunet and --class-balanced take no value; *used_value tells whether val was consumed.
int augment_cfg_flag(augment_cfg_t *cfg, const char *flag, const char *val, int *used_value, char *err);
int augment_cfg_check(const augment_cfg_t *cfg, char *err);
void augment_cfg_usage(void *file);                     // FILE *: option list for --help

// image: (C, dim) in dtype (i16, f16 or f32); labels: (dim) u8. Copies everything it keeps.
// aug_volume_load reuses the buffers of the volume v held before (v zeroed or loaded/inited
// before): no fresh pages to fault in per volume. On error v holds no volume (buffers kept).
int aug_volume_load(aug_volume_t *v, const char *case_id, int64_t epoch, int C, const int dim[3],
                    wire_dtype_t dtype, const void *image, const uint8_t *labels,
                    const augment_cfg_t *cfg, char *err);
int aug_volume_init(aug_volume_t *v, const char *case_id, int64_t epoch, int C, const int dim[3],
                    wire_dtype_t dtype, const void *image, const uint8_t *labels,
                    const augment_cfg_t *cfg, char *err);
void aug_volume_free(aug_volume_t *v);
uint64_t aug_volume_key(const char *case_id, int64_t epoch);

// Rotation and scaling are rigid in millimetres (v->spacing); flips and 90-degree turns act on
// voxel steps, as MONAI's (a turn in a plane of unequal spacings is then a stretch in mm). On a
// volume whose coarsest spacing exceeds AUG_ANISO_THRESHOLD times its finest, rotation and
// scaling act only in the plane of the two finer axes (about the coarse axis), nnU-Net's "dummy
// 2D" augmentation -- which nnU-Net switches on from its planned patch shape, itself set by the
// spacing; here the volume's spacing decides -- so slices are never interpolated across the
// coarse axis; as in nnU-Net the in-plane angle then ranges over rotation_deg_2d (180) and the
// low-resolution step leaves the coarse axis alone. augment_coarse_axis: that axis, or -1.
#define AUG_ANISO_THRESHOLD 3.0
int augment_coarse_axis(const double spacing[3]);

// Sample `sample` of v: img (C, P0, P1, P2) floats, lab (P0, P1, P2) u8. info may be NULL.
void augment_sample(float *img, uint8_t *lab, aug_info_t *info, const aug_volume_t *v,
                    const augment_cfg_t *cfg, uint64_t seed, uint64_t sample);

// ---- the steps (exposed for tests) ------------------------------------------------------------
// Draw a crop centre: positive with probability pos_ratio (forced when only one kind exists);
// a positive one uniformly over the foreground, or with class_balanced over the voxels of a
// label value drawn uniformly among those present.
void augment_pick_centre(rng_t *r, const aug_volume_t *v, double pos_ratio, int class_balanced, int centre[3],
                         int *positive);
// Box corner so that the centre sits mid-patch where possible, clamped to keep the box inside
// the volume (or the volume inside the box when the volume is smaller).
void augment_origin(const int centre[3], const int dim[3], const int patch[3], int origin[3]);
// Extract a patch with s = bc + A (p - pc); img (C, patch), lab (patch) (lab may be NULL).
// mul/add are applied to every image value (pads included). force_linear: always trilinear.
// Returns 1 when it resampled, 0 for the exact gather.
int augment_extract(float *img, uint8_t *lab, const aug_volume_t *v, const int patch[3],
                    const double A[3][3], const double bc[3], float mul, float add, int force_linear);

// Intensity steps on one channel x (n values) -- formulas of batchgenerators / nnU-Net.
void augment_gamma(float *x, size_t n, double gamma, int invert);   // retains mean and std
void augment_contrast(float *x, size_t n, double factor);           // preserves the range
void augment_add_noise(float *x, size_t n, double sigma, rng_t *r);
// x: (P0, P1, P2) one channel; sigma per axis; scipy "reflect" border, truncate 4 sigma.
void augment_blur(float *x, const int dim[3], const double sigma[3]);
// Nearest-neighbour down to round(dim * zoom), trilinear back up (nnU-Net: cubic up); axis keep
// (-1: none) stays at full size (nnU-Net's ignore_axes in dummy-2D training).
void augment_lowres(float *x, const int dim[3], double zoom, int keep);
// nnU-Net's two-sided draw for ranges around 1: half the time below 1, half above.
double augment_draw_around_one(rng_t *r, const double range[2]);

#endif
