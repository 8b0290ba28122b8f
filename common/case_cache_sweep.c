/*
case_cache_sweep.c -- temporary files of the case cache left by a loader killed while writing.
case_cache_write writes <case>.srmcase.tmp.<host>.<pid> and renames it; a kill -9 in between
leaves the temp file, tens of MB a case, and nothing else ever removes it. Several loaders may
share a cache folder, also across hosts (shared storage), so a temp file is removed only when its
writer is known dead: same host and no such process -- or when it is a day old, for other hosts'
files and the older "<case>.srmcase.tmp.<pid>" names, whose writer cannot be asked.
*/
#define _GNU_SOURCE
#include "case_cache.h"
#include "check.h"
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STALE_S (24 * 3600)

void case_cache_host(char *out, size_t cap)
{
    char h[256] = "";
    if (gethostname(h, sizeof h - 1)) snprintf(h, sizeof h, "unknown");
    size_t n = 0;
    for (const char *p = h; *p && n + 1 < cap && n < 63; p++)   // a file-name-safe form
        out[n++] = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ? *p : '_';
    out[n] = 0;
}

// The writer of temp file `name` (after ".srmcase.tmp."): "<host>.<pid>" or "<pid>".
static int parse_writer(const char *s, char *host, size_t cap, long *pid)
{
    const char *dot = strrchr(s, '.');
    const char *num = dot ? dot + 1 : s;
    char *end;
    errno = 0;
    *pid = strtol(num, &end, 10);
    if (!*num || *end || errno || *pid <= 0) return -1;
    host[0] = 0;
    if (dot) snprintf(host, cap, "%.*s", (int)(dot - s), s);
    return 0;
}

int case_cache_sweep(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;                               // no cache yet
    char me[64], host[256], path[4400];
    case_cache_host(me, sizeof me);
    time_t now = time(NULL);
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *t = strstr(e->d_name, ".srmcase.tmp.");
        long pid;
        struct stat st;
        if (!t || parse_writer(t + strlen(".srmcase.tmp."), host, sizeof host, &pid)) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (lstat(path, &st) || !S_ISREG(st.st_mode)) continue;
        int dead = host[0] && !strcmp(host, me) && pid != getpid() && kill((pid_t)pid, 0) < 0 && errno == ESRCH;
        if (!dead && now - st.st_mtime < STALE_S) continue;
        if (unlink(path) == 0) removed++;
    }
    closedir(d);
    if (removed) log_msg('W', "%s: removed %d temporary file(s) of a loader killed while writing", dir, removed);
    return removed;
}
