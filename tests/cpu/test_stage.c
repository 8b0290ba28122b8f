/*
test_stage.c -- the socket machinery of every stage: loopback-only binds, socket options as
configured, ZMQ_MAXMSGSIZE enforced, back-pressure (a PUSH whose peer stops reading runs into
its high-water mark, memory stays bounded, nothing is lost), CURVE (an unauthorised or plain
peer gets nothing and feeds nothing, an authorised one works), SIGTERM/SIGINT -> STAGE_STOP,
bounded linger on shutdown, peer addresses. Messages themselves: test_wire.c.
*/
#include "test.h"
#include "stage.h"
#include "wire.h"
#include "wire_msgs.h"
#include "check.h"
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char err[ERR_LEN];

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = -1;
    fclose(f);
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static int send_stop(void *sock, const char *reason, int flags)
{
    wire_out_t o;
    wire_stop_t s;
    snprintf(s.reason, sizeof s.reason, "%s", reason);
    int rc = wire_encode_stop(&o, &s, err);
    if (rc == 0) rc = wire_send(sock, &o, flags, err);
    wire_out_free(&o);
    return rc;
}

// Wait up to ms for a message on sock; returns 1 and its stop reason in `reason` if one came.
static int got_message(stage_t *st, void *sock, int ms, char *reason)
{
    if (stage_wait(st, sock, ms) != STAGE_READY) return 0;
    wire_msg_t m;
    wire_stop_t s;
    wire_msg_init(&m);
    int ok = wire_recv(sock, &m, ZMQ_DONTWAIT, err) == 0 && wire_decode_stop(&m, &s, err) == 0;
    if (ok && reason) strcpy(reason, s.reason);
    wire_msg_free(&m);
    return ok;
}

static void test_endpoints(stage_t *st)
{
    static const struct { const char *ep; int local; } cases[] = {
        { "ipc:///tmp/x", 1 }, { "inproc://a", 1 }, { "tcp://127.0.0.1:5555", 1 }, { "tcp://127.3.2.1:*", 1 },
        { "tcp://localhost:9", 1 }, { "tcp://[::1]:9", 1 }, { "tcp://lo:9", 1 }, { "tcp://*:5555", 0 },
        { "tcp://0.0.0.0:5555", 0 }, { "tcp://eth0:5555", 0 }, { "tcp://10.0.0.1:1", 0 }, { "tcp://[::]:1", 0 },
        { "tcp://128.0.0.1:1", 0 }, { "pgm://eth0;239.1.1.1:5555", 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        EXPECT(stage_endpoint_is_local(cases[i].ep) == cases[i].local, "%s", cases[i].ep);
    EXPECT(!stage_socket(st, ZMQ_PULL, "tcp://*:*", STAGE_BIND, NULL, err) && strstr(err, "non-loopback"), "%s", err);
    EXPECT(!stage_socket(st, ZMQ_PULL, "tcp://0.0.0.0:*", STAGE_BIND, NULL, err) && strstr(err, "non-loopback"), "%s", err);
    EXPECT(!stage_socket(st, ZMQ_PULL, "udp://127.0.0.1:5", STAGE_BIND, NULL, err) && strstr(err, "transport"), "%s", err);
    EXPECT(!stage_socket(st, ZMQ_PULL, "tcp://127.0.0.1:notaport", STAGE_BIND, NULL, err) && strstr(err, "bind"), "%s", err);
    stage_sock_opts_t o = stage_sock_defaults();
    o.allow_remote = 1;
    void *any = stage_socket(st, ZMQ_PULL, "tcp://0.0.0.0:*", STAGE_BIND, &o, err);
    EXPECT(any != NULL, "allow_remote bind: %s", err);
    stage_close(st, &any);
    EXPECT(any == NULL, "stage_close should null the pointer");

    o = stage_sock_defaults();
    o.hwm = 3; o.linger_ms = 250; o.max_msg = 12345; o.heartbeat_ms = 700;
    void *s = stage_socket(st, ZMQ_DEALER, "tcp://127.0.0.1:*", STAGE_BIND, &o, err);
    EXPECT(s != NULL, "bind: %s", err);
    if (!s) return;
    char ep[256];
    EXPECT(stage_endpoint(s, ep, sizeof ep, err) == 0 && !strncmp(ep, "tcp://127.0.0.1:", 16) && strcmp(ep + 16, "*"),
           "endpoint '%s'", ep);
    int v; int64_t v64; size_t len = sizeof v;
    EXPECT(zmq_getsockopt(s, ZMQ_SNDHWM, &v, &len) == 0 && v == 3, "SNDHWM %d", v);
    len = sizeof v;
    EXPECT(zmq_getsockopt(s, ZMQ_RCVHWM, &v, &len) == 0 && v == 3, "RCVHWM %d", v);
    len = sizeof v;
    EXPECT(zmq_getsockopt(s, ZMQ_LINGER, &v, &len) == 0 && v == 250, "LINGER %d", v);
    len = sizeof v;
    EXPECT(zmq_getsockopt(s, ZMQ_IMMEDIATE, &v, &len) == 0 && v == 1, "IMMEDIATE %d", v);
    len = sizeof v64;
    EXPECT(zmq_getsockopt(s, ZMQ_MAXMSGSIZE, &v64, &len) == 0 && v64 == 12345, "MAXMSGSIZE %lld", (long long)v64);
    len = sizeof v;
    EXPECT(zmq_getsockopt(s, ZMQ_HEARTBEAT_IVL, &v, &len) == 0 && v == 700, "HEARTBEAT_IVL %d", v);
    stage_close(st, &s);
    // data pipes never heartbeat (PINGs would queue behind back-pressured data): asked for 700, get 0
    void *push = stage_socket(st, ZMQ_PUSH, "tcp://127.0.0.1:*", STAGE_BIND, &o, err);
    len = sizeof v;
    EXPECT(push && zmq_getsockopt(push, ZMQ_HEARTBEAT_IVL, &v, &len) == 0 && v == 0,
           "PUSH HEARTBEAT_IVL %d", v);
    stage_close(st, &push);
    stage_sock_opts_t d = stage_sock_defaults();
    EXPECT(d.hwm > 0 && d.hwm <= 8 && d.linger_ms >= 0 && d.max_msg == (int64_t)2 << 30 && d.heartbeat_ms > 0,
           "defaults: hwm %d linger %d", d.hwm, d.linger_ms);
}

// A frame over ZMQ_MAXMSGSIZE drops the connection instead of reaching the receiver; the
// receiver keeps serving, and a sane message from the reconnected sender gets through.
static void test_maxmsgsize(stage_t *st)
{
    stage_sock_opts_t o = stage_sock_defaults();
    o.max_msg = 4096;
    o.heartbeat_ms = 0;
    void *rx = stage_socket(st, ZMQ_PULL, "tcp://127.0.0.1:*", STAGE_BIND, &o, err);
    char ep[256];
    if (!rx || stage_endpoint(rx, ep, sizeof ep, err)) { EXPECT(0, "%s", err); return; }
    o.immediate = 0;
    void *tx = stage_socket(st, ZMQ_PUSH, ep, STAGE_CONNECT, &o, err);
    EXPECT(tx != NULL, "%s", err);
    char *big = xcalloc(1, 10000);
    EXPECT(zmq_send(tx, big, 10000, 0) == 10000, "send big");
    free(big);
    EXPECT(!got_message(st, rx, 500, NULL) && stage_wait(st, rx, 0) == STAGE_IDLE, "oversize frame was delivered");
    // The sender reconnects on its own (reconnect interval 100 ms); retry until the small one lands.
    int delivered = 0;
    char reason[WIRE_TEXT_LEN] = "";
    for (int i = 0; i < 40 && !delivered; i++) {
        send_stop(tx, "small", ZMQ_DONTWAIT);
        delivered = got_message(st, rx, 100, reason);
    }
    EXPECT(delivered && !strcmp(reason, "small"), "small message after an oversize one not delivered");
    stage_close(st, &tx);
    stage_close(st, &rx);
}

// PUSH to a PULL that never reads: with HWM 2, sends with ZMQ_DONTWAIT soon return WIRE_AGAIN,
// keep doing so, resident memory stays bounded, and every accepted message arrives in order.
static void test_backpressure(stage_t *st)
{
    char ep[256];
    const char *dir = test_tmpdir("stage");
    snprintf(ep, sizeof ep, "ipc://%s/bp.sock", dir);
    stage_sock_opts_t o = stage_sock_defaults();
    o.hwm = 2;
    void *rx = stage_socket(st, ZMQ_PULL, ep, STAGE_BIND, &o, err);
    void *tx = stage_socket(st, ZMQ_PUSH, ep, STAGE_CONNECT, &o, err);
    if (!rx || !tx) { EXPECT(0, "%s", err); return; }
    enum { MSG = 1 << 20 };
    uint8_t *payload = xcalloc(1, MSG);
    long rss0 = rss_kib();
    int accepted = 0, again = 0;
    double t0 = now();
    while (now() - t0 < 1.5) {
        wire_out_t w;
        int64_t n = MSG;
        wire_out_init(&w, "blob");
        wire_put_i64(&w, "seq", accepted);
        wire_out_array(&w, "x", WIRE_U8, 1, &n, payload);
        int rc = wire_send(tx, &w, ZMQ_DONTWAIT, err);
        wire_out_free(&w);
        if (rc == 0) accepted++;
        else if (rc == WIRE_AGAIN) { again++; usleep(2000); }
        else { EXPECT(0, "send: %s", err); break; }
        if (accepted > 1000) break;
    }
    long grown = rss_kib() - rss0;
    printf("back-pressure: %d x 1 MiB accepted, then %d EAGAIN in 1.5 s; RSS +%ld KiB\n", accepted, again, grown);
    EXPECT(accepted >= 2 && accepted <= 32, "accepted %d messages with HWM 2 and a stalled reader", accepted);
    EXPECT(again > 10, "only %d EAGAIN", again);
    EXPECT(grown < 64 * 1024, "RSS grew %ld KiB", grown);
    EXPECT(stage_wait_out(st, tx, 50) == STAGE_IDLE, "full socket reported writable");
    wire_msg_t m;
    wire_msg_init(&m);
    int in_order = 1, got = 0;
    while (got < accepted && stage_wait(st, rx, 1000) == STAGE_READY) {
        int64_t seq = -1;
        if (wire_recv(rx, &m, 0, err) || wire_get_i64(&m, "seq", &seq, 0, INT64_MAX, 1, err)) break;
        in_order &= seq == got;
        got++;
    }
    wire_msg_free(&m);
    EXPECT(got == accepted && in_order, "received %d of %d accepted messages (in order %d)", got, accepted, in_order);
    EXPECT(stage_wait_out(st, tx, 1000) == STAGE_READY, "drained socket not writable again");
    free(payload);
    stage_close(st, &tx);
    stage_close(st, &rx);
    unlink(ep + strlen("ipc://"));                  // ZeroMQ removes it too, but asynchronously
    rmdir(dir);
}

static void write_keypair(const char *dir, const char *name, char pub[41])
{
    char sec[41], path[512];
    if (zmq_curve_keypair(pub, sec)) DIE("zmq_curve_keypair: %s", zmq_strerror(zmq_errno()));
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    if (stage_key_write(path, pub, sec, err)) DIE("%s", err);
    snprintf(path, sizeof path, "%s/%s.pub", dir, name);
    if (stage_key_write(path, pub, NULL, err)) DIE("%s", err);
}

static void test_curve(void)
{
    const char *dir = test_tmpdir("curve");
    char spub[41], apub[41], bpub[41], path[512], srv_key[512], srv_pub[512], a_key[512], b_key[512];
    write_keypair(dir, "server", spub);
    write_keypair(dir, "alice", apub);
    write_keypair(dir, "mallory", bpub);
    snprintf(path, sizeof path, "%s/authorized", dir);
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "# who may connect\n%s\n", apub) < 0 || fclose(f)) DIE("%s: cannot write", path);
    snprintf(srv_key, sizeof srv_key, "%s/server.key", dir);
    snprintf(srv_pub, sizeof srv_pub, "%s/server.pub", dir);
    snprintf(a_key, sizeof a_key, "%s/alice.key", dir);
    snprintf(b_key, sizeof b_key, "%s/mallory.key", dir);

    char p[41], s[41];
    EXPECT(stage_key_read(a_key, p, s, err) == 0 && !strcmp(p, apub), "read key: %s", err);
    EXPECT(stage_key_read(srv_pub, p, s, err) == -1 && strstr(err, "no secret-key"), "public file as secret: %s", err);
    EXPECT(stage_key_read("/nonexistent/k", p, s, err) == -1 && strstr(err, "/nonexistent/k"), "%s", err);

    stage_t *srv = stage_new("curve-server");
    stage_sock_opts_t so = stage_sock_defaults();
    so.curve_server = 1;
    so.curve_secret = srv_key;
    EXPECT(!stage_socket(srv, ZMQ_PULL, "tcp://127.0.0.1:*", STAGE_BIND, &so, err) && strstr(err, "authorised keys"),
           "CURVE server without a key list: %s", err);
    EXPECT(stage_curve_authorize(srv, path, err) == 0, "authorize: %s", err);
    void *in = stage_socket(srv, ZMQ_PULL, "tcp://127.0.0.1:*", STAGE_BIND, &so, err);
    void *out = stage_socket(srv, ZMQ_PUSH, "tcp://127.0.0.1:*", STAGE_BIND, &so, err);
    char in_ep[256], out_ep[256];
    if (!in || !out || stage_endpoint(in, in_ep, sizeof in_ep, err) || stage_endpoint(out, out_ep, sizeof out_ep, err)) {
        EXPECT(0, "server sockets: %s", err);
        stage_destroy(&srv);
        return;
    }
    stage_t *cli = stage_new("curve-client");
    stage_sock_opts_t plain = stage_sock_defaults(), bad = plain, good = plain;
    bad.curve_secret = b_key;  bad.curve_server_public = srv_pub;
    good.curve_secret = a_key; good.curve_server_public = srv_pub;
    plain.immediate = bad.immediate = 0;            // let them queue: the server must still get nothing

    // Strangers feed nothing.
    void *m_push = stage_socket(cli, ZMQ_PUSH, in_ep, STAGE_CONNECT, &bad, err);
    void *p_push = stage_socket(cli, ZMQ_PUSH, in_ep, STAGE_CONNECT, &plain, err);
    EXPECT(m_push && p_push, "client sockets: %s", err);
    EXPECT(send_stop(m_push, "from mallory", ZMQ_DONTWAIT) == 0 && send_stop(p_push, "from plain", ZMQ_DONTWAIT) == 0,
           "queueing on unauthenticated clients: %s", err);
    EXPECT(!got_message(srv, in, 1500, NULL), "server received from an unauthorised peer");
    EXPECT(stage_curve_refused(srv) >= 1, "ZAP refused %ld handshakes", stage_curve_refused(srv));

    // Strangers get nothing.
    void *m_pull = stage_socket(cli, ZMQ_PULL, out_ep, STAGE_CONNECT, &bad, err);
    usleep(300 * 1000);
    EXPECT(send_stop(out, "secret", ZMQ_DONTWAIT) == WIRE_AGAIN, "server PUSH had a peer to send to");
    EXPECT(!got_message(cli, m_pull, 500, NULL), "unauthorised client received data");

    // The authorised client works both ways.
    void *a_push = stage_socket(cli, ZMQ_PUSH, in_ep, STAGE_CONNECT, &good, err);
    void *a_pull = stage_socket(cli, ZMQ_PULL, out_ep, STAGE_CONNECT, &good, err);
    EXPECT(a_push && a_pull, "alice sockets: %s", err);
    char reason[WIRE_TEXT_LEN] = "";
    EXPECT(stage_wait_out(cli, a_push, 3000) == STAGE_READY && send_stop(a_push, "from alice", 0) == 0, "alice send: %s", err);
    EXPECT(got_message(srv, in, 3000, reason) && !strcmp(reason, "from alice"), "server did not get alice's message");
    EXPECT(stage_wait_out(srv, out, 3000) == STAGE_READY && send_stop(out, "for alice", 0) == 0, "server send: %s", err);
    EXPECT(got_message(cli, a_pull, 3000, reason) && !strcmp(reason, "for alice"), "alice did not get the server's message");
    EXPECT(!got_message(cli, m_pull, 200, NULL), "mallory received data");
    stage_destroy(&cli);
    stage_destroy(&srv);
    static const char *const files[] = { "server.key", "server.pub", "alice.key", "alice.pub", "mallory.key",
                                         "mallory.pub", "authorized" };
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void test_peer_address(stage_t *st)
{
    void *rx = stage_socket(st, ZMQ_PULL, "tcp://127.0.0.1:*", STAGE_BIND, NULL, err);
    char ep[256];
    if (!rx || stage_endpoint(rx, ep, sizeof ep, err)) { EXPECT(0, "%s", err); return; }
    void *tx = stage_socket(st, ZMQ_PUSH, ep, STAGE_CONNECT, NULL, err);
    EXPECT(tx && stage_wait_out(st, tx, 3000) == STAGE_READY && send_stop(tx, "hi", 0) == 0, "send: %s", err);
    wire_msg_t m;
    wire_msg_init(&m);
    EXPECT(stage_wait(st, rx, 3000) == STAGE_READY && wire_recv(rx, &m, 0, err) == 0 && !strcmp(m.peer, "tcp 127.0.0.1"),
           "peer '%s' (%s)", m.peer, err);
    wire_msg_free(&m);
    stage_close(st, &tx);
    stage_close(st, &rx);
}

static void test_signals(void)
{
    stage_t *st = stage_new("sig");
    void *rx = stage_socket(st, ZMQ_PULL, "inproc://sig", STAGE_BIND, NULL, err);
    EXPECT(stage_wait(st, rx, 50) == STAGE_IDLE && !stage_stopping(st), "quiet socket should be IDLE");
    pid_t parent = getpid(), kid = fork();
    if (kid == 0) { usleep(150 * 1000); kill(parent, SIGTERM); _exit(0); }
    double t0 = now();
    stage_event_t ev = stage_wait(st, rx, 10000);
    double dt = now() - t0;
    EXPECT(ev == STAGE_STOP && stage_signal(st) == SIGTERM && dt < 3, "SIGTERM: event %d after %.2f s", ev, dt);
    EXPECT(stage_wait(st, rx, 0) == STAGE_STOP, "STOP is sticky");
    int status;
    waitpid(kid, &status, 0);
    stage_destroy(&st);

    st = stage_new("sig2");                          // a new stage starts without a stop pending
    rx = stage_socket(st, ZMQ_PULL, "inproc://sig2", STAGE_BIND, NULL, err);
    EXPECT(stage_wait(st, rx, 0) == STAGE_IDLE, "stop leaked into a new stage");
    raise(SIGINT);
    EXPECT(stage_wait(st, rx, 5000) == STAGE_STOP && stage_signal(st) == SIGINT, "SIGINT");
    stage_destroy(&st);

    st = stage_new("sig3");
    rx = stage_socket(st, ZMQ_PULL, "inproc://sig3", STAGE_BIND, NULL, err);
    stage_stop(st);
    EXPECT(stage_wait(st, rx, 5000) == STAGE_STOP, "stage_stop");
    stage_destroy(&st);
    EXPECT(st == NULL, "stage_destroy should null the pointer");
}

// Unsent messages to a peer that never comes must not hang shutdown beyond the linger bound.
static void test_linger(void)
{
    stage_t *st = stage_new("linger");
    char ep[256];
    const char *dir = test_tmpdir("linger");
    snprintf(ep, sizeof ep, "ipc://%s/nobody.sock", dir);
    stage_sock_opts_t o = stage_sock_defaults();
    o.linger_ms = 200;
    o.immediate = 0;
    void *tx = stage_socket(st, ZMQ_PUSH, ep, STAGE_CONNECT, &o, err);
    EXPECT(tx && send_stop(tx, "never delivered", ZMQ_DONTWAIT) == 0, "queue: %s", err);
    double t0 = now();
    stage_destroy(&st);
    double dt = now() - t0;
    EXPECT(dt < 2.0, "stage_destroy took %.2f s with linger 200 ms", dt);
    rmdir(dir);
}

int main(void)
{
    setenv("SRM_QUIET", "1", 0);
    stage_t *st = stage_new("test_stage");
    test_endpoints(st);
    test_maxmsgsize(st);
    test_backpressure(st);
    test_peer_address(st);
    stage_destroy(&st);
    test_curve();
    test_linger();
    test_signals();
    return test_summary();
}
