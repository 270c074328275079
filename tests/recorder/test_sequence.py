"""Sequence models: token logits [B, T, V] become one row per example, equal to a float64 reference."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from polars.testing import assert_frame_equal

import tdlog.analytics as analytics
from tdlog.recorder import FORMAT_VERSION, Recorder
from tdlog.recorder.sequence import sequence_statistics
from tests.conftest import write_run
from tests.reference import record_statistics

B, T, V = 5, 9, 13


def token_batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=generator) * 3
    targets = torch.randint(0, V, (B, T), generator=generator)
    targets[0, 6:] = -100  # padding
    targets[1, :2] = -100  # a prompt that is not scored
    return logits, targets


def reference(logits: torch.Tensor, targets: torch.Tensor, *, shift: bool = False) -> dict[str, np.ndarray]:
    """Per example, the float64 mean of each token statistic over its counted tokens."""
    if shift:
        logits, targets = logits[:, :-1], targets[:, 1:]
    out: dict[str, list] = {}
    for example in range(len(logits)):
        counted = (targets[example] != -100).numpy()
        stats = record_statistics(logits[example].numpy()[counted], targets[example].numpy()[counted])
        for name in ("loss", "margin", "target_logit", "other_logit", "prob", "el2n", "correct"):
            out.setdefault(name, []).append(stats[name].mean())
        out.setdefault("tokens", []).append(counted.sum())
    return {name: np.array(values) for name, values in out.items()}


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("chunk_values", [1 << 24, 2 * V * B])  # one pass, and two tokens at a time
@pytest.mark.parametrize("scratch", [False, True])
def test_each_example_gets_the_mean_of_its_token_statistics(shift, chunk_values, scratch) -> None:
    logits, targets = token_batch()
    buffer = torch.full((B * T * V,), float("nan")) if scratch else None  # stale contents must not matter
    floats, ints = sequence_statistics(logits, targets, shift=shift, chunk_values=chunk_values, scratch=buffer)
    expected = reference(logits, targets, shift=shift)
    # float32 token statistics averaged in float64: within a few float32 ulps of the float64 reference
    for index, name in enumerate(("loss", "margin", "target_logit", "other_logit", "prob", "el2n")):
        np.testing.assert_allclose(floats[index].numpy(), expected[name], rtol=1e-6, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(floats[6].numpy(), expected["correct"].astype(np.float32))
    np.testing.assert_array_equal(ints[3].numpy(), expected["tokens"])
    assert (ints[:3] == -1).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits_give_the_statistics_of_their_float32_values(dtype) -> None:
    logits, targets = token_batch(2)
    half = logits.to(dtype)
    scratch = torch.empty(B * T * V)
    for buffer in (None, scratch):
        floats, ints = sequence_statistics(half, targets, shift=True, scratch=buffer)
        expected_floats, expected_ints = sequence_statistics(half.float(), targets, shift=True)
        torch.testing.assert_close(floats, expected_floats, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(ints, expected_ints)


def test_the_loss_is_what_a_language_model_reports_for_that_example_alone() -> None:
    logits, targets = token_batch(1)
    floats, _ = sequence_statistics(logits, targets, shift=True)
    for example in range(B):  # the Hugging Face causal-LM loss: shift, ignore -100, mean over tokens
        own = F.cross_entropy(logits[example, :-1], targets[example, 1:], ignore_index=-100)
        assert floats[0, example].item() == pytest.approx(own.item(), rel=1e-6)


def test_confident_and_hopeless_tokens_keep_their_precision() -> None:
    """A target at p = 1 - 1e-6 (cross-entropy 1e-6: no cancellation in 1 - p) and one 120 below the top
    logit (p underflows float32: the cross-entropy stays finite and exact)."""
    logits = torch.zeros(2, 1, V)
    logits[0, 0, 3] = 16.3  # log((V - 1) / 1e-6) ~ 16.3: p_3 ~ 1 - 1e-6
    logits[1, 0, 0] = 120.0
    targets = torch.tensor([[3], [5]])
    floats, _ = sequence_statistics(logits, targets)
    expected = reference(logits, targets)
    np.testing.assert_allclose(floats[0].numpy(), expected["loss"], rtol=1e-5)
    np.testing.assert_allclose(floats[5].numpy(), expected["el2n"], rtol=1e-5)
    assert floats[0, 1].item() == pytest.approx(120.0, rel=1e-6)


def test_an_example_without_counted_tokens_is_nan_with_zero_tokens() -> None:
    logits, targets = token_batch()
    targets[2] = -100
    floats, ints = sequence_statistics(logits, targets)
    assert torch.isnan(floats[:, 2]).all() and ints[3, 2] == 0 and torch.isfinite(floats[:, 3]).all()


def test_a_sequence_run_is_scored_per_example_by_every_engine_query(tmp_path) -> None:
    logits, targets = token_batch()
    with Recorder(tmp_path / "run", num_classes=V) as rec:
        for epoch in range(3):
            rec.log(torch.arange(B), logits + epoch, targets, epoch=epoch)
    table = pq.read_table(next((tmp_path / "run" / "records").rglob("*.parquet")))
    expected = reference(logits, targets)
    np.testing.assert_allclose(table["loss"].to_numpy(), expected["loss"], rtol=1e-6)
    np.testing.assert_array_equal(table["tokens"].to_numpy(), expected["tokens"])
    with analytics.open_run(tmp_path / "run") as run:
        scores = run.scores()
        assert scores.height == B
        np.testing.assert_allclose(scores.sort("sample_id")["correctness"].to_numpy(), expected["correct"],
                                   rtol=1e-6)  # correctness = token accuracy (the same logits every epoch)
        np.testing.assert_allclose(scores.sort("sample_id")["aul"].to_numpy(), 3 * expected["loss"], rtol=1e-6)


def test_bad_sequence_batches_name_the_argument(tmp_path) -> None:
    logits, targets = token_batch()
    with Recorder(tmp_path / "run", num_classes=V) as rec:
        with pytest.raises(ValueError, match=r"targets: expected shape \(5, 9\) to match logits"):
            rec.log(torch.arange(B), logits, targets[:, :4], epoch=0)
        with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 13\), got 13"):
            rec.log(torch.arange(B), logits, targets.masked_fill(targets == 3, V), epoch=0)
        with pytest.raises(ValueError, match=r"logits: expected token logits \[batch, tokens, 13\]"):
            rec.log(torch.arange(B), logits[:, :, :4], targets, epoch=0)
        with pytest.raises(ValueError, match=r"loss: expected per-sample losses of shape \(5,\)"):
            rec.log(torch.arange(B), logits, targets, loss=torch.ones(B, T), epoch=0)
        rec.log(torch.arange(B), logits, targets, epoch=0)  # the recorder goes on after refused batches
    with Recorder(tmp_path / "kept", num_classes=V, logits="full") as rec, \
            pytest.raises(ValueError, match=r"logits: keeping logits .* is for classification runs"):
        rec.log(torch.arange(B), logits, targets, epoch=0)
    assert pq.read_table(next((tmp_path / "run" / "records").rglob("*.parquet"))).num_rows == B


def test_a_version_1_run_reads_as_before(tmp_path) -> None:
    """Records files without ``correct`` and ``tokens`` (format version 1): the engine derives them."""
    write_run(tmp_path / "new", num_samples=24, epochs=4)
    old = shutil.copytree(tmp_path / "new", tmp_path / "old")
    for path in (old / "records").rglob("*.parquet"):
        pq.write_table(pq.read_table(path).drop_columns(["correct", "tokens"]), path)
    manifest = json.loads((old / "run.json").read_text())
    (old / "run.json").write_text(json.dumps(manifest | {"format_version": 1}))
    with analytics.open_run(old) as run_old, analytics.open_run(tmp_path / "new") as run_new:
        assert_frame_equal(run_old.scores(), run_new.scores())
        assert run_old.info()["format_version"] == 1
    # a current writer resuming it (the same rows again, a new attempt): files of both versions in one run
    write_run(old, num_samples=24, epochs=4)
    with analytics.open_run(old) as run_old, analytics.open_run(tmp_path / "new") as run_new:
        assert run_old.info()["format_version"] == FORMAT_VERSION
        assert run_old.sql("SELECT count(DISTINCT attempt) AS n FROM raw_records")["n"][0] == 2
        assert run_old.sql("SELECT count(*) AS n FROM records WHERE correct IS NULL OR tokens <> 1")["n"][0] == 0
        assert_frame_equal(run_old.scores(), run_new.scores())
