#!/usr/bin/env bash
# test_netns_evaluator.sh -- the evaluator as a second machine (issue 8). Needs root or CAP_NET_ADMIN.
# Makes a network namespace joined to this one by a veth pair with a private /30 (10.213.X.1 here,
# .2 there; the addresses exist only on this pair), runs pipelines/train.sh here with its evaljobs,
# metrics and exporter sockets on TCP at 10.213.X.1 behind CURVE (keys from scripts/keys.sh,
# --allow-remote), and srm-evaluator inside the namespace connecting over TCP with its own
# authorised key. Checks: the evaluator gets eval jobs (checkpoints) over the wire, the trainer
# logs validation metrics that came back from it, the exporter logs the evaluator's peer address
# 10.213.X.2 and stores its predictions; a stranger's evaluator in the namespace is refused.
# Fails loudly (does not skip) when namespaces cannot be made. Cleans the namespace up on exit.
# The loader's cases socket stays ipc:// (shared filesystem): the test is about the evaluator's
# placement; the loader's own CURVE endpoints are covered by test_curve.py.
set -u
source "$(dirname "$0")/../tally.sh"

ns=srm-ev-$$ vh=srmh$$ ve=srme$$ net=$(( $$ % 250 + 1 ))
host_ip=10.213.$net.1 ns_ip=10.213.$net.2
work=$(mktemp -d /tmp/srm-netns-XXXXXX)
trainpid="" evpid="" strpid="" feedpid=""
cleanup() {
  for p in $evpid $strpid $feedpid; do kill -TERM "$p" 2>/dev/null; done
  [ -n "$trainpid" ] && kill -TERM "$trainpid" 2>/dev/null && wait "$trainpid" 2>/dev/null
  for p in $evpid $strpid $feedpid; do wait "$p" 2>/dev/null; done
  ip link del "$vh" 2>/dev/null          # removes both ends of the pair
  ip netns del "$ns" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# ---- the second machine: namespace + veth pair (fail loudly) ----
if ! ip netns add "$ns" 2>"$work/ns.err"; then
  bad "cannot create a network namespace ($(cat "$work/ns.err")): this test needs root or CAP_NET_ADMIN"; finish
fi
if ! { ip link add "$vh" type veth peer name "$ve" && ip link set "$ve" netns "$ns" &&
       ip addr add "$host_ip/30" dev "$vh" && ip link set "$vh" up &&
       ip netns exec "$ns" ip addr add "$ns_ip/30" dev "$ve" && ip netns exec "$ns" ip link set "$ve" up &&
       ip netns exec "$ns" ip link set lo up; } 2>"$work/ns.err"; then
  bad "cannot set up the veth pair: $(cat "$work/ns.err")"; finish
fi
ok "namespace $ns with $ns_ip, reached over veth $vh ($host_ip)"
# reachability without ping (not always installed): a TCP connect from inside to a listener here
/usr/bin/python3 -c "import socket,sys; s=socket.socket(); s.bind(('$host_ip', 0)); s.listen(); print(s.getsockname()[1]); sys.stdout.flush(); s.accept()" >"$work/port" &
lp=$!
for ((w = 0; w < 20; w++)); do [ -s "$work/port" ] && break; sleep 0.1; done
ip netns exec "$ns" /usr/bin/python3 -c "import socket; socket.create_connection(('$host_ip', $(cat "$work/port" 2>/dev/null || echo 1)), 3)" 2>/dev/null \
  && ok "the namespace reaches $host_ip over TCP" || bad "no TCP route from the namespace to $host_ip"
kill "$lp" 2>/dev/null; wait "$lp" 2>/dev/null
ip netns exec "$ns" /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1', $(cat "$work/port" 2>/dev/null || echo 1)), 1)" 2>/dev/null \
  && bad "the namespace's loopback reaches this host's" || ok "the namespace's loopback is its own"
ip netns exec "$ns" ip -4 addr show | grep -q "127.0.0.1" && ! ip netns exec "$ns" ip -4 addr show | grep -q "$host_ip" \
  && ok "the namespace has its own addresses" || bad "namespace addresses look shared"

need_exec "$BIN"/srm-{exporter,loader,augmenter,trainer,evaluator}
bash "$ROOT/scripts/keys.sh" "$work/keys" server trainer evaluator feeder >/dev/null && bash "$ROOT/scripts/keys.sh" "$work/strangers" stranger >/dev/null \
  || { bad "scripts/keys.sh failed"; finish; }
K=$work/keys
/usr/bin/python3 "$ROOT/scripts/make_phantoms.py" --cases 6 --val 2 --test 0 --size 24 --seed 5 "$work/ph" >/dev/null || { bad "make_phantoms"; finish; }

base=$(( 30000 + ($$ % 2000) * 10 ))
ej=tcp://$host_ip:$base me=tcp://$host_ip:$((base + 1)) ex=tcp://$host_ip:$((base + 2))
pa=tcp://127.0.0.1:$((base + 3))
run=$work/run
# The trainer's --curve-server covers all its bound sockets and refuses ipc with CURVE, so
# patches come over CURVE/TCP -- here from a small pyzmq feeder with an authorised key
# (synthetic 16^3 batches) rather than augmenters, which keeps this test about the evaluator.
bash "$ROOT/pipelines/train.sh" "$work/ph" "$run" --preset tiny --device cpu --patch 16 --batch 1 --steps 40 \
    --ckpt-every 10 --val-every 10 --remote-augmenters --remote-evaluator --allow-remote \
    --ep-evaljobs "$ej" --ep-metrics "$me" --ep-exporter "$ex" --ep-patches "$pa" --final-timeout 120 \
    --trainer-args "--log-every 5 --final-eval-timeout 120 --curve-server $K/server.key --authorized $K/authorized_keys --curve-client $K/trainer.key --server-key $K/server.pub" \
    --exporter-args "--curve-server $K/server.key --authorized $K/authorized_keys" >"$work/train.out" 2>&1 &
trainpid=$!
/usr/bin/python3 - "$pa" "$K/feeder.key" "$K/server.pub" >"$work/feeder.log" 2>&1 <<'EOF' &
import sys, time, msgpack, numpy as np, zmq
def key(path):
    return {l.split("=")[0].strip(): l.split("=", 1)[1].strip().strip('"').encode() for l in open(path) if "=" in l and l[0] != "#"}
s = zmq.Context().socket(zmq.PUSH); s.linger = 0
k = key(sys.argv[2]); s.curve_publickey, s.curve_secretkey = k["public-key"], k["secret-key"]
s.curve_serverkey = key(sys.argv[3])["public-key"]
s.connect(sys.argv[1])
rng, seq, end = np.random.default_rng(0), 0, time.time() + 300
while time.time() < end:
    lab = rng.integers(0, 4, (1, 16, 16, 16)).astype(np.uint8)
    img = (lab[:, None] + rng.normal(0, 0.3, (1, 1, 16, 16, 16))).astype("<f4")
    arrays = [("images", "f32", img), ("labels", "u8", lab), ("origins", "i32", np.zeros((1, 3), "<i4")), ("positive", "u8", np.ones(1, np.uint8))]
    h = {"type": "patch_batch", "version": 1, "seq": seq, "aug_seed": seq, "case_ids": ["feeder"], "num_classes": 4,
         "arrays": [{"name": n, "dtype": d, "shape": list(x.shape)} for n, d, x in arrays]}
    if s.poll(1000, zmq.POLLOUT):
        s.send_multipart([msgpack.packb(h)] + [x.tobytes() for _, _, x in arrays]); seq += 1
EOF
feedpid=$!
for ((w = 0; w < 60; w++)); do [ -S "$run/sock/cases" ] && break; sleep 0.5; done
evcmd=("$BIN/srm-evaluator" --jobs "$ej" --metrics "$me" --exporter "$ex" --cases "ipc://$run/sock/cases"
       --dataset "$work/ph" --window 16,16,16 --device cpu --preset tiny --in-channels 1 --classes 4 --no-hd95)
ip netns exec "$ns" "${evcmd[@]}" --curve-client "$K/evaluator.key" --server-key "$K/server.pub" >"$work/evaluator.log" 2>&1 &
evpid=$!
ip netns exec "$ns" "${evcmd[@]}" --curve-client "$work/strangers/stranger.key" --server-key "$K/server.pub" >"$work/stranger.log" 2>&1 &
strpid=$!
for ((w = 0; w < 480; w++)); do kill -0 "$trainpid" 2>/dev/null || break; sleep 0.5; done
kill -0 "$trainpid" 2>/dev/null && { bad "train.sh did not finish in 4 min"; kill -TERM "$trainpid"; }
wait "$trainpid"; rc=$?; trainpid=""
[ "$rc" -eq 0 ] && ok "train.sh with a remote evaluator exits 0" || { bad "train.sh exit $rc"; tail -n 12 "$work/train.out"; }
tlog=$run/logs/trainer.log xlog=$run/logs/exporter.log
jobs=$(grep -c 'eval job step .* sent' "$tlog")
vals=$(grep -c 'validation at step' "$tlog")
[ "$jobs" -ge 1 ] && ok "the trainer sent $jobs eval job(s) (checkpoints) over CURVE/TCP to the namespace" || bad "no eval job sent"
[ "$vals" -ge 1 ] && ok "the trainer received $vals validation result(s) back: $(grep 'validation at step' "$tlog" | tail -n 1 | cut -c1-90)" \
  || bad "no validation metrics came back"
grep -q "tcp $ns_ip" "$xlog" && ok "the exporter served the evaluator at $ns_ip (peer in its log)" || bad "exporter log has no peer $ns_ip"
np=$(ls "$run/predictions" 2>/dev/null | grep -c '\.nii\.gz$')
[ "$np" -ge 2 ] && ok "the evaluator's $np predictions were stored by the exporter" || bad "$np predictions stored"
grep -q "refused" "$tlog" && grep -q "refused" "$xlog" && ok "the stranger's evaluator was refused by trainer and exporter" || bad "no CURVE refusal logged"
[ "$(wc -l <"$work/stranger.log")" -eq "$(grep -c 'waiting for eval jobs' "$work/stranger.log")" ] \
  && ok "the stranger's evaluator received no job (its log: only its start line)" || { bad "the stranger's evaluator did something"; tail -n 3 "$work/stranger.log"; }
if [ "$fail" -gt 0 ]; then for f in "$tlog" "$xlog" "$work/evaluator.log" "$work/stranger.log"; do echo "--- $f"; tail -n 6 "$f"; done; fi
finish
