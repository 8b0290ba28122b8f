#!/usr/bin/python3
"""make_nifti_corpus.py -- regenerate the small NIfTI test corpus under tests/corpus/.

  good/       files every reader must accept: NIfTI-1 and -2, .nii and .nii.gz, every datatype
              we support, scl_slope/scl_inter, sform-only, qform-only, no transform at all,
              several orientations (RAS, LPS, PSR, oblique), a big-endian file, a 4D MSD image.
  bad/        files every reader must refuse, with EXPECTED.txt: "<file> <substring of the error>".
  bad_pairs/  tiny MSD-layout datasets whose image/label pairs are wrong (see README there).

Run with /usr/bin/python3 (needs nibabel + numpy) from anywhere:  /usr/bin/python3 scripts/make_nifti_corpus.py
The output is deterministic (fixed seeds) and committed, so CI never runs this.
"""
import gzip
import json
import os
import shutil
import struct

import nibabel as nib
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "corpus")
SHAPE = (7, 6, 5)
rng = np.random.RandomState(1234)


def rot(axis, deg):
    """3x3 rotation about world axis 0/1/2."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    m = np.eye(3)
    i, j = [a for a in range(3) if a != axis]
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def affine_of(cols, zooms, origin):
    """Affine whose voxel axis d runs along cols[d] (a signed unit world axis) with zooms[d] mm."""
    a = np.eye(4)
    a[:3, :3] = np.asarray(cols, float).T * np.asarray(zooms, float)
    a[:3, 3] = origin
    return a


RAS = affine_of([[1, 0, 0], [0, 1, 0], [0, 0, 1]], (1.5, 0.8, 3.0), (-10.0, 20.0, 5.5))
LPS = affine_of([[-1, 0, 0], [0, -1, 0], [0, 0, 1]], (0.7, 0.7, 2.5), (90.0, 110.0, -40.0))
PSR = affine_of([[0, -1, 0], [0, 0, 1], [1, 0, 0]], (1.0, 2.0, 1.2), (3.0, 60.0, -20.0))
OBLIQUE = np.eye(4)
OBLIQUE[:3, :3] = rot(2, 25) @ rot(0, -15) @ np.diag([-1.1, 0.9, 2.2])
OBLIQUE[:3, 3] = (12.0, -7.0, 33.0)


def data_of(dtype, shape=SHAPE, lo=None, hi=None):
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        lo = max(info.min, -1000) if lo is None else lo
        hi = min(info.max, 1000) if hi is None else hi
        return rng.randint(lo, hi + 1, size=shape).astype(dtype)
    return (rng.standard_normal(shape) * 100 + 20).astype(dtype)


def save(img, name, sub="good"):
    path = os.path.join(ROOT, sub, name)
    nib.save(img, path)
    return path


def nifti1(data, affine, sform=1, qform=1, version=1, endianness="<", zooms=None):
    """A NIfTI image of data with the given sform/qform codes (0 = not set)."""
    hcls = nib.Nifti2Header if version == 2 else nib.Nifti1Header
    icls = nib.Nifti2Image if version == 2 else nib.Nifti1Image
    hdr = hcls(endianness=endianness)
    hdr.set_data_dtype(data.dtype)
    img = icls(data, None, hdr)
    if zooms is None:
        zooms = tuple(np.linalg.norm(affine[:3, :3], axis=0))
    img.header.set_zooms(tuple(zooms) + (1.0,) * (data.ndim - 3))
    img.set_sform(affine if sform else None, code=sform)
    img.set_qform(affine if qform else None, code=qform)
    img.header.set_xyzt_units("mm")
    return img


def patch(path, fmt, off, *vals):
    """Overwrite little-endian header fields of a saved file in place (.nii or .nii.gz)."""
    gz = path.endswith(".gz")
    with (gzip.open if gz else open)(path, "rb") as f:
        buf = bytearray(f.read())
    struct.pack_into("<" + fmt, buf, off, *vals)
    with open(path, "wb") as f:
        f.write(gzip.compress(bytes(buf), mtime=0) if gz else bytes(buf))


def make_good():
    dtypes = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64,
              np.float32, np.float64]
    for dt in dtypes:  # every datatype, alternating file forms
        name = np.dtype(dt).name
        save(nifti1(data_of(dt), RAS), f"dtype_{name}.nii")
        save(nifti1(data_of(dt), LPS), f"dtype_{name}_lps.nii.gz")
    save(nifti1(data_of(np.float32), PSR), "orient_psr_float32.nii.gz")
    save(nifti1(data_of(np.int16), OBLIQUE, sform=2, qform=0), "orient_oblique_sform.nii")
    save(nifti1(data_of(np.float32), OBLIQUE, sform=0, qform=1), "orient_oblique_qform.nii.gz")
    save(nifti1(data_of(np.int16), LPS, sform=4, qform=0), "sform_only_lps_int16.nii.gz")
    save(nifti1(data_of(np.float32), PSR, sform=0, qform=2), "qform_only_psr.nii")
    # qform with qfac = -1 (a left-handed voxel grid stored as a quaternion)
    save(nifti1(data_of(np.uint16), RAS, sform=0, qform=1), "qform_only_ras.nii")
    save(nifti1(data_of(np.int16), LPS @ np.diag([1, 1, -1, 1]), sform=0, qform=1),
         "qform_only_qfac_neg.nii.gz")
    save(nifti1(data_of(np.int16), RAS, sform=0, qform=0, zooms=(0.9, 1.1, 2.0)),
         "no_xform_pixdim_only.nii")
    # nibabel recomputes scaling when it saves an array, so the scale fields are patched after
    patch(save(nifti1(data_of(np.int16), LPS), "scaled_int16_slope_inter.nii.gz"), "ff", 112, 0.5, -100.0)
    patch(save(nifti1(data_of(np.uint8), PSR), "scaled_uint8_slope.nii"), "ff", 112, 2.5, 0.0)
    patch(save(nifti1(data_of(np.int16), RAS), "unscaled_slope0_inter5.nii"), "ff", 112, 0.0, 5.0)
    patch(save(nifti1(data_of(np.int16), RAS), "unscaled_slope_nan.nii"), "ff", 112, float("nan"), 3.0)
    save(nifti1(data_of(np.float32), LPS, version=2), "nifti2_float32_lps.nii")
    save(nifti1(data_of(np.int16), OBLIQUE, version=2), "nifti2_int16_oblique.nii.gz")
    patch(save(nifti1(data_of(np.int16), RAS, version=2), "nifti2_scaled_int16.nii"), "dd", 176, -1.5, 7.0)
    # MSD-style 4D: 4 channels on the 4th axis (like Task01_BrainTumour)
    save(nifti1(data_of(np.float32, SHAPE + (4,)), LPS), "msd_4d_4ch_float32.nii.gz")
    save(nifti1(data_of(np.int16, SHAPE + (2,)), RAS, version=2), "msd_4d_2ch_nifti2.nii")
    # value = c*1000000 + i*10000 + j*100 + k: lets a reader check its axis order exactly
    c, i, j, k = np.meshgrid(np.arange(3), *[np.arange(n) for n in SHAPE], indexing="ij")
    coded = (c * 1000000 + i * 10000 + j * 100 + k).astype(np.int32).transpose(1, 2, 3, 0)
    save(nifti1(coded, PSR), "index_coded_4d_int32.nii.gz")
    # big-endian storage
    save(nifti1(data_of(np.int16), PSR, endianness=">"), "big_endian_int16.nii")
    # labels stored as floats holding integers (real data does this)
    save(nifti1(rng.randint(0, 3, size=SHAPE).astype(np.float32), LPS), "labels_as_float32.nii.gz")
    save(nifti1(rng.randint(0, 3, size=SHAPE).astype(np.uint8), LPS), "labels_uint8.nii.gz")
    # an sform with a zero and a negative pixdim, which the sform makes irrelevant (converters
    # write such files; nibabel reads them, reporting zooms |pixdim| and 1 for 0); data without
    # the rng, so the files above and the bad ones keep their bytes
    patch(save(nifti1(np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE), OBLIQUE, sform=2, qform=0),
               "sform_pixdim_zero_negative.nii"), "fff", 76 + 4, -0.8, 1.1, 0.0)
    # spatial units other than mm (readers that work in mm, as ITK does, scale the affine)
    img = nifti1(np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE), OBLIQUE * [[1e3], [1e3], [1e3], [1]])
    img.header.set_xyzt_units("micron")
    save(img, "units_micron_sform.nii.gz")
    img = nifti1(np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE), LPS * [[1e-3], [1e-3], [1e-3], [1]],
                 sform=0, qform=1)
    img.header.set_xyzt_units("meter")
    save(img, "units_meter_qform.nii")


# ---- bad files: a good NIfTI-1 written by nibabel, then patched -------------------------
def raw_nifti1(dtype=np.int16, shape=SHAPE, version=1):
    """Bytes of an uncompressed single-file NIfTI written by nibabel (vox_offset 352 or 544)."""
    tmp = os.path.join(ROOT, "bad", "_tmp.nii")
    nib.save(nifti1(data_of(dtype, shape), LPS, version=version), tmp)
    with open(tmp, "rb") as f:
        buf = bytearray(f.read())
    os.remove(tmp)
    return buf


def put(buf, fmt, off, *vals):
    struct.pack_into("<" + fmt, buf, off, *vals)


def write_bad(name, buf, compress=False):
    path = os.path.join(ROOT, "bad", name)
    data = gzip.compress(bytes(buf), mtime=0) if compress else bytes(buf)
    with open(path, "wb") as f:
        f.write(data)


def make_bad():
    expected = []

    def bad(name, buf, substring, compress=False):
        write_bad(name, buf, compress)
        expected.append((name, substring))

    good = raw_nifti1()
    # truncated gzip: the stream stops in the middle of the voxel data
    z = gzip.compress(bytes(raw_nifti1(np.float32, (20, 20, 20))), mtime=0)
    write_bad("truncated.nii.gz", z[: len(z) * 6 // 10])
    expected.append(("truncated.nii.gz", "truncated gzip"))
    b = bytearray(good); put(b, "h", 46, 9)            # dim[3] 5 -> 9, data unchanged
    bad("dims_larger_than_data.nii", b, "shorter than the header")
    bad("dims_larger_than_data.nii.gz", b, "shorter than the header", compress=True)
    # pixdim sets the geometry only without an sform: these have the qform alone
    b = bytearray(good); put(b, "f", 80, 0.0); put(b, "h", 254, 0)     # pixdim[2], sform_code
    bad("zero_spacing.nii", b, "zero spacing")
    b = bytearray(good); put(b, "f", 84, -2.5); put(b, "h", 254, 0)    # pixdim[3], sform_code
    bad("negative_spacing.nii.gz", b, "negative spacing", compress=True)
    b = bytearray(good); put(b, "f", 76 + 4, float("nan"))
    bad("nan_spacing.nii", b, "not finite")
    f32 = raw_nifti1(np.float32)
    b = bytearray(f32); put(b, "f", 352 + 4 * 17, float("nan"))
    bad("nan_voxel.nii", b, "NaN voxel")
    b = bytearray(f32); put(b, "f", 352 + 4 * 100, float("-inf"))
    bad("inf_voxel.nii.gz", b, "Inf voxel", compress=True)
    b = bytearray(good); put(b, "f", 112, 1e38)        # slope * int16 overflows float
    bad("scaled_to_inf.nii", b, "voxel value")
    b = bytearray(good); put(b, "f", 112, 1.0); put(b, "f", 116, float("inf"))
    bad("inf_intercept.nii", b, "scl_inter")
    bad("not_nifti.nii", bytearray(b"This is a text file, not an image.\n" * 20), "not a NIfTI")
    bad("empty.nii", bytearray(), "empty file")
    bad("short_header.nii", good[:200], "not a NIfTI")
    b = bytearray(good); put(b, "hhhh", 40, 3, 30000, 30000, 30000)
    bad("absurd_dims.nii", b, "absurd dims")
    b = bytearray(raw_nifti1(np.float32, (8, 8, 8)))  # 4000 channels of 4000^3: 2.5e14 values
    put(b, "hhhhh", 40, 4, 4000, 4000, 4000, 4000)
    bad("absurd_4d.nii.gz", b, "absurd dims", compress=True)
    b = raw_nifti1(np.int16, version=2)
    put(b, "qqqq", 16, 3, 100000, 100000, 100000)      # NIfTI-2 dims are int64
    bad("absurd_dims_nifti2.nii", b, "absurd dims")
    b = bytearray(good); put(b, "h", 42, -6)
    bad("negative_dim.nii", b, "dim")
    b = bytearray(good); put(b, "h", 72, 32)           # int16 data, bitpix says 32
    bad("wrong_bitpix.nii", b, "bitpix")
    b = bytearray(good); put(b, "hh", 70, 32, 64)      # complex64
    bad("unsupported_datatype.nii", b, "unsupported datatype")
    b = bytearray(good); put(b, "hhhhhhh", 40, 5, 7, 6, 5, 1, 2, 1)
    bad("five_d.nii", b, "not supported")
    b = bytearray(good); put(b, "f", 108, 100.0)       # vox_offset inside the header
    bad("bad_vox_offset.nii", b, "vox_offset")
    b = bytearray(good); put(b, "f", 108, 1e6)         # data would start past the end
    bad("vox_offset_past_end.nii", b, "vox_offset")
    b = bytearray(good); b[344:348] = b"abc\0"         # magic destroyed
    bad("bad_magic.nii", b, "not a NIfTI")
    z = bytearray(gzip.compress(bytes(good), mtime=0))   # a damaged byte: the CRC check fails
    z[len(z) - 12] ^= 0x55
    write_bad("corrupt.nii.gz", z)
    expected.append(("corrupt.nii.gz", "corrupt gzip"))
    expected.append(("missing.nii", "No such file"))
    with open(os.path.join(ROOT, "bad", "EXPECTED.txt"), "w") as f:
        f.write("# <file in tests/corpus/bad> <substring the reader's error must contain>\n")
        for name, sub in expected:
            f.write(f"{name} {sub}\n")


# ---- bad image/label pairs: tiny MSD datasets ----------------------------------------------
def make_pairs():
    base = os.path.join(ROOT, "bad_pairs")
    labels = {"0": "background", "1": "organ", "2": "tumour"}
    cases = {
        "ok": ("the control: a correct pair",
               SHAPE, LPS, rng.randint(0, 3, size=SHAPE).astype(np.uint8)),
        "shape_mismatch": ("label is 7x6x4, image 7x6x5",
                           (7, 6, 4), LPS, rng.randint(0, 3, size=(7, 6, 4)).astype(np.uint8)),
        "geometry_mismatch": ("same shape, label origin shifted by 10 mm",
                              SHAPE, LPS + np.array([[0, 0, 0, 10.0]] + [[0] * 4] * 3),
                              rng.randint(0, 3, size=SHAPE).astype(np.uint8)),
        "labels_outside_classes": ("label value 7 but dataset.json declares 0..2",
                                   SHAPE, LPS, np.where(rng.rand(*SHAPE) > 0.9, 7, 1).astype(np.uint8)),
        "non_integer_labels": ("float32 labels holding 1.5",
                               SHAPE, LPS, np.where(rng.rand(*SHAPE) > 0.8, 1.5, 0).astype(np.float32)),
    }
    lines = ["# Each folder is a one-case MSD dataset; the dataset checker must report the problem.\n"]
    for name, (why, lshape, laff, lab) in cases.items():
        d = os.path.join(base, name)
        os.makedirs(os.path.join(d, "imagesTr"))
        os.makedirs(os.path.join(d, "labelsTr"))
        nib.save(nifti1(data_of(np.int16), LPS), os.path.join(d, "imagesTr", "case_000.nii.gz"))
        nib.save(nifti1(lab, laff), os.path.join(d, "labelsTr", "case_000.nii.gz"))
        ds = {"name": name, "tensorImageSize": "3D", "modality": {"0": "CT"}, "labels": labels,
              "numTraining": 1, "numTest": 0,
              "training": [{"image": "./imagesTr/case_000.nii.gz", "label": "./labelsTr/case_000.nii.gz"}],
              "test": []}
        with open(os.path.join(d, "dataset.json"), "w") as f:
            json.dump(ds, f, indent=2)
        lines.append(f"{name}: {why}\n")
    with open(os.path.join(base, "README"), "w") as f:
        f.writelines(lines)


def main():
    for sub in ("good", "bad", "bad_pairs"):
        shutil.rmtree(os.path.join(ROOT, sub), ignore_errors=True)
        os.makedirs(os.path.join(ROOT, sub))
    make_good()
    make_bad()
    make_pairs()


if __name__ == "__main__":
    main()
