#!/usr/bin/python3
"""test_report.py -- bin/srm-report on hand-made runs (issue 9's reporting tool).

1. A BraTS-like run (regions WT/TC/ET, RUN/started_at, trainer + evaluator lines with known
   times): the time-to-Dice table gives the exact seconds and steps where dice_WT first reaches
   0.7 and 0.8 and "not reached" for 0.85; the per-case table holds the final (highest step,
   marked final) evaluation's values with "n/a" for a null Dice; --key mean_dice follows the mean;
   without started_at the times count from the first metrics line.
2. Pictures: dice_vs_time.png and overlay_<case>.png are PNGs (signature, IHDR, CRCs, decodable)
   of the expected sizes; the overlay shows the reference outline in label 1's colour and the
   prediction's translucent fill of label 2 over the windowed grey, and no colour of an absent label.
3. Refusals: a prediction whose affine differs from its image's gives no picture, exit status 1
   and a message naming the file; a malformed metrics line gives exit 1 naming file:line.
Prints "N passed, N failed". Needs $BIN/srm-report and /usr/bin/python3 with nibabel and numpy.
"""
import json, math, os, shutil, struct, subprocess, sys, tempfile, zlib
import nibabel as nib, numpy as np
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from srmtest import BIN, check_ok, summary

REPORT = os.path.join(BIN, "srm-report")
T0 = 1_800_000_000.25


def read_png(path):
    """(width, height, rows of RGB bytes) of an 8-bit RGB non-interlaced PNG; raises on bad CRC."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "bad signature"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        crc, = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(kind + body) & 0xffffffff == crc, "bad CRC in " + kind.decode()
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and ctype == 2 and interlace == 0, "not 8-bit RGB"
    raw, stride, rows, prev = zlib.decompress(idat), w * 3, [], bytearray(w * 3)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - 3] if i >= 3 else 0
            b, c = prev[i], prev[i - 3] if i >= 3 else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, rows


def colours(rows):
    s = set()
    for r in rows:
        s.update(r[i:i + 3] for i in range(0, len(r), 3))
    return s


def write_metrics(path, lines):
    with open(path, "w") as f:
        for o in lines:
            f.write(json.dumps(o) + "\n")


def evaluator(step, t, wt, tc, et, cases, final=False):
    dice = [[wt + d, tc + d, et + d] for d in (-0.01, 0.01)][:len(cases)]
    if len(cases) == 2:
        dice[1][2] = None                      # ET absent from reference and prediction
    per_class = []
    for j in range(3):
        v = [r[j] for r in dice if r[j] is not None]
        per_class.append(sum(v) / len(v) if v else None)
    case_means = [sum(x for x in r if x is not None) / sum(x is not None for x in r) for r in dice]
    return {"step": step, "wall_time": T0 + t, "source": "evaluator", "mean_dice": sum(case_means) / len(case_means),
            "dice_WT": per_class[0], "dice_TC": per_class[1], "dice_ET": per_class[2],
            "cases": cases, "dice": dice, "dice_mean_per_class": per_class,
            "dice_undefined_count": [0, 0, 1 if len(cases) == 2 else 0],
            "hd95": [[5.0, 6.0, 7.0] for _ in cases],
            "extra": {"final": final, "foreground": ["WT", "TC", "ET"], "mode": "regions"}}


def make_dataset(d, shape, affine):
    """nnU-Net layout, 2 channels, cases good and bad; returns (image, reference) arrays."""
    for sub in ("imagesTr", "labelsTr"):
        os.makedirs(os.path.join(d, sub))
    img = np.zeros(shape, np.float32)
    img[5:-5, 5:-5, 3:-3] = 100.0               # a constant "body": grey 128 in window 0,200
    ref = np.zeros(shape, np.uint8)
    ref[12:24, 14:30, 8:20] = 1
    for case in ("good", "bad"):
        for ch in range(2):
            nib.save(nib.Nifti1Image(img, affine), os.path.join(d, "imagesTr", f"{case}_{ch:04d}.nii.gz"))
        nib.save(nib.Nifti1Image(ref, affine), os.path.join(d, "labelsTr", f"{case}.nii.gz"))
    json.dump({"channel_names": {"0": "FLAIR", "1": "T1c"},
               "labels": {"background": 0, "a": 1, "b": 2, "c": 3}, "file_ending": ".nii.gz"},
              open(os.path.join(d, "dataset.json"), "w"))
    return img, ref


def main():
    if not os.access(REPORT, os.X_OK):
        check_ok(False, f"{REPORT} not built")
        return summary()
    tmp = tempfile.mkdtemp(prefix="test_report_")
    try:
        run = os.path.join(tmp, "run")
        os.makedirs(os.path.join(run, "predictions"))
        open(os.path.join(run, "started_at"), "w").write(f"{T0:.3f}\n")
        lines = [{"step": s, "wall_time": T0 + 30 + s, "source": "trainer", "loss": 1.0 / s} for s in range(10, 301, 10)]
        lines += [evaluator(50, 95.0, 0.50, 0.40, 0.30, ["p1", "p2"]),
                  evaluator(100, 150.5, 0.72, 0.60, 0.50, ["p1", "p2"]),
                  evaluator(150, 201.0, 0.69, 0.65, 0.55, ["p1", "p2"]),   # dips below 0.7 again
                  evaluator(200, 260.0, 0.81, 0.70, 0.60, ["p1", "p2"]),
                  evaluator(300, 340.0, 0.84, 0.71, 0.62, ["p1", "p2"], final=True),
                  evaluator(250, 345.0, 0.83, 0.70, 0.61, ["p1", "p2"])]   # late but lower step
        write_metrics(os.path.join(run, "metrics.jsonl"), lines)

        # ---- 1. tables ------------------------------------------------------------------------------
        out = os.path.join(tmp, "out")
        p = subprocess.run([REPORT, run, "--out", out, "--max-overlays", "0"], capture_output=True, text=True, timeout=60)
        md = p.stdout
        check_ok(p.returncode == 0, f"srm-report exits 0 on a good run (rc {p.returncode}: {p.stderr.strip()[:200]})")
        check_ok("## Time to Dice (dice_WT)" in md, "the default key is dice_WT for region runs")
        # evaluation at step 100 finished 150.5 s after started_at; the trainer reported step 100 at 130 s
        check_ok("| 0.70 | 150.5 | 100 | 130.0 |" in md, "0.7 first reached at 150.5 s, step 100 (trainer 130.0 s)")
        check_ok("| 0.80 | 260.0 | 200 | 230.0 |" in md, "0.8 first reached at 260.0 s, step 200")
        check_ok("| 0.85 | not reached | | |" in md, "0.85 not reached")
        check_ok("step 300, 340.0 s after the start" in md, "the final evaluation is the marked one with the highest step")
        check_ok("| p1 | 0.8300 | 0.7000 | 0.6100 | 0.7133 |" in md, "per-case row p1 of the final evaluation")
        check_ok("| p2 | 0.8500 | 0.7200 | n/a | 0.7850 |" in md, "per-case row p2 with a null ET as n/a")
        check_ok("| **mean** | 0.8400 | 0.7100 | 0.6100 |" in md, "per-class means of the final evaluation")
        # under the per-case means their mean over cases (0.7133, 0.7850): the evaluator's mean_dice,
        # not the mean of the class means (0.7200), which differs when n/a cells fall unevenly
        check_ok("| **mean** | 0.8400 | 0.7100 | 0.6100 | 0.7492 |" in md, "the mean of the per-case means")
        check_ok("ET 1" in md, "the undefined count is reported")
        check_ok(str(os.path.join(run, "started_at")) in md, "the table names its time origin")

        p = subprocess.run([REPORT, run, "--out", out, "--max-overlays", "0", "--key", "mean_dice",
                            "--thresholds", "0.6,0.99"], capture_output=True, text=True, timeout=60)
        # mean_dice (the mean of the per-case means, as the evaluator writes it) at step 100 =
        # mean(0.5967, 0.67) = 0.633; at step 50 mean(0.39, 0.46) = 0.425
        check_ok(p.returncode == 0 and "| 0.60 | 150.5 | 100 |" in p.stdout and "| 0.99 | not reached" in p.stdout,
                 "--key mean_dice --thresholds 0.6,0.99")

        os.rename(os.path.join(run, "started_at"), os.path.join(run, "started_at.off"))
        p = subprocess.run([REPORT, run, "--out", out, "--max-overlays", "0"], capture_output=True, text=True, timeout=60)
        # first line: trainer step 10 at T0 + 40 -> every time shifts by 40 s
        check_ok(p.returncode == 0 and "| 0.70 | 110.5 | 100 | 90.0 |" in p.stdout and "first line of metrics.jsonl" in p.stdout,
                 "without started_at the first metrics line is time zero")
        os.rename(os.path.join(run, "started_at.off"), os.path.join(run, "started_at"))

        # ---- 2. pictures ----------------------------------------------------------------------------
        try:
            w, h, rows = read_png(os.path.join(out, "dice_vs_time.png"))
            check_ok((w, h) == (900, 480 + 14 + 6), f"dice_vs_time.png is 900x500 ({w}x{h})")
            cs = colours(rows)
            check_ok(bytes((230, 25, 75)) in cs and bytes((60, 180, 75)) in cs and bytes((0, 130, 200)) in cs,
                     "dice_vs_time.png draws WT, TC and ET in their colours")
        except Exception as e:   # noqa: BLE001 -- any decoding problem is a failure of the picture
            check_ok(False, f"dice_vs_time.png decodes: {e}")

        shape, sp = (40, 48, 32), (1.0, 1.0, 2.0)
        aff = np.diag(sp + (1.0,))
        aff[:3, 3] = (-20, -30, 10)
        ds = os.path.join(tmp, "ds")
        img, ref = make_dataset(ds, shape, aff)
        pred = np.zeros(shape, np.uint8)
        pred[14:26, 14:30, 8:20] = 2
        nib.save(nib.Nifti1Image(pred, aff), os.path.join(run, "predictions", "good.nii.gz"))
        bad = aff.copy()
        bad[0, 3] += 5.0                                # 5 mm off: not the source grid
        nib.save(nib.Nifti1Image(pred, bad), os.path.join(run, "predictions", "bad.nii.gz"))
        p = subprocess.run([REPORT, run, "--out", out, "--dataset", ds, "--window", "0,200"],
                           capture_output=True, text=True, timeout=60)
        check_ok(p.returncode == 1, f"exit status 1 when one overlay is refused (rc {p.returncode})")
        check_ok("bad.nii.gz" in p.stderr and "affine" in p.stderr,
                 f"the refusal names the file and the affine: {p.stderr.strip()[:200]}")
        check_ok(not os.path.exists(os.path.join(out, "overlay_bad.png")), "no picture for the misaligned prediction")
        # the final validation scored p1 and p2, whose predictions are not there: said, not skipped
        missing = os.path.join(run, "predictions", "p1.nii.gz")
        check_ok(f"Missing: `{missing}`" in p.stdout and "no prediction of case p2" in p.stderr,
                 f"predictions of the final validation's cases that are missing are reported: {p.stderr.strip()[:300]}")
        # without a validation marked final (a run stopped early) no prediction is expected
        os.rename(os.path.join(run, "metrics.jsonl"), os.path.join(run, "metrics.full"))
        write_metrics(os.path.join(run, "metrics.jsonl"), [l for l in lines if not (l.get("extra") or {}).get("final")])
        p = subprocess.run([REPORT, run, "--out", out, "--dataset", ds, "--window", "0,200"],
                           capture_output=True, text=True, timeout=60)
        check_ok("Missing:" not in p.stdout and "no prediction of case" not in p.stderr,
                 f"no missing-prediction report without a final validation: {p.stderr.strip()[:300]}")
        os.replace(os.path.join(run, "metrics.full"), os.path.join(run, "metrics.jsonl"))
        try:
            w, h, rows = read_png(os.path.join(out, "overlay_good.png"))
            mm = max(n * s for n, s in zip(shape, sp)) / 320
            pw = [math.ceil(shape[0] * sp[0] / mm), math.ceil(shape[0] * sp[0] / mm), math.ceil(shape[1] * sp[1] / mm)]
            ph = [math.ceil(shape[1] * sp[1] / mm), math.ceil(shape[2] * sp[2] / mm), math.ceil(shape[2] * sp[2] / mm)]
            check_ok((w, h) == (8 + sum(pw) + 3 * 8, 40 + max(ph) + 34), f"overlay_good.png size {w}x{h}")
            cs = colours(rows)
            fill = bytes(int(128 * 0.55 + c * 0.45 + 0.5) for c in (60, 180, 75))
            check_ok(bytes((230, 25, 75)) in cs, "reference outline of label 1 in its colour")
            check_ok(fill in cs, "prediction label 2 blended over grey 128")
            check_ok(bytes((128, 128, 128)) in cs, "windowed grey body (100 in 0..200 -> 128)")
            check_ok(bytes((0, 130, 200)) not in cs, "no colour of label 3, which is absent")
        except Exception as e:   # noqa: BLE001
            check_ok(False, f"overlay_good.png decodes: {e}")
        check_ok("overlay_good.png" in p.stdout, "the markdown lists the overlay")

        # a run whose first validation scored no case (every case failed), then a good one
        run0 = os.path.join(tmp, "run_first_empty")
        os.makedirs(run0)
        empty = {"step": 5, "wall_time": T0 + 5, "source": "evaluator", "mean_dice": None, "cases": [],
                 "cases_ok": 0, "cases_failed": 2, "extra": {"final": False, "foreground": [], "mode": "regions"}}
        write_metrics(os.path.join(run0, "metrics.jsonl"), [empty, evaluator(10, 10, 0.7, 0.6, 0.5, ["a", "b"], final=True)])
        p = subprocess.run([REPORT, run0, "--out", os.path.join(tmp, "out0"), "--max-overlays", "0"],
                           capture_output=True, text=True, timeout=60)
        check_ok(p.returncode == 0 and "WT" in p.stdout and "dice_WT" in p.stdout,
                 f"a first validation that scored no case: the report still comes, names and key from the next ({p.returncode}: {p.stderr.strip()[:160]} {p.stdout[:400]})")
        write_metrics(os.path.join(run0, "metrics.jsonl"), [empty])
        p = subprocess.run([REPORT, run0, "--out", os.path.join(tmp, "out1"), "--max-overlays", "0"],
                           capture_output=True, text=True, timeout=60)
        check_ok(p.returncode == 0 and "No case was scored" in p.stdout,
                 f"only a validation that scored no case: said so ({p.returncode}: {p.stderr.strip()[:160]} {p.stdout[-300:]})")

        with open(os.path.join(run, "metrics.jsonl"), "a") as f:
            f.write('{"step": 1, "wall_time"\n')
        p = subprocess.run([REPORT, run, "--out", out, "--max-overlays", "0"], capture_output=True, text=True, timeout=60)
        n = len(lines) + 1
        check_ok(p.returncode == 1 and f"metrics.jsonl:{n}" in p.stderr, f"a malformed line is named: {p.stderr.strip()[:160]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
