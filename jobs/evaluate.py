r"""`ray job submit` entrypoint: evaluation of a checkpoint (metrics.json + grid.png).

Thin on purpose: the arguments are exactly those of `semcolor evaluate` (parsed by the one
argparse tree in semcolor.cli) and the work is done by the same handler (see jobs/_entry.py).

    ray job submit --address http://HEAD:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml -- \
        python jobs/evaluate.py --checkpoint s3://BUCKET/runs/unet-256/best \
        --manifest s3://BUCKET/val.parquet --out s3://BUCKET/eval/unet-256

`python jobs/evaluate.py --help` lists every option.
"""

import sys

from _entry import run  # jobs/ is sys.path[0] when run as `python jobs/evaluate.py`

if __name__ == "__main__":
    sys.exit(run("evaluate"))
