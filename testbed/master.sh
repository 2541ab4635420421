#!/bin/bash
# master.sh -- the test bed's master with another Nix: Debian's Nix of another suite in a root
# file system beside the host, made the root of a private mount namespace, so that
# nothing stays mounted when the command ends. The builders (testbed.sh) stay as they are.
#
# usage: master.sh root VERSION          make the root file system if missing; print its path
#        master.sh run VERSION CMD...    run CMD as root inside it (cwd /)
#        master.sh version VERSION       print the Nix version inside it
#        master.sh versions              the VERSIONs this script knows
#
# VERSION: 2.8 (the host's own Nix: no root file system, CMD runs as it is), 2.26 (Debian
# trixie), 2.34 (Debian sid, which moves: the Nix found there is printed by `version`) or lix
# (a root file system with Lix that someone built into $NWH_NIX_ROOTS/lix: Debian has none, so
# `root lix` only finds it, and says so when it is not there).
# Root file systems live in $NWH_NIX_ROOTS (default ~/.cache/nix-wasm-hook/nix-roots), outside
# any checkout, and are made once (debootstrap, ~2 minutes, from $NWH_DEBIAN_MIRROR, default
# http://deb.debian.org/debian) and reused. Inside, the host's /proc, /sys, /dev, /tmp,
# /run/nix-wasm-hook (the hook's SSH control sockets) and the test bed's state (its SSH key)
# are bound at the same paths, and so is every path listed in $NWH_MASTER_BIND
# (colon-separated), e.g. the directory of the hook binary. The environment is passed through
# unchanged. Run as root.
set -euo pipefail

ROOTS=${NWH_NIX_ROOTS:-$HOME/.cache/nix-wasm-hook/nix-roots}
MIRROR=${NWH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
TESTBED_STATE=/var/lib/nwh-testbed

log() { printf '[nwh-master] %s\n' "$*" >&2; }
die() { printf '[nwh-master] ERROR: %s\n' "$*" >&2; exit 1; }

suite_of() {
    case $1 in
        2.8) echo host ;;
        2.26) echo trixie ;;
        2.34) echo sid ;;
        lix) echo lix ;;
        *) die "unknown Nix version '$1' (known: 2.8 2.26 2.34 lix)" ;;
    esac
}

# Binds what a master needs into ROOT, then makes it the root of the mount namespace. Runs
# inside `unshare --mount`. ROOT becomes `/` by pivot_root, not chroot: Nix's sandbox (which a
# chroot store, `--store DIR`, always uses) makes `/` private, which needs `/` to be a mount,
# and creates a user namespace, which the kernel refuses to a chrooted process.
enter() {
    local root=$1 p; shift
    mount --bind "$root" "$root"
    mount --rbind /proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
    mount --rbind /tmp "$root/tmp"
    # nix-wasm-hook's SSH control sockets and keeper (root's are in /run/nix-wasm-hook): the
    # same inside as outside, where the tests look for the masters a hook started.
    [ -d /run/nix-wasm-hook ] || install -d -m 700 /run/nix-wasm-hook
    mkdir -p "$root/run/nix-wasm-hook"
    mount --rbind /run/nix-wasm-hook "$root/run/nix-wasm-hook"
    local binds=()
    [ -d "$TESTBED_STATE" ] && binds+=("$TESTBED_STATE")
    IFS=: read -r -a extra <<<"${NWH_MASTER_BIND:-}"
    binds+=("${extra[@]}")
    for p in "${binds[@]}"; do
        [ -n "$p" ] || continue
        [ -e "$p" ] || die "NWH_MASTER_BIND: $p does not exist"
        if [ -d "$p" ]; then mkdir -p "$root$p"; else mkdir -p "$root${p%/*}"; touch "$root$p"; fi
        mount --rbind "$p" "$root$p"
    done
    mkdir -p "$root/.nwh-old-root"
    cd "$root"
    pivot_root . .nwh-old-root
    cd /
    # The host's file system was needed only to get here (umount is the root's own).
    umount -l /.nwh-old-root
    exec "$@"
}

# Runs CMD in ROOT with the mounts, leaving nothing mounted afterwards.
in_root() {
    local root=$1; shift
    exec unshare --mount --propagation private -- "$0" __enter "$root" "$@"
}

make_root() {
    local version=$1 suite dir tmp
    suite=$(suite_of "$version")
    dir=$ROOTS/$suite
    mkdir -p "$ROOTS"
    exec 9>>"$ROOTS/.lock"
    flock -w 1200 9 || die "timed out waiting for $ROOTS/.lock"
    if [ -s "$dir/.nwh-nix-version" ]; then echo "$dir"; return 0; fi
    [ "$suite" != lix ] || die "no Lix root file system in $dir: Debian does not package Lix, so this \
script cannot make one; build Lix into a root file system there (docs/compatibility.md, \"Lix\"), \
then write its \`nix-store --version\` into $dir/.nwh-nix-version"
    command -v debootstrap >/dev/null || {
        log "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2 \
            || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2; } \
            || die "cannot install debootstrap"
    }
    tmp=$ROOTS/.making-$suite
    rm -rf --one-file-system "$tmp"
    log "making a Debian $suite root file system with Nix in $dir (once; about two minutes)"
    # debootstrap does not resolve the virtual package perl-dbdabi-94 that nix-bin's
    # libdbd-sqlite3-perl needs, so libdbi-perl is named.
    debootstrap --variant=minbase --include=nix-bin,libdbi-perl,openssh-client,ca-certificates \
        "$suite" "$tmp" "$MIRROR" > "$ROOTS/.making-$suite.log" 2>&1 \
        || { tail -n 20 "$ROOTS/.making-$suite.log" >&2; die "debootstrap $suite failed (log: $ROOTS/.making-$suite.log)"; }
    mkdir -p "$tmp/etc/nix"
    # Single-user root, no build users, no sandbox, no substituter: nothing leaves the machine.
    printf 'build-users-group =\nsandbox = false\nsubstituters =\n' > "$tmp/etc/nix/nix.conf"
    "$0" __probe "$tmp" > "$tmp/.nwh-nix-version.new" || die "Nix does not run in $tmp"
    mv "$tmp/.nwh-nix-version.new" "$tmp/.nwh-nix-version"
    mv "$tmp" "$dir"
    rm -f "$ROOTS/.making-$suite.log"
    log "$dir: $(cat "$dir/.nwh-nix-version")"
    echo "$dir"
}

case "${1:-}" in
    __enter) shift; enter "$@" ;;
    __probe) shift; in_root "$1" nix-store --version ;;
esac

[ "$(id -u)" = 0 ] || die "must run as root"
case "${1:-}" in
    root)
        [ "$(suite_of "${2:-}")" != host ] || { echo /; exit 0; }
        make_root "$2" ;;
    version)
        if [ "$(suite_of "${2:-}")" = host ]; then nix-store --version; else
            root=$(make_root "$2"); cat "$root/.nwh-nix-version"; fi ;;
    run)
        [ $# -ge 3 ] || die "usage: master.sh run VERSION CMD..."
        version=$2; shift 2
        if [ "$(suite_of "$version")" = host ]; then cd /; exec "$@"; fi
        root=$(make_root "$version")
        in_root "$root" "$@" ;;
    versions) echo 2.8 2.26 2.34 ;;
    *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2 ;;
esac
