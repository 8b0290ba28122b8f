/*
evaluator_job.c -- decoding what the evaluator receives in service mode, trusting nothing:
  - an eval job from the trainer: a `checkpoint` message (docs/protocol.md) whose kind is
    "weights" (safetensors bytes), "final" (the last one of a run) or "periodic" (native
    checkpoint bytes also work); a boolean `final` field also marks the last job. Its optional
    `config` map may carry `patch` [D, H, W] (the sliding window) and `regions` (a --regions
    string). The blob is checked against `sha256` when given.
  - the loader's answers on the cases socket: `case_list` {case_ids}, a `volume` with its
    `prep` record (the JSON of loader_prep.c), or an `error`.
*/
#include "evaluator_internal.h"
#include "check.h"
#include "loader.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

// Key `key` of a msgpack map, or NULL.
static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl && !memcmp(k->via.str.ptr, key, kl))
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

static int job_config(const msgpack_object *cfg, eval_job_t *j, char *err)
{
    if (cfg->type != MSGPACK_OBJECT_MAP) return set_err(err, "job step %llu: 'config' is not a map", (unsigned long long)j->step);
    const msgpack_object *p = map_get(cfg, "patch");
    if (p) {
        if (p->type != MSGPACK_OBJECT_ARRAY || p->via.array.size != 3)
            return set_err(err, "job step %llu: config.patch is not a list of 3", (unsigned long long)j->step);
        for (int a = 0; a < 3; a++) {
            const msgpack_object *v = &p->via.array.ptr[a];
            if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 < 16 || v->via.u64 > 1024 || v->via.u64 % 16)
                return set_err(err, "job step %llu: config.patch[%d] is not a multiple of 16 in [16, 1024]",
                               (unsigned long long)j->step, a);
            j->patch[a] = (int)v->via.u64;
        }
        j->has_patch = 1;
    }
    const msgpack_object *r = map_get(cfg, "regions");
    if (r && r->type != MSGPACK_OBJECT_NIL) {
        if (wire_obj_str(r, j->regions, sizeof j->regions))
            return set_err(err, "job step %llu: config.regions is not a string", (unsigned long long)j->step);
        j->has_regions = j->regions[0] != 0;
    }
    return 0;
}

int eval_job_decode(const wire_msg_t *m, eval_job_t *j, char *err)
{
    memset(j, 0, sizeof *j);
    if (strcmp(m->type, "checkpoint")) return set_err(err, "expected an eval job ('checkpoint'), got '%s'", m->type);
    if (wire_get_u64(m, "step", &j->step, 1, err) < 0) return -1;
    if (wire_get_str(m, "kind", j->kind, sizeof j->kind, 1, err) < 0) return -1;
    if (strcmp(j->kind, "weights") && strcmp(j->kind, "final") && strcmp(j->kind, "periodic"))
        return set_err(err, "job step %llu: kind '%s' is not weights, final or periodic", (unsigned long long)j->step, j->kind);
    int fin = 0;
    if (wire_get_bool(m, "final", &fin, 0, err) < 0) return -1;
    int rc_run = wire_get_str(m, "run", j->run, sizeof j->run, 0, err);
    if (rc_run < 0) return -1;
    if (rc_run == 0 && !wire_token_ok(j->run))
        return set_err(err, "job step %llu: 'run' must be 1..63 of [A-Za-z0-9_.:-]", (unsigned long long)j->step);
    j->final = fin || !strcmp(j->kind, "final");
    const wire_array_t *blob;
    if (wire_need_array(m, "blob", WIRE_DT(WIRE_U8), 1, 1, &blob, err) < 0) return -1;
    if (blob->nbytes < 8) return set_err(err, "job step %llu: blob of %zu bytes", (unsigned long long)j->step, blob->nbytes);
    j->blob = blob->data;
    j->blob_len = blob->nbytes;
    char want[65];
    int rc = wire_get_str(m, "sha256", want, sizeof want, 0, err);
    if (rc < 0) return -1;
    if (rc == 0) {
        char got[65];
        wire_sha256_hex(j->blob, j->blob_len, got);
        if (strcmp(got, want)) return set_err(err, "job step %llu: sha256 of the blob is %.12s..., header says %.12s...",
                                              (unsigned long long)j->step, got, want);
    }
    const msgpack_object *cfg = wire_get(m, "config");
    if (cfg && job_config(cfg, j, err)) return -1;
    return 0;
}

int eval_reply_error(const wire_msg_t *m, char *err)
{
    if (strcmp(m->type, "error")) return 0;
    wire_error_t e;
    char e2[ERR_LEN];
    if (wire_decode_error(m, &e, e2)) return set_err(err, "malformed error reply: %s", e2);
    return set_err(err, "loader: %s: %s", e.code[0] ? e.code : "error", e.message);
}

int eval_case_list_decode(const wire_msg_t *m, char (**ids)[WIRE_ID_LEN], int *n, char *err)
{
    if (eval_reply_error(m, err)) return -1;
    if (strcmp(m->type, "case_list")) return set_err(err, "expected 'case_list', got '%s'", m->type);
    char (*v)[WIRE_ID_LEN] = xcalloc(EVAL_MAX_CASES, WIRE_ID_LEN);
    if (wire_get_strv(m, "case_ids", v[0], WIRE_ID_LEN, EVAL_MAX_CASES, n, 1, err) < 0) { free(v); return -1; }
    for (int i = 0; i < *n; i++)
        if (!v[i][0]) { free(v); return set_err(err, "case_list: empty case id at %d", i); }
    *ids = v;
    return 0;
}

int eval_case_decode(const wire_msg_t *m, eval_case_t *c, char *err)
{
    memset(c, 0, sizeof *c);
    if (eval_reply_error(m, err)) return -1;
    wire_volume_t v;
    if (wire_decode_volume(m, &v, err)) return -1;
    snprintf(c->id, sizeof c->id, "%s", v.case_id);
    if (!v.prep) return set_err(err, "volume %s: no 'prep' record (cannot map back to the source grid)", v.case_id);
    char e2[ERR_LEN];
    if (prep_record_from_json((const char *)v.prep, v.prep_len, &c->rec, e2)) return set_err(err, "volume %s: %s", v.case_id, e2);
    if (c->rec.out_dim[0] != v.D || c->rec.out_dim[1] != v.H || c->rec.out_dim[2] != v.W)
        return set_err(err, "volume %s: prep out_dim %dx%dx%d differs from the image's %dx%dx%d", v.case_id,
                       c->rec.out_dim[0], c->rec.out_dim[1], c->rec.out_dim[2], v.D, v.H, v.W);
    // A lying record must not make us allocate the impossible or divide by a zero spacing.
    double sp[3];
    eval_affine_spacing(c->rec.src_affine, sp);
    for (int d = 0; d < 3; d++)
        if (!(sp[d] > 0 && isfinite(sp[d]))) return set_err(err, "volume %s: prep src_affine column %d is degenerate", v.case_id, d);
    size_t src_n = (size_t)c->rec.src_dim[0] * c->rec.src_dim[1] * c->rec.src_dim[2];
    size_t ras_n = (size_t)c->rec.ras_dim[0] * c->rec.ras_dim[1] * c->rec.ras_dim[2];
    if (src_n > VOLUME_MAX_VALUES || ras_n != src_n)
        return set_err(err, "volume %s: prep grids %dx%dx%d (source) and %dx%dx%d (RAS) disagree or are too large", v.case_id,
                       c->rec.src_dim[0], c->rec.src_dim[1], c->rec.src_dim[2], c->rec.ras_dim[0], c->rec.ras_dim[1], c->rec.ras_dim[2]);
    c->C = v.C;
    size_t n = (size_t)v.C * v.D * v.H * v.W;
    c->image = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        float x = v.image_dtype == WIRE_F32 ? ((const float *)v.image)[i]
                : v.image_dtype == WIRE_F16 ? wire_half_to_float(((const uint16_t *)v.image)[i])
                : (float)((const int16_t *)v.image)[i];
        if (!isfinite(x)) {
            free(c->image);
            c->image = NULL;
            return set_err(err, "volume %s: non-finite image value at %zu", v.case_id, i);
        }
        c->image[i] = x;
    }
    if (v.labels) {
        c->labels = xmalloc((size_t)v.D * v.H * v.W);
        memcpy(c->labels, v.labels, (size_t)v.D * v.H * v.W);
    }
    return 0;
}

void eval_case_free(eval_case_t *c)
{
    free(c->image);
    free(c->labels);
    c->image = NULL;
    c->labels = NULL;
}
