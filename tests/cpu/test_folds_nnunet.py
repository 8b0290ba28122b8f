#!/usr/bin/python3
"""test_folds_nnunet.py -- the generated 5-fold split is nnU-Net v2's, case for case.

nnU-Net v2 (nnUNetTrainer.do_split -> generate_crossval_split) splits the sorted training ids with
sklearn's KFold(n_splits=5, shuffle=True, random_state=12345). For datasets of 5..101 cases, with
ids that sort differently by code point than by number or case ("case_10" < "case_2", "Z" < "a"),
in the nnU-Net v2 layout and in MSD's, `srm-inspect --dataset DIR --folds` must print exactly
sklearn's folds, folds past them (`--through K`) nnU-Net's seeded random 80:20 splits
(RandomState(12345 + K).choice), and --shape's fold 0 counts must be theirs; test cases (imagesTs) and a
splits_final.json are respected; incomplete cases and stray files stay out of the folds and
are named; nnU-Net v2's "dataset" key (listed files) gives the cases. Needs sklearn (python3-sklearn): fails, does not skip, without it.
"""
import json, os, subprocess, sys, tempfile

import numpy as np
import nibabel as nib
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from srmtest import BIN, BUILD, check, summary

try:
    from sklearn.model_selection import KFold
except ImportError:
    check(False, "sklearn is not installed (python3-sklearn): the reference split cannot be drawn")
    sys.exit(summary())


def nnunet_folds(ids):
    keys = sorted(ids)
    out = []
    for tr, va in KFold(n_splits=5, shuffle=True, random_state=12345).split(keys):
        out.append({"train": [keys[i] for i in tr], "val": [keys[i] for i in va]})
    return out


def nnunet_random_fold(ids, k):
    """nnUNetTrainer.do_split for a fold past the split's folds: a seeded random 80:20 split."""
    keys = np.sort(list(ids))
    idx_tr = np.random.RandomState(seed=12345 + k).choice(len(keys), int(len(keys) * 0.8), replace=False)
    return {"train": sorted(str(keys[i]) for i in idx_tr),
            "val": sorted(str(keys[i]) for i in range(len(keys)) if i not in idx_tr)}


def write_case(folder, name, with_label, label_folder=None):
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    nib.save(img, os.path.join(folder, name))
    if with_label:
        nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)), os.path.join(label_folder, with_label))


def nnunet_dataset(root, ids, test_ids=()):
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for i in ids:
        write_case(os.path.join(root, "imagesTr"), i + "_0000.nii.gz", i + ".nii.gz", os.path.join(root, "labelsTr"))
    for i in test_ids:
        write_case(os.path.join(root, "imagesTs"), i + "_0000.nii.gz", None)
    json.dump({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "x": 1}, "numTraining": len(ids),
               "file_ending": ".nii.gz"}, open(os.path.join(root, "dataset.json"), "w"))


def msd_dataset(root, ids):
    for sub in ("imagesTr", "labelsTr"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for i in ids:
        write_case(os.path.join(root, "imagesTr"), i + ".nii.gz", i + ".nii.gz", os.path.join(root, "labelsTr"))
    json.dump({"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "x"}, "numTraining": len(ids),
               "training": [{"image": "./imagesTr/%s.nii.gz" % i, "label": "./labelsTr/%s.nii.gz" % i} for i in ids],
               "test": []}, open(os.path.join(root, "dataset.json"), "w"))


def inspect(root, what):
    r = subprocess.run([os.path.join(BIN, "srm-inspect"), "--dataset", root, what], capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def main():
    tmp = tempfile.mkdtemp(prefix="srm-folds-")
    rng = np.random.RandomState(7)
    sizes = [5, 6, 7, 9, 12, 13, 24, 50, 101]
    for n in sizes:
        # ids whose code-point order differs from their numeric and case-blind order
        pool = ["case_%d" % i for i in range(n)] + ["Case_%03d" % i for i in range(n)] + ["pat%d_x" % i for i in range(n)]
        ids = list(rng.choice(pool, n, replace=False))
        for layout, make in (("nnunet", nnunet_dataset), ("msd", msd_dataset)):
            root = os.path.join(tmp, "%s_%d" % (layout, n))
            make(root, ids)
            rc, out, err = inspect(root, "--folds")
            want = nnunet_folds(ids)
            try:
                got = json.loads(out)
            except ValueError:
                got = None
            check(rc == 0 and got == want, "%s, %d cases: the folds are nnU-Net's\n got  %s\n want %s\n %s" % (
                layout, n, got, want, err.strip()))
            # folds past the five: nnU-Net's seeded random 80:20 splits, RandomState(12345 + k)
            r = subprocess.run([os.path.join(BIN, "srm-inspect"), "--dataset", root, "--folds", "--through", "8"],
                               capture_output=True, text=True)
            try:
                got = json.loads(r.stdout)
            except ValueError:
                got = None
            want_past = want + [nnunet_random_fold(ids, k) for k in range(5, 9)]
            check(r.returncode == 0 and got == want_past, "%s, %d cases: folds 5..8 are nnU-Net's 80:20 splits\n got  %s\n want %s\n %s" % (
                layout, n, got and got[5:], want_past[5:], r.stderr.strip()))
            rc, out, err = inspect(root, "--shape")
            shape = json.loads(out) if rc == 0 else {}
            check(shape.get("folds") == 5 and shape.get("folds_from") == "generated" and
                  shape.get("fold0_train") == len(want[0]["train"]) and shape.get("fold0_val") == len(want[0]["val"]) and
                  shape.get("fold0_error") is None, "%s, %d cases: --shape's fold 0 is nnU-Net's: %s" % (layout, n, shape))

    # imagesTs cases are no training ids: the folds are those of the training ids alone
    ids = ["c%02d" % i for i in range(11)]
    root = os.path.join(tmp, "with_test")
    nnunet_dataset(root, ids, test_ids=["t1", "t2", "a0"])
    rc, out, err = inspect(root, "--folds")
    check(rc == 0 and json.loads(out) == nnunet_folds(ids), "test cases stay out of the folds: %s %s" % (out[:200], err))

    # Files that make no complete training case leave the folds as nnU-Net's of the complete cases
    # (nnU-Net refuses such a dataset; they once joined the fold pool and reshuffled every fold),
    # and each is named: an image without its label (a test case then), a case missing a channel,
    # a label without images, a file of the other NIfTI ending, an imagesTs id imagesTr has too.
    root2 = os.path.join(tmp, "incomplete")
    nnunet_dataset(root2, ids, test_ids=["c03", "t9"])
    write_case(os.path.join(root2, "imagesTr"), "nolabel_0000.nii.gz", None)
    write_case(os.path.join(root2, "labelsTr"), "orphan.nii.gz", None)
    write_case(os.path.join(root2, "imagesTr"), "other_0000.nii", "other.nii", os.path.join(root2, "labelsTr"))
    d = json.load(open(os.path.join(root2, "dataset.json")))
    d["channel_names"] = {"0": "MRI", "1": "MRI"}
    json.dump(d, open(os.path.join(root2, "dataset.json"), "w"))
    for i in ids + ["nolabel"]:                     # a second channel for every case but one
        if i != "c07":
            write_case(os.path.join(root2, "imagesTr"), i + "_0001.nii.gz", None)
    complete = [i for i in ids if i != "c07"]
    rc, out, err = inspect(root2, "--folds")
    check(rc == 0 and json.loads(out) == nnunet_folds(complete), "incomplete cases stay out of the folds: %s %s" % (out[:300], err))
    rc, report, err = inspect(root2, "--shape")
    r = subprocess.run([os.path.join(BIN, "srm-inspect"), "--dataset", root2], capture_output=True, text=True)
    for what in ("labelsTr/nolabel.nii.gz: missing; case nolabel taken as a test case",
                 "imagesTr/c07_0001.nii.gz: missing (case c07 has 2 channels); case skipped",
                 "labelsTr/orphan.nii.gz: label without images in imagesTr",
                 "imagesTr/other_0000.nii: not of the dataset's file_ending .nii.gz",
                 "imagesTs/c03_0000.nii.gz: case c03 is a case of"):
        check(what in r.stdout, "the dataset report names it: %s\n%s" % (what, r.stdout[-1500:]))

    # nnU-Net v2's "dataset" key lists the training cases' files (anywhere; relative paths from the
    # dataset folder, or absolute): those are the cases, one with a missing file named and skipped
    root3 = os.path.join(tmp, "listed")
    os.makedirs(os.path.join(root3, "raw"))
    listed = {}
    for i in ids:
        write_case(os.path.join(root3, "raw"), i + "_img.nii.gz", i + "_seg.nii.gz", os.path.join(root3, "raw"))
        listed[i] = {"images": ["raw/%s_img.nii.gz" % i], "label": os.path.join(root3, "raw", i + "_seg.nii.gz")}
    listed["gone"] = {"images": ["raw/gone_img.nii.gz"], "label": "raw/gone_seg.nii.gz"}
    json.dump({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "x": 1}, "numTraining": len(ids),
               "file_ending": ".nii.gz", "dataset": listed}, open(os.path.join(root3, "dataset.json"), "w"))
    rc, out, err = inspect(root3, "--folds")
    check(rc == 0 and json.loads(out) == nnunet_folds(ids), "\"dataset\" key: its cases, nnU-Net's folds: %s %s" % (out[:300], err))
    r = subprocess.run([os.path.join(BIN, "srm-inspect"), "--dataset", root3], capture_output=True, text=True)
    check("entry gone: " in r.stdout and "raw/gone_img.nii.gz is missing" in r.stdout,
          "\"dataset\" key: an entry with a missing file is named: %s" % r.stdout[-800:])

    # a case id longer than 127 characters (the wire's and the prediction file's) is named and
    # left out; it once broke every validation of the run that had it (its id cut short)
    root4 = os.path.join(tmp, "longid")
    long_id = "subject_" + "0" * 125
    nnunet_dataset(root4, ids + [long_id])
    rc, out, err = inspect(root4, "--folds")
    check(rc == 0 and json.loads(out) == nnunet_folds(ids), "a 133-character id is out of the folds: %s" % err)
    r = subprocess.run([os.path.join(BIN, "srm-inspect"), "--dataset", root4], capture_output=True, text=True)
    check("case id of 133 characters (at most 127); skipped" in r.stdout, "the dataset report names the long id")
    model = os.path.join(tmp, "m.safetensors")
    subprocess.run([os.path.join(BUILD, "tools", "safetensors_tool"), "write", model, "--variant", "P", "--width", "8",
                    "--in-channels", "1", "--classes", "2", "--seed", "1"], check=True, capture_output=True)
    img = os.path.join(root4, "imagesTr", long_id + "_0000.nii.gz")
    r = subprocess.run([os.path.join(BIN, "srm-evaluator"), "--model", model, "--images", img, "--out", os.path.join(tmp, "pred"),
                        "--window", "16", "--spacing", "none", "--norm", "mr-all"], capture_output=True, text=True)
    check(r.returncode != 0 and "longer than 127 characters" in r.stderr and long_id in r.stderr,
          "predicting a file whose case name is too long: refused, naming it (%d: %s)" % (r.returncode, r.stderr.strip()[-300:]))

    # a splits_final.json is taken as it is (here: its own two folds, not the generated five)
    splits = [{"train": ids[:6], "val": ids[6:]}, {"train": ids[5:], "val": ids[:5]}]
    json.dump(splits, open(os.path.join(root, "splits_final.json"), "w"))
    rc, out, err = inspect(root, "--folds")
    check(rc == 0 and json.loads(out) == [{"train": sorted(f["train"]), "val": sorted(f["val"])} for f in splits],
          "splits_final.json's folds are printed as declared: %s %s" % (out[:200], err))
    r = subprocess.run([os.path.join(BIN, "srm-inspect"), "--dataset", root, "--folds", "--through", "3"],
                       capture_output=True, text=True)
    want = [{"train": sorted(f["train"]), "val": sorted(f["val"])} for f in splits] + [nnunet_random_fold(ids, k) for k in (2, 3)]
    check(r.returncode == 0 and json.loads(r.stdout) == want,
          "splits_final.json's 2 folds, then nnU-Net's 80:20 splits for folds 2 and 3: %s %s" % (r.stdout[-300:], r.stderr))
    rc, out, err = inspect(root, "--shape")
    shape = json.loads(out) if rc == 0 else {}
    check(shape.get("folds") == 2 and shape.get("folds_from") == "splits_final.json" and shape.get("fold0_val") == 5,
          "--shape names splits_final.json and its fold count: %s" % shape)
    # one that names a case the dataset does not have: --shape says why fold 0 cannot be made
    json.dump([{"train": ids[:6], "val": ids[6:] + ["c99"]}], open(os.path.join(root, "splits_final.json"), "w"))
    rc, out, err = inspect(root, "--shape")
    shape = json.loads(out) if rc == 0 else {}
    check("c99" in (shape.get("fold0_error") or "") and shape.get("fold0_val") == 0,
          "a splits_final.json naming an unknown case: fold0_error says so: %s %s" % (shape, err))
    rc, out, err = inspect(root, "--folds")
    check(rc == 1 and "c99" in err, "--folds with that file: exit 1 naming the case (%d: %s)" % (rc, err.strip()))
    subprocess.run(["rm", "-rf", tmp])
    return summary()


if __name__ == "__main__":
    sys.exit(main())
