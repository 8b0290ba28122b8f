#!/usr/bin/env bash
# offline-bundle.sh DIR [BINARY...] -- gather the runtime libraries our binaries need (libzmq and
# its dependencies, msgpack-c, libnifti, jansson, libpng, libcrypto, libgomp, ...) into DIR, for a
# GPU host with no network. Default binaries: everything in bin/ and the test binaries in build*/.
#
# On the target host:   source DIR/activate     (then run bin/srm-* as usual)
# activate links into DIR/active/ only the libraries the host itself lacks (checked with
# ldconfig), so the host's own newer copies (and its CUDA, cuDNN, glibc, libstdc++) always win.
set -euo pipefail
dir=${1:?usage: offline-bundle.sh DIR [BINARY...]}
shift || true
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then bins=("$@"); else
  mapfile -t bins < <(find bin build* -maxdepth 4 -type f -perm -u+x ! -name '*.o' ! -name '*.d' ! -name '*.a' 2>/dev/null)
fi
[ ${#bins[@]} -gt 0 ] || { echo "offline-bundle: no binaries found (run make first)" >&2; exit 1; }

mkdir -p "$dir/lib"
# Provided by the target system (base C/C++ runtime) or by its CUDA install: never bundled.
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|libresolv|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcudnn|libnvrtc|libnvJitLink)'
declare -A seen=()
for b in "${bins[@]}"; do
  file "$b" | grep -q ELF || continue
  while read -r name _ path _; do
    [ -n "${path:-}" ] && [ -f "$path" ] || continue
    [[ $name =~ $skip ]] && continue
    [ -n "${seen[$name]:-}" ] && continue
    seen[$name]=1
    cp -L "$path" "$dir/lib/$name"
  done < <(ldd "$b" 2>/dev/null | grep '=>')
done

cat > "$dir/activate" <<'ACT'
# source this file: makes the bundled libraries visible to bin/srm-* on a host without them.
_srm_bundle=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$_srm_bundle/active"
rm -f "$_srm_bundle/active/"*
for _l in "$_srm_bundle/lib/"*; do
  _n=$(basename "$_l")
  ldconfig -p 2>/dev/null | grep -q "^[[:space:]]*$_n " || ln -sf "$_l" "$_srm_bundle/active/$_n"
done
export LD_LIBRARY_PATH="$_srm_bundle/active${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
unset _l _n _srm_bundle
ACT
n=$(ls "$dir/lib" | wc -l)
echo "offline-bundle: $n libraries in $dir/lib ($(du -sh "$dir" | cut -f1)); on the target: source $dir/activate"
