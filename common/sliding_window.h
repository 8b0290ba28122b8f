/*
sliding_window.h -- whole-volume inference from a network that only takes fixed-size windows,
as MONAI's sliding_window_inference does it (anchors: monai/inferers/utils.py):
  - a volume smaller than the window along an axis is zero-padded symmetrically (before =
    diff/2, after = diff - diff/2) and the result cropped back;
  - window starts along each axis: interval = int(roi * (1 - overlap)) (at least 1; the roi
    itself when the axis equals the roi), starts k*interval shifted back so the last window
    ends at the border; windows ordered with the last axis fastest;
  - each window's output is weighted by an importance map (constant 1, or a Gaussian with
    sigma = sigma_scale * roi per axis, clamped below at max(min, 1e-3)), accumulated, and the
    sum divided by the accumulated weights;
  - windows are evaluated in batches of cfg->batch through a callback;
  - with cfg->mirror, each batch is also evaluated mirrored along every non-empty set of the
    three axes (nnU-Net's test-time mirroring: (0), (1), (2), (0,1), (0,2), (1,2), (0,1,2)),
    each output flipped back and the 8 outputs averaged before the window is accumulated.
Deterministic: the accumulation order is fixed (window order, then voxel order).
*/
#ifndef SRM_SLIDING_WINDOW_H
#define SRM_SLIDING_WINDOW_H
#include <stddef.h>

typedef enum { SW_BLEND_CONSTANT = 0, SW_BLEND_GAUSSIAN = 1 } sw_blend_t;

typedef struct {
    int roi[3];             // window extents (D, H, W); the model needs multiples of 16
    double overlap;         // in [0, 1); MONAI default 0.25, ours 0.5
    sw_blend_t blend;
    double sigma_scale;     // Gaussian sigma = sigma_scale * roi (MONAI default 0.125)
    int batch;              // windows per network call (MONAI sw_batch_size)
    int mirror;             // 1: nnU-Net's test-time mirroring over the three axes (8x the calls)
} sw_cfg_t;

void sw_cfg_default(sw_cfg_t *c);      // roi 96^3, overlap 0.5, gaussian, 0.125, batch 1, no mirroring

// The network: y (n, K, roi) from x (n, C, roi), n <= cfg->batch. Returns 0, or -1 with err.
typedef int (*sw_net_fn)(void *ctx, float *y, const float *x, int n, char *err);

// Importance map w (roi[0], roi[1], roi[2]) for blend mode and sigma scale.
void sw_importance_map(float *w, const int roi[3], sw_blend_t blend, double sigma_scale);

// Window starts along one axis of (already padded) extent size >= roi. starts may be NULL
// (count only). Returns the number of windows.
int sw_axis_starts(int size, int roi, double overlap, int *starts);

// Run the network over the volume x (C, dim) into y (K, dim): weighted mean of the window
// outputs at every voxel. Returns 0, or -1 with err (bad settings, the network failed).
int sw_infer(float *y, int K, const float *x, int C, const int dim[3], const sw_cfg_t *cfg,
             sw_net_fn net, void *ctx, char *err);

// ---- turning logits into labels ---------------------------------------------------------------
// labels[i] = argmax_k logits[k, i] (softmax is monotonic; ties go to the lower class). logits (K, n).
void sw_argmax(unsigned char *labels, const float *logits, int K, size_t n);
// masks[r, i] = sigmoid(logits[r, i]) > 0.5, i.e. logits > 0. logits, masks: (R, n).
void sw_threshold(unsigned char *masks, const float *logits, int R, size_t n);

#endif
