r"""`ray job submit` entrypoint: training (Ray Train, data-parallel DDP).

Thin on purpose: the arguments are exactly those of `semcolor train` (parsed by the one
argparse tree in semcolor.cli) and the work is done by the same handler (see jobs/_entry.py).

    ray job submit --address http://HEAD:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml -- \
        python jobs/train.py --manifest s3://BUCKET/train.parquet \
        --workers 4 --gpus-per-worker 1 --storage s3://BUCKET/runs --name unet-256

`python jobs/train.py --help` lists every option.
"""

import sys

from _entry import run  # jobs/ is sys.path[0] when run as `python jobs/train.py`

if __name__ == "__main__":
    sys.exit(run("train"))
