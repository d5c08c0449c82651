#!/usr/bin/env bash
# bstune's checks on a CUDA machine, in one go: the GPU-only tests (the fused optimizer, a real
# out-of-memory error, one GPU per worker), the CUDA-capable test modules with the GPU as the
# default device, the training step against hand-written loops, the fast paths (fused AdamW, bf16,
# torch.compile) and the wall time of `bstune optimize` on the LSTM example.
#
#     bash benchmarks/gpu_check.sh                  # every part; logs under $OUT (default: gpu_out/)
#     bash benchmarks/gpu_check.sh fast wide cli    # the parts named
#
# Where the machine's Python lacks bstune's dependencies, put their wheels in .whl/ first (they
# are installed into /tmp/site). Each part has its own time limit, so a slow part costs only
# itself; every log ends with its exit status. Figures: benchmarks/RESULTS_trainer.md.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="/tmp/site:$PWD" PYTHONDONTWRITEBYTECODE=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
    python3 -c "import torch, optuna, bstune; print('torch', torch.__version__, 'optuna', optuna.__version__, 'bstune', bstune.__version__, torch.cuda.get_device_name())"
    nproc
} 2>&1 | tee "$OUT/env.txt"

PARTS=" ${*:-gpu_tests cuda_tests step fast wide cli wall} "
part() {  # part NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    [[ $PARTS == *" $name "* ]] || return 0
    echo "=== $name ($(date +%T))"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "rc=$?" >> "$OUT/$name.log"
    tail -n "${TAIL:-14}" "$OUT/$name.log"
}

part gpu_tests 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests -rs
part cuda_tests 200 python3 -m pytest -q -p no:cacheprovider tests/test_train.py tests/test_memory.py tests/test_probe.py
part step 60 python3 benchmarks/trainer.py --part step --device cuda --repeats 5
TAIL=10 part fast 120 python3 benchmarks/trainer.py --part fast --device cuda --repeats 2
TAIL=10 part wide 120 python3 benchmarks/trainer.py --part fast --device cuda --repeats 2 --hidden 512
# The command end to end: --compile and --no-amp on the GPU, each trial's record printed.
cli() {
    local dir
    dir=$(mktemp -d)
    python3 -m bstune optimize examples/lstm.py --device cuda --time-budget 3 --n-trials 3 --pruner none \
        --storage "sqlite:///$dir/c.db" --study-name compiled --compile > "$dir/compiled.txt" 2>&1 || { cat "$dir/compiled.txt"; return 1; }
    python3 -m bstune optimize examples/lstm.py --device cuda --time-budget 3 --n-trials 3 --pruner none \
        --storage "sqlite:///$dir/c.db" --study-name fp32 --no-amp > "$dir/fp32.txt" 2>&1 || { cat "$dir/fp32.txt"; return 1; }
    python3 - "$dir/c.db" <<'PY'
import sys, optuna
for name in ("compiled", "fp32"):
    for t in optuna.load_study(study_name=name, storage=f"sqlite:///{sys.argv[1]}").trials:
        u = t.user_attrs
        print(name, t.number, t.state.name, {k: u.get(k) for k in ("batch_size", "compiled", "amp", "fused_optimizer", "train_s", "overhead_s", "samples_seen")}, t.value)
PY
}
export -f cli
TAIL=8 part cli 150 bash -c cli
TAIL=12 part wall 120 python3 benchmarks/trainer.py --part wall --device cuda --time-budget 5
echo "=== done ($(date +%T))"
