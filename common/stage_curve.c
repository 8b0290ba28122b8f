/*
stage_curve.c -- ZeroMQ CURVE for stages: key files, socket options, and the ZAP handler that
admits only the client public keys listed in an authorised-keys file (RFC 27/ZAP over
inproc://zeromq.zap.01, one REP socket in its own thread per context).
Partner of stage.c; key files are described in stage.h and docs/protocol.md.
*/
#include "stage_internal.h"
#include "check.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEYFILE_MAX (256 * 1024)
#define MAX_KEYS 4096

static int z85_ok(const char *z)
{
    uint8_t bin[32];
    return strlen(z) == 40 && zmq_z85_decode(bin, z) != NULL;
}

// Read a small text file into a NUL-terminated buffer (caller frees).
static char *slurp(const char *path, char *err)
{
    FILE *f = fopen(path, "r");
    if (!f) return set_err(err, "%s: %s", path, strerror(errno)), NULL;
    char *buf = xmalloc(KEYFILE_MAX + 1);
    size_t n = fread(buf, 1, KEYFILE_MAX + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return set_err(err, "%s: read error", path), NULL; }
    if (n > KEYFILE_MAX) { free(buf); return set_err(err, "%s: larger than %d bytes", path, KEYFILE_MAX), NULL; }
    buf[n] = 0;
    return buf;
}

// One line: "name = value" (name is public-key or secret-key) gives name and value; any other
// line gives an empty name and the whole line as value. '#' starts a comment only at the start
// of a line, because '#' and '=' are z85 characters. Quotes around the value are dropped.
static void split_line(char *line, char **name, char **value)
{
    static char empty[1];
    while (*line == ' ' || *line == '\t') line++;
    if (*line == '#') *line = 0;
    *name = empty;
    *value = line;
    char *eq = strchr(line, '=');
    if (eq && (!strncmp(line, "public-key", 10) || !strncmp(line, "secret-key", 10))) {
        *eq = 0;
        *name = line;
        *value = eq + 1;
    }
    for (char **p = name; p; p = p == name ? value : NULL) {
        char *s = *p;
        while (*s == ' ' || *s == '\t' || *s == '"' || *s == '\r') s++;
        char *e = s + strlen(s);
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '"' || e[-1] == '\r')) *--e = 0;
        *p = s;
    }
}

int stage_key_read(const char *path, char public_z85[41], char secret_z85[41], char *err)
{
    char *buf = slurp(path, err);
    if (!buf) return -1;
    public_z85[0] = 0;
    if (secret_z85) secret_z85[0] = 0;
    int lineno = 0, rc = 0;
    for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char *name, *value;
        split_line(line, &name, &value);
        char *dst = !strcmp(name, "public-key") ? public_z85
                  : !strcmp(name, "secret-key") ? secret_z85 : NULL;
        if (!dst) continue;                     // other lines (metadata, blank) are ignored
        if (!z85_ok(value)) { rc = set_err(err, "%s:%d: %s is not 40 z85 characters", path, lineno, name); break; }
        memcpy(dst, value, 41);
    }
    free(buf);
    if (rc) return -1;
    if (!public_z85[0]) return set_err(err, "%s: no public-key line", path);
    if (secret_z85 && !secret_z85[0]) return set_err(err, "%s: no secret-key line (is this the public file?)", path);
    return 0;
}

int stage_key_files_check(const char *secret, const char *pub, const char *authorized, char *err)
{
    char p[41], s[41];
    if (secret && stage_key_read(secret, p, s, err)) return -1;
    if (pub && stage_key_read(pub, p, NULL, err)) return -1;
    char *buf = authorized ? slurp(authorized, err) : NULL;
    if (authorized && !buf) return -1;
    free(buf);
    return 0;
}

int stage_key_write(const char *path, const char *public_z85, const char *secret_z85, char *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, secret_z85 ? 0600 : 0644);
    if (fd < 0) return set_err(err, "%s: %s", path, strerror(errno));
    FILE *f = fdopen(fd, "w");
    if (!f) { close(fd); return set_err(err, "%s: %s", path, strerror(errno)); }
    int ok = fprintf(f, "# SegResMamba CURVE key (ZeroMQ z85)\npublic-key = \"%s\"\n", public_z85) > 0;
    if (secret_z85) ok = ok && fprintf(f, "secret-key = \"%s\"\n", secret_z85) > 0;
    if (fclose(f) || !ok) return set_err(err, "%s: write failed", path);
    return 0;
}

// Authorised-keys file: each non-comment line is a bare key or a "public-key = KEY" line.
static int read_authorized(stage_t *st, const char *path, char *err)
{
    char *buf = slurp(path, err);
    if (!buf) return -1;
    st->keys = xcalloc(MAX_KEYS, 32);
    st->nkeys = 0;
    int lineno = 0, rc = 0;
    for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char *name, *value;
        split_line(line, &name, &value);
        if (!*value || (*name && strcmp(name, "public-key"))) continue;
        if (!z85_ok(value)) { rc = set_err(err, "%s:%d: not a 40-character z85 public key", path, lineno); break; }
        if (st->nkeys == MAX_KEYS) { rc = set_err(err, "%s: more than %d keys", path, MAX_KEYS); break; }
        zmq_z85_decode(st->keys[st->nkeys++], value);
    }
    free(buf);
    if (!rc && st->nkeys == 0) rc = set_err(err, "%s: no keys", path);
    return rc;
}

// ---- ZAP handler -----------------------------------------------------------------------------

static int recv_str(void *s, zmq_msg_t *m)
{
    if (zmq_msg_init(m)) return -1;
    if (zmq_msg_recv(m, s, 0) < 0) { zmq_msg_close(m); return -1; }
    return 0;
}

static int send_frame(void *s, const void *p, size_t n, int more)
{
    return zmq_send(s, p, n, more ? ZMQ_SNDMORE : 0) < 0 ? -1 : 0;
}

static int admitted(stage_t *st, const char *mech, size_t mlen, zmq_msg_t *cred, int have_cred)
{
    // Plain sockets of this stage have no ZAP domain, but if a request comes for one, it is
    // their own configuration that decided to be unauthenticated.
    if (mlen == 4 && !memcmp(mech, "NULL", 4)) return 1;
    if (mlen != 5 || memcmp(mech, "CURVE", 5) || !have_cred || zmq_msg_size(cred) != 32) return 0;
    for (int i = 0; i < st->nkeys; i++)
        if (!memcmp(st->keys[i], zmq_msg_data(cred), 32)) return 1;
    return 0;
}

static void *zap_main(void *arg)
{
    stage_t *st = arg;
    void *s = st->zap_sock;
    // SIGINT/SIGTERM belong to the stage's main thread (its poll loop sees the self-pipe).
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    for (;;) {
        // Request: version, request id, domain, address, identity, mechanism, credentials...
        zmq_msg_t f[7];
        int n = 0, more = 1, dead = 0;
        while (more) {
            zmq_msg_t tmp, *dst = n < 7 ? &f[n] : &tmp;
            if (recv_str(s, dst)) { dead = 1; break; }
            more = zmq_msg_more(dst);
            if (dst == &tmp) zmq_msg_close(&tmp);
            else n++;
        }
        if (dead && zmq_errno() == ETERM) { for (int i = 0; i < n; i++) zmq_msg_close(&f[i]); break; }
        if (dead) {
            for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
            log_msg('W', "ZAP: recv: %s", zmq_strerror(zmq_errno()));
            break;
        }
        int ok = n >= 6 && admitted(st, zmq_msg_data(&f[5]), zmq_msg_size(&f[5]), &f[6], n >= 7);
        if (!ok) {
            __atomic_add_fetch(&st->refused, 1, __ATOMIC_RELAXED);
            // name the peer: its address (frame 3) and public key (frame 6, 32 bytes -> Z85)
            char addr[64] = "?", key[41] = "?";
            if (n >= 4) snprintf(addr, sizeof addr, "%.*s", (int)zmq_msg_size(&f[3]), (const char *)zmq_msg_data(&f[3]));
            if (n >= 7 && zmq_msg_size(&f[6]) == 32 && !zmq_z85_encode(key, zmq_msg_data(&f[6]), 32)) snprintf(key, sizeof key, "?");
            log_msg('W', "%s: CURVE: refused a client at %s with public key %s (%s)", st->name, addr, key,
                    n >= 6 ? "not among the authorised keys" : "malformed ZAP request");
        }
        const char *code = ok ? "200" : n >= 6 ? "400" : "500", *text = ok ? "OK" : "key not authorised";
        int rc = send_frame(s, "1.0", 3, 1) ||
                 send_frame(s, n >= 2 ? zmq_msg_data(&f[1]) : "", n >= 2 ? zmq_msg_size(&f[1]) : 0, 1) ||
                 send_frame(s, code, 3, 1) || send_frame(s, text, strlen(text), 1) ||
                 send_frame(s, "", 0, 1) || send_frame(s, "", 0, 0);
        for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
        if (rc && zmq_errno() == ETERM) break;
        if (rc) log_msg('W', "ZAP: send: %s", zmq_strerror(zmq_errno()));
    }
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(s);
    return NULL;
}

int stage_curve_authorize(stage_t *st, const char *path, char *err)
{
    if (st->zap_running) return set_err(err, "%s: ZAP handler already running", path);
    if (!zmq_has("curve")) return set_err(err, "this libzmq has no CURVE support");
    if (read_authorized(st, path, err)) return -1;
    st->zap_sock = zmq_socket(st->ctx, ZMQ_REP);
    if (!st->zap_sock) return set_err(err, "ZAP socket: %s", zmq_strerror(zmq_errno()));
    int linger = 0;
    if (zmq_setsockopt(st->zap_sock, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_bind(st->zap_sock, "inproc://zeromq.zap.01")) {
        set_err(err, "ZAP bind: %s", zmq_strerror(zmq_errno()));
        zmq_close(st->zap_sock);
        st->zap_sock = NULL;
        return -1;
    }
    int rc = pthread_create(&st->zap_thread, NULL, zap_main, st);
    if (rc) DIE("pthread_create: %s", strerror(rc));
    st->zap_running = 1;
    return 0;
}

long stage_curve_refused(stage_t *st) { return __atomic_load_n(&st->refused, __ATOMIC_RELAXED); }

void stage_zap_stop(stage_t *st)
{
    if (!st->zap_running) return;
    int rc = pthread_join(st->zap_thread, NULL);
    if (rc) log_msg('W', "pthread_join: %s", strerror(rc));
    st->zap_running = 0;
}

int stage_curve_apply(stage_t *st, void *s, const stage_sock_opts_t *o, char *err)
{
    if (!o->curve_secret && !o->curve_server) return 0;
    if (!o->curve_secret) return set_err(err, "CURVE needs a secret key file");
    char pub[41], sec[41];
    if (stage_key_read(o->curve_secret, pub, sec, err)) return -1;
    if (o->curve_server) {
        if (!st->zap_running) return set_err(err, "CURVE server without authorised keys (stage_curve_authorize)");
        int one = 1;
        if (zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one) ||
            zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 40) ||
            zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, "srm", 3))
            return set_err(err, "CURVE server options: %s", zmq_strerror(zmq_errno()));
        return 0;
    }
    if (!o->curve_server_public) return set_err(err, "CURVE client needs the server's public key file");
    char spub[41];
    if (stage_key_read(o->curve_server_public, spub, NULL, err)) return -1;
    if (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, spub, 40) || zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 40) ||
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 40))
        return set_err(err, "CURVE client options: %s", zmq_strerror(zmq_errno()));
    return 0;
}
