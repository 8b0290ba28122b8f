/*
durable_fs.c -- the durable-file primitives (durable_fs.h) the exporter builds on: every file is written to
NAME.tmp, fsync'ed and renamed over NAME (a reader sees the old file or the new one, never half
of one); symlinks are swapped the same way; callers fsync the directory once after a batch of
renames. A failed write removes its temp file, so a full disk leaves nothing behind.
Interrupted system calls (the stage's signal handlers do not use SA_RESTART) are retried.
*/
#define _GNU_SOURCE
#include "durable_fs.h"
#include "check.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int join(char *out, size_t cap, const char *dir, const char *name, const char *suffix, char *err)
{
    if ((size_t)snprintf(out, cap, "%s/%s%s", dir, name, suffix) >= cap)
        return set_err(err, "%s/%s: path too long", dir, name);
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        if (w == 0) { errno = ENOSPC; return -1; }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int fsync_retry(int fd)
{
    int rc;
    do rc = fsync(fd); while (rc < 0 && errno == EINTR);
    return rc;
}

int fs_write_tmp(const char *dir, const char *name, const void *data, size_t n, char *err)
{
    char tmp[FS_PATH_MAX];
    if (join(tmp, sizeof tmp, dir, name, ".tmp", err)) return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return set_err(err, "%s: cannot create: %s", tmp, strerror(errno));
    const char *what = NULL;
    if (write_all(fd, data, n)) what = "write";
    else if (fsync_retry(fd)) what = "fsync";
    int e = errno;
    if (close(fd) && !what) { what = "close"; e = errno; }
    if (what) {
        unlink(tmp);
        return set_err(err, "%s/%s: %s: %s", dir, name, what, strerror(e));
    }
    return 0;
}

int fs_commit(const char *dir, const char *name, char *err)
{
    char tmp[FS_PATH_MAX], dst[FS_PATH_MAX];
    if (join(tmp, sizeof tmp, dir, name, ".tmp", err) || join(dst, sizeof dst, dir, name, "", err)) return -1;
    if (rename(tmp, dst)) {
        int e = errno;
        unlink(tmp);
        return set_err(err, "%s: rename: %s", dst, strerror(e));
    }
    return 0;
}

int fs_write_atomic(const char *dir, const char *name, const void *data, size_t n, char *err)
{
    if (fs_write_tmp(dir, name, data, n, err)) return -1;
    return fs_commit(dir, name, err);
}

int fs_lock_file(const char *path, const char *who, double wait_s, char *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return set_err(err, "%s: cannot open: %s", path, strerror(errno));
    const double t0 = fs_now();
    int said = 0;
    while (flock(fd, LOCK_EX | LOCK_NB)) {
        const int e = errno;
        if (e == ENOSYS || e == EOPNOTSUPP || e == ENOLCK) {   // no flock here (Lustre noflock, some FUSE)
            log_msg('W', "%s: this filesystem has no file locks (%s): not guarded against a second %s",
                    path, strerror(e), who);
            return fd;
        }
        if (e != EWOULDBLOCK && e != EINTR) {
            close(fd);
            return set_err(err, "%s: flock: %s", path, strerror(e));
        }
        char holder[32] = "";
        ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = 0;
        holder[strcspn(holder, "\n")] = 0;
        if (fs_now() - t0 >= wait_s) {
            close(fd);
            return set_err(err, "%s: held by another %s (pid %s) for %.0f s: stop it first", path, who,
                           holder[0] ? holder : "?", wait_s);
        }
        if (!said++) log_msg('W', "%s: held by another %s (pid %s); waiting up to %.0f s for it to stop", path,
                             who, holder[0] ? holder : "?", wait_s);
        usleep(200 * 1000);
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) || pwrite(fd, pid, (size_t)n, 0) != n) log_msg('W', "%s: cannot record our pid", path);
    return fd;
}

const char *fs_split_path(const char *path, char *dir, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, cap, ".");
    else if (slash == path) snprintf(dir, cap, "/");
    else snprintf(dir, cap, "%.*s", (int)(slash - path), path);
    return slash ? slash + 1 : path;
}

int fs_fsync_dir(const char *dir, char *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return set_err(err, "%s: cannot open directory: %s", dir, strerror(errno));
    int rc = fsync_retry(fd), e = errno;
    close(fd);
    return rc ? set_err(err, "%s: fsync: %s", dir, strerror(e)) : 0;
}

int fs_symlink_atomic(const char *dir, const char *name, const char *target, char *err)
{
    char tmp[FS_PATH_MAX], dst[FS_PATH_MAX];
    if (join(tmp, sizeof tmp, dir, name, ".tmp", err) || join(dst, sizeof dst, dir, name, "", err)) return -1;
    unlink(tmp);                                        // a stale one from a crash
    if (symlink(target, tmp)) return set_err(err, "%s: symlink: %s", tmp, strerror(errno));
    if (rename(tmp, dst)) {
        int e = errno;
        unlink(tmp);
        return set_err(err, "%s: rename: %s", dst, strerror(e));
    }
    return 0;
}

int fs_write_sidecar(const char *dir, const char *name, const char hex[65], char *err)
{
    char side[FS_PATH_MAX], line[FS_PATH_MAX + 80];
    if ((size_t)snprintf(side, sizeof side, "%s.sha256", name) >= sizeof side) return set_err(err, "%s: name too long", name);
    int n = snprintf(line, sizeof line, "%s  %s\n", hex, name);
    return fs_write_atomic(dir, side, line, (size_t)n, err);
}

int fs_read_sidecar(const char *dir, const char *name, char hex[65], char *err)
{
    char path[FS_PATH_MAX];
    if (join(path, sizeof path, dir, name, ".sha256", err)) return -1;
    uint8_t *text;
    size_t n;
    if (fs_read_file(path, &text, &n, 4096, err)) return -1;
    // "<64 hex>  <name>\n"
    size_t nl = strlen(name);
    int ok = n == 64 + 2 + nl + 1 && text[64] == ' ' && text[65] == ' ' && !memcmp(text + 66, name, nl) && text[n - 1] == '\n';
    for (int i = 0; ok && i < 64; i++) ok = (text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f');
    if (ok) { memcpy(hex, text, 64); hex[64] = 0; }
    free(text);
    return ok ? 0 : set_err(err, "%s: not a sha256sum line for %s", path, name);
}

int fs_sha256_file(const char *path, char hex[65], char *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return set_err(err, "%s: cannot open: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        close(fd);
        return set_err(err, "%s: OpenSSL SHA-256 init failed", path);
    }
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = xmalloc(CHUNK);
    int rc = 0;
    for (;;) {
        ssize_t r = read(fd, buf, CHUNK);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { rc = set_err(err, "%s: read: %s", path, strerror(errno)); break; }
        if (r == 0) break;
        if (EVP_DigestUpdate(ctx, buf, (size_t)r) != 1) { rc = set_err(err, "%s: SHA-256 update failed", path); break; }
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!rc && (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 32)) rc = set_err(err, "%s: SHA-256 final failed", path);
    for (int i = 0; !rc && i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    free(buf);
    EVP_MD_CTX_free(ctx);
    close(fd);
    return rc;
}

int fs_read_file(const char *path, uint8_t **data, size_t *n, size_t max, char *err)
{
    *data = NULL;
    *n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return set_err(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
        close(fd);
        return set_err(err, "%s: not a regular file of at most %zu bytes", path, max);
    }
    size_t len = (size_t)st.st_size, got = 0;
    uint8_t *p = xmalloc(len ? len : 1);
    while (got < len) {
        ssize_t r = read(fd, p + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            free(p);
            close(fd);
            return set_err(err, "%s: read: %s", path, e ? strerror(e) : "file shrank while reading");
        }
        got += (size_t)r;
    }
    close(fd);
    *data = p;
    *n = len;
    return 0;
}

int fs_mkdir_p(const char *path, char *err)
{
    char buf[FS_PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return set_err(err, "%s: path too long", path);
    for (char *p = buf + 1; ; p++) {
        int end = *p == 0;
        if (*p == '/' || end) {
            *p = 0;
            if (mkdir(buf, 0755) && errno != EEXIST) return set_err(err, "%s: mkdir: %s", buf, strerror(errno));
            struct stat st;
            if (stat(buf, &st) || !S_ISDIR(st.st_mode)) return set_err(err, "%s: not a directory", buf);
            if (end) break;
            *p = '/';
        }
    }
    return 0;
}

// The writer's pid in STEM.tmp<pid>.nii[.gz] (nifti_write_volume's temporary names), else -1.
static long nifti_tmp_pid(const char *s)
{
    for (const char *t = strstr(s, ".tmp"); t; t = strstr(t + 1, ".tmp")) {
        const char *p = t + 4;
        long pid = 0;
        if (*p < '0' || *p > '9') continue;
        while (*p >= '0' && *p <= '9' && pid < 1L << 40) pid = pid * 10 + (*p++ - '0');
        if (!strcmp(p, ".nii") || !strcmp(p, ".nii.gz")) return pid;
    }
    return -1;
}

// NAME.tmp (ours) or STEM.tmp<pid>.nii[.gz].
static int is_temp_name(const char *s)
{
    size_t l = strlen(s);
    return (l > 4 && !strcmp(s + l - 4, ".tmp")) || nifti_tmp_pid(s) >= 0;
}

int fs_remove_dead_nifti_tmp(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    struct stat st;
    while ((e = readdir(d))) {
        long pid = nifti_tmp_pid(e->d_name);
        if (pid <= 0 || pid > INT_MAX || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        // no such process here, and untouched for a minute: a writer on another host (a shared
        // folder) has pids of its own, but writes a file in seconds
        if (fstatat(dirfd(d), e->d_name, &st, 0) == 0 && time(NULL) - st.st_mtime >= 60 && !unlinkat(dirfd(d), e->d_name, 0))
            n++;
    }
    closedir(d);
    return n;
}

int fs_remove_tmp(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (is_temp_name(e->d_name) && !unlinkat(dirfd(d), e->d_name, 0)) n++;
    closedir(d);
    return n;
}

int fs_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

double fs_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
