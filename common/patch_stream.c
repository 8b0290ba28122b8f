/*
patch_stream.c -- srm-augmenter's loop (see patch_stream.h): receive and check volumes, keep a
ring of the last --keep, cut patches straight into the batch buffers, and send each full batch
with its images buffer handed to ZeroMQ (no copy), waiting for room on the patches socket.
The images buffers (tens of MB, above glibc's mmap threshold) come from a small pool that ZeroMQ
hands back when it has sent them, so a batch does not fault in fresh pages. With --image-dtype
f16/bf16 the patches are cut into one float work buffer and narrowed into the pool buffer at send.
A bad volume is logged with its peer and dropped; the loop carries on.
*/
#include "patch_stream.h"
#include "check.h"
#include "wire_msgs.h"
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct { aug_volume_t v; int num_classes; int live; } slot_t;

// An images buffer. ZeroMQ's I/O thread releases it (pool_release) once the frame is sent; if
// the stream ended meanwhile (ORPHAN) the release frees it.
enum { BUF_FREE = 0, BUF_BUSY = 1, BUF_ORPHAN = 2 };
typedef struct { void *data; atomic_int state; } pool_buf_t;
#define POOL_MAX 16

static void pool_release(void *data, void *hint)
{
    pool_buf_t *b = hint;
    int busy = BUF_BUSY;
    (void)data;
    if (!atomic_compare_exchange_strong(&b->state, &busy, BUF_FREE)) {   // orphaned
        free(b->data);
        free(b);
    }
}

typedef struct {
    const patch_cfg_t *cfg;
    stage_t *st;
    void *vin, *pout;
    slot_t *ring;
    int next_slot, rr;          // slot the next volume replaces; round-robin reuse cursor
    int C;                      // channels of this stream (the first volume's)
    size_t pn;                  // voxels per patch
    float *images;              // (B, C, P) current batch: pool[cur]->data (f32 on the wire) or
                                // fwork (narrowed into pool[cur]->data at send); NULL: none held
    float *fwork;               // (B, C, P) work buffer for 16-bit wire dtypes
    long clamped;               // f16 values clamped to +-65504 since the last stats line
    pool_buf_t *pool[POOL_MAX];
    int npool, cur;
    uint8_t *labels;            // (B, P)
    int32_t *origins;           // (B, 3)
    uint8_t *positive;          // (B)
    char (*ids)[WIRE_ID_LEN];   // (B)
    int fill, num_classes;
    uint64_t seq;
    // stats
    double t_last, wait_in, wait_out;
    long patches, batches, vols_new, vols_reused, vols_bad;
} stream_t;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

// Point s->images at a free pool buffer (growing the pool up to POOL_MAX; past that, wait for
// ZeroMQ to release one: the high-water mark bounds how many can be in flight).
static void pool_acquire(stream_t *s)
{
    size_t n = (size_t)s->cfg->batch * s->C * s->pn;
    int f32 = s->cfg->image_dtype == WIRE_F32;
    if (!f32 && !s->fwork) s->fwork = xmalloc(n * sizeof(float));
    for (;;) {
        for (int i = 0; i < s->npool; i++) {
            int f = BUF_FREE;
            if (atomic_compare_exchange_strong(&s->pool[i]->state, &f, BUF_BUSY)) {
                s->cur = i;
                s->images = f32 ? s->pool[i]->data : s->fwork;
                return;
            }
        }
        if (s->npool < POOL_MAX) {
            pool_buf_t *b = xmalloc(sizeof *b);
            b->data = xmalloc(n * (f32 ? sizeof(float) : sizeof(uint16_t)));
            atomic_init(&b->state, BUF_FREE);
            s->pool[s->npool++] = b;
            continue;
        }
        struct timespec ms = { 0, 1000000 };
        nanosleep(&ms, NULL);
    }
}

static void pool_close(stream_t *s)
{
    for (int i = 0; i < s->npool; i++) {
        pool_buf_t *b = s->pool[i];
        int f = BUF_FREE, busy = BUF_BUSY;
        if (i == s->cur && s->images) atomic_store(&b->state, BUF_FREE);    // ours, not in flight
        if (atomic_compare_exchange_strong(&b->state, &f, BUF_ORPHAN)) {
            free(b->data);
            free(b);
        } else if (!atomic_compare_exchange_strong(&b->state, &busy, BUF_ORPHAN)) {
            ASSERT(0);
        }
    }
    s->npool = 0;
    s->images = NULL;
}

// 0 sent, 1 stopping, -1 err
static int send_batch(stream_t *s, char *err)
{
    const patch_cfg_t *c = s->cfg;
    wire_patch_batch_t p;
    memset(&p, 0, sizeof p);
    p.seq = s->seq;
    p.aug_seed = c->seed;
    p.B = c->batch; p.C = s->C;
    p.D = c->aug.patch[0]; p.H = c->aug.patch[1]; p.W = c->aug.patch[2];
    p.image_dtype = c->image_dtype;
    if (c->image_dtype != WIRE_F32)
        s->clamped += patch_images_convert(s->fwork, s->pool[s->cur]->data, (size_t)c->batch * s->C * s->pn,
                                           c->image_dtype);
    p.images = s->pool[s->cur]->data;
    p.labels = s->labels;
    p.origins = s->origins;
    p.positive = s->positive;
    p.case_ids = s->ids;
    p.num_classes = s->num_classes;
    wire_out_t o;
    if (wire_encode_patch_batch(&o, &p, err)) { wire_out_free(&o); return -1; }
    wire_out_donate(&o, "images", pool_release, s->pool[s->cur]);  // ZeroMQ holds it from here
    s->images = NULL;
    pool_acquire(s);
    double t0 = now_s();
    int rc;
    for (;;) {
        stage_event_t e = stage_wait_out(s->st, s->pout, 1000);
        if (e == STAGE_STOP) { rc = 1; break; }
        if (e != STAGE_READY) continue;
        rc = wire_send(s->pout, &o, ZMQ_DONTWAIT, err);
        if (rc != WIRE_AGAIN) break;
    }
    s->wait_out += now_s() - t0;
    wire_out_free(&o);
    if (rc == 0) { s->seq++; s->batches++; s->fill = 0; s->num_classes = 0; }
    return rc;
}

// Cut cfg->samples patches from slot k; 0, 1 stopping, -1 err.
static int cut(stream_t *s, int k, char *err)
{
    const patch_cfg_t *c = s->cfg;
    slot_t *sl = &s->ring[k];
    sl->v.uses++;
    for (int n = 0; n < c->samples; n++) {
        int b = s->fill;
        aug_info_t info;
        augment_sample(s->images + (size_t)b * s->C * s->pn, s->labels + (size_t)b * s->pn, &info, &sl->v,
                       &c->aug, c->seed, sl->v.next_sample++);
        memcpy(&s->origins[3 * b], info.origin, 3 * sizeof(int32_t));
        s->positive[b] = (uint8_t)info.positive;
        snprintf(s->ids[b], WIRE_ID_LEN, "%s", sl->v.case_id);
        if (sl->num_classes > s->num_classes) s->num_classes = sl->num_classes;
        s->fill++;
        s->patches++;
        if (s->fill == c->batch) {
            int rc = send_batch(s, err);
            if (rc) return rc;
            if (c->max_batches && s->batches >= c->max_batches) return 1;
        }
    }
    return 0;
}

// A volume that carries the run's patch and batch (loader --trainer-patch/--trainer-batch) is
// checked against this augmenter's: a mismatch is a configuration error (every batch it sent
// would be dropped by the trainer), 0 or -1 with fatal saying what to start it with.
static int same_geometry(const stream_t *s, const wire_volume_t *v, const char *loader, char *fatal)
{
    const int *p = s->cfg->aug.patch, *q = v->train_patch;
    if (!v->train_batch || (v->train_batch == s->cfg->batch && p[0] == q[0] && p[1] == q[1] && p[2] == q[2]))
        return 0;
    return set_err(fatal, "the run trains on batches of %d patches of %dx%dx%d (said the loader at %s with "
                   "volume %s), this augmenter cuts %d of %dx%dx%d: start it with --patch %d,%d,%d "
                   "--batch-size %d (join.sh: --patch %d,%d,%d --batch %d)", v->train_batch, q[0], q[1], q[2],
                   loader, v->case_id, s->cfg->batch, p[0], p[1], p[2], q[0], q[1], q[2], v->train_batch,
                   q[0], q[1], q[2], v->train_batch);
}

// Receive one volume into the ring. Returns the slot, -1 when it was bad (logged), -2 when it
// says the run wants another patch or batch (fatal: the error).
static int take_volume(stream_t *s, char *fatal)
{
    wire_msg_t m;
    wire_msg_init(&m);
    char err[ERR_LEN];
    wire_volume_t v;
    int k = -1, rc = wire_recv(s->vin, &m, ZMQ_DONTWAIT, err);
    if (rc == WIRE_AGAIN) { wire_msg_free(&m); return -1; }
    if (rc == 0 && wire_decode_volume(&m, &v, err) == 0) {
        if (same_geometry(s, &v, s->cfg->volumes_ep, fatal)) {
            wire_msg_free(&m);
            return -2;
        }
        if (!s->C) s->C = v.C;
        if (v.C != s->C) {
            snprintf(err, sizeof err, "volume %s has %d channels, this stream %d", v.case_id, v.C, s->C);
        } else {
            k = s->next_slot;
            slot_t *sl = &s->ring[k];
            sl->live = 0;
            int dim[3] = { v.D, v.H, v.W };
            if (aug_volume_load(&sl->v, v.case_id, v.epoch, v.C, dim, v.image_dtype, v.image, v.labels,
                                &s->cfg->aug, err) == 0) {
                sl->live = 1;
                memcpy(sl->v.spacing, v.spacing, sizeof sl->v.spacing);
                sl->num_classes = v.num_classes;
                s->next_slot = (k + 1) % s->cfg->keep;
            } else {
                k = -1;
            }
        }
    }
    if (k < 0) {
        log_msg('W', "dropping a volume from %s: %s", m.peer[0] ? m.peer : "?", err);
        s->vols_bad++;
    } else {
        s->vols_new++;
    }
    wire_msg_free(&m);
    return k;
}

static int reusable(stream_t *s)
{
    for (int j = 0; j < s->cfg->keep; j++) {
        int k = (s->rr + j) % s->cfg->keep;
        if (s->ring[k].live && s->ring[k].v.uses < s->cfg->max_uses) { s->rr = (k + 1) % s->cfg->keep; return k; }
    }
    return -1;
}

static void stats(stream_t *s, int force)
{
    double t = now_s(), dt = t - s->t_last;
    if (!force && (s->cfg->stats_every <= 0 || dt < s->cfg->stats_every)) return;
    if (force && !s->patches && !s->vols_new && !s->vols_bad) return;     // nothing since the last line
    log_msg('I', "%ld patches (%.1f/s), %ld batches, volumes %ld new %ld reused %ld bad, waited %.1f s for "
            "volumes, %.1f s to send", s->patches, dt > 0 ? s->patches / dt : 0.0, s->batches, s->vols_new,
            s->vols_reused, s->vols_bad, s->wait_in, s->wait_out);
    if (!force && !s->vols_new && !s->vols_reused && !s->patches)     // nothing came in a whole interval
        log_msg('W', "no volume from %s for %.0f s: is the loader running there (and, with CURVE, does it know "
                "this augmenter's key and this augmenter its server key)?", s->cfg->volumes_ep, dt);
    if (s->clamped) log_msg('W', "%ld image values beyond f16's range were clamped to +-65504 (use --image-dtype f32 "
                            "or bf16 for such data)", s->clamped);
    s->t_last = t;
    s->clamped = 0;
    s->patches = s->batches = s->vols_new = s->vols_reused = s->vols_bad = 0;
    s->wait_in = s->wait_out = 0;
}

static void stream_free(stream_t *s)
{
    for (int k = 0; s->ring && k < s->cfg->keep; k++)
        aug_volume_free(&s->ring[k].v);               // also a slot whose last load failed
    free(s->ring);
    pool_close(s);
    free(s->fwork);
    free(s->labels);
    free(s->origins);
    free(s->positive);
    free(s->ids);
}

// o as a CURVE client of ep when keys were given and ep is tcp (ipc stays plain), else plain.
static stage_sock_opts_t *curve_opts(stage_sock_opts_t *o, const patch_cfg_t *c, const char *ep)
{
    int on = c->curve_client && !strncmp(ep, "tcp://", 6);
    o->curve_secret = on ? c->curve_client : NULL;
    o->curve_server_public = on ? c->server_key : NULL;
    return o;
}

int patch_stream_run(const patch_cfg_t *c, stage_t *st, char *err)
{
    stream_t s;
    memset(&s, 0, sizeof s);
    s.cfg = c;
    s.st = st;
    stage_sock_opts_t o = stage_sock_defaults();
    o.hwm = 1;                                      // one volume waiting is enough
    // connecting fails only on the endpoint or the keys themselves, not on an absent peer
    if (!(s.vin = stage_socket(st, ZMQ_PULL, c->volumes_ep, STAGE_CONNECT, curve_opts(&o, c, c->volumes_ep), err))) return -2;
    o.hwm = c->hwm;
    if (!(s.pout = stage_socket(st, ZMQ_PUSH, c->patches_ep, STAGE_CONNECT, curve_opts(&o, c, c->patches_ep), err))) return -2;
    s.ring = xcalloc((size_t)c->keep, sizeof *s.ring);
    s.pn = (size_t)c->aug.patch[0] * c->aug.patch[1] * c->aug.patch[2];
    s.labels = xmalloc((size_t)c->batch * s.pn);
    s.origins = xmalloc((size_t)c->batch * 3 * sizeof(int32_t));
    s.positive = xmalloc((size_t)c->batch);
    s.ids = xcalloc((size_t)c->batch, WIRE_ID_LEN);
    s.t_last = now_s();
    int rc = 0;
    while (rc == 0) {
        int k = reusable(&s);
        double t0 = now_s();
        stage_event_t e = stage_wait(st, s.vin, k >= 0 ? 0 : 1000);
        if (e == STAGE_STOP) break;
        if (e == STAGE_READY) {
            int j = take_volume(&s, err);
            if (j == -2) { rc = -2; break; }
            if (j >= 0) k = j;
            else continue;
        } else if (k >= 0) {
            s.vols_reused++;
        }
        s.wait_in += now_s() - t0;
        if (k >= 0) {
            if (!s.images) pool_acquire(&s);
            rc = cut(&s, k, err);
        }
        stats(&s, 0);
    }
    stats(&s, 1);
    stream_free(&s);
    return rc == -2 ? -2 : rc < 0 ? -1 : 0;
}
