/* mamba_layer_decl.h -- included twice by mamba_layer.h (float and double). No include guard. */

// y, x: (N, C, L)   params: the model's parameter buffer (offsets in *m)
void OP(mamba_layer_forward)(real *y, real *saved, real *scratch, const real *x,
                             const real *params, const mamba_layer_t *m, int N, size_t L);
// dx: (N, C, L) or NULL   dparams: gradient buffer, same layout as params
void OP(mamba_layer_backward)(real *dx, real *dparams, real *scratch, const real *dy,
                              const real *x, const real *saved, const real *params,
                              const mamba_layer_t *m, int N, size_t L);
