#!/bin/sh
# Launchers that let a stock rbee hive start llm-worker-rbee.
#
# rbee's hive runs the executable named after the worker id it makes up,
# ~/.local/bin/worker-<type>-<port>, after asking it `--build-info` (it wants `release`).
# No rbee build produces those names, so this puts one small launcher in the bin folder and
# links every name the hive may ask for to it. The launcher `exec`s the worker: the PID the
# hive put in its cgroup stays the worker's, and /proc/<pid>/cmdline keeps the hive's
# `--model` argument, which is how rbee's queen finds the worker for a model.
#
# Usage: install-launchers.sh [--bin-dir DIR] [--ports FIRST-LAST] [--types cpu,cuda]
#                             [--worker PATH]
#   --bin-dir  where the hive looks (default ~/.local/bin)
#   --ports    the hive's port range to cover (default 8080-8199; rbee assigns 8080 up)
#   --types    worker types to cover (default cpu,cuda)
#   --worker   the llm-worker-rbee executable (default: the one on PATH)
set -eu

bin_dir="${HOME}/.local/bin"
ports="8080-8199"
types="cpu,cuda"
worker=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir="$2"; shift 2 ;;
    --ports) ports="$2"; shift 2 ;;
    --types) types="$2"; shift 2 ;;
    --worker) worker="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "install-launchers.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$worker" ]; then
  worker=$(command -v llm-worker-rbee) || {
    echo "install-launchers.sh: llm-worker-rbee is not on PATH; pass --worker PATH" >&2
    exit 2
  }
fi
case "$worker" in /*) ;; *) worker="$(pwd)/$worker" ;; esac
[ -x "$worker" ] || { echo "install-launchers.sh: $worker is not executable" >&2; exit 2; }
first=${ports%-*}
last=${ports#*-}
case "$first$last" in *[!0-9]*|"") echo "install-launchers.sh: --ports FIRST-LAST" >&2; exit 2 ;; esac

mkdir -p "$bin_dir"
launcher="$bin_dir/llm-worker-rbee-launcher"
cat > "$launcher" <<LAUNCHER
#!/bin/sh
# Made by deploy/rbee/install-launchers.sh: rbee's hive starts this under a worker id's name.
# rbee's hive sends SIGKILL 2 s after SIGTERM: drain for 1 s, then end the rest cleanly;
# the way down after the drain took up to 0.4 s under load (docs/HIVE_PROTOCOL.md).
LLM_WORKER_DRAIN_TIMEOUT="\${LLM_WORKER_DRAIN_TIMEOUT:-1}"
export LLM_WORKER_DRAIN_TIMEOUT
exec "$worker" "\$@"
LAUNCHER
chmod 755 "$launcher"

count=0
for type in $(echo "$types" | tr ',' ' '); do
  port=$first
  while [ "$port" -le "$last" ]; do
    ln -sf llm-worker-rbee-launcher "$bin_dir/worker-$type-$port"
    port=$((port + 1))
    count=$((count + 1))
  done
done
echo "$count launchers in $bin_dir -> $worker"
