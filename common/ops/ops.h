/*
ops.h -- CPU reference implementations of every operation in SegResMamba.

These are the ground truth the GPU code is tested against and the engine used when there is no
GPU. They are written to be read, not to be fast: plain loops, double accumulators, no SIMD
(OpenMP `parallel for` over independent outer loops is allowed; it changes no arithmetic).

Every op exists in two precisions built from ONE source file: each file in common/ops/ is
compiled twice, once with `real` = float (functions named <op>_cpu) and once with
`real` = double (functions named <op>_cpu_f64, used by the finite-difference checks).
The declarations live in ops_decl.h, included twice below (both_precisions.h).

Letters used in shape comments:
  N batch   C channels   D, H, W spatial extents (NIfTI i, j, k; W fastest)   S = D*H*W
  L tokens (= S for Mamba)   E mamba inner width   NS d_state (16)   K classes / kernel size

Rules:
  - Layout is NCDHW (channels-first), contiguous. A Mamba activation (N, E, L) is the same memory
    as (N, E, D, H, W): no transpose between conv blocks and Mamba blocks on the CPU.
  - Arguments: outputs first, then inputs, then parameters, then the shape.
  - Forward writes (=) its outputs.
  - Backward ACCUMULATES (+=) into every gradient it is given (input and parameter gradients
    alike); the caller zeroes gradients once per step. Any gradient pointer may be NULL: that
    gradient is not computed.
  - Tensors a backward needs (norm statistics) are explicit forward outputs.
*/
#ifndef SRM_OPS_H
#define SRM_OPS_H
#include <stddef.h>
#include <stdint.h>
#include "labels.h"

// ----------------------------------------------------------------------------
// shapes (shared by both precisions and by the GPU twins in gpu/gpu.h)

// 3D convolution and transposed convolution, per-axis kernel, stride, padding.
// conv:  w (Cout, Cin, k0, k1, k2), out = (in + 2*pad - k) / stride + 1
// convT: w (Cin, Cout, k0, k1, k2) (PyTorch ConvTranspose3d layout),
//        out = (in - 1)*stride - 2*pad + k + outpad
typedef struct {
    int N, Cin, Cout;
    int in[3];                  // D, H, W of x
    int k[3], stride[3], pad[3];
    int outpad[3];              // transposed convolution only
} conv3d_shape_t;

void conv3d_out_dims(const conv3d_shape_t *s, int out[3]);
void conv_transpose3d_out_dims(const conv3d_shape_t *s, int out[3]);
// Convenience: cubic kernel k, same stride/pad on all axes.
conv3d_shape_t conv3d_shape(int N, int Cin, int Cout, const int in[3], int k, int stride, int pad);

// Linear map over the channel axis (1x1x1 convolution): y[n, o, l] = sum_i w[o, i] x[n, i, l] + b[o]
// x_nstride / y_nstride: elements between batch items (0 = dense, i.e. Cin*L / Cout*L), so a
// channel slice of a larger tensor can be used in place (x_dbl[:, :r] in Mamba).
typedef struct {
    int N, Cin, Cout;
    size_t L;
    size_t x_nstride, y_nstride;
} linear_shape_t;

// Selective scan (Mamba-1 S6) over (N, E, L) with state size NS.
// B and C are (N, NS, L) slices with batch stride bc_nstride (0 = dense NS*L).
typedef struct {
    int N, E, NS;
    size_t L;
    size_t bc_nstride;
} scan_shape_t;

// Tri-oriented Mamba token orders (architecture.md §5.4). j is the position in the scanned
// sequence; tom_index returns the position pi(j) in the original (D slowest, W fastest) order.
typedef enum { TOM_FORWARD = 0, TOM_REVERSE = 1, TOM_SLICE = 2 } tom_order_t;
size_t tom_index(tom_order_t order, size_t j, size_t L, size_t nslices);

// Dice loss settings (MONAI DiceLoss semantics): per (n, k) 1 - (2*I + smooth_nr) /
// (P + G + smooth_dr), where P = sum p (or sum p^2 when squared_pred), G = sum g (or g^2);
// mean over the N*K' terms (K' = K, or K-1 without background). Voxels labelled LABEL_IGNORE
// (labels.h) are in no sum and get no gradient, in every loss; cross-entropy is the mean over the
// batch's other voxels (PyTorch's ignore_index), 0 when there are none.
typedef struct {
    int include_background;     // softmax Dice only
    int squared_pred;
    double smooth_nr, smooth_dr;
} dice_cfg_t;

// Region targets for sigmoid Dice (BraTS): region r is the set of label values with
// member[r][value] != 0 (e.g. WT {1,2,3,4}, TC {1,3,4}, ET {4}).
#define REGIONS_MAX 8
typedef struct {
    int R;
    uint8_t member[REGIONS_MAX][256];
} regions_t;

// Adam as torch.optim.Adam (weight decay added to the gradient), AdamW behind `decoupled`.
typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    int decoupled;              // 1 = AdamW (p *= 1 - lr*wd), 0 = Adam (g += wd*p)
} adam_cfg_t;

// ----------------------------------------------------------------------------
// declarations, once per precision

#define PRECISION_DECL "ops_decl.h"
#include "both_precisions.h"

#endif
