"""What `bench colorize --s3` reports of a run beside its rates: the latency proxy's request log, requests per image,
and where the wall time went (before the first row, between the first and last, after the last)."""

from __future__ import annotations

import io
import uuid
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from semcolor.benchmarks._latency_proxy import read_request_log, request_line
from semcolor.benchmarks.colorize import _timeline, against_local, requests_per_image
from semcolor.core import storage
from semcolor.model import checkpoint
from semcolor.model.config import ModelConfig
from semcolor.model.network import build_model

PHOTOS = 12
"""Photos of the small S3 measures (two blocks of the pipeline's 8)."""


def test_request_line_is_the_method_and_target_of_a_request_start_only():
    start = b"PUT /b/out/x.png?partNumber=1 HTTP/1.1\r\nHost: h\r\n\r\nbody"
    assert request_line(start) == "PUT /b/out/x.png?partNumber=1"
    assert request_line(b"HEAD /b/in/a.jpg HTTP/1.1\r\n") == "HEAD /b/in/a.jpg"
    assert request_line(b"fff4\r\n\x00\x01binary body after a 100 Continue") is None
    assert request_line(b"") is None


def test_the_log_reads_back_and_counts_per_image(tmp_path):
    log = tmp_path / "requests.log"
    log.write_text("100.5000 HEAD /b/in/a.jpg\n100.5100 GET /b/in/a.jpg\n100.6000 PUT /b/out/a.png\n"
                   "100.7000 HEAD /b/in/c.jpg\n100.7100 GET /b/in/c.jpg\n100.8000 PUT /b/out/c.png\n"
                   "101.0000 PUT /b/out/_manifest/r-0.parquet\n\n")
    requests = read_request_log(str(log))
    assert requests[0] == (100.5, "HEAD", "/b/in/a.jpg") and len(requests) == 7
    assert requests_per_image(requests, 2) == {"GET": 1.0, "HEAD": 1.0, "PUT": 1.5}
    assert requests_per_image([], 0) == {}


def test_timeline_splits_the_call_at_the_first_and_last_row():
    """Called at 10 s, rows finished at 14, 15 and 20 s, returned at 23 s; the job counted 9 of those 13 s."""
    timeline = _timeline(10.0, np.array([14.0, 15.0, 20.0]), 23.0, 9.0)
    assert timeline == {"before_first_row": 4.0, "rows": 6.0, "after_last_row": 3.0, "outside_job": 4.0}
    assert sum(timeline[k] for k in ("before_first_row", "rows", "after_last_row")) == 23.0 - 10.0
    assert _timeline(10.0, np.array([]), 11.0, 1.0) == {}


def test_an_s3_pipeline_beside_local_with_as_many_actors():
    """of_local: (0.72 / bound) over (0.80 / bound); what the CPU allows: local's 0.20 CPU-s per image over the s3
    run's 0.23 plus its server's 0.02; the 1-actor local run is the one beside a 1-actor s3 run; no CPU, no ratio."""
    result = {"pipeline_local": {"actors": 2, "per_bound": 0.80, "cpu_s_per_image": 0.20},
              "pipeline_local_1_actor": {"actors": 1, "per_bound": 0.50, "cpu_s_per_image": 0.30}}
    s3 = {"actors": 2, "per_bound": 0.72, "cpu_s_per_image": 0.23, "s3_server_cpu_s_per_image": 0.02}
    ratios = against_local(result, s3)
    assert ratios["of_local"] == pytest.approx(0.9) and ratios["cpu_allows_of_local"] == pytest.approx(0.8)
    one = against_local(result, {"actors": 1, "per_bound": 0.45, "cpu_s_per_image": 0.30})
    assert one == {"of_local": pytest.approx(0.9), "cpu_allows_of_local": pytest.approx(1.0)}
    assert against_local(result, {**s3, "cpu_s_per_image": None})["cpu_allows_of_local"] is None
    assert against_local(result, {**s3, "actors": 3}) == {"of_local": None, "cpu_allows_of_local": None}


@pytest.mark.ray
@pytest.mark.s3
def test_the_s3_measure_at_small_size_behind_the_latency_proxy(ray_local, s3_server, tmp_path, monkeypatch):
    """`bench colorize --s3`'s pipeline on 12 photos with 30 ms held per request (the direct S3 measure is the same
    pipeline without the proxy; its rates are the benchmark's, not a test's): what each row costs in round trips is
    asserted: one HEAD and one GET per source, one PUT per output, one PUT per block's record file, nothing else on
    the way."""
    from semcolor.benchmarks._latency_proxy import latency_proxy
    from semcolor.benchmarks.colorize import _pipeline

    torch.manual_seed(0)
    config = ModelConfig(arch="unet", input_size=64)
    ckpt = checkpoint.save(build_model(config), config, str(tmp_path / "model"))
    prefix = f"s3://{s3_server['bucket']}/bench-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(0)
    for i in range(PHOTOS):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (48 + i, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
        storage.write_bytes(f"{prefix}/src/p{i:02d}.jpg", buf.getvalue())
    # torch actors: the round trips do not depend on the engine, and no ONNX export (~10 s) is paid here
    log = str(tmp_path / "requests.log")
    with latency_proxy(int(s3_server["endpoint"].rsplit(":", 1)[1]), 0.03, log) as (endpoint, _):
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        held = _pipeline(f"{prefix}/src", f"{prefix}/held", ckpt, 64, 8, 2, 2, "torch")
    assert held["images"] == PHOTOS and held["failed"] == 0 and held["images_per_s"] > 0

    base = "/" + prefix[len("s3://"):]
    counts = Counter((method, target.split("?")[0].rsplit("/", 1)[0]) for _, method, target in read_request_log(log))
    assert counts[("HEAD", f"{base}/src")] == counts[("GET", f"{base}/src")] == PHOTOS
    assert counts[("PUT", f"{base}/held")] == PHOTOS
    # blocks of 8 and 4: a record file each, or one if Ray Data hands one merge task both blocks
    records = counts[("PUT", f"{base}/held/_manifest")]
    assert records in (1, 2)
    assert sum(n for (method, _), n in counts.items() if method == "PUT") == PHOTOS + records  # no folder markers
    assert not [key for key in counts if key[0] in ("POST", "DELETE")]  # no multipart upload, no compaction
    assert held["timeline_s"]["rows"] >= 0 and held["timeline_s"]["before_first_row"] > 0
