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

# A process's CPU time so far (user + system, in clock ticks): on a machine shared with other
# work, wall-clock rates swing with the load, CPU spent per operation much less.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_per_sec=$(getconf CLK_TCK)
cpu_since() { python3 -c "print(($(cpu_ticks "$1") - $2) / $ticks_per_sec)"; } # pid start-ticks -> s
