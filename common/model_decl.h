/* model_decl.h -- the model's math, included twice by model.h (float and double). No include
   guard. ws is the workspace of model_plan_t (p->total elements); params/grads/adam_m/adam_v
   follow m->table. Implemented in common/nn/model_forward.c and model_backward.c. */

// x: (N, Cin, D, H, W). Writes every saved activation into ws; logits at ws + p->logits
// (N, K, D, H, W).
void OP(model_forward)(real *ws, const real *params, const real *x, const model_t *m,
                       const model_plan_t *p);
// Loss of the logits in ws against labels (N, D, H, W); writes dloss/dlogits to ws + p->dlogits.
double OP(model_loss)(real *ws, const uint8_t *labels, const train_cfg_t *tc, const model_t *m,
                      const model_plan_t *p);
// Backward from ws + p->dlogits after model_forward. ACCUMULATES into grads (m->table layout)
// and, when dx is not NULL, into dx (N, Cin, D, H, W).
void OP(model_backward)(real *grads, real *dx, real *ws, const real *params, const real *x,
                        const model_t *m, const model_plan_t *p);
// One training step: zero grads -> forward -> loss -> backward -> Adam (step is 1-based,
// lr from the caller, e.g. lr_cosine). Returns the loss before the update.
double OP(model_train_step)(real *params, real *grads, real *adam_m, real *adam_v, real *ws,
                            const real *x, const uint8_t *labels, const train_cfg_t *tc,
                            float lr, long step, const model_t *m, const model_plan_t *p);
