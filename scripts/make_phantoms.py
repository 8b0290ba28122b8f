#!/usr/bin/python3
"""make_phantoms.py -- the built-in synthetic dataset of `make demo` and the pipeline tests.

Writes an MSD-style dataset (dataset.json with a train/validation/test split, imagesTr/, labelsTr/)
of 3D MR-like phantoms: a body ellipsoid with a smooth bias field, and inside it three labelled
structures with their own intensities (1 "organ": a large ellipsoid, 2 "lesion": a sphere inside
or beside it, 3 "vessel": a tube), a +-10 % bias field, partial-volume blur and Gaussian noise
(sigma 8, an SNR of about 13 in the body, like a fast MR sequence). Bias, blur and noise keep
it a segmentation problem: the best intensity band, fitted to each validation label itself,
reaches Dice 0.71-0.81 for the organ and 0.42-0.56 for the vessel (size-28 phantoms). Outside
the body the image is exactly 0, so the foreground is "different from the minimum" (system.md).
Sizes, positions, orientations (RAS or LPS affines) and spacings vary per case; everything is
seeded, so the same arguments give the same files. Structure sizes (organ semi-axes 14-22 % of the
extents but at least 5.5-6.3 voxels, lesion radius 9-13 % of the smallest extent but at least
3.5-4.5 voxels, vessel radius 2.5-4 voxels) are chosen so that `make demo`'s few minutes of CPU
training can segment every class; thinner ones need far longer schedules.

usage: make_phantoms.py OUT_DIR [--cases N] [--val V] [--test T] [--size S] [--seed SEED]
"""
import argparse, json, os, sys

import numpy as np
import nibabel as nib


def smooth(vol, passes):
    # separable [1 2 1]/4 box passes: cheap partial-volume blur, no scipy needed
    for _ in range(passes):
        for ax in range(3):
            vol = (np.roll(vol, 1, ax) + 2 * vol + np.roll(vol, -1, ax)) / 4
    return vol


def ellipsoid(grid, centre, radii, rot):
    d = np.stack([g - c for g, c in zip(grid, centre)], -1) @ rot
    return ((d / radii) ** 2).sum(-1) <= 1.0


def random_rotation(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array([[a*a+b*b-c*c-d*d, 2*(b*c-a*d), 2*(b*d+a*c)],
                     [2*(b*c+a*d), a*a-b*b+c*c-d*d, 2*(c*d-a*b)],
                     [2*(b*d-a*c), 2*(c*d+a*b), a*a-b*b-c*c+d*d]])


def make_case(rng, size):
    shape = tuple(int(size + rng.integers(-size // 8, size // 8 + 1)) for _ in range(3))
    grid = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    body = ellipsoid(grid, centre, np.array(shape) * rng.uniform(0.38, 0.46, 3), random_rotation(rng))
    label = np.zeros(shape, np.uint8)
    organ_c = centre + rng.uniform(-0.08, 0.08, 3) * np.array(shape)
    u = rng.uniform(0.14, 0.22, 3)
    # at least 5.5-6.3 voxels a semi-axis, so that in small phantoms the lesion and the vessel
    # do not leave the organ a thin shell
    organ_r = np.maximum(np.array(shape) * u, 5.5 + (u - 0.14) * 10)
    organ = ellipsoid(grid, organ_c, organ_r, random_rotation(rng)) & body
    label[organ] = 1
    lesion_c = organ_c + rng.uniform(-0.12, 0.12, 3) * np.array(shape)
    u = rng.uniform(0.09, 0.13)
    # at least 3.5-4.5 voxels: small phantoms (make demo's) would otherwise get 2-voxel lesions
    lesion_r = max(min(shape) * u, 3.5 + (u - 0.09) * 25)
    lesion = ellipsoid(grid, lesion_c, np.full(3, lesion_r), np.eye(3)) & body
    label[lesion] = 2
    # vessel: a tube along a random direction through a point off the organ
    p0 = centre + rng.uniform(-0.2, 0.2, 3) * np.array(shape)
    u = rng.normal(size=3); u /= np.linalg.norm(u)
    rel = np.stack([g - c for g, c in zip(grid, p0)], -1)
    dist = np.linalg.norm(rel - (rel @ u)[..., None] * u, axis=-1)
    vessel = (dist <= rng.uniform(2.5, 4.0)) & body & (label == 0)
    label[vessel] = 3

    base = {0: 0.0, 1: rng.uniform(140, 170), 2: rng.uniform(230, 270), 3: rng.uniform(50, 75)}
    img = np.where(body, rng.uniform(95, 115), 0.0)
    for k in (1, 2, 3):
        img[label == k] = base[k]
    bias = 1 + 0.10 * np.sin(grid[0] / shape[0] * np.pi * rng.uniform(0.5, 1.5)) \
             * np.cos(grid[1] / shape[1] * np.pi * rng.uniform(0.5, 1.5))
    img = smooth(img * bias, 1) + rng.normal(0, 8, shape)
    img = np.where(body, np.maximum(img, 1.0), 0.0).astype(np.float32)

    spacing = rng.uniform(1.0, 1.6, 3).round(2)
    affine = np.diag(list(spacing) + [1.0])
    if rng.uniform() < 0.5:                 # LPS storage: the loader must reorient to RAS
        affine[0, 0] *= -1; affine[1, 1] *= -1
    affine[:3, 3] = -np.array(shape) / 2 * spacing * np.sign(np.diag(affine)[:3])
    return img, label, affine


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--cases", type=int, default=12)
    ap.add_argument("--val", type=int, default=3)
    ap.add_argument("--test", type=int, default=0)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=2025)
    a = ap.parse_args()
    if a.val + a.test >= a.cases:
        sys.exit("make_phantoms: --val + --test must leave training cases")
    rng = np.random.default_rng(a.seed)
    os.makedirs(os.path.join(a.out, "imagesTr"), exist_ok=True)
    os.makedirs(os.path.join(a.out, "labelsTr"), exist_ok=True)
    ids, training = [], []
    for i in range(a.cases):
        cid = f"phantom_{i:03d}"
        img, lab, aff = make_case(rng, a.size)
        for arr, sub, dt in ((img, "imagesTr", np.float32), (lab, "labelsTr", np.uint8)):
            nii = nib.Nifti1Image(arr.astype(dt), aff)
            nii.header.set_xyzt_units("mm")
            nii.set_qform(aff, code=1); nii.set_sform(aff, code=1)
            nib.save(nii, os.path.join(a.out, sub, cid + ".nii.gz"))
        ids.append(cid)
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    ntr = a.cases - a.val - a.test
    meta = {
        "name": "SRM-Phantoms", "description": "synthetic MR-like phantoms (scripts/make_phantoms.py)",
        "tensorImageSize": "3D", "modality": {"0": "MR"},
        "labels": {"0": "background", "1": "organ", "2": "lesion", "3": "vessel"},
        "numTraining": a.cases, "training": training,
        "split": {"train": ids[:ntr], "validation": ids[ntr:ntr + a.val], "test": ids[ntr + a.val:]},
        "seed": a.seed,
    }
    with open(os.path.join(a.out, "dataset.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"make_phantoms: {a.cases} cases ({ntr} train, {a.val} validation, {a.test} test) in {a.out}")


if __name__ == "__main__":
    main()
