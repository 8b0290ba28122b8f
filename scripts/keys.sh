#!/usr/bin/env bash
# keys.sh -- make ZeroMQ CURVE key pairs for the stages, and the authorised-keys file.
#   scripts/keys.sh [--force] DIR NAME...
# For each NAME: DIR/NAME.key (public + secret key, mode 0600; give it to --curve-server or
# --curve-client) and DIR/NAME.pub (public key only; give it to --server-key, or list it in an
# authorised-keys file). Every NAME's public key is added to DIR/authorized_keys (give it to
# --authorized), once. Existing keys are kept; --force replaces them and their entries.
# Format: what common/stage_curve.c reads (docs/protocol.md §6), `public-key = "<z85>"` lines.
# Keys come from libzmq itself through python3-zmq (installed by scripts/install-deps.sh).
set -euo pipefail
PY=/usr/bin/python3          # the Debian python that has python3-zmq
force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
if [ $# -lt 2 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
dir=$1; shift
mkdir -p "$dir" || { echo "keys.sh: cannot make $dir" >&2; exit 1; }
auth=$dir/authorized_keys
[ -e "$auth" ] || { printf '# SegResMamba authorised CURVE client keys (one public key per line)\n' >"$auth"; chmod 0644 "$auth"; }

for name in "$@"; do
  if ! [[ $name =~ ^[A-Za-z0-9_.-]+$ ]]; then echo "keys.sh: bad key name '$name' (letters, digits, _ . -)" >&2; exit 1; fi
  key=$dir/$name.key pub=$dir/$name.pub
  if [ -e "$key" ] && [ $force -eq 0 ]; then
    echo "keys.sh: $key exists; kept (use --force to replace it)" >&2
  else
    # A replaced key must stop being authorised.
    if [ -e "$pub" ]; then
      old=$(sed -n 's/^public-key = "\(.*\)"$/\1/p' "$pub")
      if [ -n "$old" ]; then
        # drop its entry and the "# NAME" line this script wrote above it
        awk -v k="public-key = \"$old\"" -v c="# $name" '
          $0 == c { held = $0; next }
          $0 == k { held = ""; next }
          { if (held != "") print held; held = ""; print }
          END { if (held != "") print held }' "$auth" >"$auth.tmp" && mv -f "$auth.tmp" "$auth"
      fi
    fi
    # One line "PUBLIC SECRET" from libzmq's zmq_curve_keypair.
    pair=$("$PY" -c 'import zmq
if not zmq.has("curve"): raise SystemExit("this libzmq has no CURVE support")
p, s = zmq.curve_keypair(); print(p.decode(), s.decode())') || { echo "keys.sh: key generation failed (is python3-zmq installed?)" >&2; exit 1; }
    public=${pair% *} secret=${pair#* }
    if [ ${#public} -ne 40 ] || [ ${#secret} -ne 40 ]; then echo "keys.sh: libzmq gave a malformed key" >&2; exit 1; fi
    # Write the secret file with its final mode from the start (umask), then rename into place.
    ( umask 077
      printf '# SegResMamba CURVE key (ZeroMQ z85): %s -- secret, keep private\npublic-key = "%s"\nsecret-key = "%s"\n' \
        "$name" "$public" "$secret" >"$key.tmp" ) && mv -f "$key.tmp" "$key"
    printf '# SegResMamba CURVE key (ZeroMQ z85): %s -- public\npublic-key = "%s"\n' "$name" "$public" >"$pub.tmp"
    chmod 0644 "$pub.tmp" && mv -f "$pub.tmp" "$pub"
    echo "keys.sh: made $key and $pub"
  fi
  public=$(sed -n 's/^public-key = "\(.*\)"$/\1/p' "$pub")
  [ ${#public} -eq 40 ] || { echo "keys.sh: $pub has no public-key line" >&2; exit 1; }
  # As a "public-key =" line: a bare key could begin with '#', a z85 character, and read as a comment.
  if ! grep -qxF "public-key = \"$public\"" "$auth"; then
    printf '# %s\npublic-key = "%s"\n' "$name" "$public" >>"$auth"
  fi
done
