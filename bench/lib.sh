# Helpers shared by the registry benchmarks (registry.sh, registry-tls.sh, registry-s3.sh,
# mirror.sh, client.sh). Sourced, not run. Servers a script starts in the background go in
# PIDS; `stop_servers` stops exactly those, by PID (the EXIT trap of each script calls it).

PIDS=()

stop_servers() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

# Peers the script needs on PATH: a clear error naming the first one missing.
require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "missing peer: $tool" >&2; exit 1; }
    done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits up to 15 s for 127.0.0.1:PORT to accept connections.
wait_port() {
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "port $1 never opened" >&2
    exit 1
}

now() { date +%s.%N; }
seconds_of() { # command... -> wall seconds; the script stops if the command fails ($WORK holds its log)
    local t0 log=$WORK/command.log
    t0=$(now)
    "$@" >"$log" 2>&1 || { echo "failed: $*" >&2; cat "$log" >&2; exit 1; }
    python3 -c "print($(now) - $t0)"
}

# A process's CPU time so far (user + system, in clock ticks): on a machine shared with other
# work, wall-clock rates swing with the load, CPU spent per operation much less.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_per_sec=$(getconf CLK_TCK)
cpu_since() { python3 -c "print(($(cpu_ticks "$1") - $2) / $ticks_per_sec)"; } # pid start-ticks -> s

# wrk for WRK_SECONDS with WRK_CONNECTIONS on URL; prints "requests/s MiB/s" and fails on any
# error response, or when no request completed at all.
wrk_run() { # url [extra wrk args]
    local out
    out=$(wrk -t2 -c"$WRK_CONNECTIONS" -d"${WRK_SECONDS}s" "${@:2}" "$1")
    python3 - "$out" <<'EOF'
import re, sys
out = sys.argv[1]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
scale = {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1, "GB": 1024}[m.group(2)]
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
if errors:
    sys.exit(f"wrk saw {errors.group(1)} error responses:\n{out}")
if rps == 0:
    sys.exit(f"wrk completed no request; give it longer (WRK_SECONDS):\n{out}")
print(f"{rps:.1f} {float(m.group(1)) * scale:.1f}")
EOF
}

# Starts a registry (docker-registry or rregistry: both read this config) on a free port, with
# fresh filesystem storage in $WORK/NAME/data and its log in $WORK/NAME/log. EXTRA is more
# top-level YAML (a proxy: section). Sets PORT_<name> and PID_<name>.
start_fs_registry() { # name extra binary args...
    local name=$1 extra=$2 port
    shift 2
    port=$(free_port)
    rm -rf "${WORK:?}/$name"
    mkdir -p "$WORK/$name"
    cat > "$WORK/$name/config.yml" <<YAML
version: 0.1
log:
  level: info
http:
  addr: 127.0.0.1:$port
storage:
  filesystem:
    rootdirectory: $WORK/$name/data
  delete:
    enabled: true
$extra
YAML
    "$@" "$WORK/$name/config.yml" > "$WORK/$name/log" 2>&1 &
    PIDS+=($!)
    printf -v "PID_$name" '%s' "$!"
    wait_port "$port"
    printf -v "PORT_$name" '%s' "$port"
}
