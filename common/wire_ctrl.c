/*
wire_ctrl.c -- the small messages: checkpoint_ack, metrics, heartbeat, ready, stop, request and
error (see wire_msgs.h and docs/protocol.md). The data messages are in wire_msgs.c.
*/
#include "wire_msgs.h"
#include "check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define WIRE_MAX_CASES 4096
#define WIRE_MAX_JSON  (256 * 1024)

#define TRY(call) do { if ((call) < 0) return -1; } while (0)

static int need_type(const wire_msg_t *m, const char *type, char *err)
{
    if (strcmp(m->type, type)) return set_err(err, "expected a '%s' message, got '%s'", type, m->type);
    return 0;
}

// Names that end up in logs and file names: [a-z0-9_.-], not empty.
static int ident_ok(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '.' || *s == '-')) return 0;
    return 1;
}

static int get_ident(const wire_msg_t *m, const char *key, char *out, int required, char *err)
{
    int rc = wire_get_str(m, key, out, WIRE_NAME_LEN, required, err);
    if (rc == 0 && !ident_ok(out)) return set_err(err, "%s: '%s' is not a name of [a-z0-9_.-]", m->type, key);
    return rc;
}

static int hex64(const char *s)
{
    size_t n = strlen(s);
    if (n != 64) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

// ---- checkpoint_ack --------------------------------------------------------------------------

int wire_encode_checkpoint_ack(wire_out_t *o, const wire_checkpoint_ack_t *a, char *err)
{
    wire_out_init(o, "checkpoint_ack");
    if (!hex64(a->sha256)) return set_err(err, "checkpoint_ack: sha256 is not 64 lowercase hex");
    wire_put_u64(o, "step", a->step);
    wire_put_str(o, "sha256", a->sha256);
    wire_put_bool(o, "ok", a->ok);
    if (a->error[0]) wire_put_str(o, "error", a->error);
    return 0;
}

int wire_decode_checkpoint_ack(const wire_msg_t *m, wire_checkpoint_ack_t *a, char *err)
{
    memset(a, 0, sizeof *a);
    TRY(need_type(m, "checkpoint_ack", err));
    TRY(wire_get_u64(m, "step", &a->step, 1, err));
    TRY(wire_get_str(m, "sha256", a->sha256, sizeof a->sha256, 1, err));
    if (!hex64(a->sha256)) return set_err(err, "checkpoint_ack: sha256 is not 64 lowercase hex");
    TRY(wire_get_bool(m, "ok", &a->ok, 1, err));
    TRY(wire_get_str(m, "error", a->error, sizeof a->error, 0, err));
    return 0;
}

// ---- metrics ---------------------------------------------------------------------------------

int wire_encode_metrics(wire_out_t *o, const wire_metrics_t *x, char *err)
{
    wire_out_init(o, "metrics");
    if (x->nvalues < 0 || x->nvalues > WIRE_MAX_METRICS) return set_err(err, "metrics: %d values", x->nvalues);
    if (x->ncases < 0 || x->ncases > WIRE_MAX_CASES || (x->ncases && !x->case_ids)) return set_err(err, "metrics: bad case ids");
    wire_put_u64(o, "step", x->step);
    wire_put_f64(o, "wall_time", x->wall_time);
    msgpack_packer *pk = wire_put_key(o, "values");
    msgpack_pack_map(pk, (size_t)x->nvalues);
    for (int i = 0; i < x->nvalues; i++) {
        msgpack_pack_str_with_body(pk, x->names[i], strlen(x->names[i]));
        if (isfinite(x->values[i])) msgpack_pack_double(pk, x->values[i]);
        else msgpack_pack_nil(pk);                  // undefined (e.g. a Dice with no reference)
    }
    if (x->json) {
        if (strlen(x->json) > WIRE_MAX_JSON) return set_err(err, "metrics: json longer than %d", WIRE_MAX_JSON);
        msgpack_pack_str_with_body(wire_put_key(o, "json"), x->json, strlen(x->json));
    }
    if (x->ncases) wire_put_strv(o, "case_ids", x->case_ids[0], WIRE_ID_LEN, x->ncases);
    for (int i = 0; i < x->narrays; i++) {
        const wire_array_t *a = &x->arrays[i];
        if (x->ncases && (a->rank < 1 || a->shape[0] != x->ncases))
            return set_err(err, "metrics: array '%s' does not have one row per case", a->name);
        wire_out_array(o, a->name, a->dtype, a->rank, a->shape, a->data);
    }
    return 0;
}

void wire_metrics_free(wire_metrics_t *x)
{
    free((char *)x->json);
    free(x->case_ids);
    x->json = NULL;
    x->case_ids = NULL;
}

static int metrics_values(const wire_msg_t *m, wire_metrics_t *x, char *err)
{
    const msgpack_object *v = wire_get(m, "values");
    if (!v) return 0;
    if (v->type != MSGPACK_OBJECT_MAP) return set_err(err, "metrics: 'values' is not a map");
    if (v->via.map.size > WIRE_MAX_METRICS) return set_err(err, "metrics: more than %d values", WIRE_MAX_METRICS);
    for (uint32_t i = 0; i < v->via.map.size; i++) {
        const msgpack_object_kv *kv = &v->via.map.ptr[i];
        if (wire_obj_str(&kv->key, x->names[i], WIRE_NAME_LEN) || !x->names[i][0])
            return set_err(err, "metrics: value name %u is not a string of 1..%d bytes", i, WIRE_NAME_LEN - 1);
        for (uint32_t j = 0; j < i; j++)
            if (!strcmp(x->names[j], x->names[i])) return set_err(err, "metrics: value '%s' given twice", x->names[i]);
        const msgpack_object *val = &kv->val;
        if (val->type == MSGPACK_OBJECT_NIL) x->values[i] = NAN;
        else if (val->type == MSGPACK_OBJECT_FLOAT32 || val->type == MSGPACK_OBJECT_FLOAT64) x->values[i] = val->via.f64;
        else if (val->type == MSGPACK_OBJECT_POSITIVE_INTEGER) x->values[i] = (double)val->via.u64;
        else if (val->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) x->values[i] = (double)val->via.i64;
        else return set_err(err, "metrics: value '%s' is not a number or nil", x->names[i]);
        if (isinf(x->values[i])) return set_err(err, "metrics: value '%s' is infinite", x->names[i]);
        x->nvalues = (int)i + 1;
    }
    return 0;
}

int wire_decode_metrics(const wire_msg_t *m, wire_metrics_t *x, char *err)
{
    memset(x, 0, sizeof *x);
    TRY(need_type(m, "metrics", err));
    TRY(wire_get_u64(m, "step", &x->step, 1, err));
    TRY(wire_get_f64(m, "wall_time", &x->wall_time, 1, err));
    TRY(metrics_values(m, x, err));
    const msgpack_object *j = wire_get(m, "json");
    if (j) {
        if (j->type != MSGPACK_OBJECT_STR || j->via.str.size > WIRE_MAX_JSON ||
            (j->via.str.size && memchr(j->via.str.ptr, 0, j->via.str.size)))   // empty: NULL ptr
            return set_err(err, "metrics: 'json' is not a string of at most %d bytes", WIRE_MAX_JSON);
        char *s = xmalloc(j->via.str.size + 1);
        if (j->via.str.size) memcpy(s, j->via.str.ptr, j->via.str.size);
        s[j->via.str.size] = 0;
        x->json = s;
    }
    const msgpack_object *ids = wire_get(m, "case_ids");
    if (ids) {
        if (ids->type != MSGPACK_OBJECT_ARRAY || ids->via.array.size > WIRE_MAX_CASES) {
            wire_metrics_free(x);
            return set_err(err, "metrics: 'case_ids' is not a list of at most %d", WIRE_MAX_CASES);
        }
        x->case_ids = xcalloc(ids->via.array.size ? ids->via.array.size : 1, WIRE_ID_LEN);
        if (wire_get_strv(m, "case_ids", x->case_ids[0], WIRE_ID_LEN, WIRE_MAX_CASES, &x->ncases, 1, err)) {
            wire_metrics_free(x);
            return -1;
        }
    }
    for (int i = 0; i < m->narrays; i++) {
        const wire_array_t *a = &m->arrays[i];
        unsigned ok = WIRE_DT(WIRE_U8) | WIRE_DT(WIRE_I32) | WIRE_DT(WIRE_F32) | WIRE_DT(WIRE_F64);
        if (!(ok & WIRE_DT(a->dtype)) || a->rank < 1 || (x->ncases && a->shape[0] != x->ncases)) {
            wire_metrics_free(x);
            return set_err(err, "metrics: array '%s' must be u8/i32/f32/f64 with one row per case", a->name);
        }
        x->arrays[x->narrays++] = *a;
    }
    return 0;
}

// ---- heartbeat, ready, stop ------------------------------------------------------------------

int wire_encode_heartbeat(wire_out_t *o, const wire_heartbeat_t *h, char *err)
{
    wire_out_init(o, "heartbeat");
    if (!ident_ok(h->stage)) return set_err(err, "heartbeat: bad stage name");
    wire_put_str(o, "stage", h->stage);
    wire_put_i64(o, "pid", h->pid);
    wire_put_u64(o, "seq", h->seq);
    wire_put_f64(o, "time", h->time);
    return 0;
}

int wire_decode_heartbeat(const wire_msg_t *m, wire_heartbeat_t *h, char *err)
{
    memset(h, 0, sizeof *h);
    TRY(need_type(m, "heartbeat", err));
    TRY(get_ident(m, "stage", h->stage, 1, err));
    TRY(wire_get_i64(m, "pid", &h->pid, 0, INT32_MAX, 1, err));
    TRY(wire_get_u64(m, "seq", &h->seq, 0, err));
    TRY(wire_get_f64(m, "time", &h->time, 0, err));
    return 0;
}

int wire_encode_ready(wire_out_t *o, const wire_ready_t *r, char *err)
{
    wire_out_init(o, "ready");
    if (!ident_ok(r->stage) || r->ncaps < 0 || r->ncaps > WIRE_MAX_CAPS) return set_err(err, "ready: bad stage or capabilities");
    wire_put_str(o, "stage", r->stage);
    wire_put_i64(o, "pid", r->pid);
    wire_put_strv(o, "capabilities", r->caps[0], WIRE_NAME_LEN, r->ncaps);
    return 0;
}

int wire_decode_ready(const wire_msg_t *m, wire_ready_t *r, char *err)
{
    memset(r, 0, sizeof *r);
    TRY(need_type(m, "ready", err));
    TRY(get_ident(m, "stage", r->stage, 1, err));
    TRY(wire_get_i64(m, "pid", &r->pid, 0, INT32_MAX, 1, err));
    TRY(wire_get_strv(m, "capabilities", r->caps[0], WIRE_NAME_LEN, WIRE_MAX_CAPS, &r->ncaps, 0, err));
    return 0;
}

int wire_encode_stop(wire_out_t *o, const wire_stop_t *s, char *err)
{
    (void)err;
    wire_out_init(o, "stop");
    if (s->reason[0]) wire_put_str(o, "reason", s->reason);
    return 0;
}

int wire_decode_stop(const wire_msg_t *m, wire_stop_t *s, char *err)
{
    memset(s, 0, sizeof *s);
    TRY(need_type(m, "stop", err));
    TRY(wire_get_str(m, "reason", s->reason, sizeof s->reason, 0, err));
    return 0;
}

// ---- request, error --------------------------------------------------------------------------

int wire_encode_request(wire_out_t *o, const wire_request_t *r, char *err)
{
    wire_out_init(o, "request");
    if (!ident_ok(r->what)) return set_err(err, "request: bad 'what'");
    wire_put_str(o, "what", r->what);
    if (r->index >= 0) wire_put_i64(o, "index", r->index);
    if (r->step) wire_put_u64(o, "step", r->step);
    wire_put_u64(o, "seq", r->seq);
    return 0;
}

int wire_decode_request(const wire_msg_t *m, wire_request_t *r, char *err)
{
    memset(r, 0, sizeof *r);
    r->index = -1;
    TRY(need_type(m, "request", err));
    TRY(get_ident(m, "what", r->what, 1, err));
    TRY(wire_get_i64(m, "index", &r->index, 0, INT64_MAX, 0, err));
    TRY(wire_get_u64(m, "step", &r->step, 0, err));
    TRY(wire_get_u64(m, "seq", &r->seq, 0, err));
    if (!strcmp(r->what, "validation_case") && r->index < 0) return set_err(err, "request validation_case: no index");
    return 0;
}

int wire_encode_error(wire_out_t *o, const wire_error_t *e, char *err)
{
    wire_out_init(o, "error");
    if (e->code[0] && !ident_ok(e->code)) return set_err(err, "error: bad code");
    if (e->code[0]) wire_put_str(o, "code", e->code);
    wire_put_str(o, "message", e->message);
    wire_put_u64(o, "seq", e->seq);
    return 0;
}

int wire_decode_error(const wire_msg_t *m, wire_error_t *e, char *err)
{
    memset(e, 0, sizeof *e);
    TRY(need_type(m, "error", err));
    TRY(get_ident(m, "code", e->code, 0, err));
    TRY(wire_get_str(m, "message", e->message, sizeof e->message, 1, err));
    TRY(wire_get_u64(m, "seq", &e->seq, 0, err));
    return 0;
}
