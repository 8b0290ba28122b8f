/*
trainer_batch.c -- a received patch_batch becomes the training step's input. The decoder checks
the message's own consistency; here we check it against the run: batch size, channels and patch
extents as configured, every image value finite, every label a valid class (softmax losses; the
sigmoid region loss takes any label value). Images arrive as f32, f16 or bf16 (protocol.md §3).
*/
#include "trainer_internal.h"
#include "check.h"
#include <string.h>

int trainer_batch_take(const trainer_cfg_t *c, const wire_msg_t *msg, float *x, uint8_t *labels,
                       int *npos, char *err)
{
    wire_patch_batch_t p;
    if (wire_decode_patch_batch(msg, &p, err)) return -1;
    int rc = 0;
    if (p.B != c->batch || p.C != c->model.in_channels || p.D != c->patch[0] || p.H != c->patch[1] ||
        p.W != c->patch[2]) {
        rc = set_err(err, "patch_batch %llu: shape %dx%dx%dx%dx%d, expected %dx%dx%dx%dx%d (--batch, "
                     "--in-channels, --patch)", (unsigned long long)p.seq, p.B, p.C, p.D, p.H, p.W,
                     c->batch, c->model.in_channels, c->patch[0], c->patch[1], c->patch[2]);
        goto out;
    }
    const wire_array_t *img = wire_find(msg, "images");
    int64_t bad = wire_first_nonfinite(img);
    if (bad >= 0) {
        rc = set_err(err, "patch_batch %llu: image value %lld is not finite", (unsigned long long)p.seq, (long long)bad);
        goto out;
    }
    size_t nvox = (size_t)p.B * p.D * p.H * p.W, nimg = nvox * (size_t)p.C;
    if (c->tc.loss != LOSS_DICE_SIGMOID) {
        bad = wire_labels_check(p.labels, nvox, c->model.classes);
        if (bad >= 0) {
            rc = set_err(err, "patch_batch %llu (case %s): label %d >= --classes %d", (unsigned long long)p.seq,
                         p.case_ids[bad / ((size_t)p.D * p.H * p.W)], p.labels[bad], c->model.classes);
            goto out;
        }
    }
    switch (p.image_dtype) {
    case WIRE_F32: memcpy(x, p.images, nimg * sizeof *x); break;
    case WIRE_F16: { const uint16_t *h = p.images; for (size_t i = 0; i < nimg; i++) x[i] = wire_half_to_float(h[i]); break; }
    case WIRE_BF16: { const uint16_t *h = p.images; for (size_t i = 0; i < nimg; i++) x[i] = wire_bf16_to_float(h[i]); break; }
    default: rc = set_err(err, "patch_batch %llu: images dtype %s", (unsigned long long)p.seq, wire_dtype_name(p.image_dtype)); goto out;
    }
    memcpy(labels, p.labels, nvox);
    *npos = 0;
    for (int b = 0; b < p.B; b++) *npos += p.positive[b];
out:
    wire_patch_batch_free(&p);
    return rc;
}
