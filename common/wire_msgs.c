/*
wire_msgs.c -- the data messages: volume, patch_batch, checkpoint (see wire_msgs.h and
docs/protocol.md). Encoders check the struct they are given, decoders check everything the
generic layer cannot know: which fields and arrays a type needs, their ranks, dtypes, extents
and how the arrays' shapes agree with each other. The control messages are in wire_ctrl.c.
*/
#include "wire_msgs.h"
#include "labels.h"
#include "check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int need_type(const wire_msg_t *m, const char *type, char *err)
{
    if (strcmp(m->type, type)) return set_err(err, "expected a '%s' message, got '%s'", type, m->type);
    return 0;
}

// rc of a getter: 0 read, 1 absent (fine), -1 error. Collapse to 0/-1 and keep err.
#define TRY(call) do { if ((call) < 0) return -1; } while (0)

static int dims_ok(const int64_t *s, int n, int64_t lo, int64_t hi)
{
    for (int i = 0; i < n; i++)
        if (s[i] < lo || s[i] > hi) return 0;
    return 1;
}

int wire_token_ok(const char *s)
{
    size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-");
    return n >= 1 && n <= 63 && !s[n];
}

int wire_check_run(const wire_msg_t *m, const char *ours, char *err)
{
    char run[WIRE_ID_LEN];
    int rc = wire_get_str(m, "run", run, sizeof run, 0, err);
    if (rc < 0) return -1;
    if (rc == 0 && !wire_token_ok(run)) return set_err(err, "%s: 'run' must be 1..63 of [A-Za-z0-9_.:-]", m->type);
    if (rc == 1 || !ours || !*ours || !strcmp(run, ours)) return 0;
    set_err(err, "%s of run %s, not of this run (%s)", m->type, run, ours);
    return 1;
}

int64_t wire_labels_check(const uint8_t *labels, size_t n, int num_classes)
{
    for (size_t i = 0; i < n; i++)
        if (labels[i] >= num_classes && labels[i] != LABEL_IGNORE) return (int64_t)i;
    return -1;
}

// ---- volume ----------------------------------------------------------------------------------

int wire_encode_volume(wire_out_t *o, const wire_volume_t *v, char *err)
{
    wire_out_init(o, "volume");
    if (!v->case_id[0]) return set_err(err, "volume: empty case id");
    if (v->image_dtype != WIRE_I16 && v->image_dtype != WIRE_F16 && v->image_dtype != WIRE_F32)
        return set_err(err, "volume %s: image dtype must be i16, f16 or f32", v->case_id);
    int64_t img[4] = { v->C, v->D, v->H, v->W };
    if (!dims_ok(img, 1, 1, WIRE_MAX_CHANNELS) || !dims_ok(img + 1, 3, 1, WIRE_MAX_DIM) || !v->image)
        return set_err(err, "volume %s: bad image shape %dx%dx%dx%d", v->case_id, v->C, v->D, v->H, v->W);
    wire_put_str(o, "case_id", v->case_id);
    if (v->index >= 0) wire_put_i64(o, "index", v->index);
    if (v->epoch >= 0) wire_put_i64(o, "epoch", v->epoch);
    wire_put_f64v(o, "spacing", v->spacing, 3);
    wire_put_f64v(o, "affine", v->affine, 16);
    if (v->num_classes > 0) wire_put_i64(o, "num_classes", v->num_classes);
    if (v->train_batch > 0) {
        int64_t tp[3] = { v->train_patch[0], v->train_patch[1], v->train_patch[2] };
        if (!dims_ok(tp, 3, 1, WIRE_MAX_DIM) || v->train_batch > WIRE_MAX_BATCH)
            return set_err(err, "volume %s: bad train_patch %dx%dx%d or train_batch %d", v->case_id,
                           v->train_patch[0], v->train_patch[1], v->train_patch[2], v->train_batch);
        wire_put_i64v(o, "train_patch", tp, 3);
        wire_put_i64(o, "train_batch", v->train_batch);
    }
    wire_out_array(o, "image", v->image_dtype, 4, img, v->image);
    if (v->labels) wire_out_array(o, "labels", WIRE_U8, 3, img + 1, v->labels);
    if (v->prep) {
        int64_t n = (int64_t)v->prep_len;
        wire_out_array(o, "prep", WIRE_U8, 1, &n, v->prep);
    }
    return 0;
}

int wire_decode_volume(const wire_msg_t *m, wire_volume_t *v, char *err)
{
    memset(v, 0, sizeof *v);
    v->index = v->epoch = -1;
    TRY(need_type(m, "volume", err));
    TRY(wire_get_str(m, "case_id", v->case_id, sizeof v->case_id, 1, err));
    if (!v->case_id[0]) return set_err(err, "volume: empty case_id");
    TRY(wire_get_i64(m, "index", &v->index, 0, INT64_MAX, 0, err));
    TRY(wire_get_i64(m, "epoch", &v->epoch, 0, INT64_MAX, 0, err));
    TRY(wire_get_f64v(m, "spacing", v->spacing, 3, 1, err));
    for (int i = 0; i < 3; i++)
        if (!(v->spacing[i] > 0)) return set_err(err, "volume %s: spacing[%d] = %g is not positive", v->case_id, i, v->spacing[i]);
    TRY(wire_get_f64v(m, "affine", v->affine, 16, 1, err));
    if (v->affine[12] != 0 || v->affine[13] != 0 || v->affine[14] != 0 || v->affine[15] != 1)
        return set_err(err, "volume %s: affine's last row is not 0 0 0 1", v->case_id);
    int64_t nc = 0;
    TRY(wire_get_i64(m, "num_classes", &nc, 1, LABEL_MAX_CLASS + 1, 0, err));
    v->num_classes = (int)nc;
    int64_t tp[3], tb = 0;
    int np = wire_get_i64v(m, "train_patch", tp, 3, 1, WIRE_MAX_DIM, 0, err), nb;
    TRY(np);
    TRY(nb = wire_get_i64(m, "train_batch", &tb, 1, WIRE_MAX_BATCH, 0, err));
    if (np != nb) return set_err(err, "volume %s: train_patch and train_batch go together", v->case_id);
    if (np == 0) {
        for (int i = 0; i < 3; i++) v->train_patch[i] = (int)tp[i];
        v->train_batch = (int)tb;
    }

    const wire_array_t *img, *lab, *prep;
    TRY(wire_need_array(m, "image", WIRE_DT(WIRE_I16) | WIRE_DT(WIRE_F16) | WIRE_DT(WIRE_F32), 4, 1, &img, err));
    if (!dims_ok(img->shape, 1, 1, WIRE_MAX_CHANNELS) || !dims_ok(img->shape + 1, 3, 1, WIRE_MAX_DIM))
        return set_err(err, "volume %s: image shape %lldx%lldx%lldx%lld outside [1, %d] x [1, %d]^3", v->case_id,
                       (long long)img->shape[0], (long long)img->shape[1], (long long)img->shape[2],
                       (long long)img->shape[3], WIRE_MAX_CHANNELS, WIRE_MAX_DIM);
    v->C = (int)img->shape[0]; v->D = (int)img->shape[1]; v->H = (int)img->shape[2]; v->W = (int)img->shape[3];
    v->image_dtype = img->dtype;
    v->image = img->data;
    TRY(wire_need_array(m, "labels", WIRE_DT(WIRE_U8), 3, 0, &lab, err));
    if (lab) {
        if (memcmp(lab->shape, img->shape + 1, 3 * sizeof(int64_t)))
            return set_err(err, "volume %s: labels shape differs from the image's (D, H, W)", v->case_id);
        v->labels = lab->data;
        int64_t bad = v->num_classes ? wire_labels_check(v->labels, lab->numel, v->num_classes) : -1;
        if (bad >= 0) return set_err(err, "volume %s: label %d at voxel %lld >= num_classes %d", v->case_id,
                                     v->labels[bad], (long long)bad, v->num_classes);
    }
    TRY(wire_need_array(m, "prep", WIRE_DT(WIRE_U8), 1, 0, &prep, err));
    if (prep) { v->prep = prep->data; v->prep_len = prep->nbytes; }
    return 0;
}

// ---- patch_batch -----------------------------------------------------------------------------

int wire_encode_patch_batch(wire_out_t *o, const wire_patch_batch_t *p, char *err)
{
    wire_out_init(o, "patch_batch");
    if (p->image_dtype != WIRE_F32 && p->image_dtype != WIRE_F16 && p->image_dtype != WIRE_BF16)
        return set_err(err, "patch_batch: images dtype must be f32, f16 or bf16");
    int64_t s[5] = { p->B, p->C, p->D, p->H, p->W };
    if (!dims_ok(s, 1, 1, WIRE_MAX_BATCH) || !dims_ok(s + 1, 1, 1, WIRE_MAX_CHANNELS) || !dims_ok(s + 2, 3, 1, WIRE_MAX_DIM))
        return set_err(err, "patch_batch: bad shape %dx%dx%dx%dx%d", p->B, p->C, p->D, p->H, p->W);
    if (!p->images || !p->labels || !p->origins || !p->positive || !p->case_ids)
        return set_err(err, "patch_batch: missing images, labels, origins, positive or case ids");
    for (int b = 0; b < p->B; b++)
        if (!p->case_ids[b][0]) return set_err(err, "patch_batch: empty case id %d", b);
    wire_put_u64(o, "seq", p->seq);
    wire_put_u64(o, "aug_seed", p->aug_seed);
    wire_put_strv(o, "case_ids", p->case_ids[0], WIRE_ID_LEN, p->B);
    if (p->num_classes > 0) wire_put_i64(o, "num_classes", p->num_classes);
    int64_t ls[4] = { p->B, p->D, p->H, p->W }, os[2] = { p->B, 3 };
    wire_out_array(o, "images", p->image_dtype, 5, s, p->images);
    wire_out_array(o, "labels", WIRE_U8, 4, ls, p->labels);
    wire_out_array(o, "origins", WIRE_I32, 2, os, p->origins);
    wire_out_array(o, "positive", WIRE_U8, 1, s, p->positive);
    return 0;
}

void wire_patch_batch_free(wire_patch_batch_t *p)
{
    free(p->case_ids);
    p->case_ids = NULL;
}

int wire_decode_patch_batch(const wire_msg_t *m, wire_patch_batch_t *p, char *err)
{
    memset(p, 0, sizeof *p);
    TRY(need_type(m, "patch_batch", err));
    TRY(wire_get_u64(m, "seq", &p->seq, 1, err));
    TRY(wire_get_u64(m, "aug_seed", &p->aug_seed, 1, err));
    int64_t nc = 0;
    TRY(wire_get_i64(m, "num_classes", &nc, 1, LABEL_MAX_CLASS + 1, 0, err));
    p->num_classes = (int)nc;
    const wire_array_t *img, *lab, *org, *pos;
    TRY(wire_need_array(m, "images", WIRE_DT(WIRE_F32) | WIRE_DT(WIRE_F16) | WIRE_DT(WIRE_BF16), 5, 1, &img, err));
    const int64_t *s = img->shape;
    if (!dims_ok(s, 1, 1, WIRE_MAX_BATCH) || !dims_ok(s + 1, 1, 1, WIRE_MAX_CHANNELS) || !dims_ok(s + 2, 3, 1, WIRE_MAX_DIM))
        return set_err(err, "patch_batch %llu: images shape %lldx%lldx%lldx%lldx%lld out of range",
                       (unsigned long long)p->seq, (long long)s[0], (long long)s[1], (long long)s[2],
                       (long long)s[3], (long long)s[4]);
    p->B = (int)s[0]; p->C = (int)s[1]; p->D = (int)s[2]; p->H = (int)s[3]; p->W = (int)s[4];
    p->image_dtype = img->dtype;
    p->images = img->data;
    TRY(wire_need_array(m, "labels", WIRE_DT(WIRE_U8), 4, 1, &lab, err));
    if (lab->shape[0] != s[0] || memcmp(lab->shape + 1, s + 2, 3 * sizeof(int64_t)))
        return set_err(err, "patch_batch %llu: labels shape is not (B, D, H, W) of the images", (unsigned long long)p->seq);
    p->labels = lab->data;
    if (p->num_classes) {
        int64_t bad = wire_labels_check(p->labels, lab->numel, p->num_classes);
        if (bad >= 0) return set_err(err, "patch_batch %llu: label %d >= num_classes %d", (unsigned long long)p->seq,
                                     p->labels[bad], p->num_classes);
    }
    TRY(wire_need_array(m, "origins", WIRE_DT(WIRE_I32), 2, 1, &org, err));
    if (org->shape[0] != s[0] || org->shape[1] != 3)
        return set_err(err, "patch_batch %llu: origins shape is not (B, 3)", (unsigned long long)p->seq);
    p->origins = org->data;
    TRY(wire_need_array(m, "positive", WIRE_DT(WIRE_U8), 1, 1, &pos, err));
    if (pos->shape[0] != s[0]) return set_err(err, "patch_batch %llu: positive shape is not (B)", (unsigned long long)p->seq);
    p->positive = pos->data;
    for (int b = 0; b < p->B; b++)
        if (p->positive[b] > 1) return set_err(err, "patch_batch %llu: positive[%d] = %d is not 0 or 1",
                                               (unsigned long long)p->seq, b, p->positive[b]);
    int n = 0;
    p->case_ids = xcalloc((size_t)p->B, WIRE_ID_LEN);
    int rc = wire_get_strv(m, "case_ids", p->case_ids[0], WIRE_ID_LEN, p->B, &n, 1, err);
    if (rc == 0 && n != p->B) rc = set_err(err, "patch_batch %llu: %d case ids for %d patches", (unsigned long long)p->seq, n, p->B);
    for (int b = 0; rc == 0 && b < n; b++)
        if (!p->case_ids[b][0]) rc = set_err(err, "patch_batch %llu: empty case id %d", (unsigned long long)p->seq, b);
    if (rc) { wire_patch_batch_free(p); return -1; }
    return 0;
}

// ---- checkpoint ------------------------------------------------------------------------------

static int sha_ok(const char *s)
{
    if (strlen(s) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

int wire_encode_checkpoint(wire_out_t *o, const wire_checkpoint_t *c, char *err)
{
    wire_out_init(o, "checkpoint");
    if (!c->blob && c->blob_len) return set_err(err, "checkpoint %llu: no blob", (unsigned long long)c->step);
    if (!sha_ok(c->sha256)) return set_err(err, "checkpoint %llu: sha256 is not 64 lowercase hex", (unsigned long long)c->step);
    wire_put_u64(o, "step", c->step);
    wire_put_str(o, "kind", c->kind == WIRE_CKPT_FINAL ? "final" : "periodic");
    wire_put_str(o, "sha256", c->sha256);
    if (c->validated) wire_put_bool(o, "validated", 1);
    if (c->config_json && wire_pack_json(wire_put_key(o, "config"), c->config_json, err))
        return -1;
    int64_t n = (int64_t)c->blob_len;
    wire_out_array(o, "blob", WIRE_U8, 1, &n, c->blob);
    return 0;
}

void wire_checkpoint_free(wire_checkpoint_t *c)
{
    free((char *)c->config_json);
    c->config_json = NULL;
}

int wire_decode_checkpoint(const wire_msg_t *m, wire_checkpoint_t *c, char *err)
{
    memset(c, 0, sizeof *c);
    TRY(need_type(m, "checkpoint", err));
    TRY(wire_get_u64(m, "step", &c->step, 1, err));
    char kind[WIRE_NAME_LEN];
    TRY(wire_get_str(m, "kind", kind, sizeof kind, 1, err));
    if (!strcmp(kind, "periodic")) c->kind = WIRE_CKPT_PERIODIC;
    else if (!strcmp(kind, "final")) c->kind = WIRE_CKPT_FINAL;
    else return set_err(err, "checkpoint %llu: kind '%s' is not periodic or final", (unsigned long long)c->step, kind);
    TRY(wire_get_str(m, "sha256", c->sha256, sizeof c->sha256, 1, err));
    if (!sha_ok(c->sha256)) return set_err(err, "checkpoint %llu: sha256 is not 64 lowercase hex", (unsigned long long)c->step);
    TRY(wire_get_bool(m, "validated", &c->validated, 0, err));
    const wire_array_t *blob;
    TRY(wire_need_array(m, "blob", WIRE_DT(WIRE_U8), 1, 1, &blob, err));
    c->blob = blob->data;
    c->blob_len = blob->nbytes;
    char got[65];
    wire_sha256_hex(c->blob, c->blob_len, got);
    if (strcmp(got, c->sha256))
        return set_err(err, "checkpoint %llu: blob sha256 %.12s... does not match the header's %.12s...",
                       (unsigned long long)c->step, got, c->sha256);
    const msgpack_object *cfg = wire_get(m, "config");
    if (cfg) {
        if (cfg->type != MSGPACK_OBJECT_MAP) return set_err(err, "checkpoint %llu: config is not a map", (unsigned long long)c->step);
        char why[ERR_LEN];
        c->config_json = wire_obj_to_json(cfg, why);
        if (!c->config_json) return set_err(err, "checkpoint %llu: config: %s", (unsigned long long)c->step, why);
    }
    return 0;
}
