/* check.c -- failure paths, logging and checked allocation (see check.h). */
#include "check.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char log_name[64] = "srm";

void check_assert_fail(const char *expr, const char *file, int line, const char *func)
{
    fprintf(stderr, "E: %s: ASSERT(%s) failed at %s:%d in %s()\n", log_name, expr, file, line, func);
    fflush(stderr);
    abort();
}

void check_die(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "E: %s: ", log_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (getenv("SRM_DEBUG")) fprintf(stderr, " [%s:%d]", file, line);
    fprintf(stderr, "\n");
    exit(1);
}

void log_set_name(const char *name)
{
    snprintf(log_name, sizeof log_name, "%s", name);
}

void log_msg(char level, const char *fmt, ...)
{
    if (level == 'I') {
        const char *q = getenv("SRM_QUIET");
        if (q && *q && *q != '0') return;
    }
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%c: %s: %s\n", level, log_name, buf);    // one write per line: no interleaving
}

int set_err(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, ERR_LEN, fmt, ap);
    va_end(ap);
    return -1;
}

void *xmalloc(size_t nbytes)
{
    void *p = malloc(nbytes ? nbytes : 1);
    if (!p) DIE("out of memory allocating %zu bytes", nbytes);
    return p;
}

void *xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) DIE("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *xrealloc(void *p, size_t nbytes)
{
    void *q = realloc(p, nbytes ? nbytes : 1);
    if (!q) DIE("out of memory reallocating %zu bytes", nbytes);
    return q;
}

char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}
