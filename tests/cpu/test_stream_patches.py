#!/usr/bin/python3
"""test_stream_patches.py -- issue 3's bar: a Python client bound at an ipc endpoint receives patch
batches from pipelines/stream-patches.sh on ../shared/data/brats2013-6 and decodes them with
nothing but docs/protocol.md (msgpack header + raw little-endian frames): shapes and dtypes match
the frames, values are finite, labels are within the dataset's classes, case ids are training
cases, and the share of `positive` patches is within 10 percentage points of --pos-ratio over at
least 200 patches. It also asks the loader's `cases` ROUTER (DEALER client) for the validation
list, a case by index (a volume with its `prep` record) and a missing case (an `error`).
Then it stops the script and checks that no process it started is left.
Run with /usr/bin/python3 (pyzmq, msgpack, numpy); binaries from $BIN (default bin/).
"""
import json, os, signal, subprocess, sys, tempfile, time
import msgpack, numpy as np, zmq
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from srmtest import ROOT, check, summary

DATA = os.path.join(ROOT, "..", "shared", "data", "brats2013-6")
if not os.path.isdir(DATA):
    DATA = "/work/shared/data/brats2013-6"
DT = {"u8": "<u1", "i8": "<i1", "u16": "<u2", "i16": "<i2", "u32": "<u4", "i32": "<i4",
      "u64": "<u8", "i64": "<i8", "f16": "<f2", "f32": "<f4", "f64": "<f8"}
PATCH, BATCH, RATIO, WANT = 64, 4, 0.5, 400


def decode(frames):
    """protocol.md sections 1-3, with every size checked instead of trusted"""
    h = msgpack.unpackb(frames[0], raw=False)
    assert isinstance(h, dict), "header is not a map"
    assert h.get("version") == 1, "version %r" % h.get("version")
    arrays = h["arrays"]
    assert len(arrays) == len(frames) - 1, "%d arrays for %d data frames" % (len(arrays), len(frames) - 1)
    out = {}
    for a, f in zip(arrays, frames[1:]):
        dt = np.dtype(DT[a["dtype"]])
        n = int(np.prod(a["shape"], dtype=np.int64))
        assert len(f) == n * dt.itemsize, "%s: %d bytes for shape %s %s" % (a["name"], len(f), a["shape"], a["dtype"])
        out[a["name"]] = (a["dtype"], np.frombuffer(f, dt).reshape(a["shape"]))
    return h, out


def request(sock, fields):
    h = dict(fields, type="request", version=1, arrays=[])
    sock.send(msgpack.packb(h, use_bin_type=True))
    if not sock.poll(60000):
        raise AssertionError("no answer to %r" % fields)
    return decode(sock.recv_multipart())


def check_cases(ctx, ep, val_ids, classes):
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(ep)
    try:
        h, _ = request(d, {"what": "list", "seq": 5})
        check(h["type"] == "case_list" and h["case_ids"] == val_ids and h["count"] == len(val_ids) and h["seq"] == 5,
              "case list %r" % h)
        h, a = request(d, {"what": "validation_case", "index": 1, "seq": 6})
        ok = h["type"] == "volume" and h["case_id"] == val_ids[1] and h["seq"] == 6
        if ok:
            img, lab, prep = a["image"][1], a["labels"][1], json.loads(a["prep"][1].tobytes())
            ok = (img.ndim == 4 and img.shape[0] == 2 and lab.shape == img.shape[1:] and int(lab.max()) < classes
                  and prep["out_dim"] == list(img.shape[1:]) and prep["src_dim"] == [240, 240, 155]
                  and np.isfinite(img.astype(np.float32)).all())
        check(ok, "validation case 1: %r" % {k: v for k, v in h.items() if k != "arrays"})
        h, _ = request(d, {"what": "case", "case_id": "nope", "seq": 7})
        check(h["type"] == "error" and h.get("code") == "not_found" and h["seq"] == 7, "missing case: %r" % h)
        d.send(b"not msgpack")
        h, _ = decode(d.recv_multipart()) if d.poll(10000) else ({"type": None}, None)
        check(h["type"] == "error" and h.get("code") == "bad_request", "garbage: %r" % h)
    finally:
        d.close()


def our_processes(tag):
    """pids whose command line mentions our temp dir (the loader's cache, the augmenters' endpoint)"""
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open("/proc/%s/stat" % p) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if tag in cmd and "stream-patches.sh" not in cmd and state != "Z":
            found.append((int(p), cmd.strip()))
    return found


def main():
    with open(os.path.join(DATA, "dataset.json")) as f:
        meta = json.load(f)
    classes = max(int(v) for v in meta["labels"].values()) + 1
    train_ids = set(meta["split"]["train"])
    tmp = tempfile.mkdtemp(prefix="srm-test-stream-")
    ep = "ipc://" + os.path.join(tmp, "patches")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 4)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(ep)
    env = dict(os.environ, SRM_QUIET="1")
    cmd = ["bash", os.path.join(ROOT, "pipelines", "stream-patches.sh"), DATA, ep, "1",
           "--patch", str(PATCH), "--batch-size", str(BATCH), "--pos-ratio", str(RATIO),
           "--cache", os.path.join(tmp, "cache"), "--seed", "3", "--stats-every", "0",
           "--cases", "ipc://" + os.path.join(tmp, "cases")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    patches = positives = batches = 0
    bad_decode, last_seq = [], -1
    deadline = time.time() + 180
    try:
        while patches < WANT and time.time() < deadline:
            if not sock.poll(1000):
                if proc.poll() is not None:
                    break
                continue
            frames = sock.recv_multipart()
            try:
                h, a = decode(frames)
                assert h["type"] == "patch_batch", h["type"]
                dt_img, img = a["images"]
                dt_lab, lab = a["labels"]
                dt_org, org = a["origins"]
                dt_pos, pos = a["positive"]
                B = img.shape[0]
                assert dt_img in ("f32", "f16") and img.ndim == 5, "images %s %s" % (dt_img, img.shape)
                assert img.shape[1] == 2 and img.shape[2:] == (PATCH,) * 3, "images shape %s" % (img.shape,)
                assert dt_lab == "u8" and lab.shape == (B, PATCH, PATCH, PATCH), "labels %s %s" % (dt_lab, lab.shape)
                assert dt_org == "i32" and org.shape == (B, 3), "origins %s %s" % (dt_org, org.shape)
                assert dt_pos == "u8" and pos.shape == (B,), "positive %s %s" % (dt_pos, pos.shape)
                assert B == BATCH, "batch %d" % B
                assert np.isfinite(img).all(), "non-finite image values"
                assert int(lab.max()) < classes, "label %d >= %d classes" % (lab.max(), classes)
                assert h.get("num_classes", classes) == classes, "num_classes %r" % h.get("num_classes")
                ids = h["case_ids"]
                assert len(ids) == B and all(i in train_ids for i in ids), "case ids %r" % ids
                assert isinstance(h["aug_seed"], int) and h["seq"] > last_seq, "seq %r after %r" % (h["seq"], last_seq)
                assert set(np.unique(pos)) <= {0, 1}, "positive flags %r" % pos
                for b in range(B):      # a crop centred on foreground holds foreground
                    assert not pos[b] or lab[b].any(), "positive patch %d without foreground" % b
                last_seq = h["seq"]
                batches += 1
                patches += B
                positives += int(pos.sum())
            except (AssertionError, KeyError, TypeError, ValueError) as e:
                bad_decode.append(str(e))
        check(not bad_decode, "decode problems: %s" % bad_decode[:3])
        check(patches >= 200, "received %d patches (want >= 200)" % patches)
        share = positives / max(patches, 1)
        print("received %d batches, %d patches, positive share %.3f (configured %.2f)" % (batches, patches, share, RATIO))
        check(abs(share - RATIO) <= 0.10, "positive share %.3f vs %.2f" % (share, RATIO))
        try:
            check_cases(ctx, "ipc://" + os.path.join(tmp, "cases"), meta["split"]["validation"], classes)
        except (AssertionError, KeyError, TypeError, ValueError) as e:
            check(False, "cases socket: %s" % e)
        check(proc.poll() is None, "stream-patches.sh exited early (%r)" % proc.poll())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = None
        check(rc is not None, "stream-patches.sh did not stop within 20 s of SIGTERM")
        left = our_processes(tmp)
        for _ in range(30):
            if not left:
                break
            time.sleep(0.1)
            left = our_processes(tmp)
        check(not left, "processes left behind: %s" % left)
        for p, _ in left:
            os.kill(p, signal.SIGKILL)
        sock.close()
        ctx.term()
        subprocess.run(["rm", "-rf", tmp])
    return summary()


if __name__ == "__main__":
    sys.exit(main())
