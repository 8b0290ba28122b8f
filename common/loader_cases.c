/*
loader_cases.c -- the loader's ROUTER `cases` socket: validation cases on request.
A DEALER (or REQ: an empty delimiter frame is kept and echoed) sends a `request`:
  what "list"                         -> `case_list` {case_ids: [...], count, seq}
  what "validation_case" or "case"    -> `volume` with its `prep` record and `seq`, chosen by
        `index` (position in the list) or by an optional `case_id` string field
Anything else, or a case that cannot be loaded, gets an `error` {code, message, seq}; malformed
messages are logged with the peer and answered with code "bad_request". Never blocks: a ROUTER
drops replies to peers that are gone or full.
*/
#include "loader.h"
#include "check.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(DATASET_ID_MAX == WIRE_ID_LEN - 1, "a dataset's case ids must fit the wire's");

#define MAX_PARTS (WIRE_MAX_ARRAYS + 3)     // identity, delimiter, header, arrays

typedef struct { zmq_msg_t *id; int delim; } envelope_t;

static int send_envelope(void *s, const envelope_t *e)
{
    if (zmq_send(s, zmq_msg_data(e->id), zmq_msg_size(e->id), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return -1;
    if (e->delim && zmq_send(s, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return -1;
    return 0;
}

static void reply(loader_t *L, const envelope_t *e, wire_out_t *o)
{
    char err[ERR_LEN];
    if (send_envelope(L->cases, e) < 0) {
        log_msg('W', "cases: reply dropped: %s", zmq_strerror(zmq_errno()));
        return;
    }
    if (wire_send(L->cases, o, 0, err) < 0) log_msg('W', "cases: reply failed: %s", err);
}

static void reply_error(loader_t *L, const envelope_t *e, const char *code, uint64_t seq, const char *msg)
{
    wire_error_t x;
    memset(&x, 0, sizeof x);
    snprintf(x.code, sizeof x.code, "%s", code);
    snprintf(x.message, sizeof x.message, "%s", msg);
    x.seq = seq;
    wire_out_t o;
    char err[ERR_LEN];
    if (wire_encode_error(&o, &x, err) == 0) reply(L, e, &o);
    wire_out_free(&o);
}

static void reply_list(loader_t *L, const envelope_t *e, uint64_t seq)
{
    char (*ids)[WIRE_ID_LEN] = xcalloc((size_t)L->n_val + 1, WIRE_ID_LEN);
    for (int k = 0; k < L->n_val; k++) snprintf(ids[k], WIRE_ID_LEN, "%s", L->ds.cases[L->val[k]].id);
    wire_out_t o;
    wire_out_init(&o, "case_list");
    wire_put_strv(&o, "case_ids", ids[0], WIRE_ID_LEN, L->n_val);
    wire_put_i64(&o, "count", L->n_val);
    wire_put_u64(&o, "seq", seq);
    reply(L, e, &o);
    wire_out_free(&o);
    free(ids);
}

static void reply_case(loader_t *L, const envelope_t *e, const wire_msg_t *m, const wire_request_t *r)
{
    char id[WIRE_ID_LEN], err[ERR_LEN], msg[WIRE_TEXT_LEN];
    int k = -1;
    int has_id = wire_get_str(m, "case_id", id, sizeof id, 0, err);
    if (has_id < 0) { reply_error(L, e, "bad_request", r->seq, err); return; }
    if (has_id == 0) {
        for (int j = 0; j < L->n_val; j++)
            if (!strcmp(L->ds.cases[L->val[j]].id, id)) k = j;
        if (k < 0) {
            snprintf(msg, sizeof msg, "no case '%s' among the %d served (%s)", id, L->n_val, L->cfg->val_sel);
            reply_error(L, e, "not_found", r->seq, msg);
            return;
        }
    } else if (r->index >= 0 && r->index < L->n_val) {
        k = (int)r->index;
    } else {
        snprintf(msg, sizeof msg, "index %lld: %d cases are served (%s)", (long long)r->index, L->n_val, L->cfg->val_sel);
        reply_error(L, e, "not_found", r->seq, msg);
        return;
    }
    wire_out_t o;
    cached_case_t cc;
    char *prep;
    if (loader_volume_msg(L, L->val[k], k, -1, 1, &o, &cc, &prep, err) < 0) {
        log_msg('W', "cases: case %s: %s", L->ds.cases[L->val[k]].id, err);
        reply_error(L, e, "bad_case", r->seq, err);
        wire_out_free(&o);
        return;
    }
    wire_put_u64(&o, "seq", r->seq);
    reply(L, e, &o);
    wire_out_free(&o);
    cached_case_close(&cc);
    free(prep);
}

static void handle(loader_t *L, const envelope_t *e, const char *peer, wire_frame_t *fr, int nfr)
{
    wire_msg_t m;
    wire_msg_init(&m);
    char err[ERR_LEN];
    wire_request_t r;
    if (wire_parse(&m, fr, nfr, err) < 0 || wire_decode_request(&m, &r, err) < 0) {
        log_msg('W', "cases: bad message from %s: %s", peer, err);
        reply_error(L, e, "bad_request", 0, err);
    } else if (!strcmp(r.what, "list")) {
        reply_list(L, e, r.seq);
    } else if (!strcmp(r.what, "validation_case") || !strcmp(r.what, "case")) {
        reply_case(L, e, &m, &r);
    } else {
        snprintf(err, sizeof err, "unknown request '%s' (list, validation_case, case)", r.what);
        reply_error(L, e, "bad_request", r.seq, err);
    }
    wire_msg_free(&m);
}

void loader_serve_cases(loader_t *L)
{
    for (int served = 0; served < 64; served++) {   // bounded, so training volumes keep flowing
        zmq_msg_t parts[MAX_PARTS], extra;
        int n = 0, more = 1, dropped = 0;
        while (more) {
            zmq_msg_t *p = n < MAX_PARTS ? &parts[n] : &extra;
            zmq_msg_init(p);
            int rc;
            do rc = zmq_msg_recv(p, L->cases, n == 0 && !dropped ? ZMQ_DONTWAIT : 0);
            while (rc < 0 && zmq_errno() == EINTR);
            if (rc < 0) {
                if (zmq_errno() != EAGAIN) log_msg('W', "cases: recv: %s", zmq_strerror(zmq_errno()));
                zmq_msg_close(p);
                for (int i = 0; i < n; i++) zmq_msg_close(&parts[i]);
                return;
            }
            more = zmq_msg_more(p);
            if (p == &extra) { dropped++; zmq_msg_close(&extra); } else n++;
        }
        char peer[64];
        stage_msg_peer(&parts[0], peer, sizeof peer);
        envelope_t e = { &parts[0], n > 1 && zmq_msg_size(&parts[1]) == 0 };
        int first = 1 + e.delim;
        if (dropped || n - first < 1) {
            log_msg('W', "cases: malformed message from %s (%d frames)", peer, n + dropped);
            reply_error(L, &e, "bad_request", 0, "malformed message");
        } else {
            wire_frame_t fr[MAX_PARTS];
            for (int i = first; i < n; i++) {
                fr[i - first].data = zmq_msg_data(&parts[i]);
                fr[i - first].len = zmq_msg_size(&parts[i]);
            }
            handle(L, &e, peer, fr, n - first);
        }
        for (int i = 0; i < n; i++) zmq_msg_close(&parts[i]);
    }
}
