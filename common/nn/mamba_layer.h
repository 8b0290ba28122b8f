/*
mamba_layer.h -- one ToM "MambaLayer" of SegResMamba: LayerNorm over channels, then the
SegMamba "bimamba v3" Mamba with three token orders (forward, reverse, inter-slice) sharing
in_proj and out_proj (architecture.md §5). No residual. Input and output are (N, C, L),
channels-first, L = D*H*W in the (D slowest, W fastest) order. The caller pads odd extents
(ToM_A) before and crops after; this layer only needs L % nslices == 0.

Parameters live in the model's one contiguous buffer; this struct holds their offsets (in
elements), filled by the model description (common/model.c) with the names of
params_M_btcv.txt. Direction index 0 = forward (A_log, D, conv1d, x_proj, dt_proj),
1 = reverse (A_b_log, D_b, conv1d_b, ...), 2 = slice (A_s_log, D_s, conv1d_s, ...).

Memory: forward writes what backward needs into `saved` (mamba_layer_saved_size elements) and
uses `scratch` (mamba_layer_scratch_size elements) as temporary space; backward uses the same
scratch size. Backward ACCUMULATES into dx and dparams (same layout as params).
Implemented in mamba_layer.c, built in both precisions (see common/ops/ops.h).
*/
#ifndef SRM_MAMBA_LAYER_H
#define SRM_MAMBA_LAYER_H
#include "ops.h"

typedef struct {
    int C;                  // d_model
    int E;                  // d_inner = 2C
    int R;                  // dt_rank = ceil(C / 16)
    int NS;                 // d_state = 16
    int K;                  // d_conv = 4
    size_t nslices;         // inter-slice order parameter
    size_t norm_w, norm_b, in_proj, out_proj;
    size_t A_log[3], D[3], conv_w[3], conv_b[3], x_proj[3], dt_w[3], dt_b[3];
} mamba_layer_t;

size_t mamba_layer_saved_size(const mamba_layer_t *m, int N, size_t L);
size_t mamba_layer_scratch_size(const mamba_layer_t *m, int N, size_t L);

#define PRECISION_DECL "mamba_layer_decl.h"
#include "both_precisions.h"

#endif
