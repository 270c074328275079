"""Control examples: a seeded share of examples whose completion is really another example's, on each
dataset shape, disjoint between passes, registered as the run's threshold samples."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from tdlog.recorder import Recorder
from tdlog.recorder.controls import control_indices, plant_controls, register_examples

N = 200


def prompt_completion() -> Dataset:
    return Dataset.from_dict({"sample_id": list(range(N)), "prompt": [f"what is {i} + 1?" for i in range(N)],
                              "completion": [f" {i + 1}" for i in range(N)]})


def conversational() -> Dataset:
    return Dataset.from_dict({"sample_id": list(range(N)), "messages": [
        [{"role": "user", "content": f"spell {i}"}, {"role": "assistant", "content": f"{i:b}"}] for i in range(N)]})


def tokens() -> list[dict]:
    return [{"sample_id": i, "input_ids": [1, 2, 3 + i % 5, 50 + i, 51 + i],
             "labels": [-100, -100, -100, 50 + i, 51 + i]} for i in range(N)]


def test_indices_are_seeded_and_disjoint_between_passes() -> None:
    first, second = control_indices(N, share=0.1, seed=3), control_indices(N, share=0.1, seed=3, pass_index=1)
    assert len(first) == len(second) == 20 and not set(first) & set(second)
    assert np.array_equal(first, control_indices(N, share=0.1, seed=3))
    assert not np.array_equal(first, control_indices(N, share=0.1, seed=4))
    with pytest.raises(ValueError, match="pass_index: expected 0 <= pass_index < 10"):
        control_indices(N, share=0.1, pass_index=10)
    with pytest.raises(ValueError, match=r"share: expected a share in \(0, 1\)"):
        control_indices(N, share=0)


@pytest.mark.parametrize("make", [prompt_completion, conversational, tokens])
def test_a_control_holds_another_examples_completion_and_nothing_else_changes(make) -> None:
    original = make()
    planted = plant_controls(original, share=0.1, seed=0)
    rows = list(planted) if not isinstance(planted, list) else planted
    before = list(original) if not isinstance(original, list) else original
    flagged = [i for i, row in enumerate(rows) if row["is_control"]]
    assert flagged == control_indices(N, share=0.1, seed=0).tolist()

    def completion(row):
        if "completion" in row:
            return row["completion"]
        if "messages" in row:
            return row["messages"][-1]["content"]
        return [t for t in row["labels"] if t != -100]

    others = [completion(row) for row in before]
    for i, (old, new) in enumerate(zip(before, rows, strict=True)):
        if i in flagged:
            assert completion(new) != completion(old) and completion(new) in others  # another example's
            if "prompt" in old:
                assert new["prompt"] == old["prompt"]
            if "input_ids" in old:
                assert new["input_ids"][:3] == old["input_ids"][:3] and new["labels"][:3] == [-100] * 3
                assert new["input_ids"][3:] == new["labels"][3:]
            if "messages" in old:
                assert new["messages"][0] == old["messages"][0]
        else:
            assert {k: v for k, v in new.items() if k != "is_control"} == dict(old)
    second = plant_controls(make(), share=0.1, seed=0, pass_index=1)
    assert not set(flagged) & {i for i, row in enumerate(second) if row["is_control"]}


def test_a_corruption_of_ones_own_and_a_second_planting_refused() -> None:
    planted = plant_controls(prompt_completion(), share=0.05, seed=1,
                             corrupt=lambda example, rng: {**example, "completion": " off by one"})
    assert planted.filter(lambda row: row["is_control"])["completion"] == [" off by one"] * 10
    with pytest.raises(ValueError, match="already has a 'is_control' column"):
        plant_controls(planted)


def test_registered_controls_are_the_runs_threshold_samples(tmp_path) -> None:
    planted = plant_controls(conversational(), share=0.1, seed=0)
    with Recorder(tmp_path / "run", num_classes=64) as rec:
        register_examples(rec, planted)
    table = pq.read_table(next((tmp_path / "run" / "samples").glob("*.parquet")))
    assert table["is_threshold"].to_pylist() == planted["is_control"]
    assert set(table["label"].to_pylist()) == {-1}
    assert table["prompt"][0].as_py() == "user: spell 0"
    assert table["completion"][1].as_py() == planted[1]["messages"][-1]["content"]

