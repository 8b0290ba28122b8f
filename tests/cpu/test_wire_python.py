"""test_wire_python.py -- a Python client written from docs/protocol.md alone (pyzmq + msgpack +
numpy, /usr/bin/python3) talks to our C implementation both ways:
  1. decodes what tests/tools/wire_emit sends (two volumes, two patch batches, a checkpoint) and
     checks every value against the formulas listed in wire_emit.c;
  2. encodes messages that tests/tools/wire_dump (our decoder) must accept with the right content,
     and malformed ones it must reject with a reason.
Prints "N passed, N failed" like every test.
"""
import hashlib
import os
import subprocess
import sys
import tempfile

import msgpack
import numpy as np
import zmq
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from srmtest import check, summary

BUILD = os.environ.get("BUILD", "build")
EMIT = os.path.join(BUILD, "tools", "wire_emit")
DUMP = os.path.join(BUILD, "tools", "wire_dump")


# ---- the protocol, as docs/protocol.md states it ------------------------------------------------
DT = {"u8": "<u1", "i8": "<i1", "u16": "<u2", "i16": "<i2", "u32": "<u4", "i32": "<i4",
      "u64": "<u8", "i64": "<i8", "f16": "<f2", "f32": "<f4", "f64": "<f8"}


def decode(frames):
    h = msgpack.unpackb(frames[0], raw=False)
    assert isinstance(h, dict), "header is not a map"
    assert h["version"] == 1, "version"
    assert len(h["arrays"]) == len(frames) - 1, "frame count"
    arrays = {}
    for a, f in zip(h["arrays"], frames[1:]):
        if a["dtype"] == "bf16":
            x = (np.frombuffer(f, "<u2").astype("<u4") << 16).view("<f4")
        else:
            x = np.frombuffer(f, DT[a["dtype"]])
        assert x.size == int(np.prod(a["shape"], dtype=np.int64)), "size vs shape"
        arrays[a["name"]] = x.reshape(a["shape"])
    return h, arrays


def encode(type_, fields, arrays):
    h = dict(fields, type=type_, version=1,
             arrays=[{"name": n, "dtype": d, "shape": list(x.shape)} for n, d, x in arrays])
    return [msgpack.packb(h, use_bin_type=True)] + \
        [np.ascontiguousarray(x, DT.get(d, "<u2")).tobytes() for n, d, x in arrays]


# ---- 1. C -> Python -----------------------------------------------------------------------------
def grid(*shape):
    return np.indices(shape)


def from_c(tmp):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVTIMEO, 10000)
    ep = "ipc://%s/emit.sock" % tmp
    sock.bind(ep)
    proc = subprocess.Popen([EMIT, ep])
    msgs = {}
    try:
        for _ in range(5):
            h, a = decode(sock.recv_multipart())
            msgs[(h["type"], h.get("case_id", h.get("seq", h.get("step"))))] = (h, a)
    except zmq.Again:
        check(False, "wire_emit: timed out after %d messages" % len(msgs))
    check(proc.wait(timeout=20) == 0, "wire_emit exit code")
    sock.close(0)

    h, a = msgs[("volume", "vol_f32")]
    c, d, hh, w = grid(2, 3, 4, 5)
    check(a["image"].dtype == np.float32 and a["image"].shape == (2, 3, 4, 5), "vol_f32 image dtype/shape")
    check(np.array_equal(a["image"], 1000 * c + 100 * d + 10 * hh + w), "vol_f32 image values (axis order)")
    check(np.array_equal(a["labels"], (d[0] + hh[0] + w[0]) % 3), "vol_f32 labels")
    check(h["spacing"] == [1, 1.5, 2] and h["num_classes"] == 3 and h["index"] == 0 and h["epoch"] == 1,
          "vol_f32 fields")
    aff = np.array(h["affine"]).reshape(4, 4)
    check(aff[1, 1] == 1.5 and aff[2, 3] == -30 and list(aff[3]) == [0, 0, 0, 1], "vol_f32 affine row-major")

    h, a = msgs[("volume", "vol_f16")]
    d, hh, w = grid(2, 3, 4)
    check(a["image"].dtype == np.float16 and "labels" not in a, "vol_f16 dtype, no labels")
    check(np.array_equal(a["image"][0], ((d + hh + w) / 4).astype(np.float16)), "vol_f16 values")

    h, a = msgs[("patch_batch", 7)]
    b, c, d, hh, w = grid(2, 1, 4, 5, 6)
    check(a["images"].shape == (2, 1, 4, 5, 6) and a["images"].dtype == np.float32, "patch images shape/dtype")
    check(np.array_equal(a["images"], 10000 * b + 1000 * c + 100 * d + 10 * hh + w + 0.5), "patch image values")
    check(np.array_equal(a["labels"], (b[:, 0] + d[:, 0] + hh[:, 0] + w[:, 0]) % 2), "patch labels")
    check(a["origins"].tolist() == [[0, 0, 0], [1, 2, -1]] and a["positive"].tolist() == [1, 0], "origins/positive")
    check(h["case_ids"] == ["case_0", "case_1"] and h["aug_seed"] == 123456789012345 and h["num_classes"] == 2,
          "patch fields")
    check(bool(np.isfinite(a["images"]).all()), "patch images finite")

    h, a = msgs[("patch_batch", 8)]
    b, c, d, hh, w = grid(1, 2, 2, 2, 2)
    check(np.array_equal(a["images"], (c + d + hh + w) / 2), "bf16 patch values")

    h, a = msgs[("checkpoint", 3)]
    blob = a["blob"].tobytes()
    check(blob == bytes(i % 251 for i in range(100)), "checkpoint blob")
    check(h["sha256"] == hashlib.sha256(blob).hexdigest(), "checkpoint sha256")
    check(h["config"] == {"model": "tiny", "lr": 0.001} and h["kind"] == "periodic", "checkpoint config/kind")


# ---- 2. Python -> C -----------------------------------------------------------------------------
def to_c(tmp):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDTIMEO, 10000)
    ep = "ipc://%s/dump.sock" % tmp
    sock.bind(ep)
    rng = np.random.default_rng(0)
    msgs, expect = [], []

    imgs = rng.standard_normal((3, 2, 4, 5, 6)).astype(np.float32)
    labs = rng.integers(0, 4, (3, 4, 5, 6)).astype(np.uint8)
    org = np.array([[0, 1, 2], [-3, 4, 5], [6, 7, -8]], np.int32)
    pos = np.array([1, 0, 1], np.uint8)
    msgs.append(encode("patch_batch", {"seq": 41, "aug_seed": 2**64 - 1, "case_ids": ["a", "bb", "ccc"],
                                       "num_classes": 4},
                       [("images", "f32", imgs), ("labels", "u8", labs), ("origins", "i32", org),
                        ("positive", "u8", pos)]))
    expect.append(("ok patch_batch seq=41 shape=3,2,4,5,6 dtype=f32", imgs.astype(np.float64).sum(),
                   "labels=%d pos=1,0,1 ids=a,bb,ccc origins=0,1,2,-3,4,5,6,7,-8 nonfinite=-1" % labs.sum()))

    ct = rng.integers(-1000, 3000, (1, 7, 8, 9)).astype(np.int16)
    msgs.append(encode("volume", {"case_id": "ct_7", "spacing": [0.7, 0.7, 2.5],
                                  "affine": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
                                  "some_future_field": {"x": [1, 2]}},
                       [("image", "i16", ct)]))
    expect.append(("ok volume case=ct_7 shape=1,7,8,9 dtype=i16", float(ct.sum()), "labels=none spacing=0.7,0.7,2.5"))

    nan_imgs = np.zeros((1, 1, 2, 2, 2), np.float32)
    nan_imgs[0, 0, 1, 0, 1] = np.nan
    msgs.append(encode("patch_batch", {"seq": 42, "aug_seed": 0, "case_ids": ["n"]},
                       [("images", "f32", nan_imgs), ("labels", "u8", np.zeros((1, 2, 2, 2), np.uint8)),
                        ("origins", "i32", np.zeros((1, 3), np.int32)), ("positive", "u8", np.zeros(1, np.uint8))]))
    expect.append(("ok patch_batch seq=42", None, "nonfinite=5"))

    msgs.append(encode("heartbeat", {"stage": "pyclient", "pid": os.getpid()}, []))
    expect.append(("ok heartbeat stage=pyclient pid=%d" % os.getpid(), None, ""))

    bad = encode("volume", {"case_id": "x", "spacing": [1, 1, 1], "affine": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]},
                 [("image", "f32", np.zeros((1, 2, 2, 2), np.float32))])
    bad[1] = bad[1][:-4]                                            # frame shorter than its shape
    msgs.append(bad)
    expect.append(("rejected:", None, "needs 32 bytes"))
    v2 = msgpack.unpackb(msgs[3][0], raw=False)
    v2["version"] = 2
    msgs.append([msgpack.packb(v2)])
    expect.append(("rejected:", None, "unsupported version 2"))
    msgs.append([b"\x93\x01\x02\x03"])                              # a list, not a map
    expect.append(("rejected:", None, "not a msgpack map"))
    msgs.append([os.urandom(64)])
    expect.append(("rejected:", None, ""))
    wrong = encode("patch_batch", {"seq": 1, "aug_seed": 0, "case_ids": ["a"]},
                   [("images", "f32", np.zeros((1, 1, 2, 2, 2), np.float32)),
                    ("labels", "u8", np.zeros((1, 2, 2, 3), np.uint8)),
                    ("origins", "i32", np.zeros((1, 3), np.int32)), ("positive", "u8", np.ones(1, np.uint8))])
    msgs.append(wrong)
    expect.append(("rejected:", None, "labels shape"))
    msgs.append(encode("stop", {"reason": "done"}, []))
    expect.append(("ok stop reason=done", None, ""))

    proc = subprocess.Popen([DUMP, ep, str(len(msgs))], stdout=subprocess.PIPE, text=True)
    for m in msgs:
        sock.send_multipart(m)
    out, _ = proc.communicate(timeout=30)
    check(proc.returncode == 0, "wire_dump exit code %s" % proc.returncode)
    lines = out.splitlines()
    check(len(lines) == len(msgs), "wire_dump printed %d lines for %d messages" % (len(lines), len(msgs)))
    for line, (head, total, tail) in zip(lines, expect):
        ok = line.startswith(head) and tail in line
        if ok and total is not None:
            got = float(line.split("sum=")[1].split()[0])
            ok = abs(got - total) <= 1e-3 * max(1.0, abs(total))
        check(ok, "wire_dump line %r, expected %r ... %r (sum %s)" % (line, head, tail, total))
    sock.close(0)


def main():
    for tool in (EMIT, DUMP):
        if not os.access(tool, os.X_OK):
            print("FAIL %s not built (make tools)" % tool)
            print("0 passed, 1 failed")
            return 1
    with tempfile.TemporaryDirectory(prefix="srm-wirepy-") as tmp:
        from_c(tmp)
        to_c(tmp)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
