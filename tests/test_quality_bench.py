"""The quality table's arithmetic: the frontier along the vividness knob, and rows kept from an earlier table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semcolor.benchmarks.quality import frontier, kept_rows, row_frontiers


def test_frontier_interpolates_between_the_vividness_values_around_the_target() -> None:
    points = [(0.0, 0.4, 0.6), (0.5, 0.7, -0.2), (1.0, 1.0, -2.0)]
    f = frontier(points, target=0.6)
    assert f is not None
    assert f["vividness"] == pytest.approx(0.5 * (0.2 / 0.3))
    assert f["psnr_minus_gray"] == pytest.approx(0.6 + (0.2 / 0.3) * (-0.8))
    assert frontier(points, target=1.2) is None  # never reached


def test_each_row_has_a_frontier_per_test_time_augmentation() -> None:
    """Lines measured with flip averaging (older lines have no ``tta``: none) make a frontier of their own; bilinear
    lines take no part in either."""
    def line(v: float, colourful: float, gain: float, tta: str | None = None, refine: str = "guided") -> dict:
        detail = {"vividness": v, "refine": refine, **({} if tta is None else {"tta": tta})}
        label = f"bins v={v:g}" + ("" if refine == "guided" else f" {refine}") + ("" if tta in (None, "none")
                                                                                   else f" {tta}")
        return {"row": label, "colorfulness_ratio": colourful, "psnr_minus_gray": gain, "detail": detail}

    rows = [line(0.0, 0.4, 0.6), line(1.0, 1.0, -2.0), line(0.5, 0.6, 9.0, refine="bilinear"),
            line(0.0, 0.5, 0.8, "flip"), line(1.0, 0.7, -0.2, "flip")]
    got = row_frontiers(rows)
    assert set(got) == {"bins", "bins flip"}
    assert got["bins"]["psnr_minus_gray"] == pytest.approx(0.6 + (0.2 / 0.6) * -2.6)
    assert got["bins flip"]["vividness"] == pytest.approx(0.5) and got["bins flip"]["psnr_minus_gray"] == \
        pytest.approx(0.3)


def _table(out: Path, protocol: dict, names: list[str]) -> None:
    rows = [{"row": n, "miou": 0.5, "detail": {}} for n in names]
    (out / "quality.json").write_text(json.dumps({"protocol": protocol, "rows": rows}))


def test_rows_not_rerun_are_kept_only_from_a_table_of_the_same_protocol(tmp_path: Path) -> None:
    protocol = {"epochs": 44, "size": 96}
    assert kept_rows(str(tmp_path), protocol, ["bins"]) == []  # no earlier table
    _table(tmp_path, protocol, ["regression", "regression bilinear", "bins v=0", "bins v=0.45 bilinear"])
    kept = kept_rows(str(tmp_path), protocol, ["bins"])
    assert [r["row"] for r in kept] == ["regression", "regression bilinear"]
    assert kept_rows(str(tmp_path), {**protocol, "epochs": 20}, ["bins"]) == []


def test_a_trained_run_is_reused_only_for_the_same_training(tmp_path: Path) -> None:
    """`--work` kept from an earlier table: a row's run is reused when it trained what the row asks (name and
    storage aside), not when the protocol changed (here the batch size)."""
    import torch

    from semcolor.benchmarks.quality import ROWS, _trained_run
    from semcolor.model import checkpoint
    from semcolor.model.config import ModelConfig
    from semcolor.model.network import build_model
    from semcolor.train.config import TrainConfig

    row = ROWS[0]
    trained = TrainConfig(images="i", masks="m", size=32, batch_size=32, name="quality-bins-20260101-000000")
    run = tmp_path / "runs" / trained.name
    torch.manual_seed(0)
    config = ModelConfig(input_size=32)
    checkpoint.save(build_model(config), config, str(run / "best"),
                    extra={"epoch": 3, "train_config": trained.to_dict()})
    (run / "metrics.jsonl").write_text(json.dumps({"train_time_s": 60.0, "val_time_s": 30.0}) + "\n")
    same = TrainConfig(**{**trained.to_dict(), "name": "another", "storage": "elsewhere"})
    found = _trained_run(str(tmp_path), row, same)
    assert found is not None and found[1] == 3 and found[2] == pytest.approx(1.5)
    assert _trained_run(str(tmp_path), row, TrainConfig(**{**trained.to_dict(), "batch_size": 16})) is None


def test_an_unfinished_run_is_resumed_by_name_only_for_the_same_training(tmp_path: Path) -> None:
    """A row's run stopped midway (epoch checkpoints, no best) is resumed under its own name when it trains what the
    row asks; a finished run, another row's run or another protocol's are not."""
    import torch

    from semcolor.benchmarks.quality import ROWS, _unfinished_run
    from semcolor.model import checkpoint
    from semcolor.model.config import ModelConfig
    from semcolor.model.network import build_model
    from semcolor.train.config import TrainConfig

    row, other = ROWS[0], ROWS[1]
    torch.manual_seed(0)
    config = ModelConfig(input_size=32)
    model = build_model(config)

    def stopped_run(name: str, batch_size: int, finished: bool = False) -> None:
        trained = TrainConfig(images="i", masks="m", size=32, batch_size=batch_size, name=name)
        for epoch in (0, 1):
            checkpoint.save(model, config, str(tmp_path / "runs" / name / f"checkpoint_epoch000{epoch}"),
                            extra={"epoch": epoch, "train_config": trained.to_dict()})
        if finished:
            checkpoint.save(model, config, str(tmp_path / "runs" / name / "best"),
                            extra={"epoch": 1, "train_config": trained.to_dict()})

    wanted = TrainConfig(images="i", masks="m", size=32, batch_size=32, name="new", storage="elsewhere")
    assert _unfinished_run(str(tmp_path), row, wanted) is None  # no runs folder yet
    stopped_run(f"quality-{row.name}-20260101-000000", 16)  # another batch size
    stopped_run(f"quality-{row.name}-20260102-000000", 32, finished=True)
    stopped_run(f"quality-{other.name}-20260103-000000", 32)
    assert _unfinished_run(str(tmp_path), row, wanted) is None
    stopped_run(f"quality-{row.name}-20260104-000000", 32)
    assert _unfinished_run(str(tmp_path), row, wanted) == f"quality-{row.name}-20260104-000000"


def _record_fits(tmp_path: Path, monkeypatch) -> list:
    """Replace Ray Train's ``fit`` by one that records each TrainConfig and leaves what a finished run leaves in
    its folder (epoch checkpoints, best/, metrics; config.json alone: reusing a run reads no weights)."""
    import types

    import semcolor.train.driver as driver
    from semcolor.model.config import ModelConfig

    calls = []

    def fake_fit(config):
        calls.append(config)
        run = tmp_path / "runs" / config.name
        for folder, epoch in (("checkpoint_epoch0000", 0), ("checkpoint_epoch0001", 1), ("best", 0)):
            (run / folder).mkdir(parents=True, exist_ok=True)  # (a later call may reuse a name)
            doc = {"format_version": 1, "model": ModelConfig(input_size=32).to_dict(),
                   "extra": {"epoch": epoch, "train_config": config.to_dict()}}
            (run / folder / "config.json").write_text(json.dumps(doc))
        history = [{"train_time_s": 30.0, "val_time_s": 0.0}] * 2
        (run / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        return types.SimpleNamespace(best_checkpoint=str(run / "best"), best_epoch=0, history=history,
                                     latest_checkpoint=str(run / "checkpoint_epoch0001"))

    monkeypatch.setattr(driver, "fit", fake_fit)
    return calls


def test_a_row_with_a_first_stage_starts_from_its_last_checkpoint_and_both_are_reused(tmp_path: Path,
                                                                                        monkeypatch) -> None:
    """color-pretrain: the first stage trains colour alone (no segmentation loss, photos in each batch) for its own
    epochs; the row then trains the protocol's epochs from that stage's latest checkpoint (--init). Run again with
    the same work folder, both runs are reused and nothing trains."""
    from semcolor.benchmarks.quality import EPOCHS_BY_SIZE, PRETRAIN_EPOCHS, ROWS, train_row

    calls = _record_fits(tmp_path, monkeypatch)
    row = next(r for r in ROWS if r.name == "color-pretrain")
    stage = row.pretrain
    assert next(r for r in ROWS if r.name == "color-pretrain-photos").pretrain is stage  # one run for both rows
    work = str(tmp_path)
    first = train_row(stage, "i", "m", work, None, "photos")
    (colour_only,) = calls
    assert colour_only.seg_weight == 0.0 and colour_only.mask_loss == "none" and colour_only.photos == ["photos"]
    assert colour_only.epochs == PRETRAIN_EPOCHS and colour_only.init is None
    assert colour_only.name.startswith("quality-color-pretrain.stage1-2")
    assert first.latest.endswith("checkpoint_epoch0001") and not first.reused
    trained = train_row(row, "i", "m", work, None, "photos", init=first.latest)
    joint = calls[1]
    assert joint.init == first.latest and joint.epochs == EPOCHS_BY_SIZE[row.size]
    assert joint.seg_weight == 1.0 and joint.mask_loss == "lovasz" and joint.photos is None
    assert not trained.reused

    again = train_row(stage, "i", "m", work, None, "photos")
    assert again.reused and again.latest == first.latest and again.minutes == pytest.approx(1.0)
    assert train_row(row, "i", "m", work, None, "photos", init=again.latest).reused
    assert len(calls) == 2
    elsewhere = tmp_path / "other-start"
    assert not train_row(row, "i", "m", work, None, "photos", init=str(elsewhere)).reused  # another start: trains
    assert len(calls) == 3
    # the rows that protect the colour path share the long stage and pass --shared-lr-scale to the joint training
    by_name = {r.name: r for r in ROWS}
    assert len(by_name) == len(ROWS)
    for name, scale in (("color-pretrain-long-frozen", 0.0), ("color-pretrain-long-slow", 0.1),
                        ("color-pretrain-long-mid", 0.3)):
        assert by_name[name].pretrain is by_name["color-pretrain-long"].pretrain
        train_row(by_name[name], "i", "m", work, None, "photos", init=first.latest)
        assert (calls[-1].shared_lr_scale, calls[-1].init, calls[-1].mask_loss) == (scale, first.latest, "lovasz")
    assert by_name["color-pretrain-long"].train.get("shared_lr_scale", 1.0) == 1.0


def test_the_bf16_rows_train_twice_the_epochs_in_bf16_and_channels_last(tmp_path: Path, monkeypatch) -> None:
    """bf16-2x, bf16-2x-128, bf16-2x-aug: the default row's training (mask at full resolution, Lovasz) under bf16
    autocast in channels_last, with twice the protocol's epochs at their size (the same minutes where the CPU has
    AMX); -aug with stronger crops and the gray input's jitter."""
    from semcolor.benchmarks.quality import EPOCHS_BY_SIZE, ROWS, train_row

    calls = _record_fits(tmp_path, monkeypatch)
    by_name = {r.name: r for r in ROWS}
    for name, size in (("bf16-2x", 96), ("bf16-2x-128", 128), ("bf16-2x-aug", 96)):
        train_row(by_name[name], "i", "m", str(tmp_path), None, None)
        config = calls[-1]
        assert (config.precision, config.channels_last, config.size) == ("bf16", True, size)
        assert config.epochs == 2 * EPOCHS_BY_SIZE[size] == by_name[name].epochs
        assert (config.seg_stride, config.mask_loss, config.init) == (1, "lovasz", None)
    assert (calls[0].crop_scale_min, calls[0].lightness_jitter) == (0.5, 0.0)  # bf16-2x: the default's crops
    assert (calls[-1].crop_scale_min, calls[-1].lightness_jitter) == (0.25, 0.2)  # bf16-2x-aug
    assert by_name["mask-full-lovasz"].train.get("precision", "auto") == "auto"


def test_the_pseudo_label_row_trains_its_teacher_draws_masks_with_it_and_trains_on_them(tmp_path: Path,
                                                                                        monkeypatch) -> None:
    """pseudo-labels: the teacher row trains (or is reused), its best model draws masks for the photos without masks
    (the bulk job with --masks and flip averaging), a manifest pairs each photo with its drawn mask (a photo whose
    drawing failed has none), and the row trains on it as train-only pairs for fewer epochs (the same steps). Run
    again with the same work folder, nothing is trained or drawn again."""
    import types

    from PIL import Image

    import semcolor.bulk.job as bulk_job
    import semcolor.evaluation.job as evaluation_job
    from semcolor.benchmarks import quality
    from semcolor.data.pairs import read_manifest

    calls = _record_fits(tmp_path, monkeypatch)
    photos = tmp_path / "photos"
    photos.mkdir()
    for key in ("a", "b", "c"):
        Image.new("RGB", (8, 6)).save(photos / f"{key}.jpg")
    drawn = []

    def fake_colorize(src, dst, checkpoint, **options):
        drawn.append((src, checkpoint, options))
        for key in ("a", "b"):  # c: an error record, no mask
            (Path(dst) / "masks").mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 6)).save(Path(dst) / "masks" / f"{key}.png")
        return types.SimpleNamespace(failed=1)

    def fake_evaluate(checkpoint, out, **kwargs):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "grid.png").write_bytes(b"png")
        return {"miou": 0.7, "pixel_accuracy": 0.9, "boundary_iou": 0.2, "psnr": 22.0, "ssim": 0.9,
                "colorfulness_ratio": 0.6, "gray_baseline": {"psnr": 21.8}, "counts": {}}

    monkeypatch.setattr(bulk_job, "colorize", fake_colorize)
    monkeypatch.setattr(evaluation_job, "evaluate", fake_evaluate)
    row = next(r for r in quality.ROWS if r.name == "pseudo-labels")
    assert row.teacher is next(r for r in quality.ROWS if r.name == "bf16-2x-128")
    out, work = tmp_path / "out", str(tmp_path)  # (the fake fit writes its runs under tmp_path/runs)
    out.mkdir()
    lines = quality.run_row(row, "i", "m", str(out), work, None, photos=str(photos))
    teacher, student = calls
    assert (teacher.size, teacher.epochs, teacher.train_pairs) == (128, 50, None)
    ((src, checkpoint, options),) = drawn
    assert (src, checkpoint) == (str(photos), str(Path(work) / "runs" / teacher.name / "best"))
    assert options["masks"] and options["tta"] == "flip"
    manifest = str(Path(work) / "pseudo-bf16-2x-128" / "pairs.parquet")
    assert student.train_pairs == [manifest] and student.photos is None
    pairs = read_manifest(manifest)
    assert pairs["key"].to_pylist() == ["a", "b"]
    assert pairs["image"].to_pylist() == [str(photos / "a.jpg"), str(photos / "b.jpg")]
    assert (student.size, student.precision, student.epochs) == (128, "bf16", round(50 * 776 / 1776))
    detail = lines[0]["detail"]
    assert detail["pseudo_labels"]["manifest"] == "WORK/pseudo-bf16-2x-128/pairs.parquet"
    assert (detail["pseudo_labels"]["pairs"], detail["pseudo_labels"]["failed"]) == (2, 1)
    assert detail["train_config"]["train_pairs"] == ["WORK/pseudo-bf16-2x-128/pairs.parquet"]
    again = quality.run_row(row, "i", "m", str(out), work, None, photos=str(photos))
    assert (len(calls), len(drawn)) == (2, 1)  # both trainings and the drawing reused
    drawing = detail["pseudo_labels"]["minutes"]
    assert again[0]["train_minutes"] == pytest.approx(1.0 + drawing + 1.0)  # teacher + drawing + row (metrics)
