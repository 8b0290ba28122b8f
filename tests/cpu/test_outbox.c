/*
test_outbox.c -- outbox.c, the resend queue between the trainer / evaluator and the exporter,
against a ROUTER played by the test (answering the outbox's "acks" probe as a current exporter,
as an older one, or not at all): every posted message carries a fresh id the exporter accepts
([A-Za-z0-9_.:-], <= 63 bytes); an ack by id retires exactly that message; a message is sent
again, with the same bytes (a borrowed array is copied at posting), only when evidently lost --
a message first sent after it was acknowledged, or nothing was acknowledged for resend_s -- and
never while the exporter keeps acknowledging (slow, not dead); a message sent to an exporter that
then dies before ever acknowledging anything is sent again to its successor; ok=false + retry
keeps it, ok=false alone drops it; a newer message with the same key replaces an unacknowledged
one; bounds drop the oldest; an absent exporter makes nothing block, the messages arrive in
order once it binds; an older exporter (probe answered with `error`, or a prediction acked
without id) gets each message once.
*/
#include "test.h"
#include "check.h"
#include "outbox.h"
#include "stage.h"
#include "wire.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char err[ERR_LEN];

static double mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void nap(double s)
{
    struct timespec t = { (time_t)s, (long)((s - (time_t)s) * 1e9) };
    nanosleep(&t, NULL);
}

// One message the ROUTER got: the sender's routing frame, the id, the first array's first byte.
typedef struct {
    zmq_msg_t route;
    char id[64];
    int first;
    size_t hdr_len;
} got_t;

// How the ROUTER answers the outbox's `request` {what: "acks"}: as a current exporter (ack by
// id), as an older one (error echoing seq), or not at all.
enum { PROBE_ACK, PROBE_ERROR, PROBE_SILENT } probe_mode = PROBE_ACK;
static int probes;

static void answer_probe(void *router, zmq_msg_t *route, const wire_msg_t *m)
{
    char id[64] = "";
    uint64_t seq = 0;
    probes++;
    wire_get_str(m, "id", id, sizeof id, 1, err);
    wire_get_u64(m, "seq", &seq, 1, err);
    if (probe_mode == PROBE_SILENT) return;
    wire_out_t o;
    if (probe_mode == PROBE_ACK) {
        wire_out_init(&o, "ack");
        wire_put_str(&o, "of", "request");
        wire_put_str(&o, "id", id);
        wire_put_bool(&o, "ok", 1);
    } else {
        wire_out_init(&o, "error");
        wire_put_str(&o, "code", "bad_request");
        wire_put_str(&o, "message", "request 'acks': the exporter serves latest, latest_checkpoint, checkpoint");
        wire_put_u64(&o, "seq", seq);
    }
    zmq_send(router, zmq_msg_data(route), zmq_msg_size(route), ZMQ_SNDMORE);
    EXPECT(wire_send(router, &o, 0, err) == 0, "%s", err);
    wire_out_free(&o);
}

// Receive one message (not a probe: those are answered) within ms on the ROUTER. 1 when one came.
static int recv_one(void *router, got_t *g, int ms)
{
    zmq_pollitem_t it = { .socket = router, .events = ZMQ_POLLIN };
    for (;;) {
        if (zmq_poll(&it, 1, ms) <= 0) return 0;
        zmq_msg_init(&g->route);
        if (zmq_msg_recv(&g->route, router, 0) < 0) return 0;
        wire_msg_t m;
        wire_msg_init(&m);
        if (wire_recv(router, &m, 0, err) != 0) { wire_msg_free(&m); zmq_msg_close(&g->route); return 0; }
        if (!strcmp(m.type, "request")) {
            answer_probe(router, &g->route, &m);
            wire_msg_free(&m);
            zmq_msg_close(&g->route);
            continue;
        }
        g->id[0] = 0;
        wire_get_str(&m, "id", g->id, sizeof g->id, 1, err);
        g->first = m.narrays ? ((const uint8_t *)m.arrays[0].data)[0] : -1;
        g->hdr_len = zmq_msg_size(&m.frames[0]);
        wire_msg_free(&m);
        return 1;
    }
}

// Everything that arrives within ms; returns the count (at most cap kept in g).
static int recv_all(void *router, got_t *g, int cap, int ms)
{
    int n = 0;
    got_t tmp;
    while (recv_one(router, n < cap ? &g[n] : &tmp, ms)) {
        if (n >= cap) zmq_msg_close(&tmp.route);
        n++;
    }
    return n;
}

static void release(got_t *g, int n)
{
    for (int i = 0; i < n; i++) zmq_msg_close(&g[i].route);
}

// The exporter's answer to g: ack {of, id, ok[, error, retry]}.
static void ack(void *router, got_t *g, int ok, int retry)
{
    wire_out_t o;
    wire_out_init(&o, "ack");
    wire_put_str(&o, "of", "metrics");
    wire_put_str(&o, "id", g->id);
    wire_put_bool(&o, "ok", ok);
    if (!ok) { wire_put_str(&o, "error", "test"); wire_put_bool(&o, "retry", retry); }
    zmq_send(router, zmq_msg_data(&g->route), zmq_msg_size(&g->route), ZMQ_SNDMORE);
    EXPECT(wire_send(router, &o, 0, err) == 0, "%s", err);
    wire_out_free(&o);
}

// Let the outbox read what the ROUTER answered (within ms).
static void pump(outbox_t *b, void *dealer, int ms)
{
    double end = ms / 1000.0;
    for (double t = 0; t <= end; t += 0.01) {
        for (;;) {
            wire_msg_t m;
            wire_msg_init(&m);
            int rc = wire_recv(dealer, &m, ZMQ_DONTWAIT, err);
            if (rc == 0) EXPECT(outbox_on_reply(b, &m) == 1, "an ack with an id is the outbox's");
            wire_msg_free(&m);
            if (rc) break;
        }
        nap(0.01);
    }
}

// A message whose one array is n bytes of `fill`, borrowed from buf.
static void post(outbox_t *b, uint8_t *buf, size_t n, int fill, const char *key)
{
    wire_out_t o;
    wire_out_init(&o, "metrics");
    wire_put_u64(&o, "step", (uint64_t)fill);
    memset(buf, fill, n);
    int64_t shape[1] = { (int64_t)n };
    wire_out_array(&o, "blob", WIRE_U8, 1, shape, buf);
    char what[32];
    snprintf(what, sizeof what, "message %d", fill);
    outbox_post(b, &o, what, key);
    wire_out_free(&o);                              // o was taken: this frees nothing of it
}

// The exporter replaced: its ROUTER closed and bound anew by a successor answering probes as
// `mode`; the DEALER reconnects within its 100 ms interval.
static void *replace_exporter(stage_t *st, void *router, const char *ep, const stage_sock_opts_t *o, int mode)
{
    stage_close(st, &router);
    void *r = stage_socket(st, ZMQ_ROUTER, ep, STAGE_BIND, o, err);
    EXPECT(r != NULL, "%s", err);
    probe_mode = mode;
    nap(0.5);
    return r;
}

static int id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n < 1 || n > 63) return 0;
    return strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-") == n;
}

int main(void)
{
    setenv("SRM_QUIET", "1", 0);
    stage_t *st = stage_new("test_outbox");
    char ep[512];
    snprintf(ep, sizeof ep, "ipc://%s/exporter", test_tmpdir("outbox"));
    stage_sock_opts_t o = stage_sock_defaults();
    o.hwm = 16;
    void *router = stage_socket(st, ZMQ_ROUTER, ep, STAGE_BIND, &o, err);
    void *dealer = stage_socket(st, ZMQ_DEALER, ep, STAGE_CONNECT, &o, err);
    EXPECT(router && dealer, "%s", err);
    nap(0.2);                                       // connected: IMMEDIATE lets sends through
    got_t g[8];
    uint8_t buf[100];
    int n;

    // Delivery, ids, acks by id; no copies while the exporter keeps acknowledging.
    outbox_t *b = outbox_new("trainer", dealer, 1 << 20, 1.0);
    for (int k = 1; k <= 3; k++) post(b, buf, sizeof buf, k, NULL);
    memset(buf, 0xEE, sizeof buf);                  // the caller reuses its buffer at once
    n = recv_all(router, g, 8, 300);
    EXPECT(n == 3 && probes == 1, "3 messages sent at once (%d), and the probe (%d)", n, probes);
    EXPECT(outbox_pending(b) == 3, "3 pending before any ack: %d", outbox_pending(b));
    for (int i = 0; i < n; i++) {
        EXPECT(id_ok(g[i].id), "id '%s' is 1..63 of [A-Za-z0-9_.:-]", g[i].id);
        EXPECT(g[i].first == i + 1, "message %d carries its own bytes (%d)", i + 1, g[i].first);
        EXPECT(!strncmp(g[i].id, "trainer.", 8), "id '%s' names its sender", g[i].id);
    }
    EXPECT(n == 3 && strcmp(g[0].id, g[1].id) && strcmp(g[1].id, g[2].id) && strcmp(g[0].id, g[2].id), "ids differ");
    char second[64];
    snprintf(second, sizeof second, "%s", n == 3 ? g[1].id : "?");
    size_t second_len = n == 3 ? g[1].hdr_len : 0;
    pump(b, dealer, 100);                           // the probe's answer
    nap(1.0);                                       // all three older than resend_s...
    if (n == 3) ack(router, &g[0], 1, 0);           // ...but the exporter is working: it acks 1
    pump(b, dealer, 100);
    EXPECT(outbox_pending(b) == 2 && outbox_acked(b) == 1, "one acked: pending %d acked %ld", outbox_pending(b), outbox_acked(b));
    outbox_tick(b);
    release(g, n);
    EXPECT(recv_all(router, g, 8, 100) == 0, "no copies to an exporter that acknowledged within resend_s (slow, not dead)");
    nap(1.0);                                       // now nothing acknowledged for resend_s: stalled
    outbox_tick(b);
    n = recv_all(router, g, 8, 300);
    EXPECT(n == 2 && !strcmp(g[0].id, second) && g[0].first == 2 && g[0].hdr_len == second_len && g[1].first == 3,
           "both unacknowledged ones again, in order, same id and bytes (%d, '%s', %d)", n, n ? g[0].id : "", n ? g[0].first : -1);
    for (int i = 0; i < n; i++) ack(router, &g[i], 1, 0);
    pump(b, dealer, 100);
    release(g, n);
    EXPECT(outbox_pending(b) == 0 && outbox_stalled_s(b) == 0, "all acked, nothing waits");

    // A message overtaken by an acknowledged later one was lost: it goes again at once.
    post(b, buf, sizeof buf, 4, NULL);
    n = recv_all(router, g, 8, 200);                // the exporter "loses" 4
    release(g, n);
    post(b, buf, sizeof buf, 5, NULL);
    n = recv_all(router, g, 8, 200);
    if (n == 1) ack(router, &g[0], 1, 0);
    pump(b, dealer, 100);
    release(g, n);
    outbox_tick(b);
    n = recv_all(router, g, 8, 300);
    EXPECT(n == 1 && g[0].first == 4, "the lost one again at once (%d, %d)", n, n ? g[0].first : -1);

    // A stale or duplicate ack, an ack without id, other messages: not the outbox's business.
    wire_msg_t m;
    wire_out_t w;
    wire_frame_t fr[2];
    wire_out_init(&w, "ack");
    wire_put_str(&w, "id", "trainer.1.0000000000000000.99");
    wire_put_bool(&w, "ok", 1);
    wire_msg_init(&m);
    EXPECT(wire_parse(&m, fr, wire_out_frames(&w, fr), err) == 0, "%s", err);
    EXPECT(outbox_on_reply(b, &m) == 1 && outbox_pending(b) == 1, "an unknown id's ack is absorbed, nothing retired");
    wire_msg_free(&m);
    wire_out_free(&w);
    wire_out_init(&w, "checkpoint_ack");
    wire_msg_init(&m);
    EXPECT(wire_parse(&m, fr, wire_out_frames(&w, fr), err) == 0, "%s", err);
    EXPECT(outbox_on_reply(b, &m) == 0, "a checkpoint_ack is left to the caller");
    wire_msg_free(&m);
    wire_out_free(&w);

    // ok=false: retry keeps it (sent again after resend_s), no retry drops it.
    char fourth[64];
    snprintf(fourth, sizeof fourth, "%s", n == 1 ? g[0].id : "?");
    if (n == 1) ack(router, &g[0], 0, 1);
    pump(b, dealer, 100);
    EXPECT(outbox_pending(b) == 1 && outbox_dropped(b) == 0, "retry=true keeps it");
    release(g, n);
    nap(1.05);
    outbox_tick(b);
    n = recv_all(router, g, 8, 300);
    EXPECT(n == 1 && !strcmp(g[0].id, fourth), "and sends it again (%d)", n);
    if (n == 1) ack(router, &g[0], 0, 0);
    pump(b, dealer, 100);
    EXPECT(outbox_pending(b) == 0 && outbox_dropped(b) == 1, "retry=false drops it: pending %d dropped %ld",
           outbox_pending(b), outbox_dropped(b));
    release(g, n);

    // A newer message with the same key replaces the unacknowledged one.
    post(b, buf, sizeof buf, 10, "case_a");
    post(b, buf, sizeof buf, 11, "case_b");
    post(b, buf, sizeof buf, 12, "case_a");
    n = recv_all(router, g, 8, 300);
    EXPECT(n == 3 && outbox_pending(b) == 2, "3 sent, 2 pending (%d, %d)", n, outbox_pending(b));
    release(g, n);
    nap(1.1);
    outbox_tick(b);
    n = recv_all(router, g, 8, 300);
    EXPECT(n == 2 && g[0].first == 11 && g[1].first == 12, "resent: case_b and the newer case_a only (%d: %d %d)", n,
           n > 0 ? g[0].first : -1, n > 1 ? g[1].first : -1);
    for (int i = 0; i < n; i++) ack(router, &g[i], 1, 0);
    pump(b, dealer, 100);
    EXPECT(outbox_pending(b) == 0, "all acked");
    release(g, n);
    outbox_free(&b);
    EXPECT(b == NULL, "freed");

    // Bounds: a byte budget of ~2.5 messages keeps the newest two.
    b = outbox_new("evaluator", dealer, 2 * (sizeof buf + 64) + 50, 10);
    for (int k = 20; k < 25; k++) post(b, buf, sizeof buf, k, NULL);
    EXPECT(outbox_pending(b) == 2 && outbox_dropped(b) == 3, "byte bound: pending %d dropped %ld", outbox_pending(b),
           outbox_dropped(b));
    n = recv_all(router, g, 8, 300);
    EXPECT(n == 5, "each was sent once before being dropped (%d)", n);
    release(g, n);
    outbox_free(&b);

    // The exporter dies before it ever acknowledged anything (its probe unanswered too): the
    // message is not given up, and its successor gets it.
    probe_mode = PROBE_SILENT;
    b = outbox_new("evaluator", dealer, 1 << 20, 0.3);
    post(b, buf, sizeof buf, 26, NULL);
    n = recv_all(router, g, 8, 200);
    EXPECT(n == 1, "sent (%d)", n);
    release(g, n);
    router = replace_exporter(st, router, ep, &o, PROBE_ACK);
    for (int t = 0; t < 10; t++) { outbox_tick(b); pump(b, dealer, 50); }
    n = recv_all(router, g, 8, 300);
    EXPECT(n >= 1 && g[0].first == 26, "the successor gets it (%d, %d)", n, n ? g[0].first : -1);
    for (int i = 0; i < n && i < 8; i++) ack(router, &g[i], 1, 0);
    pump(b, dealer, 100);
    EXPECT(outbox_pending(b) == 0 && outbox_acked(b) == 1, "and acks it: pending %d", outbox_pending(b));
    release(g, n < 8 ? n : 8);
    outbox_free(&b);

    // The exporter away: posting does not block, the messages wait, and arrive in order once it
    // binds (the DEALER's ZMQ_IMMEDIATE refuses sends until then).
    stage_close(st, &router);
    nap(0.3);
    b = outbox_new("evaluator", dealer, 1 << 20, 0.2);
    double t0 = mono();
    for (int k = 30; k < 33; k++) post(b, buf, sizeof buf, k, NULL);
    nap(0.3);
    outbox_tick(b);
    EXPECT(mono() - t0 < 0.5 && outbox_pending(b) == 3, "nothing blocks, 3 wait");
    EXPECT(outbox_stalled_s(b) >= 0.3, "no progress for %.2f s", outbox_stalled_s(b));
    router = stage_socket(st, ZMQ_ROUTER, ep, STAGE_BIND, &o, err);
    EXPECT(router != NULL, "%s", err);
    nap(0.5);                                       // the DEALER reconnects (100 ms interval)
    outbox_tick(b);
    n = recv_all(router, g, 8, 500);
    EXPECT(n == 3 && g[0].first == 30 && g[1].first == 31 && g[2].first == 32, "3 in order after the bind (%d)", n);
    for (int i = 0; i < n; i++) ack(router, &g[i], 1, 0);
    pump(b, dealer, 100);
    EXPECT(outbox_pending(b) == 0 && outbox_acked(b) == 3, "all acked");
    release(g, n);
    outbox_free(&b);

    // An older exporter answers the probe with an error: each message is sent once, no copies.
    probe_mode = PROBE_ERROR;
    b = outbox_new("trainer", dealer, 1 << 20, 0.1);
    for (int k = 40; k < 42; k++) post(b, buf, sizeof buf, k, NULL);
    n = recv_all(router, g, 8, 200);
    for (int t = 0; t < 10; t++) { pump(b, dealer, 20); outbox_tick(b); nap(0.05); }
    n += recv_all(router, g + (n < 8 ? n : 7), 1, 200);
    EXPECT(n == 2 && outbox_pending(b) == 0 && outbox_unconfirmed(b) == 2,
           "an older exporter: sent once each (%d), then let go (%d pending, %ld unconfirmed)", n, outbox_pending(b),
           outbox_unconfirmed(b));
    release(g, n < 8 ? n : 8);
    outbox_free(&b);
    // ... or acks a prediction without an id.
    probe_mode = PROBE_SILENT;
    b = outbox_new("evaluator", dealer, 1 << 20, 0.1);
    post(b, buf, sizeof buf, 43, "case_z");
    n = recv_all(router, g, 8, 200);
    if (n == 1) {
        wire_out_init(&w, "ack");
        wire_put_str(&w, "of", "volume");
        wire_put_str(&w, "case_id", "case_z");
        wire_put_bool(&w, "ok", 1);
        zmq_send(router, zmq_msg_data(&g[0].route), zmq_msg_size(&g[0].route), ZMQ_SNDMORE);
        wire_send(router, &w, 0, err);
        wire_out_free(&w);
    }
    pump(b, dealer, 100);
    EXPECT(n == 1 && outbox_pending(b) == 0 && outbox_unconfirmed(b) == 1, "an ack without id: an older exporter (%d pending)",
           outbox_pending(b));
    release(g, n);
    outbox_free(&b);

    // A current exporter replaced by an older build mid-run: after a silence the outbox asks
    // again, learns it, and stops copying (the older one would file every copy).
    probe_mode = PROBE_ACK;
    b = outbox_new("trainer", dealer, 1 << 20, 0.2);
    post(b, buf, sizeof buf, 50, NULL);
    n = recv_all(router, g, 8, 200);
    if (n == 1) ack(router, &g[0], 1, 0);
    pump(b, dealer, 100);
    release(g, n);
    EXPECT(outbox_acked(b) == 1, "the current exporter acked message 50");
    router = replace_exporter(st, router, ep, &o, PROBE_ERROR);
    post(b, buf, sizeof buf, 51, NULL);
    int copies = 0;
    for (int t = 0; t < 20; t++) {
        int k = recv_all(router, g, 8, 50);
        copies += k;
        release(g, k < 8 ? k : 8);
        pump(b, dealer, 20);
        outbox_tick(b);
        nap(0.05);
    }
    EXPECT(copies <= 2 && outbox_pending(b) == 0 && outbox_unconfirmed(b) == 1,
           "the older successor got message 51 %d time(s) (at most 2), then it was let go (%d pending)", copies,
           outbox_pending(b));
    outbox_free(&b);

    stage_destroy(&st);
    return test_summary();
}
