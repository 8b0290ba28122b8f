/*
ops_decl.h -- op prototypes, included twice by ops.h (real = float, OP(x) = x##_cpu; and
real = double, OP(x) = x##_cpu_f64). No include guard on purpose. Read ops.h first.
*/

// ---- 3D convolution ---------------------------------------------------------
// y: (N, Cout, out)   x: (N, Cin, in)   w: (Cout, Cin, k)   b: (Cout) or NULL
void OP(conv3d_forward)(real *y, const real *x, const real *w, const real *b, conv3d_shape_t s);
void OP(conv3d_backward)(real *dx, real *dw, real *db,
                         const real *dy, const real *x, const real *w, conv3d_shape_t s);

// ---- 3D transposed convolution ---------------------------------------------
// y: (N, Cout, out)   x: (N, Cin, in)   w: (Cin, Cout, k)   b: (Cout) or NULL
void OP(conv_transpose3d_forward)(real *y, const real *x, const real *w, const real *b,
                                  conv3d_shape_t s);
void OP(conv_transpose3d_backward)(real *dx, real *dw, real *db,
                                   const real *dy, const real *x, const real *w, conv3d_shape_t s);

// ---- linear over channels (1x1x1 conv) --------------------------------------
// y: (N, Cout, L)   x: (N, Cin, L)   w: (Cout, Cin)   b: (Cout) or NULL
void OP(linear_forward)(real *y, const real *x, const real *w, const real *b, linear_shape_t s);
void OP(linear_backward)(real *dx, real *dw, real *db,
                         const real *dy, const real *x, const real *w, linear_shape_t s);

// ---- InstanceNorm (no affine), per (n, c) over S voxels, biased variance -----
// y, x: (N, C, S)   mean, rstd: (N*C) saved for backward
void OP(instancenorm_forward)(real *y, real *mean, real *rstd, const real *x,
                              int N, int C, size_t S, double eps);
void OP(instancenorm_backward)(real *dx, const real *dy, const real *x,
                               const real *mean, const real *rstd, int N, int C, size_t S);

// ---- GroupNorm (affine), G groups of C/G channels ---------------------------
// y, x: (N, C, S)   gamma, beta: (C)   mean, rstd: (N*G)
void OP(groupnorm_forward)(real *y, real *mean, real *rstd, const real *x,
                           const real *gamma, const real *beta, int N, int C, int G, size_t S,
                           double eps);
void OP(groupnorm_backward)(real *dx, real *dgamma, real *dbeta, const real *dy, const real *x,
                            const real *mean, const real *rstd, const real *gamma,
                            int N, int C, int G, size_t S);

// ---- LayerNorm over channels, per token of a channels-first tensor ---------
// y, x: (N, C, L)   gamma, beta: (C)   mean, rstd: (N*L)
void OP(layernorm_forward)(real *y, real *mean, real *rstd, const real *x,
                           const real *gamma, const real *beta, int N, int C, size_t L, double eps);
void OP(layernorm_backward)(real *dx, real *dgamma, real *dbeta, const real *dy, const real *x,
                            const real *mean, const real *rstd, const real *gamma,
                            int N, int C, size_t L);

// ---- elementwise activations (n elements; y may alias x in forward) --------
void OP(relu_forward)(real *y, const real *x, size_t n);
void OP(relu_backward)(real *dx, const real *dy, const real *x, size_t n);
void OP(gelu_forward)(real *y, const real *x, size_t n);          // exact erf form
void OP(gelu_backward)(real *dx, const real *dy, const real *x, size_t n);
void OP(silu_forward)(real *y, const real *x, size_t n);
void OP(silu_backward)(real *dx, const real *dy, const real *x, size_t n);
void OP(softplus_forward)(real *y, const real *x, size_t n);      // threshold 20: x > 20 -> x
void OP(softplus_backward)(real *dx, const real *dy, const real *x, size_t n);
// y = a + b elementwise (residual adds); backward is the identity into both, done by callers.
void OP(add_forward)(real *y, const real *a, const real *b, size_t n);
// The gradient of a per-channel bias: db[c] += sum over n and s of dy (N, C, S), sample n at
// dy + n nstride (0: dense, C S). The convs' and linears' backward use it.
void OP(bias_backward)(real *db, const real *dy, int N, int C, size_t S, size_t nstride);

// ---- depthwise causal conv1d (Mamba, kernel K <= 4), zero history ----------
// y[n,e,t] = b[e] + sum_{i<K} w[e,i] * x[n,e,t-K+1+i]   (no activation)
// y, x: (N, E, L)   w: (E, K)   b: (E) or NULL
void OP(causal_conv1d_forward)(real *y, const real *x, const real *w, const real *b,
                               int N, int E, size_t L, int K);
void OP(causal_conv1d_backward)(real *dx, real *dw, real *db, const real *dy, const real *x,
                                const real *w, int N, int E, size_t L, int K);

// ---- selective scan (architecture.md §5.4 steps 4-8) -----------------------
// u, delta (raw, bias not added), z, y: (N, E, L)   A: (E, NS) (A = -exp(A_log))
// B, C: (N, NS, L) with batch stride s.bc_nstride   D, delta_bias: (E)
// y = (sum_n C h + D u) * silu(z)  (z may be NULL: no gate)
//   delta = softplus(delta_raw + delta_bias), h_t = exp(delta A) h_{t-1} + delta B_t u_t
void OP(selective_scan_forward)(real *y, const real *u, const real *delta, const real *A,
                                const real *B, const real *C, const real *D, const real *z,
                                const real *delta_bias, scan_shape_t s);
// dB, dC use the same strides as B, C. States are recomputed (nothing saved by forward).
void OP(selective_scan_backward)(real *du, real *ddelta, real *dA, real *dB, real *dC, real *dD,
                                 real *dz, real *ddelta_bias, const real *dy,
                                 const real *u, const real *delta, const real *A,
                                 const real *B, const real *C, const real *D, const real *z,
                                 const real *delta_bias, scan_shape_t s);

// ---- Tri-oriented Mamba token orders ----------------------------------------
// permute:   y[n, c, j]        = x[n, c, pi(j)]   (into the scanned order)
// unpermute: y[n, c, pi(j)]    = x[n, c, j]       (back to the original order)
// The backward of permute is unpermute and vice versa (callers accumulate as needed).
// x, y: (N, C, L); y must not alias x.
void OP(tom_permute)(real *y, const real *x, int N, int C, size_t L, tom_order_t order,
                     size_t nslices);
void OP(tom_unpermute)(real *y, const real *x, int N, int C, size_t L, tom_order_t order,
                       size_t nslices);

// ---- trilinear x2 upsampling, align_corners = False (MONAI non-trainable) ---
// y: (N, C, 2D, 2H, 2W)   x: (N, C, D, H, W)
void OP(upsample_trilinear2x_forward)(real *y, const real *x, int N, int C, const int in[3]);
void OP(upsample_trilinear2x_backward)(real *dx, const real *dy, int N, int C, const int in[3]);

// ---- zero padding and cropping ----------------------------------------------
// y (N, C, out) takes y[p] = x[p + off] where that lies inside x (in), else 0. off may be
// negative (pad at the low end) or positive (crop the low end); out may be larger (pad the
// high end) or smaller (crop the high end). Backward: dx[p + off] += dy[p].
void OP(pad_crop3d_forward)(real *y, const real *x, int N, int C, const int in[3],
                            const int out[3], const int off[3]);
void OP(pad_crop3d_backward)(real *dx, const real *dy, int N, int C, const int in[3],
                             const int out[3], const int off[3]);

// ---- losses -----------------------------------------------------------------
// logits: (N, K, S)   labels: (N, S), values < K.   Each forward returns the loss;
// each backward ACCUMULATES scale * dloss/dlogits into dlogits.
double OP(dice_softmax_forward)(const real *logits, const uint8_t *labels, int N, int K, size_t S,
                                dice_cfg_t c);
void OP(dice_softmax_backward)(real *dlogits, const real *logits, const uint8_t *labels,
                               int N, int K, size_t S, dice_cfg_t c, double scale);
// Mean over N*S voxels of -log softmax(logits)[label].
double OP(cross_entropy_forward)(const real *logits, const uint8_t *labels, int N, int K, size_t S);
void OP(cross_entropy_backward)(real *dlogits, const real *logits, const uint8_t *labels,
                                int N, int K, size_t S, double scale);
// Sigmoid Dice over R region channels: logits (N, R, S), target of region r = member[r][label].
double OP(dice_sigmoid_forward)(const real *logits, const uint8_t *labels, int N, size_t S,
                                const regions_t *reg, dice_cfg_t c);
void OP(dice_sigmoid_backward)(real *dlogits, const real *logits, const uint8_t *labels, int N,
                               size_t S, const regions_t *reg, dice_cfg_t c, double scale);

// ---- Adam / AdamW over one contiguous buffer --------------------------------
// p, m, v, g: (n). step is 1-based (bias correction uses it). lr comes from the schedule.
void OP(adam_update)(real *p, real *m, real *v, const real *g, size_t n, adam_cfg_t c, long step);
