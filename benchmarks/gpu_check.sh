#!/usr/bin/env bash
# Training throughput on one GPU at the prototype's settings, in one table: about 12 minutes for every row on
# one H200 (each RSSM row 1.5 to 2 minutes, most of it compiling; the VTA row about 4).
#
#   benchmarks/gpu_check.sh            # run every row, print the table
#   benchmarks/gpu_check.sh 0 4        # run rows 0 and 4 only (numbers as --dry-run prints them)
#   benchmarks/gpu_check.sh --dry-run  # print the numbered commands only (any machine)
#
# Settings of every row: pinpad (pinpad_eight, 64x64), size12m, bf16, batch 12 x 40, train ratio 320, one
# device, `python -m benchmarks.scale_throughput` timing `--seconds` of training after its compile. Rows:
# RSSM as it is; RSSM with the observe and imagine scans unrolled (--scan_unroll 5: 40 and 15 steps are whole
# multiples); RSSM with the official DreamerV3's XLA GPU flags (latency-hiding scheduler, while-loop double
# buffering, no CUDA graphs: the official's --xla_gpu_graph_level=0, a flag recent XLA no longer has, is
# --xla_gpu_enable_command_buffer= now; CUDA graphs are on by default); RSSM with 4 envs per agent; VTA alone
# and 8 VTA seeds in one process (vmap). A row that fails prints its last error line and the rest go on.
# The training state is always donated to each chunk, so donation has no row of its own.
# Targets: one RSSM agent >= 100 env steps/s; VTA <= 1.5x RSSM's cost; 8 seeds >= 0.8 x 8 one seed.
#
# Needs JAX with CUDA, flax, optax, chex, orbax-checkpoint, scipy and matplotlib (installed on the lent GPU
# machines) and distrax, tfp-nightly and gymnasium with the packages they need that are not there. Those travel
# as wheels in .whl/ (git-ignored), downloaded here for the GPU machine's Python 3.12 (the device tool's README
# lists the --platform tags to add when pip finds no match) and installed there into /tmp/site:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .whl distrax tfp-nightly gymnasium \
#       farama-notifications cloudpickle decorator gast dm-tree attrs wrapt six
#   (there) python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
#       && PYTHONPATH=/tmp/site:. benchmarks/gpu_check.sh
# The script first checks for every package it needs and names the missing ones.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
SELECTED=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    [0-4]) SELECTED+=("$arg") ;;
    *) echo "gpu_check.sh: unknown argument '$arg'; use --dry-run and/or row numbers 0 to 4" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
SECONDS_PER_ROW=${SECONDS_PER_ROW:-10}
COMMON="--configs pinpad size12m --precision bf16 --batch_size 12 --train_ratio 320 --devices 1 --seconds $SECONDS_PER_ROW"
OFFICIAL_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true --xla_gpu_enable_while_loop_double_buffering=true --xla_gpu_enable_command_buffer="
# label | extra environment | arguments
ROWS=(
  "rssm||--dynamics rssm --seeds 1"
  "rssm, scan unroll 5||--dynamics rssm --seeds 1 --scan_unroll 5"
  "rssm, official XLA GPU flags|XLA_FLAGS=$OFFICIAL_FLAGS|--dynamics rssm --seeds 1"
  "rssm, 4 envs per agent||--dynamics rssm --seeds 1 --envs 4"
  "vta||--dynamics vta --seeds 1 8"
)

command_of() {  # the row's command line, as it runs
  local env="$1" args="$2"
  echo "${env:+env \"$env\" }$PY -m benchmarks.scale_throughput $COMMON $args"
}

[ ${#SELECTED[@]} -gt 0 ] || SELECTED=("${!ROWS[@]}")

if [ "$DRY" = 1 ]; then
  for i in "${SELECTED[@]}"; do
    IFS='|' read -r label env args <<< "${ROWS[$i]}"
    echo "$i: $(command_of "$env" "$args")"
  done
  exit 0
fi

if ! missing=$("$PY" - <<'EOF'
import importlib.util
names = ["jax", "flax", "optax", "chex", "orbax.checkpoint", "scipy", "matplotlib", "distrax",
         "tensorflow_probability", "gymnasium"]
def found(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False
missing = [n for n in names if not found(n)]
print(" ".join(missing))
raise SystemExit(1 if missing else 0)
EOF
); then
  echo "gpu_check.sh: missing packages: $missing; carry them as wheels (see the header of $0)" >&2
  exit 2
fi
"$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" || {
  echo "gpu_check.sh: JAX sees no GPU; run this on a GPU machine (or pass --dry-run)" >&2; exit 2; }

LOG=$(mktemp -d)
"$PY" -c "import jax; print(jax.devices()[0].device_kind, '- jax', jax.__version__)"
echo "| row | agents | env steps/s (all agents) | ratio to one agent | first chunk s |"
echo "|---|---:|---:|---:|---:|"
for i in "${SELECTED[@]}"; do
  IFS='|' read -r label env args <<< "${ROWS[$i]}"
  env ${env:+"$env"} "$PY" -m benchmarks.scale_throughput $COMMON $args > "$LOG/$i.txt" 2> "$LOG/$i.err" || true
  if ! grep -q '^| [0-9]' "$LOG/$i.txt"; then
    echo "| $label | failed: $(tail -n 1 "$LOG/$i.err") | | | |"
    continue
  fi
  grep '^| [0-9]' "$LOG/$i.txt" | while IFS='|' read -r _ agents rate ratio first _; do
    echo "| $label |$agents |$rate |$ratio |$first |"
  done
done
