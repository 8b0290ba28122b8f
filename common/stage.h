/*
stage.h -- the process side of every stage: one ZeroMQ context, sockets opened in one place with
deliberate options (small high-water marks, bounded linger and message size, ZMTP heartbeats,
loopback-only binds unless allowed, optional CURVE), SIGINT/SIGTERM through a self-pipe, and a
poll helper that returns READY, IDLE or STOP. The message format is wire.h.
Not thread-safe: one thread per stage_t (the ZAP handler runs in its own thread on inproc).
*/
#ifndef SRM_STAGE_H
#define SRM_STAGE_H
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

typedef struct stage stage_t;

typedef enum { STAGE_READY = 0, STAGE_IDLE = 1, STAGE_STOP = 2 } stage_event_t;
typedef enum { STAGE_BIND = 0, STAGE_CONNECT = 1 } stage_mode_t;

typedef struct {
    int hwm;                    // ZMQ_SNDHWM and ZMQ_RCVHWM, in messages
    int linger_ms;              // ZMQ_LINGER: how long close/term waits for unsent messages
    int64_t max_msg;            // ZMQ_MAXMSGSIZE: larger incoming frames drop the connection
    int heartbeat_ms;           // ZMQ_HEARTBEAT_IVL; timeout and TTL are 3x this (0: off)
    int immediate;              // ZMQ_IMMEDIATE: queue only to completed connections
    int allow_remote;           // bind to non-loopback addresses (tcp://*, 0.0.0.0, eth0, ...)
    int sndtimeo_ms, rcvtimeo_ms;   // -1: block
    // CURVE (tcp only). A server socket needs curve_secret (its own key file) and the stage's
    // authorised keys (stage_curve_authorize). A client needs curve_secret (its own key file)
    // and curve_server_public (the server's key file). NULL: plain ZMTP.
    const char *curve_secret;
    const char *curve_server_public;
    int curve_server;           // 1: this socket is the CURVE server side
} stage_sock_opts_t;

// Defaults for data sockets: hwm 4 (patch batches are tens of MB), linger 1000 ms, max_msg 2 GiB,
// heartbeat 1000 ms (ignored on PUSH/PULL data pipes: see stage_socket), immediate 1, loopback only,
// no timeouts, no CURVE.
stage_sock_opts_t stage_sock_defaults(void);

// For a process that receives tens-of-MB frames (trainer, patch_sink): keep the pages of freed large
// blocks mapped for reuse instead of a fresh mmap per frame (see stage.c). Call before any
// thread starts. Logs a warning if glibc refuses a setting.
void stage_malloc_for_big_frames(void);

// Make the stage: log name, ZeroMQ context, SIGINT/SIGTERM handlers writing to a self-pipe.
// DIEs when the context or pipe cannot be made (nothing can run without them).
stage_t *stage_new(const char *name);
// Close every socket the stage opened, stop the ZAP handler, terminate the context; *st = NULL.
void stage_destroy(stage_t **st);
void *stage_ctx(stage_t *st);

// Open a socket of `type` (ZMQ_PUSH, ZMQ_PULL, ...) on endpoint with opts (NULL: defaults).
// Returns the socket (owned by the stage), or NULL with err naming the endpoint and the problem
// (bad endpoint, non-loopback bind without allow_remote, unreadable key file, zmq failure).
void *stage_socket(stage_t *st, int type, const char *endpoint, stage_mode_t mode,
                   const stage_sock_opts_t *opts, char *err);
// Close one socket early (it is also closed by stage_destroy).
void stage_close(stage_t *st, void **sock);
// The endpoint a socket is bound to (resolves tcp://127.0.0.1:* to the real port). 0 or -1.
int stage_endpoint(void *sock, char *out, size_t cap, char *err);

// 1 when a bind to this endpoint stays on this host (ipc, inproc, loopback tcp), else 0.
int stage_endpoint_is_local(const char *endpoint);

// Wait up to timeout_ms (-1: forever) for sock to be readable (stage_wait) or writable
// (stage_wait_out). STAGE_STOP wins over READY once SIGINT/SIGTERM arrived or stage_stop ran.
stage_event_t stage_wait(stage_t *st, void *sock, int timeout_ms);
stage_event_t stage_wait_out(stage_t *st, void *sock, int timeout_ms);
// Poll several items (revents filled); the self-pipe is added internally. READY/IDLE/STOP.
stage_event_t stage_poll(stage_t *st, zmq_pollitem_t *items, int n, int timeout_ms);
// A stage started by a pipeline script (SRM_PARENT_PID) stops as on SIGTERM when the script ends;
// one that must outlive the others' stop (the exporter: their last checkpoint and lines) asks for
// signo instead. Returns 1 when the script is already gone.
int  stage_parent_death_signal(stage_t *st, int signo);
void stage_stop(stage_t *st);                   // e.g. after a "stop" message
int  stage_stopping(const stage_t *st);
int  stage_signal(const stage_t *st);           // the signal that asked to stop, or 0

// Peer address of a received frame for log lines: "tcp 127.0.0.1" or "local".
void stage_msg_peer(zmq_msg_t *msg, char *out, size_t cap);

// ---- CURVE keys ------------------------------------------------------------------------------
// Key file (text, made by scripts/keys.sh): lines "public-key = <40 z85 chars>" and, in a secret
// file, "secret-key = <40 z85 chars>"; a line starting with # is a comment; quotes are allowed.
// Authorised-keys file: one client public key per line (bare z85, or a "public-key = " line).
int stage_key_read(const char *path, char public_z85[41], char secret_z85[41], char *err);
int stage_key_write(const char *path, const char *public_z85, const char *secret_z85, char *err);
// Read the key files a stage was given (any may be NULL): a secret key file, a public one, an
// authorised-keys file. At argument time, so that a missing or bad one is a configuration error
// (exit 78, no restart) rather than a failure at the first socket. 0 or -1 with err naming it.
int stage_key_files_check(const char *secret, const char *pub, const char *authorized, char *err);
// Start the ZAP handler of st's context: CURVE clients are admitted only if their public key is
// listed in path. Call before opening CURVE server sockets. 0 or -1 with err.
int stage_curve_authorize(stage_t *st, const char *path, char *err);
// Number of CURVE handshakes the ZAP handler refused so far (for logs and tests).
long stage_curve_refused(stage_t *st);

// Exit status of a stage whose configuration no restart can cure (bad arguments, a missing
// dataset or key file): sysexits' EX_CONFIG. The pipelines' supervisors do not restart it.
#define STAGE_EXIT_CONFIG 78

#endif
