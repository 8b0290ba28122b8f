/*
durable_fs.h -- durable files (durable_fs.c): every file is written to NAME.tmp, fsync'ed and
renamed over NAME, so a reader sees the old file or the new one, never half of one; symlinks are
swapped the same way; SHA-256 sidecars. Used by srm-exporter for everything it files and by
srm-loader for its preprocessing settings.
*/
#ifndef SRM_DURABLE_FS_H
#define SRM_DURABLE_FS_H
#include <stddef.h>
#include <stdint.h>

#define FS_PATH_MAX 4096                // any file path these functions build

// Write n bytes to dir/name through dir/name.tmp: write, fsync, rename. The directory is NOT
// fsync'ed (callers batch that). On failure the temp file is removed.
int fs_write_atomic(const char *dir, const char *name, const void *data, size_t n, char *err);
// The two halves: dir/name.tmp written and fsync'ed (removed on failure); then renamed to dir/name.
int fs_write_tmp(const char *dir, const char *name, const void *data, size_t n, char *err);
int fs_commit(const char *dir, const char *name, char *err);
int fs_fsync_dir(const char *dir, char *err);
// Take the exclusive lock of the file path (made if missing; flock, released when the process
// ends, even by kill -9) for `who`, writing our pid into it; while another process holds it,
// retry for up to wait_s seconds. Returns the open descriptor (keep it open), or -1 + err naming
// the holder's pid.
int fs_lock_file(const char *path, const char *who, double wait_s, char *err);
// The folder of path into dir ("." when it has none); returns its file name (a pointer into path).
const char *fs_split_path(const char *path, char *dir, size_t cap);
// dir/name -> target (relative), replaced atomically via dir/name.tmp.
int fs_symlink_atomic(const char *dir, const char *name, const char *target, char *err);
// dir/name.sha256 = "<hex>  <name>\n" (atomic).
int fs_write_sidecar(const char *dir, const char *name, const char hex[65], char *err);
// Read dir/name.sha256 and check it names `name`; hex receives its digest.
int fs_read_sidecar(const char *dir, const char *name, char hex[65], char *err);
int fs_sha256_file(const char *path, char hex[65], char *err);
// Read a whole file of at most max bytes into a malloc'd buffer.
int fs_read_file(const char *path, uint8_t **data, size_t *n, size_t max, char *err);
int fs_mkdir_p(const char *path, char *err);
// Remove the temporary files a crash left in dir (NAME.tmp, STEM.tmpPID.nii.gz); returns how many.
int fs_remove_tmp(const char *dir);
// Remove only the NIfTI temporary files (STEM.tmpPID.nii[.gz]) whose writer is no longer running
// (no such pid here) and that nobody touched for a minute: a folder other processes, here or on
// another host, may be writing into at the same moment. Returns how many.
int fs_remove_dead_nifti_tmp(const char *dir);
int fs_exists(const char *path);
double fs_now(void);                // CLOCK_MONOTONIC seconds

#endif
