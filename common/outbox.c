/*
outbox.c -- see outbox.h. The messages wait in posting order in an array (a few hundred at most
in practice; OUTBOX_MAX_ENTRIES bounds it); each is a wire_out_t made resendable with
wire_out_keep, so every send copies its frames into ZeroMQ and the message stays ours until its
ack. Ids are "<who>.<pid>.<16 random hex>.<n in hex>": a restarted stage (maybe with the same pid, as
pid 1 in a container) never reuses its predecessor's ids, which the exporter remembers.
*/
#define _GNU_SOURCE
#include "outbox.h"
#include "check.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    wire_out_t o;
    char id[64];
    char what[96];
    char key[WIRE_ID_LEN];
    size_t bytes;
    int sends;
    uint64_t first_seq, sent_seq;   // the outbox's send count at this one's first and last send
    double posted_at, sent_at;      // monotonic seconds of the posting and of the last send
    double hold_until;              // the exporter could not file it (retry): not before this
} entry_t;

// What the exporter is known to do. Until known it is treated as acknowledging (nothing sent is
// given up); an older build (no ack by id) is recognised only by its own answers.
typedef enum { PEER_UNKNOWN, PEER_ACKS, PEER_LEGACY } peer_t;

struct outbox {
    char prefix[48];                // who.pid.nonce: at most 15 + 1 + 10 + 1 + 16
    uint64_t seq;                   // ids given
    uint64_t send_seq, acked_seq;   // sends made; a lower bound of the newest send processed
    peer_t peer;
    char probe_id[64];              // the `request` {what: "acks"} that asks the exporter
    uint64_t probe_seq;
    double probe_at;                // monotonic seconds of its last send (0: never)
    double last_ack, resend_s;
    void *sock;                     // the DEALER connected to the exporter
    size_t max_bytes, bytes;
    entry_t **e;
    int n;
    long acked, dropped, unconfirmed;
};

static double mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

outbox_t *outbox_new(const char *who, void *sock, size_t max_bytes, double resend_s)
{
    outbox_t *b = xcalloc(1, sizeof *b);
    uint64_t nonce;
    if (getrandom(&nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce) {      // no entropy: still unlikely to repeat
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        nonce = ((uint64_t)t.tv_sec << 30) ^ (uint64_t)t.tv_nsec ^ ((uint64_t)getpid() << 48);
    }
    snprintf(b->prefix, sizeof b->prefix, "%.15s.%d.%016llx", who, (int)getpid(), (unsigned long long)nonce);
    snprintf(b->probe_id, sizeof b->probe_id, "%s.probe", b->prefix);
    b->probe_seq = nonce >> 1;                      // an older exporter's `error` echoes it
    b->sock = sock;
    b->max_bytes = max_bytes;
    b->resend_s = resend_s;
    b->last_ack = mono();
    b->e = xcalloc(OUTBOX_MAX_ENTRIES, sizeof *b->e);
    return b;
}

static void drop(outbox_t *b, int i)
{
    entry_t *x = b->e[i];
    b->bytes -= x->bytes;
    wire_out_free(&x->o);
    free(x);
    memmove(b->e + i, b->e + i + 1, (size_t)(b->n - i - 1) * sizeof *b->e);
    b->n--;
}

void outbox_free(outbox_t **pb)
{
    outbox_t *b = *pb;
    if (!b) return;
    while (b->n) drop(b, b->n - 1);
    free(b->e);
    free(b);
    *pb = NULL;
}

static void free_copy(void *data, void *hint) { (void)hint; free(data); }

void outbox_post(outbox_t *b, wire_out_t *o, const char *what, const char *key)
{
    outbox_post_id(b, o, what, key, NULL);
}

void outbox_fresh_id(outbox_t *b, char id[64])
{
    snprintf(id, 64, "%.43s.%llx", b->prefix, (unsigned long long)++b->seq);   // <= 63 bytes
}

void outbox_post_id(outbox_t *b, wire_out_t *o, const char *what, const char *key, const char *id)
{
    entry_t *x = xcalloc(1, sizeof *x);
    if (id) {
        ASSERT(wire_token_ok(id));
        snprintf(x->id, sizeof x->id, "%s", id);
    } else {
        outbox_fresh_id(b, x->id);
    }
    snprintf(x->what, sizeof x->what, "%s", what);
    snprintf(x->key, sizeof x->key, "%s", key ? key : "");
    wire_put_str(o, "id", x->id);
    for (int i = 0; i < o->narrays; i++) {          // a borrowed array must outlive the caller's buffer
        wire_array_t *a = &o->arrays[i];
        if (o->free_fn[i] || !a->nbytes) continue;
        void *copy = xmalloc(a->nbytes);
        memcpy(copy, a->data, a->nbytes);
        a->data = copy;
        o->free_fn[i] = free_copy;
    }
    wire_out_keep(o);
    wire_out_move(&x->o, o);
    x->posted_at = mono();
    x->bytes = x->o.body.size;
    for (int i = 0; i < x->o.narrays; i++) x->bytes += x->o.arrays[i].nbytes;

    if (key)
        for (int i = 0; i < b->n; i++)
            if (!strcmp(b->e[i]->key, key)) {
                log_msg('I', "exporter: %s replaces %s, not acknowledged yet", x->what, b->e[i]->what);
                drop(b, i);
                break;
            }
    while (b->n && (b->n == OUTBOX_MAX_ENTRIES || b->bytes + x->bytes > b->max_bytes)) {
        log_msg('W', "exporter: %s dropped unacknowledged (%d message(s), %.1f MB waiting: the exporter is away)",
                b->e[0]->what, b->n, b->bytes / 1e6);
        b->dropped++;
        drop(b, 0);
    }
    b->e[b->n++] = x;
    b->bytes += x->bytes;
    outbox_tick(b);
}

// Whether sent message x is due again. An exporter handles one connection's messages in order,
// so an ack for a message first sent after x's last send means x was lost (the exporter died
// with it): at once. Otherwise only when the exporter has acknowledged nothing for resend_s
// (dead or frozen, not merely slow: copies to a slow one would only queue behind the original).
static int due_again(const outbox_t *b, const entry_t *x, double now)
{
    if (b->acked_seq > x->sent_seq) return 1;
    return now - x->sent_at >= b->resend_s && now - b->last_ack >= b->resend_s;
}

// Ask the exporter whether it acknowledges by id (docs/protocol.md, request "acks"): a current
// one answers `ack` with the probe's id, an older one `error` with the probe's seq.
static void probe(outbox_t *b, double now)
{
    if (b->peer != PEER_UNKNOWN || (b->probe_at && now - b->probe_at < b->resend_s)) return;
    wire_out_t o;
    char err[ERR_LEN];
    wire_out_init(&o, "request");
    wire_put_str(&o, "what", "acks");
    wire_put_str(&o, "id", b->probe_id);
    wire_put_u64(&o, "seq", b->probe_seq);
    if (wire_send(b->sock, &o, ZMQ_DONTWAIT, err) == 0) b->probe_at = now;
    wire_out_free(&o);
}

// The exporter is an older build: what it was sent it has filed (as before: best effort).
static void go_legacy(outbox_t *b)
{
    if (b->peer == PEER_LEGACY) return;
    b->peer = PEER_LEGACY;
    log_msg('W', "exporter: it does not acknowledge messages by id (an older srm-exporter): metrics and "
            "predictions are sent once, without resend");
    for (int i = 0; i < b->n; i++)
        if (b->e[i]->sends) { b->unconfirmed++; drop(b, i--); }
}

// The exporter has acknowledged nothing for resend_s while sent messages wait: it died, froze --
// or was replaced, maybe by an older build. Ask again, ahead of any copy.
static void reprobe_if_silent(outbox_t *b, double now)
{
    if (b->peer != PEER_ACKS || now - b->last_ack < b->resend_s) return;
    for (int i = 0; i < b->n; i++)
        if (b->e[i]->sends && now - b->e[i]->sent_at >= b->resend_s) {
            b->peer = PEER_UNKNOWN;
            b->probe_at = 0;
            return;
        }
}

uint64_t outbox_sends(const outbox_t *b) { return b->send_seq; }
int outbox_acked_since(const outbox_t *b, uint64_t sends) { return b->acked_seq > sends; }

void outbox_tick(outbox_t *b)
{
    double now = mono();
    char err[ERR_LEN];
    reprobe_if_silent(b, now);
    probe(b, now);
    for (int i = 0; i < b->n; i++) {
        entry_t *x = b->e[i];
        if (x->hold_until > now || (x->sends && !due_again(b, x, now))) continue;
        if (x->sends >= OUTBOX_MAX_SENDS) {
            log_msg('W', "exporter: %s sent %d times without an ack; dropped", x->what, x->sends);
            b->dropped++;
            drop(b, i--);
            continue;
        }
        int rc = wire_send(b->sock, &x->o, ZMQ_DONTWAIT, err);
        if (rc == WIRE_AGAIN) return;               // away or full: the rest wait too, in order
        if (rc < 0) {
            log_msg('W', "exporter: %s cannot be sent (%s); dropped", x->what, err);
            b->dropped++;
            drop(b, i--);
            continue;
        }
        if (x->sends) log_msg('I', "exporter: %s sent again (not acknowledged)", x->what);
        else x->first_seq = b->send_seq + 1;
        x->sends++;
        x->sent_seq = ++b->send_seq;
        x->sent_at = now;
        if (b->peer == PEER_LEGACY) { b->unconfirmed++; drop(b, i--); }   // no ack will come
    }
}

int outbox_on_reply(outbox_t *b, const wire_msg_t *m)
{
    char id[64], err[ERR_LEN], why[WIRE_MAX_STR];
    uint64_t seq;
    if (!strcmp(m->type, "error")) {                // an older exporter's answer to the probe
        if (wire_get_u64(m, "seq", &seq, 1, err) || seq != b->probe_seq) return 0;
        go_legacy(b);
        return 1;
    }
    if (strcmp(m->type, "ack")) return 0;
    if (wire_get_str(m, "id", id, sizeof id, 1, err)) {
        if (b->peer == PEER_UNKNOWN) go_legacy(b);  // a prediction acked without id: an older exporter
        return 1;
    }
    b->peer = PEER_ACKS;                            // any ack by id: it acknowledges, and it is alive
    b->last_ack = mono();
    int i = 0;
    while (i < b->n && strcmp(b->e[i]->id, id)) i++;
    if (i == b->n) return 1;                        // the probe's, a duplicate's or a dropped message's
    int ok = 0, retry = 0;
    if (wire_get_bool(m, "ok", &ok, 1, err) < 0) {
        log_msg('W', "%s: ack of %s without a valid 'ok': %s", m->peer, b->e[i]->what, err);
        return 1;
    }
    // the ack may be the copy's or the original's: the original's first send is a safe bound
    if (b->e[i]->first_seq > b->acked_seq) b->acked_seq = b->e[i]->first_seq;
    if (ok) {
        b->acked++;
        drop(b, i);
        return 1;
    }
    if (wire_get_str(m, "error", why, sizeof why, 0, err)) snprintf(why, sizeof why, "no reason given");
    if (wire_get_bool(m, "retry", &retry, 0, err) < 0) retry = 0;
    if (retry) {
        log_msg('W', "exporter could not file %s: %s; sending again in %.0f s", b->e[i]->what, why, b->resend_s);
        b->e[i]->hold_until = mono() + b->resend_s;
        b->e[i]->sends = 0;                         // sent afresh then, not as a copy
    } else {
        log_msg('W', "exporter refused %s: %s; dropped", b->e[i]->what, why);
        b->dropped++;
        drop(b, i);
    }
    return 1;
}

int outbox_pending(const outbox_t *b) { return b ? b->n : 0; }
double outbox_stalled_s(const outbox_t *b)
{
    if (!b || !b->n) return 0;
    double since = b->e[0]->posted_at > b->last_ack ? b->e[0]->posted_at : b->last_ack;
    return mono() - since;
}
long outbox_unconfirmed(const outbox_t *b) { return b ? b->unconfirmed : 0; }
long outbox_acked(const outbox_t *b) { return b ? b->acked : 0; }
long outbox_dropped(const outbox_t *b) { return b ? b->dropped : 0; }
