# Sourced by scripts and benchmarks: a private dockerd (Debian's docker.io) under a directory
# of the caller's, started as DESIGN.md says (no bridge, no iptables), with DOCKER_HOST set.
#
#   source scripts/dockerd.sh
#   start_dockerd "$work/dockerd"     # waits until the daemon answers
#   ...
#   stop_dockerd                      # also detaches the netns mount dockerd leaves behind

start_dockerd() {
  dockerd_dir=$1
  mkdir -p "$dockerd_dir"
  dockerd --bridge=none --iptables=false --ip-masq=false --host "unix://$dockerd_dir/sock" \
    --data-root "$dockerd_dir/data" --exec-root "$dockerd_dir/exec" --pidfile "$dockerd_dir/pid" \
    >"$dockerd_dir/log" 2>&1 &
  dockerd_pid=$!
  export DOCKER_HOST=unix://$dockerd_dir/sock
  for _ in $(seq 150); do /usr/bin/docker version >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "dockerd did not start; see $dockerd_dir/log" >&2
  return 1
}

stop_dockerd() {
  [[ -n ${dockerd_pid:-} ]] || return 0
  kill "$dockerd_pid" 2>/dev/null; wait "$dockerd_pid" 2>/dev/null || true
  grep -o " $dockerd_dir[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l || true
}
