#!/usr/bin/python3
"""test_exporter.py -- srm-exporter end to end over its ROUTER socket, from an independent client
(pyzmq + msgpack written from docs/protocol.md): real native checkpoints (tests/tools/ckpt_make),
acks, files and sha256sum sidecars, the safetensors export against `srm-trainer --describe`,
retention (--keep, --every, best, validated steps awaiting their score), latest/best links, metrics.jsonl, curves.png, prediction
volumes read back with nibabel, corrupted checkpoints, "latest" requests, garbage, a full disk on
a small tmpfs (mount fails -> the test FAILS), SIGTERM, recovery after a restart, and messages
with an `id` (acked by id, filed once, also across a crash).
"""
import hashlib, json, os, shutil, signal, struct, subprocess, sys, tempfile, time
import msgpack, numpy as np, zmq
import nibabel as nib
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from srmtest import check, failures, summary

BUILD = os.environ.get("BUILD", "build")
BIN = os.environ.get("BIN", "bin")
EXPORTER = os.path.join(BIN, "srm-exporter")
TRAINER = os.path.join(BIN, "srm-trainer")
MAKE = os.path.join(BUILD, "tools", "ckpt_make")
LOGDIR = tempfile.mkdtemp(prefix="srm-exporter-logs-")


def encode(type_, fields, arrays=()):
    DT = {"u8": "<u1", "f32": "<f4", "f16": "<f2", "f64": "<f8", "i32": "<i4"}
    h = dict(fields, type=type_, version=1,
             arrays=[{"name": n, "dtype": d, "shape": list(x.shape)} for n, d, x in arrays])
    return [msgpack.packb(h, use_bin_type=True)] + [np.ascontiguousarray(x, DT[d]).tobytes() for n, d, x in arrays]


class Exporter:
    def __init__(self, run, *args):
        self.run, self.ep = run, "ipc://" + os.path.join(run, "..", os.path.basename(run) + ".sock")
        self.logpath = os.path.join(LOGDIR, run.strip("/").replace("/", "_") + ".log")
        self.log = open(self.logpath, "ab")
        self.p = subprocess.Popen([EXPORTER, "--run-dir", run, "--bind", self.ep, "--plot-interval", "0", *args],
                                  stdout=self.log, stderr=self.log)
        self.ctx = zmq.Context.instance()
        self.s = self.ctx.socket(zmq.DEALER)
        self.s.setsockopt(zmq.LINGER, 0)
        self.s.connect(self.ep)

    def send(self, frames):
        self.s.send_multipart(frames)

    def recv(self, timeout=30):
        if not self.s.poll(timeout * 1000):
            return None, None
        fr = self.s.recv_multipart()
        return msgpack.unpackb(fr[0], raw=False), fr[1:]

    def ask(self, frames, timeout=30):
        self.send(frames)
        return self.recv(timeout)

    def stop(self):
        self.s.close()
        self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = "hung"
        self.log.close()
        return rc

    def logtext(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")


def make_ckpt(tmp, step, seed=1):
    path = os.path.join(tmp, "src-%d.ckpt" % step)
    subprocess.run([MAKE, path, "--step", str(step), "--seed", str(seed)], check=True, stdout=subprocess.DEVNULL)
    with open(path, "rb") as f:
        return f.read()


def ckpt_msg(step, blob, sha=None, kind="periodic", validated=None):
    sha = sha or hashlib.sha256(blob).hexdigest()
    f = {"step": step, "kind": kind, "sha256": sha, "config": {"model": "tiny"}}
    if validated is not None:
        f["validated"] = validated
    return encode("checkpoint", f, [("blob", "u8", np.frombuffer(blob, np.uint8))])


def metrics_msg(step, source, values, arrays=(), case_ids=None, doc=None):
    f = {"step": step, "wall_time": time.time(), "source": source, "values": values}
    if case_ids is not None:
        f["case_ids"] = case_ids
    if doc is not None:
        f["json"] = doc
    return encode("metrics", f, arrays)


def name(step, ext):
    return "step-%08d%s" % (step, ext)


def sidecar_ok(d, fname):
    with open(os.path.join(d, fname + ".sha256")) as f:
        line = f.read()
    with open(os.path.join(d, fname), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return line == "%s  %s\n" % (digest, fname)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    return header, data[8 + n:]


def no_temp_files(root):
    bad = []
    for dp, dn, fn in os.walk(root):
        bad += [os.path.join(dp, x) for x in fn if x.endswith(".tmp") or ".tmp" in x]
    return bad


def test_main(tmp):
    run = os.path.join(tmp, "run")
    ex = Exporter(run, "--keep", "1", "--every", "20")
    blobs = {s: make_ckpt(tmp, s, seed=s) for s in (10, 20, 30, 40)}

    def send_ckpt(step, kind="periodic"):
        h, _ = ex.ask(ckpt_msg(step, blobs[step], kind=kind))
        sha = hashlib.sha256(blobs[step]).hexdigest()
        check(h is not None and h["type"] == "checkpoint_ack" and h["ok"] is True and h["step"] == step
              and h["sha256"] == sha, "ack for step %d: %s" % (step, h))

    # Training metrics, checkpoint 10, an evaluation of 20 that wins after its checkpoint is there,
    # an evaluation of 30 that arrives BEFORE checkpoint 30 (pending best), then 40.
    for s in (5, 10, 15, 20, 25, 30, 35, 40):
        ex.send(metrics_msg(s, "trainer", {"loss": 1.0 / s, "lr": 1e-4, "patches_per_s": 3.5, "data_wait": 0.1,
                                           "gpu_mem": 0.0}))
    send_ckpt(10)
    send_ckpt(20)
    dice20 = np.array([[0.5, np.nan], [0.7, 0.3]], np.float32)
    hd20 = np.array([[3.0, np.nan], [1.5, 2.5]], np.float32)
    ex.send(metrics_msg(20, "evaluator", {"mean_dice": 0.5}, [("dice", "f32", dice20), ("hd95", "f32", hd20)],
                        ["case_a", "case_b"], doc='{"classes": ["liver", "tumour"]}'))
    dice30 = np.array([[0.9, 0.8], [0.7, 0.6]], np.float32)
    ex.send(metrics_msg(30, "evaluator", {}, [("dice", "f32", dice30)], ["case_a", "case_b"]))
    send_ckpt(30)
    send_ckpt(40, kind="final")

    # A request is answered after everything sent before it (one ROUTER queue, in order).
    h, fr = ex.ask(encode("request", {"what": "latest", "seq": 7}))
    check(h is not None and h["type"] == "checkpoint" and h["step"] == 40 and fr and fr[0] == blobs[40]
          and h["sha256"] == hashlib.sha256(blobs[40]).hexdigest(), "latest request returns step 40's bytes")
    h, fr = ex.ask(encode("request", {"what": "latest_checkpoint"}))
    check(h is not None and h["type"] == "checkpoint" and h["step"] == 40, "latest_checkpoint spelling")
    h, _ = ex.ask(encode("request", {"what": "checkpoint", "step": 10, "seq": 3}))
    check(h is not None and h["type"] == "error" and h.get("code") == "not_found" and h.get("seq") == 3,
          "deleted step 10 -> not_found: %s" % h)

    ck = os.path.join(run, "checkpoints")
    files = sorted(os.listdir(ck))
    for s in (20, 30, 40):
        for ext in (".ckpt", ".safetensors"):
            check(os.path.exists(os.path.join(ck, name(s, ext))) and sidecar_ok(ck, name(s, ext)),
                  "%s present with a matching sidecar" % name(s, ext))
    check(not any(f.startswith("step-00000010") for f in files), "step 10 removed (keep 1, not every 20, not best): %s" % files)
    r = subprocess.run(["sha256sum", "-c", "--quiet"] + [f for f in files if f.endswith(".sha256")], cwd=ck,
                       capture_output=True, text=True)
    check(r.returncode == 0, "sha256sum -c accepts every sidecar: %s" % r.stdout + r.stderr)
    check(os.readlink(os.path.join(ck, "latest.ckpt")) == name(40, ".ckpt")
          and os.readlink(os.path.join(ck, "latest.safetensors")) == name(40, ".safetensors"), "latest -> 40")
    check(os.path.exists(os.path.join(ck, "best.ckpt"))
          and os.readlink(os.path.join(ck, "best.ckpt")) == name(30, ".ckpt")
          and os.readlink(os.path.join(ck, "best.safetensors")) == name(30, ".safetensors"),
          "best -> 30 (pending best landed when its checkpoint arrived)")
    with open(os.path.join(ck, "latest.ckpt"), "rb") as f:
        check(f.read() == blobs[40], "latest.ckpt holds step 40's bytes")

    # safetensors: names and shapes of the model table, contiguous F32 tensors.
    desc = subprocess.run([TRAINER, "--describe", "--width", "8"], capture_output=True, text=True, check=True).stdout
    table = {}
    for line in desc.splitlines():
        if line.startswith("parameters "):
            continue
        n, shape = line.split(" ", 1)
        table[n] = json.loads(shape)
    header, body = read_safetensors(os.path.join(ck, name(40, ".safetensors")))
    meta = header.pop("__metadata__", {})
    check(set(header) == set(table), "safetensors names == srm-trainer --describe names (%d vs %d)" % (len(header), len(table)))
    check(all(header[n]["shape"] == table[n] and header[n]["dtype"] == "F32" for n in header if n in table),
          "safetensors shapes and dtype match the table")
    spans = sorted(tuple(v["data_offsets"]) for v in header.values())
    check(spans[0][0] == 0 and spans[-1][1] == len(body) and all(a[1] == b[0] for a, b in zip(spans, spans[1:])),
          "safetensors tensors tile the data buffer")
    check(meta.get("width") in ("8", 8), "safetensors metadata carries the width: %s" % meta)
    vals = np.frombuffer(body, "<f4")
    check(np.isfinite(vals).all() and np.abs(vals).sum() > 0, "safetensors values are finite and not all zero")

    # metrics.jsonl: one object per message, nulls for undefined, summaries.
    with open(os.path.join(run, "metrics.jsonl")) as f:
        lines = [json.loads(x) for x in f]
    check(len(lines) == 10, "10 metrics lines, got %d" % len(lines))
    tr = [x for x in lines if x["source"] == "trainer"]
    check(len(tr) == 8 and all(k in tr[0] for k in ("step", "wall_time", "loss", "lr", "patches_per_s", "data_wait",
                                                     "gpu_mem")), "trainer lines carry their fields: %s" % tr[:1])
    ev = [x for x in lines if x["source"] == "evaluator"]
    check(len(ev) == 2, "two evaluator lines")
    if len(ev) == 2:
        e20, e30 = ev
        d = e20.get("dice")
        check(d[0][0] == 0.5 and d[0][1] is None and abs(d[1][0] - 0.7) < 1e-6 and abs(d[1][1] - 0.3) < 1e-6
              and e20["cases"] == ["case_a", "case_b"], "dice per case with null: %s" % d)
        check(e20["mean_dice"] == 0.5 and e20["dice_undefined_count"] == [0, 1], "sender's mean kept, undefined counted")
        check(abs(e20["dice_mean_per_class"][0] - 0.6) < 1e-6 and abs(e20["dice_mean_per_class"][1] - 0.3) < 1e-6,
              "per-class means over defined cases: %s" % e20["dice_mean_per_class"])
        check(abs(e20["mean_hd95"] - 7.0 / 3) < 1e-6 and e20["hd95"][0][1] is None, "hd95 mean over defined entries")
        check(e20["extra"] == {"classes": ["liver", "tumour"]}, "json document kept under extra")
        check(abs(e30["mean_dice"] - 0.75) < 1e-6, "mean_dice computed when not sent: %s" % e30.get("mean_dice"))

    # curves.png: a valid PNG of the plotter's size.
    png = os.path.join(run, "curves.png")
    with open(png, "rb") as f:
        head = f.read(24)
    check(head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (800, 480), "curves.png is an 800x480 PNG")

    # Predictions: a label map and a float map on an oblique, anisotropic grid.
    aff = np.array([[0.0, -1.5, 0.1, 20.0], [0.9, 0.0, 0.0, -33.5], [0.0, 0.05, 2.5, 7.25], [0, 0, 0, 1]])
    lab = (np.arange(5 * 6 * 7).reshape(5, 6, 7) % 4).astype(np.uint8)
    h, _ = ex.ask(encode("volume", {"kind": "prediction", "case_id": "case_a", "affine": aff.ravel().tolist(),
                                    "spacing": [0.9, 1.5, 2.5]}, [("labels", "u8", lab)]))
    check(h is not None and h["type"] == "ack" and h["ok"] is True and h["case_id"] == "case_a", "prediction ack: %s" % h)
    img = nib.load(os.path.join(run, "predictions", "case_a.nii.gz"))
    check(np.allclose(img.affine, aff, atol=1e-5) and img.shape == (5, 6, 7) and img.get_data_dtype() == np.uint8
          and np.array_equal(np.asarray(img.dataobj), lab), "label NIfTI: affine, shape, uint8, voxels")
    logits = np.random.default_rng(0).standard_normal((3, 4, 5, 6)).astype(np.float32)
    h, _ = ex.ask(encode("volume", {"kind": "prediction", "case_id": "case_b.logits", "affine": aff.ravel().tolist()},
                         [("image", "f32", logits)]))
    check(h is not None and h["type"] == "ack", "float prediction ack: %s" % h)
    img = nib.load(os.path.join(run, "predictions", "case_b.logits.nii.gz"))
    check(img.shape == (4, 5, 6, 3) and img.get_data_dtype() == np.float32
          and np.array_equal(np.asarray(img.dataobj), np.moveaxis(logits, 0, -1)), "float NIfTI: classes on the 4th axis")
    # a case id is any file name a dataset can hold (nnU-Net's and MONAI's ids: spaces, '#', UTF-8)
    odd = "p #1 \u00fc+x"
    h, _ = ex.ask(encode("volume", {"kind": "prediction", "case_id": odd, "affine": aff.ravel().tolist()},
                         [("labels", "u8", lab)]))
    check(h is not None and h["type"] == "ack" and os.path.exists(os.path.join(run, "predictions", odd + ".nii.gz")),
          "a case id with a space, '#', '+' and UTF-8 is written under its name: %s" % h)
    for bad_fields, arrays, why in [
        ({"kind": "prediction", "case_id": "../evil", "affine": aff.ravel().tolist()}, [("labels", "u8", lab)], "path in case id"),
        ({"kind": "prediction", "case_id": ".hidden", "affine": aff.ravel().tolist()}, [("labels", "u8", lab)], "leading dot"),
        ({"kind": "prediction", "case_id": "a\nb", "affine": aff.ravel().tolist()}, [("labels", "u8", lab)], "newline"),
        ({"kind": "training", "case_id": "x", "affine": aff.ravel().tolist()}, [("labels", "u8", lab)], "wrong kind"),
        ({"kind": "prediction", "case_id": "x", "affine": aff.ravel().tolist()}, [], "no array"),
        ({"kind": "prediction", "case_id": "x", "affine": aff.ravel().tolist()},
         [("image", "f32", np.full((1, 2, 2, 2), np.nan, np.float32))], "NaN logits"),
    ]:
        h, _ = ex.ask(encode("volume", bad_fields, arrays))
        check(h is not None and h["type"] == "error", "bad prediction (%s) -> error: %s" % (why, h))
    check(not os.path.exists(os.path.join(tmp, "evil.nii.gz")) and sorted(os.listdir(os.path.join(run, "predictions")))
          == ["case_a.nii.gz", "case_b.logits.nii.gz", odd + ".nii.gz"], "bad predictions wrote nothing")

    # Corrupted checkpoints: wrong sha (the blob was damaged in flight), and a right sha over bytes
    # that are not a checkpoint. Both: ack ok=false with the reason, nothing left behind.
    bad = bytearray(blobs[40])
    bad[1000] ^= 0xFF
    h, _ = ex.ask(ckpt_msg(50, bytes(bad), sha=hashlib.sha256(blobs[40]).hexdigest()))
    check(h is not None and h["type"] == "checkpoint_ack" and h["ok"] is False and "sha256" in h.get("error", ""),
          "damaged blob -> ok=false: %s" % h)
    junk = os.urandom(4096)
    h, _ = ex.ask(ckpt_msg(60, junk))
    check(h is not None and h["type"] == "checkpoint_ack" and h["ok"] is False and h.get("error"),
          "not a checkpoint -> ok=false: %s" % h)
    left = [f for f in os.listdir(ck) if "00000050" in f or "00000060" in f or f.endswith(".tmp")]
    check(not left, "rejected checkpoints left nothing: %s" % left)
    check(os.readlink(os.path.join(ck, "latest.ckpt")) == name(40, ".ckpt"), "latest unchanged by rejects")

    # Garbage: random bytes, wrong version, unknown type, bad metrics, a bare routing frame.
    for frames, why in [
        ([os.urandom(64)], "random bytes"),
        ([msgpack.packb({"type": "metrics", "version": 2, "arrays": [], "step": 1, "wall_time": 1.0})], "version 2"),
        (encode("patch_batch_v9", {}), "unknown type"),
        (encode("metrics", {"step": 1, "wall_time": 1.0, "case_ids": ["a"]}, [("dice", "f32", np.zeros((2, 2), np.float32))]),
         "metrics rows != cases"),
        ([msgpack.packb({"type": "metrics", "version": 1, "arrays": [{"name": "x", "dtype": "f32", "shape": [4]}],
                         "step": 1, "wall_time": 1.0}), b"abc"], "frame size disagrees"),
        (encode("stop", {"reason": "stranger"}), "stop from a peer"),
        ([b""], "empty frame"),
    ]:
        h, _ = ex.ask(frames, timeout=10)
        check(h is not None and h["type"] == "error" and h.get("code") == "bad_request", "%s -> error reply: %s" % (why, h))
    ex.send(metrics_msg(45, "trainer", {"loss": 0.01}))
    h, _ = ex.ask(encode("request", {"what": "latest"}))
    check(h is not None and h["step"] == 40, "still serving after garbage")
    with open(os.path.join(run, "metrics.jsonl")) as f:
        check(sum(1 for _ in f) == 11, "the good metrics after the garbage was appended")
    log = ex.logtext()
    check("rejected" in log and "local" in log, "rejections are logged with the peer")
    check(ex.p.poll() is None, "exporter alive")

    rc = ex.stop()
    check(rc == 0, "SIGTERM -> exit 0 (got %s)" % rc)
    check(not no_temp_files(run), "no temporary files after SIGTERM: %s" % no_temp_files(run))

    # Restart on the same run dir after a crash left a temp file and an incomplete step.
    open(os.path.join(ck, name(70, ".ckpt") + ".tmp"), "wb").write(b"partial")
    # another stage's file in the making in the run folder (the loader's preprocessing.json.tmp,
    # written while the exporter starts) is not the exporter's to remove: it once was, and the
    # loader's rename then failed
    open(os.path.join(run, "preprocessing.json.tmp"), "wb").write(b"{}")
    shutil.copy(os.path.join(ck, name(40, ".safetensors")), os.path.join(ck, name(80, ".safetensors")))
    ex = Exporter(run, "--keep", "1", "--every", "20")
    h, fr = ex.ask(encode("request", {"what": "latest"}))
    check(h is not None and h["type"] == "checkpoint" and h["step"] == 40 and fr[0] == blobs[40], "restart: latest is 40")
    left = [f for f in os.listdir(ck) if "00000070" in f or "00000080" in f]
    check(not left, "restart removed the crash leftovers: %s" % left)
    check(os.path.exists(os.path.join(run, "preprocessing.json.tmp")), "another stage's temp file in the run folder is left alone")
    if os.path.exists(os.path.join(run, "preprocessing.json.tmp")):
        os.unlink(os.path.join(run, "preprocessing.json.tmp"))
    # The best survives a restart: a weaker evaluation does not move it, a stronger one does.
    ex.send(metrics_msg(40, "evaluator", {"mean_dice": 0.6}))
    h, _ = ex.ask(encode("request", {"what": "latest"}))
    check(os.readlink(os.path.join(ck, "best.ckpt")) == name(30, ".ckpt"), "restart kept best=30 (0.75 > 0.6)")
    ex.send(metrics_msg(40, "evaluator", {"mean_dice": 0.95}))
    h, _ = ex.ask(encode("request", {"what": "latest"}))
    check(os.readlink(os.path.join(ck, "best.ckpt")) == name(40, ".ckpt"), "a better evaluation moves best to 40")
    # Tamper with the stored latest: its bytes are never handed out; a resuming trainer gets the
    # newest intact step instead (not "none", which would start it over from step 0), and latest
    # points there. A resend of the damaged step's checkpoint (same sha256) files it again.
    def tamper(step):
        with open(os.path.join(ck, name(step, ".ckpt")), "r+b") as f:
            f.seek(500)
            f.write(b"\x00\x01\x02")
    intact = sorted(int(f[5:13]) for f in os.listdir(ck) if f.startswith("step-") and f.endswith(".ckpt") and f != name(40, ".ckpt"))
    tamper(40)
    h, fr = ex.ask(encode("request", {"what": "latest"}))
    check(intact and h is not None and h["type"] == "checkpoint" and h["step"] == intact[-1] and fr[0] == blobs[intact[-1]],
          "tampered latest: the newest intact step %s is served instead: %s" % (intact[-1:], h and h.get("step")))
    check(os.readlink(os.path.join(ck, "latest.ckpt")) == name(intact[-1], ".ckpt"), "latest moved to the intact step")
    check("does not match its sidecar" in ex.logtext(), "the damage is logged")
    h, _ = ex.ask(ckpt_msg(40, blobs[40]))
    check(h is not None and h.get("ok") is True and sidecar_ok(ck, name(40, ".ckpt")) and
          open(os.path.join(ck, name(40, ".ckpt")), "rb").read() == blobs[40] and
          os.readlink(os.path.join(ck, "latest.ckpt")) == name(40, ".ckpt"),
          "a resend of the damaged step is filed again, not acknowledged as already there: %s" % h)
    # a new "checkpoint" of a filed step that is not one (its message sha256 right, its content
    # no checkpoint) is refused before the filed step is touched
    junk = b"SRMCKPT\x00" + bytes(range(256)) * 40
    h, _ = ex.ask(ckpt_msg(40, junk))
    f40 = os.path.join(ck, name(40, ".ckpt"))
    check(h is not None and h.get("ok") is False and os.path.exists(f40) and open(f40, "rb").read() == blobs[40]
          and sidecar_ok(ck, name(40, ".ckpt")) and os.readlink(os.path.join(ck, "latest.ckpt")) == name(40, ".ckpt"),
          "a bad replacement of step 40 leaves the filed one as it was: %s" % h)
    # every step damaged: "damaged", never "not_found" (a trainer would start over)
    for st_ in intact + [40]:
        tamper(st_)
    h, _ = ex.ask(encode("request", {"what": "latest"}))
    check(h is not None and h["type"] == "error" and h.get("code") == "damaged", "every step damaged: %s" % h)
    check(ex.stop() == 0, "second exporter stops cleanly")
    # a restart does not take a damaged latest either: still "damaged", and the log says why
    ex = Exporter(run, "--keep", "1", "--every", "20")
    h, _ = ex.ask(encode("request", {"what": "latest"}))
    check(h is not None and h["type"] == "error" and h.get("code") == "damaged" and
          "unusable" in ex.logtext(), "restart with every step damaged: %s" % h)
    for st_ in intact + [40]:                           # intact again for what follows
        open(os.path.join(ck, name(st_, ".ckpt")), "wb").write(blobs[st_])
    check(ex.stop() == 0, "third exporter stops cleanly")

    # SIGTERM while a checkpoint is being written: the write finishes (or never started), exit 0,
    # and whatever is on disk is complete and verified.
    ex = Exporter(run, "--keep", "1", "--every", "20")
    blob = make_ckpt(tmp, 90, seed=9)
    ex.send(ckpt_msg(90, blob))
    time.sleep(0.05)
    ex.p.send_signal(signal.SIGTERM)
    h, _ = ex.recv(timeout=20)
    rc = ex.stop()
    check(rc == 0, "SIGTERM during a checkpoint -> exit 0 (got %s)" % rc)
    files90 = sorted(f for f in os.listdir(ck) if "00000090" in f)
    complete = files90 == sorted(name(90, e) for e in (".ckpt", ".ckpt.sha256", ".safetensors", ".safetensors.sha256"))
    check(complete and sidecar_ok(ck, name(90, ".ckpt")) and sidecar_ok(ck, name(90, ".safetensors"))
          if h is not None else not files90 or complete, "step 90 all or nothing (ack %s, files %s)" % (h, files90))
    check(h is None or h.get("ok") is True, "an ack sent before exiting says ok: %s" % h)
    check(not no_temp_files(run), "no temp files after SIGTERM mid-write: %s" % no_temp_files(run))


def settle(cond, timeout=20):
    """Wait until cond() holds (the exporter files metrics without a reply when they carry no id)."""
    end = time.time() + timeout
    while not cond() and time.time() < end:
        time.sleep(0.05)


def test_awaiting_scores(tmp):
    """A validated step outlives --keep until its score (or a later step's) arrives, so best can
    point at it when the evaluator lags behind the checkpoints; a restart keeps that."""
    run = os.path.join(tmp, "await")
    ck = os.path.join(run, "checkpoints")
    ex = Exporter(run, "--keep", "1")
    blobs = {s: make_ckpt(tmp, s, seed=s) for s in (2, 4, 6, 8, 10, 12)}

    def send(step, validated):
        h, _ = ex.ask(ckpt_msg(step, blobs[step], validated=validated))
        check(h is not None and h.get("ok") is True, "ack for step %d: %s" % (step, h))

    def have(step):
        return os.path.exists(os.path.join(ck, name(step, ".ckpt")))

    for s in (2, 4, 6, 8):
        send(s, s in (4, 6))
    check(not have(2) and have(4) and have(6) and have(8), "validated 4 and 6 kept beyond --keep 1: %s" % sorted(os.listdir(ck)))
    check(sorted(f for f in os.listdir(ck) if f.endswith(".awaiting")) == [name(4, ".awaiting"), name(6, ".awaiting")],
          "awaiting markers of 4 and 6: %s" % sorted(os.listdir(ck)))
    rc = ex.stop()                                      # a restart knows them from the markers
    check(rc == 0, "exporter stopped (rc %s)" % rc)
    ex = Exporter(run, "--keep", "1")
    send(10, False)
    check(have(4) and have(6) and not have(8), "after a restart 4 and 6 still kept, 8 gone: %s" % sorted(os.listdir(ck)))
    # the score of 4 arrives late and wins; 6's job was skipped by the evaluator: 12's score releases it
    ex.send(metrics_msg(4, "evaluator", {"mean_dice": 0.8}))
    settle(lambda: not os.path.exists(os.path.join(ck, name(4, ".awaiting"))))
    check(os.path.islink(os.path.join(ck, "best.ckpt")) and os.readlink(os.path.join(ck, "best.ckpt")) == name(4, ".ckpt"),
          "best -> the late-scored step 4: %s" % sorted(os.listdir(ck)))
    check(not os.path.exists(os.path.join(ck, name(4, ".awaiting"))) and have(4) and have(6),
          "4 released (kept as best), 6 still awaiting: %s" % sorted(os.listdir(ck)))
    send(12, True)
    ex.send(metrics_msg(12, "evaluator", {"mean_dice": 0.5}))
    settle(lambda: not have(6))
    left = sorted(f for f in os.listdir(ck) if f.endswith(".ckpt") and f.startswith("step-"))
    check(left == [name(4, ".ckpt"), name(12, ".ckpt")] and not any(f.endswith(".awaiting") for f in os.listdir(ck)),
          "12's score releases the skipped 6: best 4 and latest 12 left: %s" % sorted(os.listdir(ck)))
    check(os.readlink(os.path.join(ck, "best.ckpt")) == name(4, ".ckpt"), "a weaker later score leaves best at 4")
    # a score that comes before its checkpoint (the evaluator was quicker than the store): no
    # marker is left for a step that is already scored
    blobs[14] = make_ckpt(tmp, 14, seed=14)
    ex.send(metrics_msg(14, "evaluator", {"mean_dice": 0.3}))
    send(14, True)
    check(not os.path.exists(os.path.join(ck, name(14, ".awaiting"))), "no marker for a step scored before it was filed: %s"
          % sorted(os.listdir(ck)))
    rc = ex.stop()
    check(rc == 0, "exporter stopped (rc %s)" % rc)


def test_links(tmp):
    """An identical resend whose latest link cannot be made keeps the step it had filed (it once
    removed the acknowledged step and left latest dangling); a latest pair whose two links name
    different steps (a kill between their renames) is made whole at start."""
    run = os.path.join(tmp, "links")
    ck = os.path.join(run, "checkpoints")
    ex = Exporter(run)
    blobs = {s: make_ckpt(tmp, s, seed=s) for s in (1, 2)}
    for s in (1, 2):
        h, _ = ex.ask(ckpt_msg(s, blobs[s]))
        check(h is not None and h.get("ok") is True, "links: step %d filed: %s" % (s, h))
    os.mkdir(os.path.join(ck, "latest.ckpt.tmp"))      # the next symlink cannot be made
    h, _ = ex.ask(ckpt_msg(1, blobs[1]))
    os.rmdir(os.path.join(ck, "latest.ckpt.tmp"))
    files = sorted(os.listdir(ck))
    check(h is not None and h.get("ok") is False and name(1, ".ckpt") in files and name(1, ".safetensors") in files and
          sidecar_ok(ck, name(1, ".ckpt")), "a resend whose link fails: not acked, its filed files kept: %s %s" % (h, files))
    check(os.readlink(os.path.join(ck, "latest.ckpt")) == name(2, ".ckpt"), "latest still step 2: %s" % files)
    rc = ex.stop()
    check(rc == 0, "exporter stopped (rc %s)" % rc)
    os.unlink(os.path.join(ck, "latest.safetensors"))
    os.symlink(name(1, ".safetensors"), os.path.join(ck, "latest.safetensors"))
    ex = Exporter(run)
    h, _ = ex.ask(encode("request", {"what": "latest_checkpoint", "seq": 1}))
    check(os.readlink(os.path.join(ck, "latest.safetensors")) == name(2, ".safetensors") and
          "disagree" in ex.logtext(), "a torn latest pair made whole at start: %s" % sorted(os.listdir(ck)))
    rc = ex.stop()
    check(rc == 0, "exporter stopped (rc %s)" % rc)


def test_message_ids(tmp):
    """Metrics and predictions that carry an `id` (what the trainer's and evaluator's outboxes send):
    acked by id once durable, a copy of a filed id acked without a second line or write, also
    after a crash and restart (the ids are read back from metrics.jsonl); bad ids refused."""
    run = os.path.join(tmp, "ids")
    os.makedirs(run)
    ex = Exporter(run)
    jl = os.path.join(run, "metrics.jsonl")

    def lines():
        with open(jl) as f:
            return [json.loads(x) for x in f]

    def ack_of(h, of, id_, ok=True):
        return h is not None and h["type"] == "ack" and h.get("of") == of and h.get("id") == id_ and h.get("ok") is ok

    def with_id(frames, id_):
        h = msgpack.unpackb(frames[0], raw=False)
        h["id"] = id_
        return [msgpack.packb(h, use_bin_type=True)] + frames[1:]

    h, _ = ex.ask(encode("request", {"what": "acks", "id": "trainer.7.00ff.probe", "seq": 99}))
    check(ack_of(h, "request", "trainer.7.00ff.probe"), "the senders' probe (request 'acks') -> ack of its id: %s" % h)
    h, _ = ex.ask(encode("request", {"what": "acks", "seq": 98}))
    check(h is not None and h["type"] == "error" and h.get("code") == "bad_request" and h.get("seq") == 98,
          "request 'acks' without an id -> bad_request: %s" % h)
    h, _ = ex.ask(with_id(metrics_msg(5, "trainer", {"loss": 0.5}), "trainer.7.00ff.1"))
    check(ack_of(h, "metrics", "trainer.7.00ff.1"), "metrics with an id -> ack of that id: %s" % h)
    check([(x["step"], x.get("id")) for x in lines()] == [(5, "trainer.7.00ff.1")], "the line keeps its id: %s" % lines())
    h, _ = ex.ask(with_id(metrics_msg(5, "trainer", {"loss": 0.5}), "trainer.7.00ff.1"))
    check(ack_of(h, "metrics", "trainer.7.00ff.1"), "the same id again -> acked: %s" % h)
    check(len(lines()) == 1, "... and not filed twice: %d lines" % len(lines()))
    h, _ = ex.ask(with_id(metrics_msg(6, "trainer", {"loss": 0.4}), "trainer.7.00ff.2"))
    check(ack_of(h, "metrics", "trainer.7.00ff.2") and len(lines()) == 2, "a new id -> a new line")
    for bad, why in [("has space", "space"), ("x" * 64, "64 bytes"), ("", "empty"), ("a/b", "slash")]:
        h, _ = ex.ask(with_id(metrics_msg(7, "trainer", {"loss": 0.3}), bad))
        check(h is not None and h["type"] == "error" and h.get("code") == "bad_request", "id with %s -> bad_request: %s" % (why, h))
    h, _ = ex.ask(with_id(encode("metrics", {"step": 1, "wall_time": 1.0, "case_ids": ["a"]},
                                 [("dice", "f32", np.zeros((2, 2), np.float32))]), "ev.1"))
    check(ack_of(h, "metrics", "ev.1", ok=False) and h.get("retry") is False and h.get("error"),
          "an invalid message with an id -> ack ok=false, retry=false: %s" % h)
    check(len(lines()) == 2, "refused messages filed nothing")

    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    lab = np.random.default_rng(3).integers(0, 3, (4, 5, 6)).astype(np.uint8)
    pred = encode("volume", {"kind": "prediction", "case_id": "case_q", "affine": aff.ravel().tolist()}, [("labels", "u8", lab)])
    h, _ = ex.ask(with_id(pred, "evaluator.9.ab.3"))
    check(ack_of(h, "volume", "evaluator.9.ab.3") and h.get("case_id") == "case_q" and h.get("path") == "predictions/case_q.nii.gz",
          "prediction with an id -> ack of that id with its path: %s" % h)
    out = os.path.join(run, "predictions", "case_q.nii.gz")
    check(os.path.exists(out) and np.array_equal(np.asarray(nib.load(out).dataobj), lab), "prediction written")
    os.unlink(out)                                      # a resend of that id must not write it again
    h, _ = ex.ask(with_id(pred, "evaluator.9.ab.3"))
    check(ack_of(h, "volume", "evaluator.9.ab.3") and not os.path.exists(out), "the same prediction id again -> acked, not rewritten")
    h, _ = ex.ask(with_id(encode("volume", {"kind": "prediction", "case_id": "../x", "affine": aff.ravel().tolist()},
                                 [("labels", "u8", lab)]), "evaluator.9.ab.4"))
    check(ack_of(h, "volume", "evaluator.9.ab.4", ok=False) and h.get("retry") is False, "a bad prediction with an id -> ok=false: %s" % h)

    ex.p.kill()                                         # a crash: the ids live on in metrics.jsonl
    ex.p.wait()
    ex.stop()
    ex = Exporter(run)
    h, _ = ex.ask(with_id(metrics_msg(6, "trainer", {"loss": 0.4}), "trainer.7.00ff.2"))
    check(ack_of(h, "metrics", "trainer.7.00ff.2") and len(lines()) == 2, "after a restart a filed id is still acked, not refiled")
    h, _ = ex.ask(with_id(metrics_msg(8, "evaluator", {"mean_dice": 0.5}), "evaluator.9.ab.5"))
    check(ack_of(h, "metrics", "evaluator.9.ab.5") and len(lines()) == 3, "and a new one is filed")
    ex.send(metrics_msg(9, "trainer", {"loss": 0.2}))  # no id: filed, no reply (the old clients' way)
    h, _ = ex.ask(encode("request", {"what": "latest"}))
    check(h is not None and h["type"] == "error" and h.get("code") == "not_found" and len(lines()) == 4,
          "a message without an id is filed and not acked: %s" % h)
    check(ex.stop() == 0, "stops with 0")


def test_run_id(tmp):
    """--run-id: metrics and predictions naming another run (an evaluator that outlived its run)
    are refused for good (ack ok=false, retry=false) and filed nowhere; this run's and those that
    name no run are filed; a malformed run is refused; a bad --run-id stops the exporter (78)."""
    run = os.path.join(tmp, "runid")
    os.makedirs(run)
    ex = Exporter(run, "--run-id", "a1b2c3")
    jl = os.path.join(run, "metrics.jsonl")

    def nlines():
        return sum(1 for _ in open(jl)) if os.path.exists(jl) else 0

    def msg(frames, **fields):
        h = msgpack.unpackb(frames[0], raw=False)
        h.update(fields)
        return [msgpack.packb(h, use_bin_type=True)] + frames[1:]

    m = metrics_msg(20, "evaluator", {"mean_dice": 0.7})
    h, _ = ex.ask(msg(m, id="ev.1", run="ffee99"))
    check(h is not None and h["type"] == "ack" and h.get("ok") is False and h.get("retry") is False and
          "ffee99" in h.get("error", "") and "a1b2c3" in h.get("error", ""),
          "metrics of another run -> ack ok=false, retry=false, both runs named: %s" % h)
    check(nlines() == 0, "... and not filed")
    h, _ = ex.ask(msg(m, id="ev.2", run="a1b2c3"))
    check(h is not None and h.get("ok") is True and nlines() == 1, "metrics of this run -> filed: %s" % h)
    h, _ = ex.ask(msg(metrics_msg(21, "trainer", {"loss": 0.3}), id="tr.1"))
    check(h is not None and h.get("ok") is True and nlines() == 2, "metrics naming no run -> filed: %s" % h)
    h, _ = ex.ask(msg(m, id="ev.3", run="bad run"))
    check(h is not None and h.get("ok") is False and nlines() == 2, "a malformed run -> refused: %s" % h)
    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    lab = np.zeros((4, 5, 6), np.uint8)
    pred = encode("volume", {"kind": "prediction", "case_id": "old_case", "affine": aff.ravel().tolist()}, [("labels", "u8", lab)])
    h, _ = ex.ask(msg(pred, id="ev.4", run="ffee99"))
    check(h is not None and h.get("of") == "volume" and h.get("ok") is False and h.get("retry") is False and
          not os.path.exists(os.path.join(run, "predictions", "old_case.nii.gz")),
          "a prediction of another run -> refused, not written: %s" % h)
    h, _ = ex.ask(msg(pred, id="ev.5", run="a1b2c3"))
    check(h is not None and h.get("ok") is True and os.path.exists(os.path.join(run, "predictions", "old_case.nii.gz")),
          "a prediction of this run -> written: %s" % h)
    check(ex.stop() == 0, "stops with 0")
    r = subprocess.run([EXPORTER, "--run-dir", run, "--run-id", "no/slash"], capture_output=True, text=True, timeout=30)
    check(r.returncode == 78 and "--run-id" in r.stderr, "a bad --run-id: status 78: %d %s" % (r.returncode, r.stderr[-200:]))


def test_disk_full(tmp):
    mnt = os.path.join(tmp, "small")
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mnt], capture_output=True, text=True)
    check(r.returncode == 0, "mount a 48 MiB tmpfs for the disk-full test (needs root): %s" % r.stderr.strip())
    if r.returncode:
        return
    try:
        run = os.path.join(mnt, "run")
        os.makedirs(run)
        ex = Exporter(run)
        blob = make_ckpt(tmp, 100, seed=3)
        st = os.statvfs(mnt)
        free = st.f_bavail * st.f_frsize
        filler = os.path.join(mnt, "filler")
        with open(filler, "wb") as f:                      # leave ~8 MB: less than the 28 MB checkpoint
            f.write(b"\0" * max(0, free - (8 << 20)))
        h, _ = ex.ask(ckpt_msg(100, blob))
        check(h is not None and h["type"] == "checkpoint_ack" and h["ok"] is False and "No space left" in h.get("error", ""),
              "full disk -> ok=false with the reason: %s" % h)
        ck = os.path.join(run, "checkpoints")
        check(os.listdir(ck) == [], "full disk left nothing in checkpoints/: %s" % os.listdir(ck))
        fd = os.open(filler, os.O_WRONLY | os.O_APPEND)    # now truly full: a metrics append must fail cleanly
        try:
            while os.write(fd, b"\0" * 4096) > 0:
                pass
        except OSError:
            pass
        os.close(fd)
        h, _ = ex.ask(metrics_msg(100, "trainer", {"loss": 0.5, "lr": 1e-4, "note_" + "x" * 20: 1.0}))
        check(h is not None and h["type"] == "error" and "No space" in h.get("message", ""), "metrics on a full disk -> error: %s" % h)
        m = msgpack.unpackb(metrics_msg(100, "trainer", {"loss": 0.5})[0], raw=False)
        m["id"] = "trainer.1.2.3"
        h, _ = ex.ask([msgpack.packb(m, use_bin_type=True)])
        check(h is not None and h["type"] == "ack" and h.get("ok") is False and h.get("retry") is True and "No space" in h.get("error", ""),
              "metrics with an id on a full disk -> ok=false, retry=true: %s" % h)
        h, _ = ex.ask(encode("request", {"what": "latest"}))
        check(h is not None and h["type"] == "error" and h.get("code") == "not_found", "alive, and no checkpoint yet: %s" % h)
        os.unlink(filler)
        h, _ = ex.ask(ckpt_msg(100, blob))
        check(h is not None and h["ok"] is True, "after freeing space the retry lands: %s" % h)
        check(sidecar_ok(ck, name(100, ".ckpt")) and sidecar_ok(ck, name(100, ".safetensors")), "retry's files verify")
        ex.send(metrics_msg(101, "trainer", {"loss": 0.4}))
        h, _ = ex.ask(encode("request", {"what": "latest"}))
        with open(os.path.join(run, "metrics.jsonl")) as f:
            lines = [json.loads(x) for x in f]               # every line parses: no torn line
        check([x["step"] for x in lines] == [101], "metrics.jsonl has only the line that fit: %s" % lines)
        check(ex.stop() == 0, "disk-full exporter stops with 0")
        check(not no_temp_files(run), "no temp files on the tmpfs")
    finally:
        subprocess.run(["umount", "-l", mnt])


def main():
    for p in (EXPORTER, TRAINER, MAKE):
        if not os.access(p, os.X_OK):
            print("FAIL missing %s (build it: make tools)" % p)
            print("0 passed, 1 failed")
            return 1
    tmp = tempfile.mkdtemp(prefix="srm-exporter-")
    try:
        test_main(tmp)
        test_awaiting_scores(tmp)
        test_links(tmp)
        test_message_ids(tmp)
        test_run_id(tmp)
        test_disk_full(tmp)
    finally:
        if failures() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(LOGDIR, ignore_errors=True)
        else:
            print("kept", tmp, "and the exporter logs in", LOGDIR)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
