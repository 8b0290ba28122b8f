/*
check.h -- how code in this project fails.

  ASSERT(cond)   a bug in OUR code. Always compiled in (never depends on NDEBUG).
                 Prints the expression, file:line and function, then abort()s.
  DIE(fmt, ...)  the run cannot continue (no memory, bad flags, unreadable input at start-up).
                 Prints the message and exit(1)s.
  return -1      one item is bad (one message, one case, one file). The callee writes why into
                 `char err[ERR_LEN]`; the caller logs it with context and decides what to do.

Logs go to stderr as "I: <stage>: ...", "W: ..." or "E: ...". Stdout is for machine-readable output.
*/
#ifndef SRM_CHECK_H
#define SRM_CHECK_H
#include <stddef.h>
#include <stdarg.h>

#define ERR_LEN 512

#define ASSERT(cond) \
    do { if (!(cond)) check_assert_fail(#cond, __FILE__, __LINE__, __func__); } while (0)
#define DIE(...) check_die(__FILE__, __LINE__, __VA_ARGS__)

void check_assert_fail(const char *expr, const char *file, int line, const char *func)
    __attribute__((noreturn));
void check_die(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

// Name printed after the level in every log line ("W: loader: ..."). Default "srm".
void log_set_name(const char *name);
// level is 'I', 'W' or 'E'. 'I' lines are hidden when SRM_QUIET=1.
void log_msg(char level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Fill err (ERR_LEN bytes) with a formatted message; returns -1 so callers can `return set_err(...)`.
int set_err(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void *xmalloc(size_t nbytes);               // never returns NULL: DIEs instead
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t nbytes);
char *xstrdup(const char *s);

#endif
