#!/usr/bin/env bash
# The main job: a real Nix build of a small graph, dispatched by nix-wasm-hook to local test
# builders (testbed/), printing where each derivation ran. Run as root on Debian 12:
#     examples/demo.sh [--nix VERSION] [--builder] [N_BUILDERS]   (default: the host's Nix, 3 builders)
# It builds the hook, brings the test bed up, builds, and always brings the test bed down.
# --nix 2.26 or 2.34 makes Debian's Nix of that version the master, in a root file system
# beside the host (testbed/master.sh; made once, about two minutes, then reused).
# --builder: no build-hook setting; Nix's own hook hands every build to nix-wasm-hook as one
# builder (ssh://localhost?remote-program=…), which dispatches to the test builders.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
nix=2.8
builder_mode=0
while [ $# -gt 0 ]; do
  case $1 in
    --nix) nix=${2:?--nix needs a version: 2.8, 2.26 or 2.34}; shift 2 ;;
    --builder) builder_mode=1; shift ;;
    *) break ;;
  esac
done
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
printf '#!/bin/sh\nexec %s --state-dir %s/state --machines @/tmp/nwh-demo-machines "$@"\n' "$hook" "$work" > "$work/builder"
chmod +x "$work/hook" "$work/builder"
cleanup() {
  local status=$?
  # Every step runs whatever the one before did (set -e would stop at the first master that
  # is gone already, and leave the builders up).
  set +e
  for s in "$work"/state/control/*.sock; do
    case $s in */warm.sock) continue ;; esac
    [ -S "$s" ] && ssh -S "$s" -O exit demo >/dev/null 2>&1
  done
  "$tb" down >/dev/null 2>&1
  control=$(readlink "$work/state/control" || true)
  [ -n "$control" ] && rm -rf "$control"
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
"$tb" up "$n" > /tmp/nwh-demo-machines 2>/dev/null
# The test bed's settings (no build users, no substituters) for every Nix command here, so that
# none warns about this machine's own nix.conf.
export NIX_CONFIG="$("$tb" nix-conf)"
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
# The hook binary and the wrappers are bound into the master's root file system at the same paths.
if [ $builder_mode = 1 ]; then
  # One line with four times the real slots: Nix never postpones, our builder queues.
  builders="ssh://localhost?remote-program=$work/builder $(uname -m)-linux - $(( n * 4 )) 1"
  echo "Nix's only builder: $builders"
  hook_args=()
else
  builders=$(cat /tmp/nwh-demo-machines)
  hook_args=(--option build-hook "$work/hook")
fi
out=$(NWH_MASTER_BIND="$(dirname "$hook"):$work" \
  "$master" run "$nix" nix-build --no-out-link --max-jobs 0 \
  --option builders "$builders" "${hook_args[@]}" -E "$expr" 2> "$log") \
  || { cat "$log"; exit 1; }
echo "where each derivation ran:"
# Every output records the hostname of the builder that made it (nwhtb-b<i> is 10.78.0.(10+i)).
root=$("$master" root "$nix")
drv=$("$master" run "$nix" nix-store --query --deriver "$out")
for p in $("$master" run "$nix" nix-store --query --requisites --include-outputs "$drv" | grep -v '\.drv$'); do
  i=$(sed 's/^nwhtb-b//' "$root$p/host")
  echo "  ${p#/nix/store/*-} -> ssh://root@10.78.0.$((10 + i))"
done | sort
rm -f "$log"
