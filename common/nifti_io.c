/*
nifti_io.c -- read and write NIfTI-1/NIfTI-2 volumes (.nii, .nii.gz) through libnifti2 (volume.h).

Reading validates the header before any voxel memory exists (dims, datatype/bitpix, spacing,
offset, file length), so a lying header is an error, never a giant allocation. Intensities are
scaled as nibabel scales them, the affine is the one nibabel's img.affine picks (sform, qform,
else pixdim) in mm (a header in metres or microns is converted, as ITK does), and the data is transposed from libnifti's i-fastest order to (C, i, j, k) k-fastest.
Writing produces NIfTI-1 with the affine as sform and its closest qform, via temp file + rename.
*/
#include "volume.h"
#include "check.h"
#include <nifti2_io.h>
#include <zlib.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *volume_datatype_name(int datatype)
{
    switch (datatype) {
    case DT_UINT8:   return "uint8";
    case DT_INT8:    return "int8";
    case DT_INT16:   return "int16";
    case DT_UINT16:  return "uint16";
    case DT_INT32:   return "int32";
    case DT_UINT32:  return "uint32";
    case DT_INT64:   return "int64";
    case DT_UINT64:  return "uint64";
    case DT_FLOAT32: return "float32";
    case DT_FLOAT64: return "float64";
    default:         return "unknown";
    }
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

// Decompress a whole file (zlib also reads plain files) and count its bytes. Returns 0, or -1
// with err naming a truncated or corrupt gzip stream. Only used on error paths and after writes.
static int gz_length(const char *path, int64_t *len, char *err)
{
    gzFile f = gzopen(path, "rb");
    if (!f) return set_err(err, "%s: cannot open: %s", path, strerror(errno));
    static __thread char buf[1 << 16];
    int64_t total = 0;
    int n, errnum = Z_OK;
    while ((n = gzread(f, buf, sizeof buf)) > 0) total += n;
    char msg[128];                      // gzerror's text lives in f: copy it before gzclose_r
    const char *m = gzerror(f, &errnum);
    size_t pl = strlen(path);           // zlib puts "<path>: " before its reason; ours already does
    if (m && !strncmp(m, path, pl) && !strncmp(m + pl, ": ", 2)) m += pl + 2;
    snprintf(msg, sizeof msg, "%s", m && *m ? m : "read error");
    int rc = gzclose_r(f);
    if (n < 0 || (errnum != Z_OK && errnum != Z_STREAM_END)) {
        if (errnum == Z_BUF_ERROR)
            return set_err(err, "%s: truncated gzip (stream ends after %lld bytes)", path,
                           (long long)total);
        return set_err(err, "%s: corrupt gzip: %s", path, msg);
    }
    if (rc == Z_BUF_ERROR) return set_err(err, "%s: truncated gzip (stream ends early)", path);
    if (rc != Z_OK) return set_err(err, "%s: corrupt gzip (close failed, code %d)", path, rc);
    *len = total;
    return 0;
}

// Header fields as stored in the file, in native byte order. libnifti "fixes" some of them
// (zero pixdim -> 1, non-finite scl_* -> 0, NaN/Inf voxels -> 0) where nibabel would refuse or
// differ, so the checks, the scaling and the affine use these raw values.
typedef struct {
    int version;                 // 1 or 2
    int64_t dim[8];              // as stored: checked before libnifti allocates from them
    int bitpix, qform_code, sform_code;
    int xyz_units;               // bits 0..2 of xyzt_units: NIFTI_UNITS_METER, _MM, _MICRON or 0
    double pixdim[4], vox_offset, slope, inter;
    double quat[3], qoffset[3], srow[3][4];
} raw_hdr_t;

static int read_raw_header(const char *path, raw_hdr_t *r, char *err)
{
    int nver = 0;
    nifti_set_debug_level(0);           // libnifti's own stderr messages: the err we return says it
    void *h = nifti_read_header(path, &nver, 0);
    if (!h) return set_err(err, "%s: not a NIfTI file (header unreadable)", path);
    memset(r, 0, sizeof *r);
    r->version = nver;
#define COPY_FIELDS(H)                                                                    \
    do {                                                                                  \
        for (int i = 0; i < 8; i++) r->dim[i] = (H)->dim[i];                              \
        r->bitpix = (H)->bitpix;                                                          \
        r->qform_code = (H)->qform_code;                                                  \
        r->sform_code = (H)->sform_code;                                                  \
        r->xyz_units = (H)->xyzt_units & 0x07;                                            \
        for (int i = 0; i < 4; i++) r->pixdim[i] = (H)->pixdim[i];                        \
        r->vox_offset = (double)(H)->vox_offset;                                          \
        r->slope = (H)->scl_slope;                                                        \
        r->inter = (H)->scl_inter;                                                        \
        r->quat[0] = (H)->quatern_b; r->quat[1] = (H)->quatern_c; r->quat[2] = (H)->quatern_d; \
        r->qoffset[0] = (H)->qoffset_x; r->qoffset[1] = (H)->qoffset_y;                   \
        r->qoffset[2] = (H)->qoffset_z;                                                   \
        for (int i = 0; i < 4; i++) {                                                     \
            r->srow[0][i] = (H)->srow_x[i];                                               \
            r->srow[1][i] = (H)->srow_y[i];                                               \
            r->srow[2][i] = (H)->srow_z[i];                                               \
        }                                                                                 \
    } while (0)
    int rc = 0;
    if (nver == 1) {
        nifti_1_header *h1 = h;
        if (h1->sizeof_hdr != 348) swap_nifti_header(h1, 1);
        COPY_FIELDS(h1);
    } else if (nver == 2) {
        nifti_2_header *h2 = h;
        if (h2->sizeof_hdr != 540) swap_nifti_header(h2, 2);
        COPY_FIELDS(h2);
    } else {
        rc = set_err(err, "%s: not a NIfTI file (no NIfTI-1/NIfTI-2 magic)", path);
    }
#undef COPY_FIELDS
    free(h);
    return rc;
}

static int scaled(const raw_hdr_t *r)  // nibabel: slope 0 or non-finite means no scaling
{
    return isfinite(r->slope) && r->slope != 0;
}

#define VOX_OFFSET_MAX ((double)(1LL << 40))

// Byte offset of the voxel data as nibabel takes it (0 means "right after the header"), or -1
// when vox_offset is negative, NaN or absurd (checked before the cast, which would be undefined).
static int64_t data_offset(const raw_hdr_t *r)
{
    int64_t first = r->version == 2 ? 544 : 352;
    if (!(r->vox_offset >= 0 && r->vox_offset <= VOX_OFFSET_MAX)) return -1;
    return r->vox_offset == 0 ? first : (int64_t)r->vox_offset;
}

// The stored dims, before libnifti builds an image from them (it trusts dim[0] and the extents).
static int check_raw_dims(const char *path, const raw_hdr_t *r, char *err)
{
    if (r->dim[0] < 1 || r->dim[0] > 7)
        return set_err(err, "%s: bad dim[0] = %lld", path, (long long)r->dim[0]);
    for (int d = 1; d <= r->dim[0]; d++)
        if (r->dim[d] < 1)
            return set_err(err, "%s: dim[%d] = %lld is not positive", path, d, (long long)r->dim[d]);
    return 0;
}

int nifti_read_channels(const char *path, int *C, char *err)
{
    raw_hdr_t r;
    if (read_raw_header(path, &r, err) || check_raw_dims(path, &r, err)) return -1;
    *C = r.dim[0] >= 4 ? (int)r.dim[4] : 1;     // as nifti_read_volume counts them
    return 0;
}

// Everything about the header that can be checked before data is read.
static int check_header(const char *path, const nifti_image *nim, const raw_hdr_t *r,
                        int64_t fsize, int gz, char *err)
{
    if (nim->nifti_type != NIFTI_FTYPE_NIFTI1_1 && nim->nifti_type != NIFTI_FTYPE_NIFTI2_1)
        return set_err(err, "%s: not a single-file NIfTI image (type %d)", path, nim->nifti_type);
    int64_t ndim = nim->dim[0];
    if (ndim < 1 || ndim > 7) return set_err(err, "%s: bad dim[0] = %lld", path, (long long)ndim);
    for (int d = 1; d <= ndim; d++)
        if (nim->dim[d] < 1)
            return set_err(err, "%s: dim[%d] = %lld is not positive", path, d, (long long)nim->dim[d]);
    if (nim->nx < 1 || nim->ny < 1 || nim->nz < 1)
        return set_err(err, "%s: spatial dims %lld x %lld x %lld are not all positive", path,
                       (long long)nim->nx, (long long)nim->ny, (long long)nim->nz);
    for (int d = 1; d <= 3; d++)
        if (nim->dim[d] > VOLUME_MAX_DIM)
            return set_err(err, "%s: absurd dims: dim[%d] = %lld exceeds %d", path, d,
                           (long long)nim->dim[d], VOLUME_MAX_DIM);
    for (int d = 5; d <= ndim; d++)
        if (nim->dim[d] != 1)
            return set_err(err, "%s: %lldD images are not supported (dim[%d] = %lld)", path,
                           (long long)ndim, d, (long long)nim->dim[d]);
    int64_t C = ndim >= 4 ? nim->dim[4] : 1;
    if (C > VOLUME_MAX_CHANNELS)
        return set_err(err, "%s: absurd dims: %lld channels", path, (long long)C);
    int64_t values = C * nim->nx * nim->ny * nim->nz;  // each factor bounded: no overflow
    if (values > VOLUME_MAX_VALUES)
        return set_err(err, "%s: absurd dims: %lld values exceed the limit %lld", path,
                       (long long)values, (long long)VOLUME_MAX_VALUES);
    if (strcmp(volume_datatype_name(nim->datatype), "unknown") == 0)
        return set_err(err, "%s: unsupported datatype %d (%s)", path, nim->datatype,
                       nifti_datatype_to_string(nim->datatype));
    if (r->bitpix != 8 * nim->nbyper)
        return set_err(err, "%s: bitpix %d does not match datatype %s (%d bits)", path, r->bitpix,
                       volume_datatype_name(nim->datatype), 8 * nim->nbyper);
    // pixdim sets the geometry only without a valid sform (qform, or no transform): with one,
    // a zero or negative pixdim is ignored, as nibabel and ITK ignore it.
    int sform = r->sform_code >= 1 && r->sform_code <= 5;
    for (int d = 1; d <= 3; d++) {
        double p = r->pixdim[d];
        if (!isfinite(p)) return set_err(err, "%s: spacing pixdim[%d] is not finite", path, d);
        if (p == 0 && !sform) return set_err(err, "%s: zero spacing (pixdim[%d] = 0) and no sform", path, d);
        if (p < 0 && !sform) return set_err(err, "%s: negative spacing (pixdim[%d] = %g) and no sform", path, d, p);
    }
    int64_t off = data_offset(r), first = r->version == 2 ? 544 : 352;
    if (off < first)
        return set_err(err, "%s: bad vox_offset %g (data would start inside the header)", path,
                       r->vox_offset);
    int64_t need = off + values * nim->nbyper;
    if (!gz && off > fsize)
        return set_err(err, "%s: vox_offset %lld is beyond the end of the file (%lld bytes)", path,
                       (long long)off, (long long)fsize);
    if (!gz && fsize < need)
        return set_err(err, "%s: file has %lld bytes but the header needs %lld "
                       "(data shorter than the header says)", path, (long long)fsize, (long long)need);
    if (scaled(r) && !isfinite(r->inter))
        return set_err(err, "%s: scl_slope is valid but scl_inter is not finite", path);
    if (sform)
        for (int k = 0; k < 12; k++)
            if (!isfinite(r->srow[k / 4][k % 4]))
                return set_err(err, "%s: sform (srow) is not finite", path);
    int qform = r->qform_code >= 1 && r->qform_code <= 5;
    if (!sform && qform)
        for (int k = 0; k < 3; k++)
            if (!isfinite(r->quat[k]) || !isfinite(r->qoffset[k]))
                return set_err(err, "%s: qform parameters are not finite", path);
    return 0;
}

// The affine nibabel's img.affine gives (Nifti1Header.get_best_affine). Codes outside 1..5
// count as unset, as nibabel resets them to 0 on load.
static void best_affine(const raw_hdr_t *h, const int64_t dim[8], double a[4][4], int *source)
{
    memset(a, 0, 16 * sizeof(double));
    a[3][3] = 1;
    if (h->sform_code >= 1 && h->sform_code <= 5) {
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 4; c++) a[r][c] = h->srow[r][c];
        *source = 2;
    } else if (h->qform_code >= 1 && h->qform_code <= 5) {
        // nibabel fillpositive + quat2mat, then R @ diag(dx, dy, qfac*dz)
        double b = h->quat[0], c = h->quat[1], d = h->quat[2];
        double w2 = 1.0 - (b * b + c * c + d * d);
        double w = w2 < 0 ? 0 : sqrt(w2);
        double nq = w * w + b * b + c * c + d * d, s = nq > 0 ? 2.0 / nq : 0;
        double R[3][3] = {
            {1 - s * (c * c + d * d), s * (b * c - w * d), s * (b * d + w * c)},
            {s * (b * c + w * d), 1 - s * (b * b + d * d), s * (c * d - w * b)},
            {s * (b * d - w * c), s * (c * d + w * b), 1 - s * (b * b + c * c)}};
        double qfac = h->pixdim[0] == -1 ? -1 : 1;  // nibabel resets anything but +-1 to 1
        double z[3] = {h->pixdim[1], h->pixdim[2], h->pixdim[3] * qfac};
        for (int r = 0; r < 3; r++)
            for (int k = 0; k < 3; k++) a[r][k] = R[r][k] * z[k];
        for (int r = 0; r < 3; r++) a[r][3] = h->qoffset[r];
        *source = 1;
    } else {
        // nibabel shape_zoom_affine: x flipped, image centre at the origin
        double z[3] = {-h->pixdim[1], h->pixdim[2], h->pixdim[3]};
        for (int k = 0; k < 3; k++) {
            a[k][k] = z[k];
            a[k][3] = -((double)dim[k + 1] - 1) / 2.0 * z[k];
        }
        *source = 0;
    }
}

// The world in this system is in millimetres (spacings, resampling, HD95, the files written).
// A header whose spatial unit is metres or microns gets its affine scaled to mm, as ITK (and so
// SimpleITK and nnU-Net) reads it; unknown (0) and mm are taken as mm. nibabel keeps the stored
// numbers and leaves the unit to the user.
static void to_millimetres(const raw_hdr_t *h, double a[4][4])
{
    double s = h->xyz_units == NIFTI_UNITS_METER ? 1000.0 : h->xyz_units == NIFTI_UNITS_MICRON ? 1e-3 : 1.0;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) a[r][c] *= s;
}

// Read the raw voxel bytes (zlib reads plain and gzip files alike) and put them in native
// byte order, into *out (malloc'd, nbytes long on success). A .nii's size was checked against
// the header, but a .nii.gz's header can claim gigabytes in a few hundred bytes: the buffer
// grows only as decompressed bytes actually arrive (from 64 MiB, doubling), so a lying header
// costs what the file holds, not what it claims (fuzz_nifti found the 5 GB malloc). Short reads
// are told apart: a broken gzip stream vs. a header that lies.
#define VOXEL_READ_START (64LL << 20)
static int read_voxels(const char *path, const nifti_image *nim, int64_t off, void **out,
                       int64_t nbytes, char *err)
{
    *out = NULL;
    gzFile f = gzopen(path, "rb");
    if (!f) return set_err(err, "%s: cannot open: %s", path, strerror(errno));
    if (gzseek(f, (z_off_t)off, SEEK_SET) != (z_off_t)off) {
        gzclose_r(f);
        int64_t len;
        if (gz_length(path, &len, err)) return -1;
        return set_err(err, "%s: vox_offset %lld is beyond the end of the data (%lld bytes; "
                       "data shorter than the header says)", path, (long long)off, (long long)len);
    }
    int64_t cap = nbytes < VOXEL_READ_START ? nbytes : VOXEL_READ_START, got = 0;
    char *buf = xmalloc((size_t)cap);
    while (got < nbytes) {
        if (got == cap) {
            cap = cap > nbytes / 2 ? nbytes : 2 * cap;
            buf = xrealloc(buf, (size_t)cap);
        }
        unsigned chunk = (unsigned)(cap - got < (1 << 30) ? cap - got : (1 << 30));
        int n = gzread(f, buf + got, chunk);
        if (n <= 0) break;
        got += n;
    }
    int errnum = Z_OK;
    gzerror(f, &errnum);
    gzclose_r(f);
    if (got < nbytes || (errnum != Z_OK && errnum != Z_STREAM_END)) {
        free(buf);
        int64_t len;
        if (gz_length(path, &len, err)) return -1;  // "truncated gzip" / "corrupt gzip"
        return set_err(err, "%s: %lld data bytes but the header needs %lld (data shorter than "
                       "the header says)", path, (long long)(len - off), (long long)nbytes);
    }
    if (nim->swapsize > 1 && nim->byteorder != nifti_short_order())
        nifti_swap_Nbytes(nbytes / nim->swapsize, nim->swapsize, buf);
    *out = buf;
    return 0;
}
#undef VOXEL_READ_START

// Stored values -> scaled floats in (C, i, j, k) order. Returns -1 on a NaN/Inf value.
#define CONVERT_LOOP(T)                                                                   \
    do {                                                                                  \
        const T *src = (const T *)nim->data;                                              \
        for (int64_t c = 0; c < C; c++)                                                   \
            for (int64_t k = 0; k < nz; k++)                                              \
                for (int64_t j = 0; j < ny; j++)                                          \
                    for (int64_t i = 0; i < nx; i++) {                                    \
                        double x = (double)*src++;                                        \
                        if (use_scale) x = x * slope + inter;                             \
                        if (!isfinite(x) || fabs(x) > FLT_MAX) {                          \
                            bad_i = i; bad_j = j; bad_k = k; bad = x;                     \
                            goto bad_value;                                               \
                        }                                                                 \
                        out[((c * nx + i) * ny + j) * nz + k] = (float)x;                 \
                    }                                                                     \
    } while (0)

static int convert_data(const char *path, const nifti_image *nim, const raw_hdr_t *r, float *out,
                        char *err)
{
    int64_t nx = nim->nx, ny = nim->ny, nz = nim->nz, C = nim->dim[0] >= 4 ? nim->dim[4] : 1;
    double slope = r->slope, inter = r->inter;
    int use_scale = scaled(r);
    int64_t bad_i = 0, bad_j = 0, bad_k = 0;
    double bad = 0;
    switch (nim->datatype) {
    case DT_UINT8:   CONVERT_LOOP(uint8_t);  break;
    case DT_INT8:    CONVERT_LOOP(int8_t);   break;
    case DT_INT16:   CONVERT_LOOP(int16_t);  break;
    case DT_UINT16:  CONVERT_LOOP(uint16_t); break;
    case DT_INT32:   CONVERT_LOOP(int32_t);  break;
    case DT_UINT32:  CONVERT_LOOP(uint32_t); break;
    case DT_INT64:   CONVERT_LOOP(int64_t);  break;
    case DT_UINT64:  CONVERT_LOOP(uint64_t); break;
    case DT_FLOAT32: CONVERT_LOOP(float);    break;
    case DT_FLOAT64: CONVERT_LOOP(double);   break;
    default: return set_err(err, "%s: unsupported datatype %d", path, nim->datatype);
    }
    return 0;
bad_value:
    return set_err(err, "%s: %s voxel value at (%lld, %lld, %lld)", path,
                   isnan(bad) ? "NaN" : isinf(bad) ? "Inf" : "out-of-float-range",
                   (long long)bad_i, (long long)bad_j, (long long)bad_k);
}
#undef CONVERT_LOOP

int nifti_read_volume(const char *path, volume_t *v, char *err)
{
    memset(v, 0, sizeof *v);
    if (!path || !*path) return set_err(err, "(empty path): no file name given");
    struct stat st;
    if (stat(path, &st) != 0) return set_err(err, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return set_err(err, "%s: not a regular file", path);
    if (st.st_size == 0) return set_err(err, "%s: empty file", path);
    int gz = ends_with(path, ".nii.gz");
    if (!gz && !ends_with(path, ".nii"))
        return set_err(err, "%s: not a NIfTI file name (expected .nii or .nii.gz)", path);

    raw_hdr_t raw;
    int64_t glen;
    if (read_raw_header(path, &raw, err)) {
        if (gz && gz_length(path, &glen, err)) return -1;  // say "truncated gzip" when it is
        return -1;
    }
    if (check_raw_dims(path, &raw, err)) return -1;
    nifti_image *nim = nifti_image_read(path, 0);  // header only: no voxel memory yet
    if (!nim) {
        if (gz && gz_length(path, &glen, err)) return -1;
        return set_err(err, "%s: libnifti could not parse the header (bad dim or datatype)", path);
    }
    if (check_header(path, nim, &raw, (int64_t)st.st_size, gz, err)) goto fail;
    int64_t nbytes = (int64_t)nim->nvox * nim->nbyper;  // bounded by check_header
    // into nim->data: convert_data reads it from there; nifti_image_free frees it
    if (read_voxels(path, nim, data_offset(&raw), &nim->data, nbytes, err)) goto fail;
    v->C = nim->dim[0] >= 4 ? (int)nim->dim[4] : 1;
    v->ndim = nim->dim[0] == 2 ? 2 : 3;
    v->dim[0] = (int)nim->nx;
    v->dim[1] = (int)nim->ny;
    v->dim[2] = (int)nim->nz;
    v->data = xmalloc((size_t)v->C * volume_voxels(v) * sizeof(float));
    if (convert_data(path, nim, &raw, v->data, err)) goto fail;
    best_affine(&raw, nim->dim, v->affine, &v->xform_source);
    to_millimetres(&raw, v->affine);
    v->xyz_units = raw.xyz_units;
    for (int c = 0; c < 3; c++) {
        double n = 0;
        for (int r = 0; r < 3; r++) n += v->affine[r][c] * v->affine[r][c];
        v->spacing[c] = sqrt(n);
        v->pixdim[c] = raw.pixdim[c + 1] == 0 ? 1 : fabs(raw.pixdim[c + 1]);   // as nibabel's get_zooms
        if (!(v->spacing[c] > 0) || !isfinite(v->spacing[c])) {
            set_err(err, "%s: affine column %d is zero or not finite (zero spacing)", path, c);
            goto fail;
        }
    }
    v->datatype = nim->datatype;
    v->nifti_version = raw.version;
    nifti_image_free(nim);
    return 0;
fail:
    nifti_image_free(nim);
    volume_free(v);
    return -1;
}

void volume_free(volume_t *v)
{
    if (!v) return;
    free(v->data);
    v->data = NULL;
}

// Our float (C, i, j, k) data -> libnifti's i-fastest buffer of `datatype`. Integer types are
// rounded to nearest; a value that does not fit is an error (a label map must fit uint8).
#define PACK_LOOP(T, LO, HI, ROUND)                                                       \
    do {                                                                                  \
        T *dst = (T *)buf;                                                                \
        for (int64_t c = 0; c < C; c++)                                                   \
            for (int64_t k = 0; k < nz; k++)                                              \
                for (int64_t j = 0; j < ny; j++)                                          \
                    for (int64_t i = 0; i < nx; i++) {                                    \
                        double x = v->data[((c * nx + i) * ny + j) * nz + k];             \
                        if (ROUND) x = nearbyint(x);                                      \
                        if (!(x >= (LO) && x <= (HI))) {                                  \
                            bad = x;                                                      \
                            goto bad_value;                                               \
                        }                                                                 \
                        *dst++ = (T)x;                                                    \
                    }                                                                     \
    } while (0)

static int pack_data(const char *path, const volume_t *v, int datatype, void *buf, char *err)
{
    int64_t nx = v->dim[0], ny = v->dim[1], nz = v->dim[2], C = v->C;
    double bad = 0;
    switch (datatype) {
    case DT_UINT8:   PACK_LOOP(uint8_t, 0, 255, 1);                  break;
    case DT_INT8:    PACK_LOOP(int8_t, -128, 127, 1);                break;
    case DT_INT16:   PACK_LOOP(int16_t, -32768, 32767, 1);           break;
    case DT_UINT16:  PACK_LOOP(uint16_t, 0, 65535, 1);               break;
    case DT_INT32:   PACK_LOOP(int32_t, -2147483648.0, 2147483647.0, 1); break;
    case DT_FLOAT32: PACK_LOOP(float, -FLT_MAX, FLT_MAX, 0);         break;
    case DT_FLOAT64: PACK_LOOP(double, -DBL_MAX, DBL_MAX, 0);        break;
    default: return set_err(err, "%s: cannot write datatype %d", path, datatype);
    }
    return 0;
bad_value:
    return set_err(err, "%s: value %g does not fit datatype %s", path, bad,
                   volume_datatype_name(datatype));
}
#undef PACK_LOOP

// fsync a file or directory by name.
static int fsync_path(const char *p)
{
    int fd = open(p, O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int nifti_write_volume(const char *path, const volume_t *v, int datatype, char *err)
{
    int gz = ends_with(path, ".nii.gz");
    if (!gz && !ends_with(path, ".nii"))
        return set_err(err, "%s: output name must end in .nii or .nii.gz", path);
    if (v->C < 1 || v->dim[0] < 1 || v->dim[1] < 1 || v->dim[2] < 1 || !v->data)
        return set_err(err, "%s: empty volume", path);
    // the temp name keeps the extension, which is how libnifti picks compression
    size_t stem = strlen(path) - (gz ? 7 : 4);
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%.*s.tmp%ld%s", (int)stem, path, (long)getpid(),
                     gz ? ".nii.gz" : ".nii");
    if (n < 0 || (size_t)n >= sizeof tmp) return set_err(err, "%s: path too long", path);

    int64_t dims[8] = {v->C > 1 ? 4 : v->ndim == 2 && v->dim[2] == 1 ? 2 : 3, v->dim[0], v->dim[1], v->dim[2], v->C, 1, 1, 1};
    nifti_image *nim = nifti_make_new_nim(dims, datatype, 0);
    if (!nim) return set_err(err, "%s: libnifti cannot make an image of datatype %d", path, datatype);
    nim->data = malloc((size_t)nim->nvox * nim->nbyper);  // libnifti frees it with free()
    if (!nim->data) DIE("out of memory writing %s", path);
    if (pack_data(path, v, datatype, nim->data, err)) goto fail;

    nifti_dmat44 A;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) A.m[r][c] = v->affine[r][c];
    nim->sform_code = NIFTI_XFORM_SCANNER_ANAT;
    nim->sto_xyz = A;
    nim->sto_ijk = nifti_dmat44_inverse(A);
    // qform: the closest rigid transform plus voxel sizes (what viewers without sform use)
    double qb, qc, qd, qx, qy, qz, dx, dy, dz, qfac;
    nifti_dmat44_to_quatern(A, &qb, &qc, &qd, &qx, &qy, &qz, &dx, &dy, &dz, &qfac);
    nim->qform_code = NIFTI_XFORM_SCANNER_ANAT;
    nim->quatern_b = qb; nim->quatern_c = qc; nim->quatern_d = qd;
    nim->qoffset_x = qx; nim->qoffset_y = qy; nim->qoffset_z = qz;
    nim->qfac = qfac;
    nim->qto_xyz = nifti_quatern_to_dmat44(qb, qc, qd, qx, qy, qz, dx, dy, dz, qfac);
    nim->qto_ijk = nifti_dmat44_inverse(nim->qto_xyz);
    nim->pixdim[0] = qfac;
    nim->dx = nim->pixdim[1] = v->spacing[0];
    nim->dy = nim->pixdim[2] = v->spacing[1];
    nim->dz = nim->pixdim[3] = v->spacing[2];
    nim->xyz_units = NIFTI_UNITS_MM;
    nim->scl_slope = 1;
    nim->scl_inter = 0;
    nim->nifti_type = NIFTI_FTYPE_NIFTI1_1;
    if (nifti_set_filenames(nim, tmp, 0, 1) != 0) {
        set_err(err, "%s: libnifti rejected the file name", path);
        goto fail;
    }
    nifti_image_write(nim);  // returns nothing: success is checked by reading the length back
    int64_t len = 0, need = (int64_t)nim->nvox * nim->nbyper + 348;
    if (gz_length(tmp, &len, err) || len < need) {
        if (len < need) set_err(err, "%s: write failed (disk full or unwritable folder?)", path);
        unlink(tmp);
        goto fail;
    }
    if (fsync_path(tmp) != 0 || rename(tmp, path) != 0) {
        set_err(err, "%s: cannot finish writing: %s", path, strerror(errno));
        unlink(tmp);
        goto fail;
    }
    char dirbuf[4096];
    snprintf(dirbuf, sizeof dirbuf, "%s", path);
    fsync_path(dirname(dirbuf));  // best effort: the rename is durable once the folder is synced
    nifti_image_free(nim);
    return 0;
fail:
    nifti_image_free(nim);
    return -1;
}
