r"""`ray job submit` entrypoint: training (Ray Train, data-parallel DDP).

Thin on purpose: the arguments are exactly those of `semcolor train` (parsed by the one
argparse tree in semcolor.cli), and the work is done by the same handler. Inside a Ray job the
job supervisor sets RAY_ADDRESS, and the CLI's `--address` default (None) makes `ray.init()`
join that cluster instead of starting a new local Ray.

    ray job submit --address http://HEAD:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml -- \
        python jobs/train.py --manifest s3://BUCKET/train.parquet \
        --workers 4 --gpus-per-worker 1 --storage s3://BUCKET/runs --name unet-256

`python jobs/train.py --help` lists every option.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:  # installed in the image, or on PYTHONPATH because the job's working_dir holds semcolor/
    import semcolor  # noqa: F401
except ModuleNotFoundError as exc:  # run from a checkout: put the repository root on sys.path
    if exc.name != "semcolor":
        raise
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semcolor.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
