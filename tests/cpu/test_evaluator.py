#!/usr/bin/python3
"""test_evaluator.py -- srm-evaluator in service mode against a real srm-loader.

A fake trainer (pyzmq) binds the evaljobs PUSH and metrics PULL sockets, a fake exporter binds a
ROUTER, exactly as docs/pipeline.md places them; srm-loader serves the validation cases of a tiny
phantom dataset. Checks: garbage and a job with a wrong sha256 are rejected with a log line
naming the peer and the evaluator keeps serving; a "weights" job (safetensors bytes) yields a
`metrics` message on both the trainer's and the exporter's socket whose fields follow
docs/protocol.md (step, values mean_dice / dice_<c> / cases_ok, per-case `dice` [cases, 3] f32
with the loader's validation ids); the Dice equals the Dice recomputed here from the predicted
label maps and the dataset's label files; a final job brings one `volume` kind "prediction" per
case, on the source grid (dims and affine of the image, checked with nibabel); jobs that arrive while
one runs are taken newest first (never an older after a newer); references read from --dataset
follow the loader's label rules (grid, integer and declared values); what goes to the exporter carries
an `id`, and a prediction it does not acknowledge is sent again with the same id; the evaluator
exits 0 after the final job. Fails loudly (does not
skip) when srm-loader is not built.
"""
import hashlib, os, signal, subprocess, sys, tempfile, threading, time

import msgpack
import numpy as np
import nibabel as nib
import zmq
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from srmtest import ROOT, BUILD, BIN, check, failures, summary

DT = {"u8": "<u1", "i32": "<i4", "f32": "<f4", "f64": "<f8", "i16": "<i2", "f16": "<f2"}


def decode(frames):
    h = msgpack.unpackb(frames[0], raw=False)
    arrays = {}
    for a, f in zip(h["arrays"], frames[1:]):
        arrays[a["name"]] = np.frombuffer(f, DT[a["dtype"]]).reshape(a["shape"])
    return h, arrays


def encode(type_, fields, arrays):
    h = dict(fields, type=type_, version=1,
             arrays=[{"name": n, "dtype": d, "shape": list(x.shape)} for n, d, x in arrays])
    return [msgpack.packb(h, use_bin_type=True)] + [np.ascontiguousarray(x).tobytes() for n, d, x in arrays]


def job(step, kind, blob, sha=None, **extra):
    b = np.frombuffer(blob, np.uint8)
    return encode("checkpoint", dict(step=step, kind=kind, sha256=sha or hashlib.sha256(blob).hexdigest(), **extra),
                  [("blob", "u8", b)])


def recv(sock, timeout_s):
    if sock.poll(int(timeout_s * 1000)):
        return sock.recv_multipart()
    return None


def recv_step(sock, step, timeout_s):
    """The next metrics message of this step (older ones still queued are skipped)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        got = recv(sock, max(0.1, deadline - time.time()))
        if got is not None and decode(got)[0].get("step") == step:
            return got
    return None


def recv_expo(expo, timeout_s):
    """The next message on the fake exporter's ROUTER, answering the evaluator's "acks" probe
    (docs/protocol.md `request`) on the way as a current exporter does."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        got = recv(expo, max(0.1, deadline - time.time()))
        if got is None:
            return None
        h = decode(got[1:])[0]
        if h["type"] != "request":
            return got
        check(h.get("what") == "acks" and isinstance(h.get("id"), str), "the evaluator's probe: %s" % h)
        expo.send_multipart([got[0]] + encode("ack", {"of": "request", "id": h.get("id", ""), "ok": True}, []))
    return None


def dice(p, r, c):
    a, b = (p == c).sum(), (r == c).sum()
    return float("nan") if a + b == 0 else 2.0 * ((p == c) & (r == c)).sum() / (a + b)


def main():
    for exe in ("srm-loader", "srm-evaluator"):
        if not os.access(os.path.join(BIN, exe), os.X_OK):
            print("FAIL %s/%s is not built: this test needs the real loader and evaluator" % (BIN, exe))
            print("0 passed, 1 failed")
            return 1
    tmp = tempfile.mkdtemp(prefix="srm-evaluator-")
    ds = os.path.join(tmp, "ph")
    subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "make_phantoms.py"), ds, "--cases", "4",
                    "--val", "2", "--size", "32"], check=True, capture_output=True)
    model = os.path.join(tmp, "tiny.safetensors")
    subprocess.run([os.path.join(BUILD, "tools", "safetensors_tool"), "write", model, "--variant", "M", "--width", "8",
                    "--in-channels", "1", "--classes", "4", "--seed", "5"], check=True, capture_output=True)
    blob = open(model, "rb").read()
    ep = lambda n: "ipc://%s/%s" % (tmp, n)

    ctx = zmq.Context()
    jobs = ctx.socket(zmq.PUSH); jobs.setsockopt(zmq.SNDHWM, 1); jobs.setsockopt(zmq.LINGER, 0); jobs.bind(ep("evaljobs"))
    mets = ctx.socket(zmq.PULL); mets.setsockopt(zmq.LINGER, 0); mets.bind(ep("metrics"))
    expo = ctx.socket(zmq.ROUTER); expo.setsockopt(zmq.LINGER, 0); expo.bind(ep("exporter"))
    logs = open(os.path.join(tmp, "logs.txt"), "w+")
    loader = subprocess.Popen([os.path.join(BIN, "srm-loader"), "--dataset", ds, "--volumes", ep("volumes"),
                               "--cases", ep("cases"), "--cache", os.path.join(tmp, "cache")],
                              stdout=logs, stderr=logs)
    ev = subprocess.Popen([os.path.join(BIN, "srm-evaluator"), "--jobs", ep("evaljobs"), "--cases", ep("cases"),
                           "--exporter", ep("exporter"), "--metrics", ep("metrics"), "--window", "32",
                           "--exit-after-final", "--exporter-resend", "1"], stdout=logs, stderr=logs)
    procs = [ev, loader]
    try:
        run_checks(tmp, ds, blob, jobs, mets, expo, ev, logs)
        real_exporter(tmp, ds, blob, jobs, mets, logs, procs)
        stop_while_unacked(tmp, blob, jobs, mets, logs, procs)
        final_again(tmp, blob, jobs, mets, logs, procs)
        stop_mid_case(tmp, blob, jobs, mets, logs, procs)
        copy_checked_like_loader(tmp, ds, blob, jobs, mets, logs, procs)
        curve(tmp, blob, mets, logs, procs)
        lossy_loader(tmp, blob, mets, logs, procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                check(False, "process %d ignored SIGTERM" % p.pid)
        ctx.destroy(linger=0)
    logs.seek(0)
    text = logs.read()
    if failures() or os.environ.get("SRM_TEST_VERBOSE") == "1":
        print(text[-6000:])
    check("rejected a message" in text and "sha256" in text, "bad jobs should be logged with the reason")
    status = summary()
    if status == 0:
        subprocess.run(["rm", "-rf", tmp])
    return status


def metrics_ok(h, a, step, val_ids, where):
    v = h.get("values", {})
    check(h.get("type") == "metrics" and h.get("version") == 1 and h.get("step") == step,
          "%s: header %s" % (where, {k: h.get(k) for k in ("type", "version", "step")}))
    check(h.get("source") == "evaluator" and isinstance(h.get("wall_time"), float), "%s: source/wall_time" % where)
    check(v.get("cases_ok") == 2 and v.get("cases_failed") == 0, "%s: cases %s" % (where, v))
    md = v.get("mean_dice")
    check(md is not None and 0 <= md <= 1, "%s: mean_dice %r" % (where, md))
    check(all(("dice_%d" % c) in v for c in (1, 2, 3)), "%s: per-class values %s" % (where, sorted(v)))
    check(h.get("case_ids") == val_ids, "%s: case ids %s, loader's validation %s" % (where, h.get("case_ids"), val_ids))
    d = a.get("dice")
    check(d is not None and d.shape == (2, 3) and d.dtype == np.float32, "%s: dice array %s" % (where, None if d is None else d.shape))
    check("hd95" in a and a["hd95"].shape == (2, 3), "%s: hd95 array" % where)
    if d is not None and d.shape == (2, 3):
        rows = [np.nanmean(r) for r in d if not np.isnan(r).all()]
        check(abs(np.mean(rows) - md) < 1e-5, "%s: mean_dice %g vs rows %s" % (where, md, d))


def run_checks(tmp, ds, blob, jobs, mets, expo, ev, logs):
    import json
    split = json.load(open(os.path.join(ds, "dataset.json")))["split"]
    val_ids = split["validation"]
    # garbage first: random bytes, then a job whose sha256 is wrong
    jobs.send_multipart([os.urandom(64)])
    jobs.send_multipart(job(3, "weights", blob, sha="0" * 64))
    # a real job
    jobs.send_multipart(job(7, "weights", blob, config={"patch": [32, 32, 32]}, run="runA.1"))
    got = recv(mets, 120)
    check(got is not None, "no metrics from the evaluator on the trainer's socket within 120 s")
    if got is None:
        return
    h, a = decode(got)
    metrics_ok(h, a, 7, val_ids, "trainer copy")
    check(h.get("run") == "runA.1", "the trainer copy names the job's run: %s" % h.get("run"))
    got = recv_expo(expo, 30)
    check(got is not None and len(got) >= 2, "no metrics on the exporter socket")
    if got:
        he, ae = decode(got[1:])
        metrics_ok(he, ae, 7, val_ids, "exporter copy")
        check(isinstance(he.get("id"), str) and 1 <= len(he["id"]) <= 63, "the exporter copy carries an id: %s" % he.get("id"))
        check(he.get("run") == "runA.1", "the exporter copy names the job's run: %s" % he.get("run"))
        expo.send_multipart([got[0]] + encode("ack", {"of": "metrics", "id": he.get("id", ""), "ok": True}, []))
    # jobs arriving while one runs: the newest is taken next, never an older one after it
    jobs.setsockopt(zmq.SNDTIMEO, 60000)
    jobs.send_multipart(job(11, "weights", blob))
    time.sleep(0.3)
    jobs.send_multipart(job(12, "weights", blob))
    jobs.send_multipart(job(13, "weights", blob))
    steps = []
    while 13 not in steps:
        got = recv(mets, 60)
        if got is None:
            break
        steps.append(decode(got)[0]["step"])
    check(steps == [11, 13], "metrics steps %s: want 11, then 13 (12 superseded while 11 ran: the evaluator "
          "takes the newest job waiting, also one still in the sender's queue)" % steps)
    # final job: predictions on the source grid, Dice recomputed from them
    jobs.send_multipart(job(14, "final", blob, run="runA.1"))
    # Everything the exporter gets is acked by id, except the first copy of the first prediction:
    # the evaluator must send that one again (same id) and wait for its ack before it exits.
    preds, mfinal, first, resent = {}, None, None, False
    deadline = time.time() + 120
    while time.time() < deadline and (len(preds) < 2 or mfinal is None or not resent):
        got = recv_expo(expo, 2)
        if got is None:
            if ev.poll() is not None:
                break
            continue
        ident, hh, aa = got[0], *decode(got[1:])
        if hh["type"] == "volume":
            check(hh.get("kind") == "prediction" and hh.get("step") == 14 and hh.get("run") == "runA.1",
                  "prediction header %s" % {k: hh.get(k) for k in ("kind", "step", "run")})
            preds[hh["case_id"]] = (hh, aa)
            if first is None:
                first = hh.get("id")
                continue
            resent |= hh.get("id") == first
        if hh["type"] == "metrics" and hh.get("step") == 14:
            mfinal = (hh, aa)
        expo.send_multipart([ident] + encode("ack", {"of": hh["type"], "id": hh.get("id", ""), "ok": True}, []))
    check(first is not None and resent, "an unacknowledged prediction is sent again with its id (%s)" % first)
    check(sorted(preds) == sorted(val_ids), "predictions for %s, want %s" % (sorted(preds), val_ids))
    check(mfinal is not None and mfinal[0]["step"] == 14, "final metrics missing")
    for cid, (hh, aa) in preds.items():
        src = nib.load(os.path.join(ds, "imagesTr", cid + ".nii.gz"))
        lab = aa.get("labels")
        check(lab is not None and lab.shape == src.shape, "%s: prediction shape %s, image %s" % (cid, None if lab is None else lab.shape, src.shape))
        aff = np.array(hh["affine"]).reshape(4, 4)
        check(np.allclose(aff, src.affine, atol=1e-4), "%s: prediction affine\n%s\nimage\n%s" % (cid, aff, src.affine))
        if lab is None or mfinal is None or lab.shape != src.shape:
            continue
        ref = np.asarray(nib.load(os.path.join(ds, "labelsTr", cid + ".nii.gz")).dataobj).astype(np.uint8)
        row = mfinal[1]["dice"][mfinal[0]["case_ids"].index(cid)]
        want = np.array([dice(lab, ref, c) for c in (1, 2, 3)])
        check(np.allclose(row, want, atol=1e-5, equal_nan=True), "%s: metrics Dice %s, recomputed %s" % (cid, row, want))
    rc = ev.wait(timeout=30) if ev.poll() is None else ev.returncode
    check(rc == 0, "evaluator should exit 0 after the final job, rc %s" % rc)


def real_exporter(tmp, ds, blob, jobs, mets, logs, procs):
    """The same loader with the real srm-exporter: predictions land in RUN/predictions on the
    source grid and metrics.jsonl gets the evaluator's line; references from --dataset files."""
    import json
    run = os.path.join(tmp, "run")
    ep = "ipc://%s/exporter2" % tmp
    ex = subprocess.Popen([os.path.join(BIN, "srm-exporter"), "--run-dir", run, "--bind", ep], stdout=logs, stderr=logs)
    procs.append(ex)
    ev = subprocess.Popen([os.path.join(BIN, "srm-evaluator"), "--jobs", "ipc://%s/evaljobs" % tmp,
                           "--cases", "ipc://%s/cases" % tmp, "--exporter", ep, "--metrics", "ipc://%s/metrics" % tmp,
                           "--window", "32", "--dataset", ds, "--exit-after-final"], stdout=logs, stderr=logs)
    procs.append(ev)
    jobs.send_multipart(job(20, "weights", blob, final=True))
    got = recv_step(mets, 20, 120)
    check(got is not None, "real exporter run: no metrics on the trainer socket")
    try:
        rc = ev.wait(timeout=60)
    except subprocess.TimeoutExpired:
        rc = None
    check(rc == 0, "real exporter run: evaluator rc %s" % rc)
    val = json.load(open(os.path.join(ds, "dataset.json")))["split"]["validation"]
    for cid in val:
        p = os.path.join(run, "predictions", cid + ".nii.gz")
        if not os.path.exists(p):
            check(False, "real exporter: %s missing" % p)
            continue
        pr, src = nib.load(p), nib.load(os.path.join(ds, "imagesTr", cid + ".nii.gz"))
        check(pr.shape == src.shape and np.allclose(pr.affine, src.affine, atol=1e-4),
              "real exporter: %s geometry %s vs %s" % (cid, pr.shape, src.shape))
    lines = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))] if os.path.exists(os.path.join(run, "metrics.jsonl")) else []
    ev_lines = [l for l in lines if l.get("source") == "evaluator" and l.get("step") == 20]
    check(len(ev_lines) == 1, "real exporter: metrics.jsonl evaluator lines %s" % lines)
    if got is not None and ev_lines:
        md = decode(got)[0]["values"]["mean_dice"]
        check(abs(ev_lines[0]["mean_dice"] - md) < 1e-9, "metrics.jsonl mean_dice %s vs sent %s" % (ev_lines[0]["mean_dice"], md))

    # The trainer offers its final job again until metrics reach it, and another joined evaluator
    # may take the copy: that one validates too, but its metrics and predictions carry ids named
    # after the weights, the first one's, so the exporter files them once.
    logs.flush()
    start = os.path.getsize(logs.name)
    ev2 = subprocess.Popen(ev.args, stdout=logs, stderr=logs)
    procs.append(ev2)
    jobs.send_multipart(job(20, "weights", blob, final=True))
    again = recv_step(mets, 20, 120)
    try:
        rc = ev2.wait(timeout=60)
    except subprocess.TimeoutExpired:
        rc = None
    lines = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
    ev_lines = [l for l in lines if l.get("source") == "evaluator" and l.get("step") == 20]
    logs.flush()
    text = open(logs.name).read()[start:]
    check(again is not None and rc == 0, "a second evaluator validated the final job again (rc %s)" % rc)
    check(len(ev_lines) == 1 and ev_lines[0].get("id", "").startswith("eval.final.20."),
          "metrics.jsonl still has one line of the final validation, its id named after the weights: %s" %
          [l.get("id") for l in ev_lines])
    check("came again: already recorded" in text and text.count("came again: already written") == len(val),
          "the exporter acknowledged the second evaluator's metrics and %d predictions without filing them" % len(val))


def copy_checked_like_loader(tmp, ds, blob, jobs, mets, logs, procs):
    """An evaluator on a second machine reads the references from its own copy of the dataset
    (--dataset) under the loader's rules: a label file whose geometry differs from the source
    image, or that holds a non-integer or undeclared value, is named and its case not scored
    (before, the first two were scored anyway: rounded, or on a shifted grid)."""
    import json, shutil
    copy = os.path.join(tmp, "copy")
    shutil.copytree(ds, copy)
    val = json.load(open(os.path.join(ds, "dataset.json")))["split"]["validation"]
    bad = {val[0]: "geometry mismatch", val[1]: "non-integer label 1.5"}
    for cid, why in bad.items():
        f = os.path.join(copy, "labelsTr", cid + ".nii.gz")
        im = nib.load(f)
        data, aff = np.asarray(im.dataobj).astype(np.float32), im.affine.copy()
        if why == "geometry mismatch":
            aff[:3, 3] += 5.0
        else:
            data[data == 1] = 1.5
        nib.save(nib.Nifti1Image(data, aff), f)
    logs.flush()
    start = os.path.getsize(logs.name)
    ev = subprocess.Popen([os.path.join(BIN, "srm-evaluator"), "--jobs", "ipc://%s/evaljobs" % tmp,
                           "--cases", "ipc://%s/cases" % tmp, "--metrics", "ipc://%s/metrics" % tmp,
                           "--window", "32", "--dataset", copy, "--max-jobs", "1"], stdout=logs, stderr=logs)
    procs.append(ev)
    jobs.send_multipart(job(60, "weights", blob, run="runD"))
    got = recv_step(mets, 60, 120)
    try:
        ev.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    logs.flush()
    text = open(logs.name).read()[start:]
    v = decode(got)[0].get("values", {}) if got else {}
    check(v.get("cases_ok") == 0 and v.get("cases_failed") == 2, "both cases of the damaged copy unscored: %s" % v)
    for cid, why in bad.items():
        check(("labelsTr/%s.nii.gz" % cid) in text and why in text, "the evaluator names %s: %s" % (cid, why))


def sigterm(proc):
    """SIGTERM proc and wait (30 s at most): its exit status (None when it did not end) and the
    seconds it took."""
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        rc = None
    return rc, time.time() - t0


def stop_while_unacked(tmp, blob, jobs, mets, logs, procs):
    """An exporter that acknowledges nothing (nor answers the outbox's probe, so the evaluator
    must assume a current one and keep everything): after a final job the evaluator waits for its
    acks, but SIGTERM ends that wait -- train.sh SIGKILLs a stage 10 s after SIGTERM, so the
    evaluator must be gone well before (it once sat out a 60 s wait)."""
    ctx = zmq.Context.instance()
    mute = ctx.socket(zmq.ROUTER); mute.setsockopt(zmq.LINGER, 0); mute.bind("ipc://%s/exporter3" % tmp)
    ev = subprocess.Popen([os.path.join(BIN, "srm-evaluator"), "--jobs", "ipc://%s/evaljobs" % tmp,
                           "--cases", "ipc://%s/cases" % tmp, "--exporter", "ipc://%s/exporter3" % tmp,
                           "--metrics", "ipc://%s/metrics" % tmp, "--window", "32", "--exit-after-final",
                           "--exporter-resend", "5"], stdout=logs, stderr=logs)
    procs.append(ev)
    jobs.send_multipart(job(30, "weights", blob, final=True))
    got = recv_step(mets, 30, 120)
    check(got is not None, "mute exporter: the trainer still gets the final metrics")
    time.sleep(0.5)
    rc, took = sigterm(ev)
    check(rc == 0 and took < 8, "SIGTERM while waiting for acks: exit %s after %.1f s (want 0, under 8 s)" % (rc, took))
    mute.close()


def final_again(tmp, blob, jobs, mets, logs, procs):
    """A final job offered again (the trainer had not got its metrics: it was down, or the copy
    was dropped) is not run twice, but its metrics go to the trainer again, with the job's run;
    the loader's validation list is asked for every job (a joined evaluator outlives runs)."""
    logs.flush()
    start = os.path.getsize(logs.name)              # this evaluator's lines come after
    ev = subprocess.Popen([os.path.join(BIN, "srm-evaluator"), "--jobs", "ipc://%s/evaljobs" % tmp,
                           "--cases", "ipc://%s/cases" % tmp, "--metrics", "ipc://%s/metrics" % tmp,
                           "--window", "32"], stdout=logs, stderr=logs)
    procs.append(ev)
    jobs.send_multipart(job(40, "weights", blob, run="runB"))
    first = recv_step(mets, 40, 120)
    jobs.send_multipart(job(41, "final", blob, run="runB"))
    got = recv_step(mets, 41, 120)
    check(first is not None and got is not None, "a job and a final job validated")
    jobs.send_multipart(job(41, "final", blob, run="runB"))
    again = recv_step(mets, 41, 30)
    check(again is not None and decode(again)[0].get("run") == "runB" and
          decode(again)[0].get("values") == decode(got)[0].get("values"),
          "the final job offered again: its metrics sent again, the same values, the job's run")
    ev.send_signal(signal.SIGTERM)
    ev.wait(timeout=30)
    logs.flush()
    text = open(logs.name).read()[start:]
    check("already validated; its metrics sent again" in text, "the evaluator says it did not run the final job again")
    check(text.count("serves 2 validation case(s)") == 2, "the loader's list was asked for each of the 2 jobs run")


def stop_mid_case(tmp, blob, jobs, mets, logs, procs):
    """SIGTERM while a case is being segmented ends the evaluator within a window batch's time
    (train.sh and join.sh SIGKILL a stage 10 s after SIGTERM; a case can take minutes on a CPU),
    and the unfinished job sends no metrics."""
    logs.flush()
    start = os.path.getsize(logs.name)
    ev = subprocess.Popen([os.path.join(BIN, "srm-evaluator"), "--jobs", "ipc://%s/evaljobs" % tmp,
                           "--cases", "ipc://%s/cases" % tmp, "--metrics", "ipc://%s/metrics" % tmp,
                           "--window", "16", "--overlap", "0.9"], stdout=logs, stderr=logs)
    procs.append(ev)
    jobs.send_multipart(job(50, "weights", blob, run="runC"))
    deadline = time.time() + 60
    while time.time() < deadline and "job step 50 (" not in open(logs.name).read()[start:]:
        time.sleep(0.1)
    time.sleep(1.5)                                 # well inside the first case's windows
    rc, took = sigterm(ev)
    text = open(logs.name).read()[start:]
    check(rc == 0 and took < 5, "SIGTERM mid-case: exit %s after %.1f s (want 0, under 5 s)" % (rc, took))
    check("job step 50 done" not in text and recv_step(mets, 50, 2) is None,
          "the interrupted job sent no metrics")


def read_key(path):
    keys = {}
    for line in open(path):
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            keys[k.strip()] = v.strip().strip('"').encode()
    return keys


def curve(tmp, blob, mets, logs, procs):
    """The jobs socket over TCP with CURVE (the evaluator on another host): a job reaches an
    evaluator that has the trainer's server key; one given a wrong server key gets nothing."""
    kd = os.path.join(tmp, "keys")
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "keys.sh"), kd, "trainer", "evaluator", "stranger"],
                   check=True, capture_output=True)
    srv = read_key(os.path.join(kd, "trainer.key"))
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.curve_server = True
    push.curve_secretkey = srv["secret-key"]
    push.curve_publickey = srv["public-key"]
    push.setsockopt(zmq.LINGER, 0)
    push.setsockopt(zmq.SNDTIMEO, 20000)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    base = [os.path.join(BIN, "srm-evaluator"), "--jobs", "tcp://127.0.0.1:%d" % port, "--cases", "ipc://%s/cases" % tmp,
            "--metrics", "ipc://%s/metrics" % tmp, "--window", "32", "--max-jobs", "1",
            "--curve-client", os.path.join(kd, "evaluator.key")]
    bad = subprocess.Popen(base + ["--server-key", os.path.join(kd, "stranger.pub")], stdout=logs, stderr=logs)
    procs.append(bad)
    time.sleep(1.5)
    try:
        push.send_multipart(job(30, "weights", blob), flags=zmq.NOBLOCK)
        delivered = True
    except zmq.Again:
        delivered = False
    check(not delivered, "a job was queued for an evaluator holding the wrong server key")
    bad.send_signal(signal.SIGTERM)
    bad.wait(timeout=10)
    good = subprocess.Popen(base + ["--server-key", os.path.join(kd, "trainer.pub")], stdout=logs, stderr=logs)
    procs.append(good)
    try:
        push.send_multipart(job(31, "weights", blob))
    except zmq.Again:
        check(False, "CURVE: the evaluator with the right key never connected")
    got = recv_step(mets, 31, 120)
    check(got is not None, "CURVE: no metrics for step 31")
    try:
        check(good.wait(timeout=30) == 0, "CURVE evaluator rc")
    except subprocess.TimeoutExpired:
        check(False, "CURVE evaluator did not stop after --max-jobs 1")
    ctx.destroy(linger=0)


def lossy_loader(tmp, blob, mets, logs, procs):
    """A request to the loader lost on the way (a loader stopped for a while, its connection made
    again): the evaluator asks again after a quarter of --case-timeout instead of
    waiting all of it -- it once waited its 600 s, and the run lost three validations. A proxy
    between the evaluator and the real loader drops the first request."""
    stop, seen = threading.Event(), {"dropped": 0, "passed": 0}

    def pump():
        c = zmq.Context.instance()
        front = c.socket(zmq.ROUTER); front.setsockopt(zmq.LINGER, 0); front.bind("ipc://%s/lossy" % tmp)
        back = c.socket(zmq.DEALER); back.setsockopt(zmq.LINGER, 0); back.connect("ipc://%s/cases" % tmp)
        poller = zmq.Poller(); poller.register(front, zmq.POLLIN); poller.register(back, zmq.POLLIN)
        who = None
        while not stop.is_set():
            for s, _ in poller.poll(100):
                if s is front:
                    fr = front.recv_multipart()
                    if seen["dropped"] == 0:
                        seen["dropped"] = 1
                        continue
                    who = fr[0]
                    seen["passed"] += 1
                    back.send_multipart(fr[1:])
                elif who is not None:
                    front.send_multipart([who] + back.recv_multipart())
        front.close(); back.close()
    th = threading.Thread(target=pump)
    th.start()
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH); push.setsockopt(zmq.LINGER, 0); push.bind("ipc://%s/jobs_lossy" % tmp)
    ev = subprocess.Popen([os.path.join(BIN, "srm-evaluator"), "--jobs", "ipc://%s/jobs_lossy" % tmp,
                           "--cases", "ipc://%s/lossy" % tmp, "--metrics", "ipc://%s/metrics" % tmp, "--window", "32",
                           "--max-jobs", "1", "--case-timeout", "20"], stdout=logs, stderr=logs)
    procs.append(ev)
    t0 = time.time()
    push.send_multipart(job(41, "weights", blob))
    got = recv_step(mets, 41, 60)
    took = time.time() - t0
    stop.set()
    th.join()
    v = decode(got)[0].get("values", {}) if got is not None else {}
    check(got is not None and v.get("cases_ok") == 2 and seen["dropped"] == 1 and took < 19,
          "a lost loader request is asked again: step 41 validated in %.1f s (cases %s; requests dropped %d, passed %d)"
          % (took, v.get("cases_ok"), seen["dropped"], seen["passed"]))
    try:
        ev.wait(timeout=30)
    except subprocess.TimeoutExpired:
        check(False, "the evaluator did not stop after --max-jobs 1")
    ctx.destroy(linger=0)


if __name__ == "__main__":
    sys.exit(main())
