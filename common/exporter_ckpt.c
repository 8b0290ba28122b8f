/*
exporter_ckpt.c -- filing checkpoints in RUN/checkpoints (system.md "Checkpoints: who holds what").
A step is complete when all four files exist: step-N.ckpt, step-N.safetensors and their .sha256
sidecars. They are made in this order: the blob goes to step-N.ckpt.tmp (fsync) and is parsed
with checkpoint.h's reader (checksum, table); the safetensors export (its own temp + rename),
both sidecars, and last the rename of the .ckpt; then the directory fsync, the `latest` links,
retention, and only then the ack. Any failure removes what this attempt made, so an unacked step
leaves nothing; a crash leaves temp files or an incomplete step, both removed at start-up.
A step the trainer sent for validation has a step-N.awaiting marker (made just before the commit)
until the evaluator's metrics for it or a later step arrive: retention keeps it, so best can
point at it.
*/
#define _GNU_SOURCE
#include "exporter_internal.h"
#include "check.h"
#include "checkpoint.h"
#include "safetensors.h"
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_CKPT_BYTES ((size_t)64 << 30)

void exporter_ckpt_name(char *out, size_t cap, uint64_t step, const char *ext)
{
    snprintf(out, cap, "step-%08" PRIu64 "%s", step, ext);
}

// "step-<digits><ext>" -> step; 0 on a match.
static int parse_name(const char *name, const char *ext, uint64_t *step)
{
    if (strncmp(name, "step-", 5)) return -1;
    const char *p = name + 5;
    uint64_t v = 0;
    int nd = 0;
    for (; *p >= '0' && *p <= '9' && nd < 19; p++, nd++) v = v * 10 + (uint64_t)(*p - '0');
    if (!nd || strcmp(p, ext)) return -1;
    *step = v;
    return 0;
}

static const char *const PARTS[4] = { ".ckpt", ".ckpt.sha256", ".safetensors", ".safetensors.sha256" };

// The four files of a step (not a staged .ckpt.tmp).
static void remove_parts(const exporter_t *ex, uint64_t step)
{
    char name[128], path[EXPORTER_PATH];
    for (int i = 0; i < 4; i++) {
        exporter_ckpt_name(name, sizeof name, step, PARTS[i]);
        snprintf(path, sizeof path, "%s/%s", ex->ckpt_dir, name);
        if (unlink(path) && errno != ENOENT) log_msg('W', "%s: cannot remove: %s", path, strerror(errno));
    }
}

// step-N.awaiting: the trainer sent an eval job of step N, whose score has not come yet. The
// step is kept whatever the retention until then, or best could not point at it (its score may
// come after --keep newer steps). An empty file, so that a restarted exporter knows it too.
static void awaiting_path(const exporter_t *ex, uint64_t step, char *path, size_t cap)
{
    char name[128];
    exporter_ckpt_name(name, sizeof name, step, ".awaiting");
    snprintf(path, cap, "%s/%s", ex->ckpt_dir, name);
}

static int awaiting(const exporter_t *ex, uint64_t step)
{
    char path[EXPORTER_PATH];
    awaiting_path(ex, step, path, sizeof path);
    return fs_exists(path);
}

static void remove_step(const exporter_t *ex, uint64_t step)
{
    char name[128], path[EXPORTER_PATH];
    remove_parts(ex, step);
    exporter_ckpt_name(name, sizeof name, step, ".ckpt.tmp");
    snprintf(path, sizeof path, "%s/%s", ex->ckpt_dir, name);
    unlink(path);
    awaiting_path(ex, step, path, sizeof path);
    unlink(path);
}

static int step_complete(const exporter_t *ex, uint64_t step)
{
    char name[128], path[EXPORTER_PATH];
    for (int i = 0; i < 4; i++) {
        exporter_ckpt_name(name, sizeof name, step, PARTS[i]);
        snprintf(path, sizeof path, "%s/%s", ex->ckpt_dir, name);
        if (!fs_exists(path)) return 0;
    }
    return 1;
}

// 1 when step's four files exist and its .ckpt's content matches its sidecar (a full read: used
// where a wrong answer would lose work -- recovery's latest, a resend, a replaced step).
static int step_intact(const exporter_t *ex, uint64_t step, char *why)
{
    char ck[128], path[EXPORTER_PATH], side[65], got[65];
    if (!step_complete(ex, step)) return set_err(why, "step %" PRIu64 " is incomplete", step), 0;
    exporter_ckpt_name(ck, sizeof ck, step, ".ckpt");
    snprintf(path, sizeof path, "%s/%s", ex->ckpt_dir, ck);
    if (fs_read_sidecar(ex->ckpt_dir, ck, side, why) || fs_sha256_file(path, got, why)) return 0;
    if (strcmp(side, got))
        return set_err(why, "%s: content sha256 %.12s... does not match its sidecar %.12s...", path, got, side), 0;
    return 1;
}

// Steps of every step-N.ckpt in the directory (malloc'd, ascending).
static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int list_steps(const exporter_t *ex, const char *ext, uint64_t **out)
{
    *out = NULL;
    DIR *d = opendir(ex->ckpt_dir);
    if (!d) return 0;
    int n = 0, cap = 0;
    struct dirent *e;
    uint64_t s;
    while ((e = readdir(d)))
        if (!parse_name(e->d_name, ext, &s)) {
            if (n == cap) *out = xrealloc(*out, (size_t)(cap = 2 * cap + 16) * sizeof **out);
            (*out)[n++] = s;
        }
    closedir(d);
    if (n) qsort(*out, (size_t)n, sizeof **out, cmp_u64);
    return n;
}

static int link_pair(const exporter_t *ex, const char *which, uint64_t step, char *err)
{
    char name[64], target[128];
    for (int i = 0; i < 2; i++) {
        const char *ext = i ? ".safetensors" : ".ckpt";
        snprintf(name, sizeof name, "%s%s", which, ext);
        exporter_ckpt_name(target, sizeof target, step, ext);
        if (fs_symlink_atomic(ex->ckpt_dir, name, target, err)) return -1;
    }
    return fs_fsync_dir(ex->ckpt_dir, err);
}

// Keep the K newest steps, latest, best, steps awaiting their score and multiples of --every;
// remove the rest.
static void retain(exporter_t *ex)
{
    uint64_t *steps;
    int n = list_steps(ex, ".ckpt", &steps), removed = 0;
    for (int i = 0; i < n; i++) {
        uint64_t s = steps[i];
        int keep = i >= n - ex->cfg.keep || (ex->have_latest && s == ex->latest_step) ||
                   (ex->have_best && s == ex->best_step) || (ex->cfg.every && s % ex->cfg.every == 0) ||
                   awaiting(ex, s);
        if (keep) continue;
        remove_step(ex, s);
        removed++;
    }
    free(steps);
    char err[ERR_LEN];
    if (removed && fs_fsync_dir(ex->ckpt_dir, err)) log_msg('W', "%s", err);
}

static void best_link(exporter_t *ex, uint64_t step, double dice)
{
    char err[ERR_LEN];
    if (link_pair(ex, "best", step, err)) {             // keep serving; the next offer retries
        log_msg('W', "best -> step %" PRIu64 ": %s", step, err);
        return;
    }
    ex->have_best = 1;
    ex->best_step = step;
    ex->best_dice = dice;
    log_msg('I', "best is now step %" PRIu64 " (mean foreground Dice %.4f)", step, dice);
    int k = 0;                                          // pending scores that no longer win
    for (int i = 0; i < ex->npending; i++)
        if (ex->pending[i].value > dice) ex->pending[k++] = ex->pending[i];
    ex->npending = k;
}

void exporter_scored(exporter_t *ex, uint64_t step)
{
    if (!ex->have_scored || step > ex->scored_upto) ex->scored_upto = step;
    ex->have_scored = 1;
    // the evaluator works through its jobs in step order and skips stale ones: no score will
    // come for an awaiting step at or below this one
    uint64_t *steps;
    int n = list_steps(ex, ".awaiting", &steps), released = 0;
    char path[EXPORTER_PATH];
    for (int i = 0; i < n && steps[i] <= step; i++) {
        awaiting_path(ex, steps[i], path, sizeof path);
        if (unlink(path) && errno != ENOENT) log_msg('W', "%s: cannot remove: %s", path, strerror(errno));
        else released++;
    }
    free(steps);
    if (released) retain(ex);
}

void exporter_best_offer(exporter_t *ex, uint64_t step, double dice)
{
    if (!isfinite(dice) || (ex->have_best && dice <= ex->best_dice)) return;
    if (step_complete(ex, step)) {
        best_link(ex, step, dice);
        retain(ex);                                     // the previous best may go now
        return;
    }
    int slot = -1;
    for (int i = 0; i < ex->npending && slot < 0; i++)
        if (ex->pending[i].step == step) slot = i;
    if (slot >= 0 && ex->pending[slot].value >= dice) return;   // already waiting with a better score
    if (slot < 0 && ex->npending < EXPORTER_MAX_PENDING) slot = ex->npending++;
    if (slot < 0) {                                     // full: replace the weakest if it is weaker
        slot = 0;
        for (int i = 1; i < ex->npending; i++)
            if (ex->pending[i].value < ex->pending[slot].value) slot = i;
        if (ex->pending[slot].value >= dice) return;
    }
    ex->pending[slot] = (exporter_point_t){ step, dice };
    log_msg('I', "step %" PRIu64 " scored %.4f; best follows when its checkpoint arrives", step, dice);
}

// Parse the staged blob and write the safetensors export beside it.
static int export_safetensors(const exporter_t *ex, const char *staged, const char *st_name, uint64_t step,
                              char *err)
{
    ckpt_state_t state;
    if (ckpt_read_state(staged, &state, err)) return -1;
    if (state.step < 0 || (uint64_t)state.step != step)
        return set_err(err, "checkpoint says step %ld but the message says %" PRIu64, state.step, step);
    model_t m;
    if (model_describe(&m, &state.cfg, err)) return -1;
    float *params = xmalloc(m.table.numel * sizeof(float));
    char path[EXPORTER_PATH];
    snprintf(path, sizeof path, "%s/%s", ex->ckpt_dir, st_name);
    int rc = ckpt_read(staged, &m, params, NULL, NULL, &state, err);
    if (!rc) rc = safetensors_write(path, &m, params, state.prep, err);
    free(params);
    model_free(&m);
    return rc;
}

// Point latest at the newest intact step below `below` (UINT64_MAX: any), skipping damaged ones
// with an error naming them; none: no latest. 0, or -1 + err when the links cannot be made.
static int latest_fallback(exporter_t *ex, uint64_t below, char *err)
{
    uint64_t *steps;
    int n = list_steps(ex, ".ckpt", &steps), rc = 0;
    ex->have_latest = 0;
    for (int i = n - 1; i >= 0; i--) {
        char why[ERR_LEN];
        if (steps[i] >= below) continue;
        if (!step_intact(ex, steps[i], why)) { log_msg('E', "%s; not usable as latest", why); continue; }
        ex->have_latest = 1;
        ex->latest_step = steps[i];
        rc = link_pair(ex, "latest", steps[i], err);
        break;
    }
    free(steps);
    return rc;
}

int exporter_ckpt_store(exporter_t *ex, uint64_t step, int validated, const uint8_t *blob, size_t n,
                        const char sha[65], char *err)
{
    char ck[128], st[128], staged[EXPORTER_PATH], side[65], st_sha[65], path[EXPORTER_PATH];
    exporter_ckpt_name(ck, sizeof ck, step, ".ckpt");
    exporter_ckpt_name(st, sizeof st, step, ".safetensors");
    char why[ERR_LEN], aw[128];
    exporter_ckpt_name(aw, sizeof aw, step, ".awaiting");
    // kept until scored -- unless its score came first (the evaluator was quicker than this store)
    const int await = validated && !(ex->have_scored && step <= ex->scored_upto);
    int exists = step_complete(ex, step), resend = 0;
    if (exists && !fs_read_sidecar(ex->ckpt_dir, ck, side, why) && !strcmp(side, sha) && step_intact(ex, step, why)) {
        resend = 1;
        log_msg('I', "%s: already filed (a resend); acknowledging again", ck);
        if (await && !awaiting(ex, step) && fs_write_atomic(ex->ckpt_dir, aw, "", 0, err)) return -1;
    } else {
        snprintf(staged, sizeof staged, "%s/%s.tmp", ex->ckpt_dir, ck);
        snprintf(path, sizeof path, "%s/%s", ex->ckpt_dir, st);
        if (fs_write_tmp(ex->ckpt_dir, ck, blob, n, err)) return -1;
        if (exists) {
            // Another checkpoint of this step (a run resumed from an earlier one took another
            // path, or the filed one is damaged). The new one is staged and its checksum and
            // header read first -- a bad one leaves the old step as it was -- then the old files
            // go, so that no moment mixes the two; until the new one is complete latest is the
            // newest intact step below it (the trainer keeps the new one spooled until its ack),
            // and a best that pointed here is dropped: its score was of the old weights.
            ckpt_state_t probe;
            if (ckpt_read_state(staged, &probe, err)) { unlink(staged); return -1; }
            log_msg('W', "%s: replaced by a new checkpoint of step %" PRIu64 " (sha256 %.12s...)", ck, step, sha);
            remove_parts(ex, step);
            if (ex->have_best && ex->best_step == step) {
                char link[EXPORTER_PATH];
                for (int i = 0; i < 2; i++) {
                    snprintf(link, sizeof link, "%s/best%s", ex->ckpt_dir, i ? ".safetensors" : ".ckpt");
                    unlink(link);
                }
                ex->have_best = 0;
                log_msg('W', "best was step %" PRIu64 ", whose weights are replaced: it follows the next scores", step);
            }
            if (fs_fsync_dir(ex->ckpt_dir, err) ||
                (ex->have_latest && ex->latest_step == step && latest_fallback(ex, step, err))) {
                unlink(staged);
                return -1;
            }
        }
        // the marker before the commit: a crash between them leaves an incomplete step, which
        // recovery removes with its marker
        if (export_safetensors(ex, staged, st, step, err) ||
            fs_sha256_file(path, st_sha, err) ||
            fs_write_sidecar(ex->ckpt_dir, st, st_sha, err) ||
            fs_write_sidecar(ex->ckpt_dir, ck, sha, err) ||
            (await && fs_write_atomic(ex->ckpt_dir, aw, "", 0, err)) ||
            fs_commit(ex->ckpt_dir, ck, err) ||
            fs_fsync_dir(ex->ckpt_dir, err)) {
            remove_step(ex, step);
            return -1;
        }
    }
    if ((!resend || !ex->have_latest || ex->latest_step != step) && link_pair(ex, "latest", step, err)) {
        // not acked: a new step must not stay half-linked; a resend's files were filed (and
        // acknowledged) before this message came, and stay
        if (!resend) remove_step(ex, step);
        if (ex->have_latest && link_pair(ex, "latest", ex->latest_step, why))
            log_msg('W', "cannot restore latest -> step %" PRIu64 ": %s", ex->latest_step, why);
        return -1;
    }
    ex->have_latest = 1;
    ex->latest_step = step;
    ex->n_ckpt++;
    for (int i = 0; i < ex->npending; i++)              // an evaluation waited for this one
        if (ex->pending[i].step == step) {
            double d = ex->pending[i].value;
            ex->pending[i] = ex->pending[--ex->npending];
            if (!ex->have_best || d > ex->best_dice) best_link(ex, step, d);
            break;
        }
    retain(ex);
    return 0;
}

// Read step's .ckpt and check it against its sidecar. 0, -1 + err (missing), -2 + err (damaged).
static int load_step(const exporter_t *ex, uint64_t step, uint8_t **blob, size_t *n, char sha[65], char *err)
{
    *blob = NULL;
    if (!step_complete(ex, step)) return set_err(err, "no checkpoint for step %" PRIu64, step);
    char ck[128], path[EXPORTER_PATH], got[65];
    exporter_ckpt_name(ck, sizeof ck, step, ".ckpt");
    snprintf(path, sizeof path, "%s/%s", ex->ckpt_dir, ck);
    if (fs_read_sidecar(ex->ckpt_dir, ck, sha, err) || fs_read_file(path, blob, n, MAX_CKPT_BYTES, err)) return -2;
    wire_sha256_hex(*blob, *n, got);
    if (strcmp(got, sha)) {
        free(*blob);
        *blob = NULL;
        return set_err(err, "%s: content sha256 %.12s... does not match its sidecar %.12s...", path, got, sha), -2;
    }
    return 0;
}

int exporter_ckpt_load(exporter_t *ex, uint64_t step, uint8_t **blob, size_t *n, uint64_t *got_step,
                       char sha[65], char *err)
{
    *blob = NULL;
    if (step != UINT64_MAX) {
        int rc = load_step(ex, step, blob, n, sha, err);
        if (!rc) *got_step = step;
        return rc;
    }
    // latest: a damaged latest must not send a resuming trainer back to step 0 -- fall back to the
    // newest intact step and point latest there (the trainer then redoes the steps after it)
    while (ex->have_latest) {
        const uint64_t s = ex->latest_step;
        int rc = load_step(ex, s, blob, n, sha, err);
        if (!rc) { *got_step = s; return 0; }
        log_msg('E', "latest checkpoint (step %" PRIu64 ") unusable: %s; falling back to the newest intact step", s, err);
        char e2[ERR_LEN];
        if (latest_fallback(ex, s, e2)) return set_err(err, "%s", e2), -2;
    }
    uint64_t *steps;                    // none intact: is there none at all, or only damaged ones?
    const int n_any = list_steps(ex, ".ckpt", &steps);
    free(steps);
    if (n_any) return set_err(err, "every checkpoint in %s is damaged (%d step files)", ex->ckpt_dir, n_any), -2;
    return set_err(err, "no checkpoint"), -1;
}

// The target of link CKPT_DIR/name into target (cap bytes). 0, or -1 when it is no link.
static int link_target(const exporter_t *ex, const char *name, char *target, size_t cap)
{
    char path[EXPORTER_PATH];
    snprintf(path, sizeof path, "%s/%s", ex->ckpt_dir, name);
    ssize_t l = readlink(path, target, cap - 1);
    if (l <= 0) return -1;
    target[l] = 0;
    return 0;
}

// Target step of a latest/best link, or -1.
static int read_link(const exporter_t *ex, const char *name, uint64_t *step)
{
    char target[256];
    return link_target(ex, name, target, sizeof target) ? -1 : parse_name(target, ".ckpt", step);
}

// Whether which.ckpt and which.safetensors both name step's files.
static int pair_ok(const exporter_t *ex, const char *which, uint64_t step)
{
    for (int i = 0; i < 2; i++) {
        const char *ext = i ? ".safetensors" : ".ckpt";
        char name[64], target[256], want[128];
        snprintf(name, sizeof name, "%s%s", which, ext);
        exporter_ckpt_name(want, sizeof want, step, ext);
        if (link_target(ex, name, target, sizeof target) || strcmp(target, want)) return 0;
    }
    return 1;
}

int exporter_ckpt_recover(exporter_t *ex, char *err)
{
    int t = fs_remove_tmp(ex->ckpt_dir);
    if (t) log_msg('W', "%s: removed %d temporary file(s) left by an interrupted write", ex->ckpt_dir, t);
    uint64_t *marks;                                    // awaiting markers of steps never filed
    int nm = list_steps(ex, ".awaiting", &marks);
    for (int i = 0; i < nm; i++)
        if (!step_complete(ex, marks[i])) remove_step(ex, marks[i]);
    free(marks);
    for (int p = 0; p < 4; p++) {                       // any step missing one of its four files
        uint64_t *steps;
        int n = list_steps(ex, PARTS[p], &steps);
        for (int i = 0; i < n; i++)
            if (!step_complete(ex, steps[i])) {
                log_msg('W', "%s: step %" PRIu64 " is incomplete (never acknowledged); removing it",
                        ex->ckpt_dir, steps[i]);
                remove_step(ex, steps[i]);
            }
        free(steps);
    }
    // latest: the link's target when it is intact (its content read and checked: a kill or a disk
    // fault must not leave a damaged latest for a resuming trainer), else the newest intact step
    uint64_t s;
    char why[ERR_LEN];
    const int linked = !read_link(ex, "latest.ckpt", &s);
    if (linked && step_intact(ex, s, why)) {
        ex->have_latest = 1;
        ex->latest_step = s;
    } else {
        if (linked) log_msg('E', "latest -> step %" PRIu64 " is unusable: %s", s, why);
        if (latest_fallback(ex, UINT64_MAX, err)) return -1;
    }
    if (!read_link(ex, "best.ckpt", &s) && step_complete(ex, s)) {
        ex->have_best = 1;
        ex->best_step = s;
        ex->best_dice = -INFINITY;                      // exporter_metrics_recover finds its score
    }
    // a pair whose two links disagree is made again: a kill (or power loss) between its two
    // renames leaves .ckpt and .safetensors naming different steps, and predict.sh reads the
    // .safetensors (a full disk only warns: the next store links it again)
    for (int b = 0; b < 2; b++) {
        const char *which = b ? "best" : "latest";
        uint64_t at = b ? ex->best_step : ex->latest_step;
        if (!(b ? ex->have_best : ex->have_latest) || pair_ok(ex, which, at)) continue;
        log_msg('W', "%s: %s.ckpt and %s.safetensors disagree; both -> step %" PRIu64, ex->ckpt_dir, which, which, at);
        if (link_pair(ex, which, at, why)) log_msg('W', "%s -> step %" PRIu64 ": %s", which, at, why);
    }
    if (ex->have_latest) log_msg('I', "%s: latest is step %" PRIu64, ex->ckpt_dir, ex->latest_step);
    return fs_fsync_dir(ex->ckpt_dir, err);
}
