#!/usr/bin/python3
"""test_curve.py -- stage-level security (issue 8): loopback-only binds and ZeroMQ CURVE.

1. Every binding stage (exporter, loader, trainer) started on tcp://0.0.0.0 or tcp://* without
   --allow-remote exits non-zero with an error that names the endpoint and the option; with
   --allow-remote the exporter does bind 0.0.0.0 (positive control).
2. CURVE (keys from scripts/keys.sh): a trainer whose patches/evaljobs/metrics sockets are CURVE
   servers and an exporter that is one. A stranger (a key not in the authorised file) and a plain
   (no CURVE) peer push patch batches, pull eval jobs, ask the exporter for the latest checkpoint:
   the trainer makes no step, the strangers receive nothing, both stages log the refusals.
   Then an authorised client feeds patches: the trainer trains, its eval job reaches the client,
   the client's metrics reach the trainer, the checkpoint is acknowledged by the exporter and the
   authorised client can fetch it, while the stranger still gets nothing.
3. The data half over tcp with CURVE: srm-loader (--curve-server) -> srm-augmenter
   (--curve-client) -> patch_sink (--curve-server). An augmenter with a stranger's key, a plain
   one, a stranger PULL on the loader's volumes and a stranger PUSH of valid batches to the
   consumer: none gets a volume, none feeds a batch, loader and consumer log the refusals. Then an
   authorised augmenter's batches arrive, and only its batches.
Prints "N passed, N failed". Needs $BIN stages, $BUILD/tools/patch_sink and /usr/bin/python3
with pyzmq, msgpack, numpy.
"""
import os, random, re, shutil, signal, socket, subprocess, sys, tempfile, time
import msgpack, numpy as np, zmq
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from srmtest import ROOT, BUILD, BIN, check_ok, failures, summary

TOOLS = os.path.join(BUILD, "tools")


def free_ports(n):
    """n distinct TCP ports free on 127.0.0.1 right now."""
    out = []
    while len(out) < n:
        p = random.randint(20000, 59000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
        if p not in out:
            out.append(p)
    return out


def encode(type_, fields, arrays):
    DT = {"u8": "<u1", "i32": "<i4", "f32": "<f4"}
    h = dict(fields, type=type_, version=1,
             arrays=[{"name": n, "dtype": d, "shape": list(x.shape)} for n, d, x in arrays])
    return [msgpack.packb(h, use_bin_type=True)] + [np.ascontiguousarray(x, DT[d]).tobytes() for n, d, x in arrays]


def patch_batch(seq, p=16, classes=4):
    rng = np.random.default_rng(seq)
    lab = rng.integers(0, classes, (1, p, p, p)).astype(np.uint8)
    img = (lab[:, None].astype(np.float32) + rng.normal(0, 0.3, (1, 1, p, p, p))).astype(np.float32)
    return encode("patch_batch", {"seq": seq, "aug_seed": seq, "case_ids": ["curve_case"], "num_classes": classes},
                  [("images", "f32", img), ("labels", "u8", lab), ("origins", "i32", np.zeros((1, 3), np.int32)),
                   ("positive", "u8", np.ones(1, np.uint8))])


def offer_batches(push, n=3):
    """Offer n patch batches without blocking; returns how many a connection queued (a peer
    whose handshake failed has no connection, so 0)."""
    sent = 0
    for i in range(n):
        try:
            push.send_multipart(patch_batch(100 + i), zmq.NOBLOCK)
            sent += 1
        except zmq.Again:
            pass
    return sent


def read_key(path):
    keys = {}
    for line in open(path):
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            keys[k.strip()] = v.strip().strip('"').encode()
    return keys


def curve_client(sock, mine, server_pub):
    """Make sock a CURVE client with key file `mine` talking to the server key file."""
    k = read_key(mine)
    sock.curve_publickey, sock.curve_secretkey = k["public-key"], k["secret-key"]
    sock.curve_serverkey = read_key(server_pub)["public-key"]


def log_text(path):
    try:
        return open(path, errors="replace").read()
    except OSError:
        return ""


def wait_for(pred, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.2)
    return pred()


def loopback_checks(work):
    port = free_ports(1)[0]
    run = os.path.join(work, "lb")
    os.makedirs(run, exist_ok=True)
    ph = os.path.join(work, "ph")
    cases = [
        ("exporter", [f"{BIN}/srm-exporter", "--run-dir", run, "--bind"]),
        ("loader --volumes", [f"{BIN}/srm-loader", "--dataset", ph, "--cache", os.path.join(work, "cache"), "--volumes"]),
        ("trainer --patches", [f"{BIN}/srm-trainer", "--preset", "tiny", "--device", "cpu", "--steps", "1",
                               "--spool", os.path.join(work, "spool-lb"), "--patches"]),
    ]
    for name, cmd in cases:
        for host in ("0.0.0.0", "*"):
            ep = f"tcp://{host}:{port}"
            try:
                r = subprocess.run(cmd + [ep], capture_output=True, text=True, timeout=30)
                rc, err = r.returncode, r.stdout + r.stderr
            except subprocess.TimeoutExpired:
                rc, err = "timeout", ""
            check_ok(rc not in (0, "timeout") and "allow-remote" in err and ep in err,
                     f"{name} {ep} without --allow-remote refused (rc {rc}: {err.strip().splitlines()[-1:] if err else ''})")
    # positive control: --allow-remote really binds a non-loopback address
    p = subprocess.Popen([f"{BIN}/srm-exporter", "--run-dir", run, "--bind", f"tcp://0.0.0.0:{port}", "--allow-remote"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bound = wait_for(lambda: p.poll() is None and port_open(port), 10)
    check_ok(bound, f"exporter with --allow-remote listens on 0.0.0.0:{port}")
    p.terminate()
    check_ok(p.wait(15) == 0, "exporter exits 0 on SIGTERM")


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def curve_checks(work):
    keys, strangers = os.path.join(work, "keys"), os.path.join(work, "strangers")
    for d, names in ((keys, ["server", "trainer", "client"]), (strangers, ["stranger"])):
        subprocess.run(["bash", os.path.join(ROOT, "scripts/keys.sh"), d] + names, check=True, capture_output=True)
    auth = os.path.join(keys, "authorized_keys")
    check_ok(os.stat(os.path.join(keys, "client.key")).st_mode & 0o077 == 0,
             "keys.sh: secret key file is private (0600)")
    P = dict(zip(["patches", "evaljobs", "metrics", "exporter"], free_ports(4)))
    ep = {k: f"tcp://127.0.0.1:{v}" for k, v in P.items()}
    run = os.path.join(work, "run")
    os.makedirs(os.path.join(run, "logs"), exist_ok=True)
    xlog, tlog = os.path.join(run, "logs", "exporter.log"), os.path.join(run, "logs", "trainer.log")
    procs = []
    exporter = subprocess.Popen([f"{BIN}/srm-exporter", "--run-dir", run, "--bind", ep["exporter"],
                                 "--curve-server", f"{keys}/server.key", "--authorized", auth],
                                stdout=open(xlog, "w"), stderr=subprocess.STDOUT)
    procs.append(exporter)
    steps = 4
    trainer = subprocess.Popen([f"{BIN}/srm-trainer", "--preset", "tiny", "--in-channels", "1", "--classes", "4",
                                "--patch", "16,16,16", "--batch", "1", "--steps", str(steps), "--ckpt-every", "2",
                                "--val-every", "2", "--log-every", "1", "--device", "cpu", "--seed", "1",
                                "--patches", ep["patches"], "--evaljobs", ep["evaljobs"], "--metrics", ep["metrics"],
                                "--exporter", ep["exporter"], "--spool", os.path.join(run, "spool"),
                                "--curve-server", f"{keys}/server.key", "--authorized", auth,
                                "--curve-client", f"{keys}/trainer.key", "--server-key", f"{keys}/server.pub",
                                "--final-eval-timeout", "20", "--final-ack-timeout", "30"],
                               stdout=open(tlog, "w"), stderr=subprocess.STDOUT)
    procs.append(trainer)
    ctx = zmq.Context()
    try:
        check_ok(wait_for(lambda: all(port_open(p) for p in P.values()), 20), "trainer and exporter listen on their CURVE ports")
        # ---- strangers: a wrong key, and no CURVE at all ----
        evil = []
        for kind in ("stranger", "plain"):
            push, pull, dealer = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL), ctx.socket(zmq.DEALER)
            for s in (push, pull, dealer):
                s.linger = 0
                s.immediate = 1          # queue only to connections whose handshake succeeded
                if kind == "stranger":
                    curve_client(s, f"{strangers}/stranger.key", f"{keys}/server.pub")
            push.sndtimeo = 2000
            push.connect(ep["patches"]); pull.connect(ep["evaljobs"]); dealer.connect(ep["exporter"])
            evil.append((kind, push, pull, dealer))
        time.sleep(1.0)
        for kind, push, pull, dealer in evil:
            sent = offer_batches(push)
            try:
                dealer.send_multipart(encode("request", {"what": "latest_checkpoint", "seq": 7}, []), zmq.NOBLOCK)
            except zmq.Again:
                pass
            check_ok(sent == 0, f"{kind} peer: no connection takes its patch batches ({sent} queued)")
        time.sleep(4.0)
        text = log_text(tlog)
        check_ok("step 1/" not in text, "trainer made no step from strangers' batches")
        check_ok("refused" in text, "trainer logs the refused CURVE client")
        check_ok("refused" in log_text(xlog), "exporter logs the refused CURVE client")
        for kind, push, pull, dealer in evil:
            check_ok(pull.poll(100) == 0 and dealer.poll(100) == 0, f"{kind} peer received nothing (eval jobs, checkpoints)")
        # ---- an authorised client ----
        push, pull, mpush, dealer = (ctx.socket(t) for t in (zmq.PUSH, zmq.PULL, zmq.PUSH, zmq.DEALER))
        for s in (push, pull, mpush, dealer):
            s.linger = 0
            curve_client(s, f"{keys}/client.key", f"{keys}/server.pub")
        push.connect(ep["patches"]); pull.connect(ep["evaljobs"]); mpush.connect(ep["metrics"]); dealer.connect(ep["exporter"])
        # Fed until the trainer ends: batches queued beyond the last step are simply never read.
        got_job, seq = None, 0
        end = time.time() + 120
        while trainer.poll() is None and time.time() < end:
            if push.poll(0, zmq.POLLOUT):
                push.send_multipart(patch_batch(seq))
                seq += 1
            if pull.poll(200):
                frames = pull.recv_multipart()
                h = msgpack.unpackb(frames[0], raw=False)
                if h.get("type") == "checkpoint":
                    got_job = h
                    mpush.send_multipart(encode("metrics", {"step": h["step"], "wall_time": time.time(),
                                                            "values": {"mean_dice": 0.625, "dice_1": 0.625}}, []))
        try:
            rc = trainer.wait(60)
        except subprocess.TimeoutExpired:
            rc = "timeout"
        text = log_text(tlog)
        check_ok(rc == 0 and f"step {steps}/{steps}" in text, f"authorised client's batches train the model ({steps} steps, rc {rc})")
        check_ok(got_job is not None, "authorised client receives an eval job (a checkpoint message)")
        check_ok("0.625" in text, "trainer takes the authorised client's metrics")
        ck = os.path.join(run, "checkpoints", f"step-{steps:08d}.ckpt")
        check_ok(os.path.exists(ck), "exporter acknowledged and stored the final checkpoint over CURVE")
        dealer.send_multipart(encode("request", {"what": "latest_checkpoint", "seq": 9}, []))
        ans = msgpack.unpackb(dealer.recv_multipart()[0], raw=False) if dealer.poll(20000) else {}
        check_ok(ans.get("type") == "checkpoint" and ans.get("step") == steps, f"authorised client fetches the latest checkpoint ({ans.get('type')})")
        for kind, push_, pull_, dealer_ in evil:
            check_ok(pull_.poll(100) == 0 and dealer_.poll(100) == 0, f"{kind} peer still received nothing")
    except Exception:
        check_ok(False, "test raised an exception")
        raise
    finally:
        if failures():
            for f in (tlog, xlog):
                print(f"--- {f}\n" + "".join(log_text(f).splitlines(True)[-20:]))
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        ctx.destroy(linger=0)
    check_ok(exporter.returncode == 0, f"exporter stopped cleanly (rc {exporter.returncode})")


def sink_seeds(path):
    """aug_seed of every batch patch_sink logged ("batch TIME SEED SEQ B BYTES")."""
    return [int(l.split()[2]) for l in log_text(path).splitlines() if l.startswith("batch ")]


def aug_counts(path):
    """Patches made and volumes received, summed over an augmenter's stats lines."""
    patches = volumes = 0
    for m in re.finditer(r"(\d+) patches \(.*?volumes (\d+) new", log_text(path)):
        patches += int(m.group(1))
        volumes += int(m.group(2))
    return patches, volumes


def chain_checks(work):
    keys, strangers = os.path.join(work, "keys"), os.path.join(work, "strangers")
    subprocess.run(["bash", os.path.join(ROOT, "scripts/keys.sh"), keys, "augmenter"], check=True, capture_output=True)
    auth = os.path.join(keys, "authorized_keys")
    pv, pp = free_ports(2)
    vol, pat = f"tcp://127.0.0.1:{pv}", f"tcp://127.0.0.1:{pp}"
    logs = os.path.join(work, "chain")
    os.makedirs(logs, exist_ok=True)
    L = {n: os.path.join(logs, n + ".log") for n in ("loader", "sink", "stranger", "plain", "augmenter")}
    sink_out = os.path.join(logs, "sink.out")
    procs = {}
    procs["loader"] = subprocess.Popen([f"{BIN}/srm-loader", "--dataset", os.path.join(work, "ph"), "--cache",
                                        os.path.join(work, "cache-chain"), "--volumes", vol, "--seed", "3",
                                        "--curve-server", f"{keys}/server.key", "--authorized", auth],
                                       stdout=open(L["loader"], "w"), stderr=subprocess.STDOUT)
    procs["sink"] = subprocess.Popen([f"{TOOLS}/patch_sink", pat, "--log-batches", "1", "--check", "1",
                                      "--curve-server", f"{keys}/server.key", "--authorized", auth],
                                     stdout=open(sink_out, "w"), stderr=open(L["sink"], "w"))
    aug = [f"{BIN}/srm-augmenter", "--volumes", vol, "--patches", pat, "--patch", "16", "--batch-size", "1",
           "--stats-every", "1"]
    ctx = zmq.Context()
    try:
        check_ok(wait_for(lambda: port_open(pv) and port_open(pp), 20),
                 "loader and consumer listen on their CURVE ports")
        # ---- strangers: an augmenter with an unauthorised key, a plain one, and raw sockets ----
        procs["stranger"] = subprocess.Popen(aug + ["--seed", "9", "--curve-client", f"{strangers}/stranger.key",
                                                    "--server-key", f"{keys}/server.pub"],
                                             stdout=open(L["stranger"], "w"), stderr=subprocess.STDOUT)
        procs["plain"] = subprocess.Popen(aug + ["--seed", "8"], stdout=open(L["plain"], "w"), stderr=subprocess.STDOUT)
        pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
        for s in (pull, push):
            s.linger = 0
            s.immediate = 1
            curve_client(s, f"{strangers}/stranger.key", f"{keys}/server.pub")
        pull.connect(vol)
        push.connect(pat)
        time.sleep(1.0)
        sent = offer_batches(push)
        check_ok(sent == 0, f"stranger PUSH: the consumer takes no batch ({sent} queued)")
        time.sleep(4.0)
        check_ok(pull.poll(100) == 0, "stranger PULL on the loader's volumes received nothing")
        check_ok(sink_seeds(sink_out) == [], f"consumer got no batch from strangers ({len(sink_seeds(sink_out))})")
        for n in ("stranger", "plain"):
            check_ok(procs[n].poll() is None and aug_counts(L[n]) == (0, 0) and "waited" in log_text(L[n]),
                  f"{n} augmenter got no volume and made nothing ((patches, volumes) {aug_counts(L[n])}, "
                  f"running: {procs[n].poll() is None})")
        check_ok("refused" in log_text(L["loader"]), "loader logs the refused CURVE client")
        check_ok("refused" in log_text(L["sink"]), "consumer logs the refused CURVE client")
        # ---- the authorised augmenter ----
        procs["augmenter"] = subprocess.Popen(aug + ["--seed", "5", "--curve-client", f"{keys}/augmenter.key",
                                                     "--server-key", f"{keys}/server.pub"],
                                              stdout=open(L["augmenter"], "w"), stderr=subprocess.STDOUT)
        ok = wait_for(lambda: len(sink_seeds(sink_out)) >= 5, 60)
        seeds = sink_seeds(sink_out)
        check_ok(ok, f"authorised augmenter's batches reach the consumer over CURVE ({len(seeds)} batches)")
        check_ok(seeds and set(seeds) == {5}, f"every batch is the authorised augmenter's (seeds {sorted(set(seeds))})")
        time.sleep(1.5)
        for n in ("stranger", "plain"):
            check_ok(aug_counts(L[n]) == (0, 0), f"{n} augmenter still got nothing {aug_counts(L[n])}")
        check_ok(pull.poll(100) == 0, "stranger PULL still received nothing")
    except Exception:
        check_ok(False, "chain test raised an exception")
        raise
    finally:
        if failures():
            for f in list(L.values()) + [sink_out]:
                print(f"--- {f}\n" + "".join(log_text(f).splitlines(True)[-12:]))
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        rcs = {}
        for n, p in procs.items():
            try:
                rcs[n] = p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                rcs[n] = p.wait()
        ctx.destroy(linger=0)
    check_ok(all(rc == 0 for rc in rcs.values()), f"loader, augmenters and consumer stop cleanly on SIGTERM ({rcs})")


def main():
    for b in ("srm-exporter", "srm-loader", "srm-trainer", "srm-augmenter"):
        if not os.access(os.path.join(BIN, b), os.X_OK):
            check_ok(False, f"{BIN}/{b} not built")
            return summary()
    if not os.access(os.path.join(TOOLS, "patch_sink"), os.X_OK):
        check_ok(False, f"{TOOLS}/patch_sink not built (make tools)")
        return summary()
    work = tempfile.mkdtemp(prefix="srm-curve-")
    try:
        subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts/make_phantoms.py"), "--cases", "2", "--val", "0",
                        "--test", "0", "--size", "16", os.path.join(work, "ph")], check=True, capture_output=True)
        loopback_checks(work)
        curve_checks(work)
        chain_checks(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
