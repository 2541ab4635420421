#!/usr/bin/env bash
# The main job: a real Nix build of a small graph, dispatched by nix-wasm-hook to local test
# builders (testbed/), printing where each derivation ran. Run as root on Debian 12:
#     examples/demo.sh [--nix VERSION] [N_BUILDERS]   (default: the host's Nix, 3 builders)
# It builds the hook, brings the test bed up, builds, and always brings the test bed down.
# --nix 2.26 or 2.34 makes Debian's Nix of that version the master, in a root file system
# beside the host (testbed/master.sh; made once, about two minutes, then reused).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
nix=2.8
if [ "${1:-}" = --nix ]; then nix=${2:?--nix needs a version: 2.8, 2.26 or 2.34}; shift 2; fi
n=${1:-3}
tb="$repo/testbed/testbed.sh"
master="$repo/testbed/master.sh"
"$master" root "$nix" >/dev/null

cargo build --release --quiet --manifest-path "$repo/Cargo.toml" -p nix-wasm-hook
hook="$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/nix-wasm-hook"

# Nix 2.8 takes `build-hook` as one path, so a wrapper gives the hook a private state
# directory; on exit its SSH masters are ended before the builders go down.
work=$(mktemp -d)
printf '#!/bin/sh\nexec %s --state-dir %s/state "$@"\n' "$hook" "$work" > "$work/hook"
chmod +x "$work/hook"
cleanup() {
  for s in "$work"/state/ssh/*.sock; do [ -S "$s" ] && ssh -S "$s" -O exit demo 2>/dev/null; done
  "$tb" down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"$tb" up "$n" > /tmp/nwh-demo-machines 2>/dev/null
echo "builders:"; sed 's/^/  /; s/ c3No.*$/ …/' /tmp/nwh-demo-machines

nonce=$(date +%s%N)
expr='let
  mk = name: deps: builtins.derivation {
    inherit name deps; nonce = "'"$nonce"'"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "read h < /proc/sys/kernel/hostname; /bin/mkdir $out; echo $h > $out/host; /bin/sleep 1" ];
  };
  a = mk "leaf-a" [ ]; b = mk "leaf-b" [ ]; c = mk "leaf-c" [ ];
  ab = mk "mid-ab" [ a b ]; bc = mk "mid-bc" [ b c ];
in mk "top" [ ab bc ]'

cd /
log=$(mktemp)
echo "master: $("$master" version "$nix")"
# The hook binary and the wrapper are bound into the master's root file system at the same paths.
NWH_MASTER_BIND="$(dirname "$hook"):$work" NIX_CONFIG="$("$tb" nix-conf)" \
  "$master" run "$nix" nix-build --no-out-link --max-jobs 0 \
  --option builders "$(cat /tmp/nwh-demo-machines)" --option build-hook "$work/hook" -E "$expr" 2> "$log" >/dev/null \
  || { cat "$log"; exit 1; }
echo "where each derivation ran:"
sed -n "s|^building '/nix/store/[a-z0-9]*-\(.*\)\.drv' on '\(.*\)'\.\.\.$|  \1 -> \2|p" "$log"
rm -f "$log"
