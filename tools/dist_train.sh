#!/usr/bin/env bash
# Train on NPROC processes of this machine (one per GPU, or CPU processes with the gloo backend)
# through torchrun; more machines: set NNODES, NODE_RANK, MASTER_ADDR (and PORT) on each.
#   bash tools/dist_train.sh CONFIG NPROC [tools/train.py options]
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh CONFIG 8   # machine 0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh CONFIG 8   # machine 1
set -euo pipefail
if [ "$#" -lt 2 ]; then
    echo "usage: bash tools/dist_train.sh CONFIG NPROC [tools/train.py options]" >&2
    exit 2
fi
CONFIG=$1
NPROC=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PORT=${PORT:-29500}
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
exec python -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" \
    "$HERE/train.py" "$CONFIG" --launcher pytorch "$@"
