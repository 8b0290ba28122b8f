/*
trainer_journal.c -- the trainer's metrics lines kept on disk until the exporter has them.

The outbox (outbox.h) holds each line in memory until its ack; a trainer that dies or is
stopped before then (kill -9, an exporter frozen at the end of the run) would lose the ones
still waiting. So every line is appended first to SPOOL/metrics.pending, one JSON object a line:
{"id", "step", "wall_time", "values": {name: number or null}}. The file is emptied whenever
nothing waits for an ack, so it holds a few lines at most in a healthy run, and removed when the
trainer ends with everything acknowledged.

On start the lines an earlier trainer of the same spool left there go to the exporter again,
under their own ids (the exporter files an id once, and reads the filed ids back when it starts:
a copy of a line that did arrive is harmless) -- those of steps up to the resumed step only:
later steps are trained again and reported afresh. A line the journal cannot be read for is
skipped with a warning naming the file and line; it never stops a run. The appends are not
synced one by one (a killed process loses nothing the kernel holds); journal_sync makes them
durable with each checkpoint. The spool must outlive the trainer for any of this to help:
train.sh gives RUN/spool; srm-trainer's default, /tmp/srm-trainer-PID, is another folder at every
start.
*/
#define _GNU_SOURCE
#include "trainer_internal.h"
#include "check.h"
#include "durable_fs.h"
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static json_t *line_json(const char *id, const wire_metrics_t *x)
{
    json_t *values = json_object();
    for (int i = 0; i < x->nvalues; i++)
        json_object_set_new(values, x->names[i], isfinite(x->values[i]) ? json_real(x->values[i]) : json_null());
    return json_pack("{s:s, s:I, s:f, s:o}", "id", id, "step", (json_int_t)x->step, "wall_time", x->wall_time,
                     "values", values);
}

// One journal line back into a metrics message and its id. 0, or -1 with err (the caller names
// the line).
static int line_parse(const char *text, size_t n, wire_metrics_t *x, char id[64], char *err)
{
    json_error_t je;
    json_t *o = json_loadb(text, n, 0, &je);
    if (!o) return set_err(err, "%s", je.text);
    const char *s = json_string_value(json_object_get(o, "id"));
    json_t *step = json_object_get(o, "step"), *wall = json_object_get(o, "wall_time");
    json_t *values = json_object_get(o, "values");
    int rc = 0;
    if (!s || strlen(s) >= 64 || !wire_token_ok(s)) rc = set_err(err, "no valid id");
    else if (!json_is_integer(step) || json_integer_value(step) < 1) rc = set_err(err, "no valid step");
    else if (!json_is_number(wall)) rc = set_err(err, "no wall_time");
    else if (!json_is_object(values) || json_object_size(values) > WIRE_MAX_METRICS) rc = set_err(err, "no valid values");
    if (!rc) {
        memset(x, 0, sizeof *x);
        snprintf(id, 64, "%s", s);
        x->step = (uint64_t)json_integer_value(step);
        x->wall_time = json_number_value(wall);
        const char *name;
        json_t *v;
        json_object_foreach(values, name, v) {
            if (strlen(name) >= WIRE_NAME_LEN || (!json_is_number(v) && !json_is_null(v))) {
                rc = set_err(err, "value '%.40s' is not a number", name);
                break;
            }
            snprintf(x->names[x->nvalues], WIRE_NAME_LEN, "%s", name);
            x->values[x->nvalues++] = json_is_number(v) ? json_number_value(v) : NAN;
        }
    }
    json_decref(o);
    return rc;
}

static void post(outbox_t *out, const wire_metrics_t *x, const char *id)
{
    wire_out_t o;
    char err[ERR_LEN], what[48];
    if (wire_encode_metrics(&o, x, err)) { log_msg('E', "metrics: %s", err); return; }
    snprintf(what, sizeof what, "metrics of step %llu", (unsigned long long)x->step);
    wire_put_str(&o, "source", "trainer");
    outbox_post_id(out, &o, what, NULL, id);
    wire_out_free(&o);
}

// The lines of steps <= upto, re-posted, into *kept (the file's new text).
static void replay(const char *path, const char *text, size_t n, outbox_t *out, long upto, char **kept,
                   size_t *kept_n, long *lines)
{
    long lineno = 0, again = 0, later = 0;
    *kept = xmalloc(n + 1);
    *kept_n = 0;
    for (size_t a = 0; a < n;) {
        size_t b = a;
        while (b < n && text[b] != '\n') b++;
        lineno++;
        if (b == n) {                           // a torn last line (killed mid-append)
            log_msg('W', "%s: line %ld is incomplete; dropped", path, lineno);
            break;
        }
        wire_metrics_t x;
        char id[64], err[ERR_LEN];
        if (b > a && line_parse(text + a, b - a, &x, id, err)) {
            log_msg('W', "%s: line %ld unreadable (%s); dropped", path, lineno, err);
        } else if (b > a && (long)x.step > upto) {
            later++;
        } else if (b > a) {
            post(out, &x, id);
            memcpy(*kept + *kept_n, text + a, b - a + 1);
            *kept_n += b - a + 1;
            again++;
        }
        a = b + 1;
    }
    *lines = again;
    if (again || later)
        log_msg('I', "%s: %ld metrics line(s) an earlier trainer left unacknowledged sent again; %ld of steps after "
                "step %ld left out (trained again)", path, again, later, upto);
}

int journal_open(journal_t *j, const char *spool, outbox_t *out, long upto, char *err)
{
    memset(j, 0, sizeof *j);
    snprintf(j->dir, sizeof j->dir, "%s", spool);
    if (snprintf(j->path, sizeof j->path, "%s/%s", spool, JOURNAL_NAME) >= (int)sizeof j->path)
        return set_err(err, "%s: spool path too long", spool);
    uint8_t *text = NULL;
    size_t n = 0;
    char e[ERR_LEN];
    int have = fs_exists(j->path), unreadable = have && fs_read_file(j->path, &text, &n, (size_t)64 << 20, e);
    if (unreadable)                         // (over 64 MiB: a million unacknowledged lines)
        log_msg('W', "%s: %s; its lines are not sent again, the journal starts afresh", j->path, e);
    char *kept = NULL;
    size_t kept_n = 0;
    if (n) replay(j->path, (const char *)text, n, out, upto, &kept, &kept_n, &j->lines);
    free(text);
    // the survivors alone, atomically: a kill during the rewrite leaves the old file or the new
    int rc = n || unreadable ? fs_write_atomic(j->dir, JOURNAL_NAME, kept ? kept : "", kept_n, err) : 0;
    free(kept);
    if (rc) return -1;
    if (!(j->f = fopen(j->path, "a"))) return set_err(err, "%s: cannot open for appending: %s", j->path, strerror(errno));
    return 0;
}

void journal_post(journal_t *j, outbox_t *out, const wire_metrics_t *x)
{
    char id[64];
    outbox_fresh_id(out, id);
    if (j->f) {
        json_t *o = line_json(id, x);
        char *line = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
        json_decref(o);
        // a failed append costs only this line's safety net: it still goes to the exporter; a
        // fragment it may have left is ended by a newline before the next line (read back as
        // one unreadable line, not glued to that one)
        if (j->torn && fputc('\n', j->f) != EOF) j->torn = 0;
        if (!line || j->torn || fprintf(j->f, "%s\n", line) < 0 || fflush(j->f)) {
            if (!j->warned) log_msg('W', "%s: cannot append (%s): metrics lines are held in memory only",
                                    j->path, line ? strerror(errno) : "cannot serialise");
            j->warned = 1;
            j->torn = line != NULL;
            clearerr(j->f);
        } else {
            j->lines++;
        }
        free(line);
    }
    post(out, x, id);
}

void journal_settle(journal_t *j, const outbox_t *out)
{
    if (!j->f || !j->lines || outbox_pending(out)) return;
    if (fflush(j->f) || ftruncate(fileno(j->f), 0)) {
        if (!j->warned) log_msg('W', "%s: cannot empty: %s", j->path, strerror(errno));
        j->warned = 1;
        return;
    }
    j->lines = 0;
}

void journal_sync(journal_t *j)
{
    if (j->f && j->lines && fdatasync(fileno(j->f)) && !j->warned) {
        log_msg('W', "%s: fdatasync: %s", j->path, strerror(errno));
        j->warned = 1;
    }
}

void journal_close(journal_t *j)
{
    if (!j->f) return;
    fclose(j->f);
    j->f = NULL;
    if (!j->lines) unlink(j->path);         // everything acknowledged: no file left in the spool
}
