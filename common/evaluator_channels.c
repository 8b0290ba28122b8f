/*
evaluator_channels.c -- file mode's --images as cases. A multi-channel image comes either as one
4D file or, as nnU-Net stores it, as one file per channel, CASE_0000.nii.gz, CASE_0001.nii.gz,
...: when every image's name ends in _DDDD and some case has a channel above 0000, the files of a
case (the same path up to _DDDD) become one case CASE whose channels are stacked in DDDD order,
which must run 0000, 0001, ... without gaps or repeats. Otherwise each file is its own case
(single-channel nnU-Net inputs, CASE_0000 only, keep their file names as before).
*/
#include "evaluator.h"
#include "check.h"
#include <stdlib.h>
#include <string.h>

// The channel number of path (its name ends in _DDDD.nii or _DDDD.nii.gz) and the length of
// the path before "_DDDD"; -1 when the name has no such ending.
static int channel_of(const char *path, size_t *stem_len)
{
    size_t n = strlen(path);
    size_t suffix = n > 7 && !strcmp(path + n - 7, ".nii.gz") ? 7 : n > 4 && !strcmp(path + n - 4, ".nii") ? 4 : 0;
    if (!suffix || n - suffix < 5) return -1;
    const char *d = path + n - suffix - 4;
    if (d[-1] != '_' || d - 1 == path || d[-2] == '/') return -1;
    int ch = 0;
    for (int i = 0; i < 4; i++) {
        if (d[i] < '0' || d[i] > '9') return -1;
        ch = 10 * ch + (d[i] - '0');
    }
    *stem_len = (size_t)(d - 1 - path);
    return ch;
}

int eval_group_channels(eval_cfg_t *c, char *err)
{
    int n = c->n_images, grouped = 1, any_above_0 = 0;
    int *ch = xmalloc(sizeof *ch * (size_t)(n ? n : 1));
    size_t *stem = xmalloc(sizeof *stem * (size_t)(n ? n : 1));
    for (int k = 0; k < n; k++) {
        ch[k] = channel_of(c->images[k], &stem[k]);
        grouped &= ch[k] >= 0;
        any_above_0 |= ch[k] > 0;
    }
    c->n_cases = 0;
    int rc = 0;
    if (!grouped || !any_above_0) {             // one file, one case
        for (int k = 0; k < n; k++) { c->case_first[k] = k; c->case_nch[k] = 1; }
        c->n_cases = n;
        goto done;
    }
    const char **order = xmalloc(sizeof *order * (size_t)n);
    char *taken = xcalloc((size_t)n, 1);
    int m = 0;
    for (int k = 0; k < n && !rc; k++) {
        if (taken[k]) continue;
        int first = m, nch = 0;
        for (int want = 0; !rc; want++) {       // channels 0000, 0001, ... of k's case, in order
            int found = -1;
            for (int j = k; j < n; j++) {
                if (taken[j] || ch[j] != want || stem[j] != stem[k] || strncmp(c->images[j], c->images[k], stem[k]))
                    continue;
                if (found >= 0)
                    rc = set_err(err, "%s and %s are both channel %04d of case %.*s", c->images[found],
                                 c->images[j], want, (int)stem[k], c->images[k]);
                found = j;
            }
            if (found < 0) break;
            taken[found] = 1;
            order[m++] = c->images[found];
            nch++;
        }
        for (int j = k; j < n && !rc; j++)      // a file of this case the walk did not reach
            if (!taken[j] && stem[j] == stem[k] && !strncmp(c->images[j], c->images[k], stem[k]))
                rc = set_err(err, "%s: channel %04d of case %.*s, but its channel %04d is not given (one file per "
                                  "channel, numbered from _0000 without gaps)",
                             c->images[j], ch[j], (int)stem[k], c->images[k], nch);
        if (!rc && nch > CASE_MAX_CHANNELS)
            rc = set_err(err, "case %.*s: %d channel files (at most %d)", (int)stem[k], c->images[k], nch,
                         CASE_MAX_CHANNELS);
        c->case_first[c->n_cases] = first;
        c->case_nch[c->n_cases++] = nch;
    }
    if (!rc) memcpy(c->images, order, sizeof *order * (size_t)n);
    free(order);
    free(taken);
done:
    if (!rc && c->n_labels && c->n_labels != c->n_cases)
        rc = set_err(err, "--labels: %d files for %d cases (%d images%s)", c->n_labels, c->n_cases, n,
                     c->n_cases != n ? ", one file per channel" : "");
    free(ch);
    free(stem);
    return rc;
}

void eval_case_id(const eval_cfg_t *c, int k, char *id, size_t cap)
{
    const char *path = c->images[c->case_first[k]];
    size_t stem_len = 0;
    if (c->n_cases != c->n_images) channel_of(path, &stem_len);      // grouped: CASE of CASE_DDDD
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    if (stem_len) { snprintf(id, cap, "%.*s", (int)(path + stem_len - b), b); return; }
    snprintf(id, cap, "%s", b);                 // the file name without .nii / .nii.gz
    size_t n = strlen(id);
    if (n > 7 && !strcmp(id + n - 7, ".nii.gz")) id[n - 7] = 0;
    else if (n > 4 && !strcmp(id + n - 4, ".nii")) id[n - 4] = 0;
}
