#!/bin/bash
# testbed.sh -- end-to-end test bed for nix-wasm-hook: real Nix remote builds
# over real SSH, all on this one machine.
#
# master    = this machine's own Nix (Debian nix-bin, single-user root, no
#             daemon). Its /etc/nix/nix.conf is never written: the settings
#             it needs are printed by `nix-conf` and passed by the caller
#             (NIX_CONFIG or --option), see testbed/README.md.
# builder i = (1..N) network namespace nwhtb-b<i> (veth on bridge nwhtb0,
#             address NET.(10+i), no default route) + mount namespace with
#             its own /nix, /etc/nix, /tmp, /root (bind mounts of
#             STATE/b<i>/...) + UTS namespace (hostname nwhtb-b<i>) + an
#             sshd on NET.(10+i):22 that accepts STATE/ssh/id_ed25519.
#
# usage: testbed.sh up N | down | status | machines [ssh|ssh-ng]
#                   | ssh I CMD | exec I CMD... | nix-conf | nix-build ARGS...
#                   | builder-stop I | builder-start I
#                   | builder-freeze I | builder-thaw I | link-down I | link-up I
# Run as root. stdin is never read. Logs go to stderr, results to stdout.
# Env for `up` (one value per builder, the last one repeats; later commands
# reuse what `up` used): TESTBED_SPEEDS, TESTBED_JOBS (comma lists of
# integers, default 1), TESTBED_FEATURES, TESTBED_MANDATORY (space-separated
# lists of machines-file feature fields like "kvm,big-parallel", default -).
set -euo pipefail
exec </dev/null
umask 022
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C
unset NIX_REMOTE NIX_CONF_DIR NIX_REMOTE_SYSTEMS NIX_SSHOPTS NIX_CONFIG || true

# Fixed names: deliberately different from any other test bed on the machine.
STATE=/var/lib/nwh-testbed
NET=10.78.0          # bridge is $NET.1/24, builder i is $NET.(10+i)
BR=nwhtb0            # bridge in the root network namespace
NS=nwhtb-b           # netns (and hostname) prefix: nwhtb-b1, nwhtb-b2, ...
VETH=nwhtb-v         # root-side veth prefix: nwhtb-v1, ...
MAXN=32
LOCK=/run/nwh-testbed.lock   # held by every command that changes something
SSH_KEY=$STATE/ssh/id_ed25519

# Settings the master's nix-build needs (single-user root, no sandbox, no
# substituter: nothing may leave the machine). Printed by `nix-conf`.
MASTER_CONF=(
    "build-users-group ="
    "sandbox = false"
    "substituters ="
    "builders-use-substitutes = false"
)

log() { printf '[nwh-testbed] %s\n' "$*" >&2; }
die() { printf '[nwh-testbed] ERROR: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
addr() { echo "$NET.$((10 + $1))"; }
bdir() { echo "$STATE/b$1"; }
valid_index() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$MAXN" ]; }
need_index() { valid_index "${1:-}" || die "bad builder index '${1:-}' (1..$MAXN)"; }

lock() {
    exec 9>>"$LOCK"
    flock -w 600 9 || die "timed out waiting for $LOCK"
}

# Runs in a subshell before exec'ing a long-lived process: close inherited fds
# (our lock, a test harness's pipes) so the daemon does not hold them open.
close_fds() {
    local f n
    for f in /proc/$BASHPID/fd/*; do
        n=${f##*/}
        [ "$n" -gt 2 ] 2>/dev/null && eval "exec $n>&-" 2>/dev/null || true
    done
}

# A process counts as alive unless it is gone or a zombie (orphans are reaped
# late by PID 1 on some machines).
alive() {
    local s
    s=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$s" ] && [ "$s" != Z ]
}

netns_exists() { [ -e "/run/netns/$1" ]; }

# ------------------------------------------------------------------ packages
ensure_packages() {
    local want=(nix-bin openssh-server openssh-client iproute2 util-linux) missing=() p
    for p in "${want[@]}"; do
        dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing with apt-get: ${missing[*]}"
    # Keep the package scripts from starting a system-wide sshd.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; made_policy=1
    fi
    local apt=(env DEBIAN_FRONTEND=noninteractive timeout 900 apt-get -y -q
               -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    local ok=0
    "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2 && ok=1
    if [ $ok = 0 ]; then
        log "apt-get install failed; apt-get update and retry"
        "${apt[@]}" update >&2 || true
        "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2 && ok=1
    fi
    [ $made_policy = 1 ] && rm -f "$policy"
    [ $ok = 1 ] || die "could not install ${missing[*]}"
}

# -------------------------------------------------------------- host pieces
# Mount points the builders need on the shared root filesystem. If we create
# them, we remember it and `down` removes them again (only if still empty).
ensure_mountpoints() {
    local d
    for d in /nix /etc/nix; do
        if [ ! -d "$d" ]; then
            mkdir -p "$d"
            echo "$d" >> "$STATE/created-dirs"
        fi
    done
}

ensure_keys() {
    mkdir -p "$STATE/ssh"
    chmod 700 "$STATE/ssh"
    if [ ! -s "$SSH_KEY" ] || [ ! -s "$SSH_KEY.pub" ]; then
        rm -f "$SSH_KEY" "$SSH_KEY.pub"
        ssh-keygen -q -t ed25519 -N '' -C nwh-testbed-client -f "$SSH_KEY"
    fi
    install -m 600 "$SSH_KEY.pub" "$STATE/ssh/authorized_keys"
}

no_ipv6() {  # no_ipv6 IFACE [NETNS]: keep our links IPv4-only (no RS/MLD traffic)
    local f=/proc/sys/net/ipv6/conf/$1/disable_ipv6
    if [ -n "${2:-}" ]; then
        ip netns exec "$2" sh -c "[ ! -w $f ] || echo 1 > $f" 2>/dev/null || true
    else
        [ ! -w "$f" ] || echo 1 > "$f" 2>/dev/null || true
    fi
}

ensure_bridge() {
    if ! ip link show dev "$BR" >/dev/null 2>&1; then
        if ip -o -4 addr show | awk '{print $4}' | grep -q "^${NET//./\\.}\."; then
            die "$NET.0/24 is already in use on this machine; refusing to add $BR"
        fi
        ip link add name "$BR" type bridge
        no_ipv6 "$BR"
        ip addr add "$NET.1/24" dev "$BR"
    fi
    ip link set dev "$BR" up
}

# ------------------------------------------------------------------ builders
# sshd pid of builder I, if the PID file names a live process whose command
# line is our sshd for that builder.
sshd_pid() {
    local f pid
    f=$(bdir "$1")/sshd.pid
    [ -s "$f" ] || return 1
    pid=$(<"$f")
    [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "sshd -D -e -f $(bdir "$1")/sshd_config" || return 1
    echo "$pid"
}

ns_pids() { netns_exists "$NS$1" && ip netns pids "$NS$1" 2>/dev/null || true; }

bssh() {  # bssh I ARGS...: ssh to builder I as root with the test bed key
    local i=$1; shift
    timeout "${BSSH_TIMEOUT:-60}" ssh -F "$STATE/ssh/config" "$NS$i" "$@"
}

healthy() { sshd_pid "$1" >/dev/null && banner_ok "$1"; }

write_builder_files() {
    local i=$1 d jobs mj
    d=$(bdir "$i")
    mkdir -p "$d/nix" "$d/etc-nix" "$d/tmp" "$d/home"
    chmod 1777 "$d/tmp"; chmod 700 "$d/home"
    jobs=$(pick "$TESTBED_JOBS" "$i"); mj=$(( jobs > 4 ? jobs : 4 ))
    cat > "$d/etc-nix/nix.conf" <<EOF
# /etc/nix/nix.conf inside test bed builder $NS$i (written by testbed.sh)
build-users-group =
sandbox = false
substituters =
builders =
max-jobs = $mj
EOF
    if [ ! -s "$d/ssh_host_ed25519_key" ] || [ ! -s "$d/ssh_host_ed25519_key.pub" ]; then
        rm -f "$d/ssh_host_ed25519_key" "$d/ssh_host_ed25519_key.pub"
        ssh-keygen -q -t ed25519 -N '' -C "$NS$i" -f "$d/ssh_host_ed25519_key"
    fi
    cat > "$d/sshd_config" <<EOF
ListenAddress $(addr "$i"):22
HostKey $d/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile $STATE/ssh/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
MaxStartups 100:30:200
MaxSessions 64
LogLevel INFO
EOF
}

setup_netns() {
    local i=$1 ns=$NS$1 v=$VETH$1
    netns_exists "$ns" || ip netns add "$ns"
    if ! ip link show dev "$v" >/dev/null 2>&1; then
        ip -n "$ns" link del eth0 2>/dev/null || true
        ip link add name "$v" type veth peer name eth0 netns "$ns"
    fi
    no_ipv6 "$v"; no_ipv6 eth0 "$ns"; no_ipv6 lo "$ns"
    ip link set dev "$v" master "$BR" up
    ip -n "$ns" link set dev lo up
    ip -n "$ns" addr replace "$(addr "$i")/24" dev eth0
    ip -n "$ns" link set dev eth0 up
    # no default route: the only reachable network is $NET.0/24
}

# Start builder I's sshd in the background; wait_builder checks it is up.
launch_builder() {
    local i=$1 d
    d=$(bdir "$i")
    write_builder_files "$i"
    setup_netns "$i"
    rm -f "$d/sshd.pid"
    # netns -> new mount + UTS namespace -> bind mounts -> init the store ->
    # exec sshd. Every step execs, so the PID written is sshd's.
    (
        close_fds
        exec setsid ip netns exec "$NS$i" unshare --mount --uts --propagation private -- \
            /bin/sh -ec '
                d=$1; name=$2
                mount --bind "$d/nix" /nix
                mount --bind "$d/etc-nix" /etc/nix
                mount --bind "$d/tmp" /tmp
                mount --bind "$d/home" /root
                mount -t tmpfs -o mode=755,size=4m nwhtb-run /run
                mkdir -m 755 /run/sshd
                /usr/sbin/sshd -t -f "$d/sshd_config"
                echo "$name" > /proc/sys/kernel/hostname
                nix-store --init
                echo $$ > "$d/sshd.pid"
                exec /usr/sbin/sshd -D -e -f "$d/sshd_config"
            ' nwhtb-builder "$d" "$NS$i"
    ) </dev/null >>"$d/sshd.log" 2>&1 &
    echo $! > "$d/launch.pid"
}

# sshd of builder I answers with an SSH banner (no ssh handshake: cheap).
banner_ok() {
    local b
    b=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/22" && head -c 4 <&3' _ "$(addr "$1")" 2>/dev/null) || return 1
    [ "$b" = SSH- ]
}

wait_builder() {
    local i=$1 k
    for k in $(seq 1 150); do
        if sshd_pid "$i" >/dev/null && banner_ok "$i"; then
            return 0
        fi
        # the launcher execs into sshd; if that pid is gone, the start failed
        alive "$(cat "$(bdir "$i")/launch.pid")" || break
        sleep 0.05
    done
    tail -n 20 "$(bdir "$i")/sshd.log" >&2 || true
    die "builder $NS$i did not come up (log: $(bdir "$i")/sshd.log)"
}

# Signal every process in builder I's network namespace (sshd, its sessions,
# remote builds) and wait until they are gone. Processes of the test bed are
# never looked up by name.
kill_builder_procs() {
    local i=$1 pid sig k pids
    if pid=$(sshd_pid "$i"); then kill -TERM "$pid" 2>/dev/null || true; fi
    for sig in TERM KILL; do
        pids=$(ns_pids "$i")
        [ -z "$pids" ] && return 0
        # shellcheck disable=SC2086
        kill -s "$sig" $pids 2>/dev/null || true
        # shellcheck disable=SC2086
        kill -s CONT $pids 2>/dev/null || true   # frozen processes must see TERM
        for k in $(seq 1 30); do
            pids=$(ns_pids "$i"); local live=""
            for pid in $pids; do alive "$pid" && live+=" $pid"; done
            [ -z "$live" ] && return 0
            sleep 0.1
        done
    done
    log "WARNING: still alive in $NS$i:$live"
    return 1
}

rm_tree() {  # refuse to delete anything that has a mount below it
    local d=$1
    [ -e "$d" ] || return 0
    if awk '{print $5}' /proc/self/mountinfo | grep -q "^$d\(/\|$\)"; then
        log "WARNING: not deleting $d: something is mounted below it"; return 1
    fi
    rm -rf --one-file-system "$d"
}

remove_builder() {
    local i=$1 rc=0 k
    kill_builder_procs "$i" || rc=1
    if netns_exists "$NS$i"; then ip netns del "$NS$i" || rc=1; fi
    for k in $(seq 1 30); do ip link show dev "$VETH$i" >/dev/null 2>&1 || break; sleep 0.1; done
    ip link del dev "$VETH$i" 2>/dev/null || true
    rm_tree "$(bdir "$i")" || rc=1
    return $rc
}

known_builders() {  # indices that have a state dir, a netns or a veth
    {
        for d in "$STATE"/b*; do [ -d "$d" ] && echo "${d##*/b}"; done
        ip netns list 2>/dev/null | awk '{print $1}' | sed -n "s/^$NS\([0-9][0-9]*\)\$/\1/p"
        ip -o link show 2>/dev/null | sed -n "s/^[0-9]*: $VETH\([0-9][0-9]*\)[@:].*/\1/p"
    } | grep -E '^[0-9]+$' | sort -n -u || true
}

configured_builders() {
    local i
    for i in $(known_builders); do [ -s "$(bdir "$i")/ssh_host_ed25519_key.pub" ] && echo "$i"; done
    return 0
}

# ------------------------------------------------------------- client files
pick() {  # pick LIST I [SEP]: I-th element (1-based) of a list, the last one repeats
    local -a a
    IFS=${3:-,} read -r -a a <<<"$1"
    [ ${#a[@]} -gt 0 ] || { echo "$1"; return; }
    if [ "$2" -le ${#a[@]} ]; then echo "${a[$(($2 - 1))]}"; else echo "${a[-1]}"; fi
}

# Machine-line parameters: the environment wins, else what `up` used (not for
# `up` itself), else the defaults.
load_params() {  # load_params [defaults]: with "defaults", ignore what `up` used
    local s=1 j=1 f=- m=-
    if [ "${1:-}" != defaults ] && [ -f "$STATE/params" ]; then
        s=$(sed -n 's/^SPEEDS=//p' "$STATE/params"); j=$(sed -n 's/^JOBS=//p' "$STATE/params")
        f=$(sed -n 's/^FEATURES=//p' "$STATE/params"); m=$(sed -n 's/^MANDATORY=//p' "$STATE/params")
    fi
    TESTBED_SPEEDS=${TESTBED_SPEEDS:-$s}
    TESTBED_JOBS=${TESTBED_JOBS:-$j}
    TESTBED_FEATURES=${TESTBED_FEATURES:-$f}
    TESTBED_MANDATORY=${TESTBED_MANDATORY:-$m}
}

check_params() {
    local i v
    for i in $(seq 1 "$1"); do
        v=$(pick "$TESTBED_SPEEDS" "$i"); [[ "$v" =~ ^[1-9][0-9]*$ ]] || die "TESTBED_SPEEDS: '$v' is not a positive integer (Nix 2.8 parses speedFactor as an integer)"
        v=$(pick "$TESTBED_JOBS" "$i"); [[ "$v" =~ ^[1-9][0-9]*$ ]] || die "TESTBED_JOBS: '$v' is not a positive integer"
        v=$(pick "$TESTBED_FEATURES" "$i" ' '); [[ "$v" =~ ^[^[:space:]]+$ ]] || die "TESTBED_FEATURES: empty features (use '-' for none)"
        v=$(pick "$TESTBED_MANDATORY" "$i" ' '); [[ "$v" =~ ^[^[:space:]]+$ ]] || die "TESTBED_MANDATORY: empty features (use '-' for none)"
    done
}

hostkey() { cut -d' ' -f1,2 "$(bdir "$1")/ssh_host_ed25519_key.pub"; }

machine_line() {  # machine_line I [ssh|ssh-ng]
    local i=$1 proto=${2:-ssh}
    printf '%s://root@%s %s %s %s %s %s %s %s\n' "$proto" "$(addr "$i")" "$(uname -m)-linux" \
        "$SSH_KEY" "$(pick "$TESTBED_JOBS" "$i")" "$(pick "$TESTBED_SPEEDS" "$i")" \
        "$(pick "$TESTBED_FEATURES" "$i" ' ')" "$(pick "$TESTBED_MANDATORY" "$i" ' ')" \
        "$(printf %s "$(hostkey "$i")" | base64 -w0)"
}

# ssh config: strict host key checking once the builders' keys are known.
write_ssh_config() {  # write_ssh_config strict|boot
    local i tmp
    tmp=$(mktemp "$STATE/ssh/.config.XXXXXX")
    if [ "$1" = strict ]; then
        : > "$STATE/ssh/known_hosts.new"
        for i in $(configured_builders); do
            echo "$(addr "$i") $(hostkey "$i")" >> "$STATE/ssh/known_hosts.new"
        done
        mv "$STATE/ssh/known_hosts.new" "$STATE/ssh/known_hosts"
    fi
    for i in $(seq 1 "$MAXN"); do printf 'Host %s%s\n    HostName %s\n' "$NS" "$i" "$(addr "$i")"; done > "$tmp"
    cat >> "$tmp" <<EOF
Host *
    User root
    IdentityFile $SSH_KEY
    IdentitiesOnly yes
    BatchMode yes
    ConnectTimeout 5
    LogLevel ERROR
    ForwardAgent no
    ForwardX11 no
EOF
    if [ "$1" = strict ]; then
        printf '    UserKnownHostsFile %s\n    GlobalKnownHostsFile /dev/null\n    StrictHostKeyChecking yes\n' "$STATE/ssh/known_hosts" >> "$tmp"
    else
        printf '    UserKnownHostsFile /dev/null\n    GlobalKnownHostsFile /dev/null\n    StrictHostKeyChecking no\n' >> "$tmp"
    fi
    chmod 644 "$tmp"; mv "$tmp" "$STATE/ssh/config"
}

write_machines_files() {
    local i
    for i in $(configured_builders); do machine_line "$i" ssh; done > "$STATE/machines.new"
    for i in $(configured_builders); do machine_line "$i" ssh-ng; done > "$STATE/machines.ssh-ng.new"
    mv "$STATE/machines.new" "$STATE/machines"
    mv "$STATE/machines.ssh-ng.new" "$STATE/machines.ssh-ng"
}

# Nix's own build-remote leaves /tmp/nix-<pid>-<n>/host-key behind when Nix
# SIGKILLs it. Remove such dirs created since our `up` whose process is gone and
# that hold nothing but a host-key for one of our addresses.
clean_nix_tmp() {
    [ -f "$STATE/.up-stamp" ] || return 0
    local dir pid f
    while IFS= read -r dir; do
        pid=${dir#/tmp/nix-}; pid=${pid%-*}
        alive "$pid" && continue
        for f in "$dir"/* "$dir"/.[!.]*; do
            [ -e "$f" ] || continue
            [ "${f##*/}" = host-key ] && grep -q "^${NET//./\\.}\." "$f" && continue
            continue 2
        done
        rm -rf "$dir"
    done < <(find /tmp -mindepth 1 -maxdepth 1 -type d -regextype posix-extended \
                 -regex '/tmp/nix-[0-9]+-[0-9]+' -newer "$STATE/.up-stamp" 2>/dev/null)
}

# ----------------------------------------------------------------- commands
cmd_up() {
    local n=${1:-} i t0 t
    valid_index "$n" || die "usage: testbed.sh up N   (1 <= N <= $MAXN)"
    t0=$(now_ms)
    lock
    ensure_packages
    mkdir -p "$STATE"; chmod 755 "$STATE"
    [ -e "$STATE/.up-stamp" ] || touch "$STATE/.up-stamp"
    load_params defaults; check_params "$n"
    ensure_mountpoints
    ensure_keys
    ensure_bridge
    write_ssh_config boot
    for i in $(known_builders); do
        if [ "$i" -gt "$n" ]; then log "removing builder $NS$i"; remove_builder "$i" || die "could not remove $NS$i"; fi
    done
    local started=()
    for i in $(seq 1 "$n"); do
        if healthy "$i"; then
            log "$NS$i already up at $(addr "$i")"
        else
            remove_builder "$i" || die "could not clean up $NS$i"
            launch_builder "$i"; started+=("$i")
        fi
    done
    for i in "${started[@]}"; do wait_builder "$i"; done
    printf 'SPEEDS=%s\nJOBS=%s\nFEATURES=%s\nMANDATORY=%s\n' "$TESTBED_SPEEDS" "$TESTBED_JOBS" \
        "$TESTBED_FEATURES" "$TESTBED_MANDATORY" > "$STATE/params"
    write_ssh_config strict
    write_machines_files
    # a real login to every builder, in parallel, with strict host key checking
    local pids=() bad=0
    for i in $(seq 1 "$n"); do
        ( t=$(BSSH_TIMEOUT=15 bssh "$i" 'cat /proc/sys/kernel/hostname') && [ "$t" = "$NS$i" ] \
            || { log "ssh check of $NS$i failed (got '${t:-}')"; exit 1; } ) &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || bad=1; done
    [ $bad = 0 ] || die "ssh to the builders failed (logs: $STATE/b<i>/sshd.log)"
    log "up: $n builder(s) in $(( $(now_ms) - t0 )) ms; machines: $STATE/machines (ssh-ng: $STATE/machines.ssh-ng)"
    cat "$STATE/machines"
}

cmd_down() {
    local t0 rc=0 i d left
    t0=$(now_ms)
    lock
    for i in $(known_builders); do
        log "stopping $NS$i"
        ( remove_builder "$i" ) || { log "WARNING: removing $NS$i failed"; rc=1; }
    done
    if ip link show dev "$BR" >/dev/null 2>&1; then ip link del dev "$BR" || rc=1; fi
    clean_nix_tmp
    if [ -f "$STATE/created-dirs" ]; then
        while IFS= read -r d; do
            case $d in /nix|/etc/nix) rmdir "$d" 2>/dev/null && log "removed empty $d (created by up)" || true ;; esac
        done < "$STATE/created-dirs"
    fi
    rm_tree "$STATE" || rc=1
    # What is left? (our netns, links, state dir, processes using our state dir)
    left=$(
        ip netns list 2>/dev/null | awk '{print $1}' | grep "^${NS}[0-9]" | sed 's/^/netns /' || true
        ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^($BR|${VETH}[0-9]+)\$" | sed 's/^/link /' || true
        [ ! -e "$STATE" ] || echo "dir $STATE"
        for p in $(grep -lsF "$STATE/" /proc/[0-9]*/cmdline | cut -d/ -f3); do
            alive "$p" && echo "process $p: $(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null)"
        done || true
    )
    if [ -n "$left" ]; then
        log "down: LEFT OVER:"; printf '%s\n' "$left" >&2; rc=1
    else
        log "down: nothing left (no builders, netns, links, processes or state) in $(( $(now_ms) - t0 )) ms"
    fi
    return $rc
}

cmd_status() {
    local i pid rc=0 any=0 info
    load_params
    echo "state   : $STATE ($([ -d "$STATE" ] && echo present || echo absent))"
    echo "bridge  : $(ip -br addr show dev "$BR" 2>/dev/null || echo absent)"
    for i in $(known_builders); do
        any=1
        if pid=$(sshd_pid "$i"); then
            if info=$(BSSH_TIMEOUT=10 bssh "$i" 'echo "$(cat /proc/sys/kernel/hostname) $(nix-store --version) store-paths=$(ls /nix/store | wc -l)"' 2>&1); then
                echo "builder $i: $(addr "$i") sshd pid $pid OK: $info"
            else
                echo "builder $i: $(addr "$i") sshd pid $pid BROKEN: ssh failed: $info"; rc=1
            fi
        else
            echo "builder $i: $(addr "$i") stopped (no sshd; 'builder-start $i' or 'up N')"
        fi
    done
    [ $any = 1 ] || { echo "builders: none"; return 1; }
    echo "machines:"; cmd_machines ssh
    return $rc
}

cmd_machines() {
    local proto=${1:-ssh} i
    case $proto in ssh|ssh-ng) ;; *) die "usage: testbed.sh machines [ssh|ssh-ng]" ;; esac
    load_params
    for i in $(configured_builders); do machine_line "$i" "$proto"; done
}

cmd_ssh() {
    need_index "${1:-}"; local i=$1; shift
    [ -s "$STATE/ssh/config" ] || die "test bed is not up"
    bssh "$i" "$@"
}

cmd_exec() {
    need_index "${1:-}"; local i=$1 pid; shift
    [ $# -gt 0 ] || die "usage: testbed.sh exec I CMD..."
    pid=$(sshd_pid "$i") || die "builder $NS$i is not running"
    exec nsenter --target "$pid" --mount --uts --net -- "$@"
}

cmd_builder_stop() {
    need_index "${1:-}"; lock
    [ -d "$(bdir "$1")" ] || die "no builder $NS$1"
    kill_builder_procs "$1" || die "could not stop $NS$1"
    rm -f "$(bdir "$1")/sshd.pid"
    log "$NS$1 stopped: connections to $(addr "$1"):22 are refused"
}

cmd_builder_start() {
    need_index "${1:-}"; lock
    [ -s "$(bdir "$1")/ssh_host_ed25519_key.pub" ] || die "no builder $NS$1 (use 'up N')"
    load_params
    ensure_bridge
    if healthy "$1"; then log "$NS$1 is already running"; return 0; fi
    kill_builder_procs "$1" || die "could not stop the rest of $NS$1"
    launch_builder "$1"; wait_builder "$1"
    log "$NS$1 started (sshd pid $(sshd_pid "$1"))"
}

cmd_builder_signal() {  # STOP|CONT I: freeze/thaw every process of builder I
    local sig=$1 pids; need_index "${2:-}"
    netns_exists "$NS$2" || die "no builder $NS$2"
    pids=$(ns_pids "$2")
    [ -n "$pids" ] || die "no processes in $NS$2"
    # shellcheck disable=SC2086
    kill -s "$sig" $pids
    log "$NS$2: SIG$sig sent to ${pids//$'\n'/ }"
}

cmd_link() {  # down|up I: builder I's own end of its link, inside its namespace
    local state=$1; need_index "${2:-}"
    netns_exists "$NS$2" || die "no builder $NS$2"
    ip netns exec "$NS$2" ip link set dev eth0 "$state"
    log "$NS$2: eth0 $state"
}

cmd_nix_conf() { printf '%s\n' "${MASTER_CONF[@]}"; }

cmd_nix_build() {  # nix-build from / with the master settings as --option
    local args=() l k v
    for l in "${MASTER_CONF[@]}"; do
        k=${l%%=*}; k=${k% }; v=${l#*=}; v=${v# }
        args+=(--option "$k" "$v")
    done
    cd /
    exec nix-build --no-out-link "${args[@]}" "$@"
}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

case "${1:-}" in help|-h|--help|"") usage; exit 0 ;; esac
[ "$(id -u)" = 0 ] || die "must run as root"
case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    machines) shift; cmd_machines "$@" ;;
    ssh) shift; cmd_ssh "$@" ;;
    exec) shift; cmd_exec "$@" ;;
    nix-conf) cmd_nix_conf ;;
    nix-build) shift; cmd_nix_build "$@" ;;
    builder-stop) shift; cmd_builder_stop "$@" ;;
    builder-start) shift; cmd_builder_start "$@" ;;
    builder-freeze) shift; cmd_builder_signal STOP "$@" ;;
    builder-thaw) shift; cmd_builder_signal CONT "$@" ;;
    link-down) shift; cmd_link down "$@" ;;
    link-up) shift; cmd_link up "$@" ;;
    help|-h|--help) usage ;;
    *) usage >&2; exit 2 ;;
esac
