"""``semcolor train --train-pairs``: pairs that only train (e.g. pseudo-labels drawn by a trained model), never in
the validation split; errors name the input (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from semcolor.data.pairs import (PAIR_SCHEMA, is_validation, load_train_only_pairs, split_for_training, split_pairs,
                                 write_manifest)
from semcolor.train.config import TrainConfig


def _manifest(path: Path, keys: list[str]) -> str:
    """A manifest of ``keys`` (relative image and mask paths, resolved against its folder when read)."""
    write_manifest(pa.table({"key": keys, "image": [f"images/{k}.jpg" for k in keys],
                             "mask": [f"masks/{k}.png" for k in keys]}, schema=PAIR_SCHEMA), str(path))
    return str(path)


def _main_pairs(n: int) -> pa.Table:
    keys = [f"{i:04d}" for i in range(n)]
    return pa.table({"key": keys, "image": [f"/d/{k}.jpg" for k in keys], "mask": [f"/d/{k}.png" for k in keys]},
                    schema=PAIR_SCHEMA)


def test_train_only_pairs_join_the_training_side_and_leave_validation_as_it_was(tmp_path):
    main = _main_pairs(60)
    pseudo = _manifest(tmp_path / "pseudo.parquet", [f"{i:04d}" for i in range(20)])  # keys like the main ones
    more = _manifest(tmp_path / "more.csv", ["x", "y"])
    train, val, extra = split_for_training(main, 0.2, [pseudo, more], seed=3)
    train_main, val_main = split_pairs(main, 0.2, seed=0)
    assert val.equals(val_main)  # the validation split is the main pairs' whatever joins the training side
    assert extra == 22 and train.num_rows == train_main.num_rows + 22
    keys = train["key"].to_pylist()
    assert sorted(k for k in keys if k.startswith("+1:")) == [f"+1:{i:04d}" for i in range(20)]
    assert sorted(k for k in keys if k.startswith("+2:")) == ["+2:x", "+2:y"]
    assert len(set(keys)) == len(keys)  # prefixed: unique beside the main pairs' keys
    assert not any(is_validation(k, 0.2) for k in train_main["key"].to_pylist())
    # a seeded order that mixes both kinds (appended, the train-only pairs would all come last)
    assert keys != train_main["key"].to_pylist() + [k for k in keys if k.startswith("+")]
    assert split_for_training(main, 0.2, [pseudo, more], seed=3)[0].equals(train)
    row = {name: train[name][keys.index("+2:x")].as_py() for name in ("image", "mask")}
    assert row == {"image": str(tmp_path / "images" / "x.jpg"), "mask": str(tmp_path / "masks" / "x.png")}
    same, same_val, none = split_for_training(main, 0.2, None)
    assert (same.equals(train_main), same_val.equals(val_main), none) == (True, True, 0)


@pytest.mark.parametrize("make, match", [
    (lambda root: str(root / "pseudo"), r"--train-pairs .*pseudo: not a manifest \(.parquet or .csv\)"),
    (lambda root: str(root / "gone.parquet"), r"--train-pairs .*gone.parquet: no such manifest"),
    (lambda root: _manifest(root / "empty.parquet", []), r"--train-pairs .*empty.parquet: the manifest holds no pair"),
])
def test_a_bad_train_pairs_source_is_one_line_that_names_it(tmp_path, make, match):
    url = make(tmp_path)
    with pytest.raises(ValueError, match=match) as info:
        load_train_only_pairs([url])
    assert "\n" not in str(info.value)


def test_train_pairs_option_takes_one_or_more_manifests():
    assert TrainConfig(train_pairs="s3://b/pseudo.parquet").train_pairs == ["s3://b/pseudo.parquet"]
    assert TrainConfig(train_pairs=["a.csv", "b.parquet"]).train_pairs == ["a.csv", "b.parquet"]
    assert TrainConfig().train_pairs is None
    with pytest.raises(ValueError, match="--train-pairs needs a manifest URL"):
        TrainConfig(train_pairs=[""])
    config = TrainConfig.from_dict({k: v for k, v in TrainConfig().to_dict().items() if k != "train_pairs"})
    assert config.train_pairs is None  # a config saved before the option reads back without it
