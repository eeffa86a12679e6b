r"""`ray job submit` entrypoint: bulk colorization of an archive (Ray Data, resumable).

Thin on purpose: the arguments are exactly those of `semcolor colorize` (parsed by the one
argparse tree in semcolor.cli) and the work is done by the same handler (see jobs/_entry.py).

    ray job submit --address http://HEAD:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml -- \
        python jobs/colorize.py s3://BUCKET/scans/ s3://BUCKET/scans-color/ \
        --checkpoint s3://BUCKET/runs/unet-256/best --actors 2:8 --gpus-per-actor 1

`python jobs/colorize.py --help` lists every option.
"""

import sys

from _entry import run  # jobs/ is sys.path[0] when run as `python jobs/colorize.py`

if __name__ == "__main__":
    sys.exit(run("colorize"))
