#!/usr/bin/env bash
# Evaluate a checkpoint on NPROC processes through torchrun: each process runs part of the test
# set and the metric is computed once over all of them (same numbers as one process).
#   bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [tools/test.py options]
# More machines: NNODES, NODE_RANK, MASTER_ADDR (and PORT) as for tools/dist_train.sh.
set -euo pipefail
if [ "$#" -lt 3 ]; then
    echo "usage: bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [tools/test.py options]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PORT=${PORT:-29500}
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
exec python -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" \
    "$HERE/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
