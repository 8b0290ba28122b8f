/*
evaluator_channels.c -- file mode's --images as cases. A multi-channel image comes either as one
4D file or, as nnU-Net stores it, as one file per channel, CASE_0000.nii.gz, CASE_0001.nii.gz,
.... For a model of C > 1 channels, the files CASE_0000 .. CASE_<C-1> (the same path up to
_DDDD) become one case CASE, its channels stacked in that order; a CASE_0000 without all its C
channels, or with more, is refused by name. Every other file is a case of its own, named by its
file name: any file for a one-channel model (a series img_0000, img_0001, ... stays a series),
4D files, and _DDDD names without a _0000 beside them (patient_0003) -- except that a lone
CASE_0000 for a one-channel model (no other file of its stem given) is case CASE, the name
nnU-Net gives the prediction of a one-channel case.
*/
#define _GNU_SOURCE
#include "evaluator.h"
#include "check.h"
#include "dataset.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The folder of path[0..len) (its text before the last '/'; "." or "/") resolved, into out.
static void folder_of(const char *path, size_t len, char out[PATH_MAX])
{
    const char *slash = memrchr(path, '/', len);
    char dir[PATH_MAX];
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    if (!realpath(dir, out)) snprintf(out, PATH_MAX, "%s", dir);
}

// Whether two channel files' stems (their paths before _DDDD) name one case: the same file-name
// stem in the same folder, however the folder is written ("./x_0000" beside "x_0001", or an
// absolute path beside a relative one).
static int same_stem(const char *a, size_t la, const char *b, size_t lb)
{
    const char *sa = memrchr(a, '/', la), *sb = memrchr(b, '/', lb);
    const char *na = sa ? sa + 1 : a, *nb = sb ? sb + 1 : b;
    size_t nla = la - (size_t)(na - a), nlb = lb - (size_t)(nb - b);
    if (nla != nlb || strncmp(na, nb, nla)) return 0;
    if (la == lb && !strncmp(a, b, la)) return 1;
    char da[PATH_MAX], db[PATH_MAX];
    folder_of(a, la, da);
    folder_of(b, lb, db);
    return !strcmp(da, db);
}

int eval_group_channels(eval_cfg_t *c, int C, char *err)
{
    int n = c->n_images, rc = 0;
    int *ch = xmalloc(sizeof *ch * (size_t)(n ? n : 1));
    size_t *stem = xmalloc(sizeof *stem * (size_t)(n ? n : 1));
    int *member = xmalloc(sizeof *member * (size_t)(n ? n : 1));    // image -> its group's leader, or -1
    for (int k = 0; k < n; k++) {               // (a model of more channels than a case holds: no groups)
        ch[k] = C > 1 && C <= CASE_MAX_CHANNELS ? dataset_channel_of_path(c->images[k], &stem[k]) : -1;
        member[k] = -1;
    }
    // groups: a _0000 file leads the files of its stem
    for (int k = 0; k < n && !rc; k++) {
        if (ch[k] != 0) continue;
        int have[CASE_MAX_CHANNELS + 1] = { 0 }, extra = -1;
        for (int j = 0; j < n; j++) {
            if (ch[j] < 0 || !same_stem(c->images[j], stem[j], c->images[k], stem[k])) continue;
            if (j != k && ch[j] == 0)
                rc = set_err(err, "%s and %s are both channel 0000 of case %.*s", c->images[k], c->images[j],
                             (int)stem[k], c->images[k]);
            else if (ch[j] < C && have[ch[j]]++)
                rc = set_err(err, "%s: channel %04d of case %.*s is given twice", c->images[j], ch[j],
                             (int)stem[k], c->images[k]);
            else if (ch[j] >= C) extra = j;
            member[j] = k;
        }
        for (int q = 0; q < C && !rc; q++)
            if (!have[q])
                rc = set_err(err, "%s: case %.*s has no channel %04d: the model takes %d channels, one file each "
                                  "(_0000 to _%04d)", c->images[k], (int)stem[k], c->images[k], q, C, C - 1);
        if (!rc && extra >= 0)
            rc = set_err(err, "%s: channel %04d of case %.*s, but the model takes %d channels (_0000 to _%04d)",
                         c->images[extra], ch[extra], (int)stem[k], c->images[k], C, C - 1);
    }
    c->n_cases = 0;
    const char **order = xmalloc(sizeof *order * (size_t)(n ? n : 1));
    char *done = xcalloc((size_t)(n ? n : 1), 1);       // a group's files are placed
    int m = 0;
    for (int k = 0; k < n && !rc; k++) {        // cases in the order of their first file
        int lead = member[k];
        if (lead >= 0 && done[lead]) continue;
        c->case_first[c->n_cases] = m;
        if (lead < 0) {
            order[m++] = c->images[k];
            c->case_nch[c->n_cases++] = 1;
            continue;
        }
        done[lead] = 1;
        for (int q = 0; q < C; q++)
            for (int j = 0; j < n; j++)
                if (member[j] == lead && ch[j] == q) order[m++] = c->images[j];
        c->case_nch[c->n_cases++] = C;
    }
    free(done);
    if (!rc) memcpy(c->images, order, sizeof *order * (size_t)n);
    if (!rc && c->n_cases != n)
        log_msg('I', "%d image files make %d cases (nnU-Net's one file per channel, CASE_0000 to CASE_%04d)", n,
                c->n_cases, C - 1);
    if (!rc && c->n_labels && c->n_labels != c->n_cases)
        rc = set_err(err, "--labels: %d files for %d cases (%d images%s)", c->n_labels, c->n_cases, n,
                     c->n_cases != n ? ", one file per channel" : "");
    free(order);
    free(member);
    free(ch);
    free(stem);
    return rc;
}

// Whether image i is a CASE_0000 with no other file of its stem among the images.
static int lone_channel_0(const eval_cfg_t *c, int i)
{
    size_t st, sj;
    if (dataset_channel_of_path(c->images[i], &st) != 0) return 0;
    for (int j = 0; j < c->n_images; j++)
        if (j != i && dataset_channel_of_path(c->images[j], &sj) >= 0 && same_stem(c->images[i], st, c->images[j], sj))
            return 0;
    return 1;
}

int eval_case_id(const eval_cfg_t *c, int k, char *id, size_t cap)
{
    const int i = c->case_first[k];            // CASE of CASE_0000 (a channel group, or a lone one)
    char *s = dataset_id_of_path(c->images[i], c->case_nch[k] > 1 || lone_channel_0(c, i));
    int n = snprintf(id, cap, "%s", s);
    free(s);
    return n;
}
