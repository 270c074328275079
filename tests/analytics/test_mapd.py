"""MAP-D: k-NN votes against a brute-force NumPy reference, streaming blocks, held-out accuracy, devices."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

import tdlog.analytics as analytics
from tdlog.analytics.probes import forward_fill, gpu_available
from tdlog.cli import main
from tdlog.recorder import Recorder

SUITE_LEVELS = {"clean": (2.0, -1.6), "corrupted": (2.0, -0.8), "random_labels": (2.5, 0.0)}  # start, slope
EPOCHS, PER_SUITE, REAL = 5, 30, 60


def write_probe_run(path, *, text_ids: bool = False, skip_epoch: int | None = None) -> dict[int, np.ndarray]:
    """Probes and real samples whose given per-sample loss follows a suite's trajectory plus noise;
    sample 3 misses epoch 2 and sample 5 is logged twice in epoch 1. Returns every logged loss by id.
    ``text_ids``: sample ``i`` is recorded as ``"s{i}"``; ``skip_epoch``: an epoch nobody is logged in."""

    def as_ids(values):
        return [f"s{v}" for v in np.asarray(values).tolist()] if text_ids else torch.as_tensor(np.asarray(values))

    rng = np.random.default_rng(0)
    suites = list(SUITE_LEVELS)
    probe_ids = np.arange(REAL, REAL + PER_SUITE * len(suites))
    probe_suite = np.repeat(suites, PER_SUITE)
    role = np.where(np.arange(len(probe_ids)) % PER_SUITE < 20, "reference", "heldout")
    real_suite = rng.choice(suites, REAL)
    suite_of = dict(zip(np.concatenate([np.arange(REAL), probe_ids]).tolist(),
                        np.concatenate([real_suite, probe_suite]).tolist(), strict=True))
    logged: dict[int, list] = {i: [[] for _ in range(EPOCHS)] for i in suite_of}
    last_logits: dict[int, np.ndarray] = {}
    with Recorder(path, num_classes=3) as rec:
        rec.register_samples(as_ids(np.arange(REAL)), torch.zeros(REAL, dtype=torch.long))
        rec.register_samples(as_ids(probe_ids), torch.zeros(len(probe_ids), dtype=torch.long),
                             probe=probe_suite.tolist(), probe_role=role.tolist())
        for epoch in range(EPOCHS):
            ids = [i for i in suite_of if not (i == 3 and epoch == 2)] + ([5] if epoch == 1 else [])
            start, slope = np.array([SUITE_LEVELS[suite_of[i]] for i in ids]).T
            loss = np.maximum(start + slope * epoch / EPOCHS + rng.normal(0, 0.15, len(ids)), 0.0)
            logits = torch.randn(len(ids), 3)
            if epoch == skip_epoch:
                continue
            rec.log(as_ids(ids), logits, torch.zeros(len(ids), dtype=torch.long),
                    loss=torch.tensor(loss, dtype=torch.float32), epoch=epoch)
            last_logits.update(zip(ids, logits.numpy().astype(np.float64), strict=True))
            for i, value in zip(ids, loss.astype(np.float32), strict=True):
                logged[i][epoch].append(value)
    trajectories = {}
    for i, per_epoch in logged.items():
        row = np.array([np.mean(v) if v else np.nan for v in per_epoch], dtype=np.float64)
        for e in range(1, EPOCHS):
            if np.isnan(row[e]):
                row[e] = row[e - 1]
        trajectories[i] = row
    return trajectories | {"_suite_of": suite_of, "_role": dict(zip(probe_ids.tolist(), role.tolist(), strict=True)),
                           "_last_logits": last_logits}


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("mapd") / "run"
    return path, write_probe_run(path)


def test_votes_match_brute_force_knn(probe_run) -> None:
    path, logged = probe_run
    suite_of, role = logged["_suite_of"], logged["_role"]
    reference = sorted(i for i, r in role.items() if r == "reference")
    with analytics.open_run(path) as run:
        frame = run.mapd(k=7, device="cpu").sort("sample_id")
    assert frame.columns == ["sample_id", "p_clean", "p_corrupted", "p_random_labels", "mapd_suite"]
    probes = np.stack([logged[i] for i in reference])
    for row in frame.iter_rows(named=True):
        distances = ((probes - logged[row["sample_id"]]) ** 2).sum(1)
        nearest = np.argsort(distances, kind="stable")[:7]
        votes = {s: np.mean([suite_of[reference[n]] == s for n in nearest]) for s in SUITE_LEVELS}
        assert [row[f"p_{s}"] for s in SUITE_LEVELS] == pytest.approx(list(votes.values()))
        assert row["mapd_suite"] == max(SUITE_LEVELS, key=lambda s: (votes[s], -list(SUITE_LEVELS).index(s)))


def test_corrected_labels_and_priority_match_numpy(probe_run) -> None:
    path, logged = probe_run
    suite_of, role = logged["_suite_of"], logged["_role"]
    reference = sorted(i for i, r in role.items() if r == "reference" and suite_of[i] in ("clean", "random_labels"))
    probes = np.stack([logged[i] for i in reference])
    with analytics.open_run(path) as run:
        corrected = run.corrected_labels(k=5, device="cpu")
        priority = run.training_priority(k=5, device="cpu")
    assert corrected["sample_id"].to_list() == list(range(REAL))  # real samples only
    assert priority["priority"].is_sorted(descending=True)
    priority_of = {row["sample_id"]: row for row in priority.iter_rows(named=True)}
    for row in corrected.iter_rows(named=True):
        i = row["sample_id"]
        nearest = np.argsort(((probes - logged[i]) ** 2).sum(1), kind="stable")[:5]
        p_clean = np.mean([suite_of[reference[n]] == "clean" for n in nearest])
        logits = logged["_last_logits"][i]
        predicted = int(np.argmax(logits))
        expected = np.zeros(3)
        expected[0] += p_clean  # every observed label is 0
        expected[predicted] += 1 - p_clean
        assert row["predicted"] == predicted
        assert (row["p_clean"], row["p_noisy"]) == (pytest.approx(p_clean), pytest.approx(1 - p_clean))
        np.testing.assert_allclose(row["soft_label"], expected, rtol=0, atol=1e-12)
        assert row["corrected_label"] == (0 if p_clean >= 0.5 else predicted)
        p_target = np.exp(logits[0]) / np.exp(logits).sum()
        # p_target comes from the recorder's float32 softmax: float32 rounding, relative 1e-6
        assert priority_of[i]["p_target"] == pytest.approx(p_target, rel=1e-6)
        assert priority_of[i]["priority"] == pytest.approx((p_clean + 1 - p_target) / 2, rel=1e-6)


def test_corrected_labels_need_both_suites(probe_run) -> None:
    path, _ = probe_run
    with analytics.open_run(path) as run, pytest.raises(ValueError, match="noisy_suite: no reference probes of suite "
                                                        "'mislabeled' with records; suites with probes: "):
        run.corrected_labels(k=5, noisy_suite="mislabeled")


def test_streaming_blocks_give_the_same_answer(probe_run) -> None:
    path, _ = probe_run
    with analytics.open_run(path) as run:
        one_block = run.mapd(k=5)
        small_blocks = run.mapd(k=5, block_values=7 * EPOCHS)  # 7 ids a block
    assert small_blocks.equals(one_block)


@pytest.mark.parametrize("skip_epoch", [None, 2])
def test_text_ids_stream_sorted_and_agree_with_integer_ids(tmp_path, skip_epoch) -> None:
    """Text ids take the sorted path, integer ids the id-range path: the same losses give the same votes,
    also when a whole epoch is missing."""
    path = tmp_path / "integer"
    write_probe_run(path, skip_epoch=skip_epoch)
    write_probe_run(tmp_path / "text", text_ids=True, skip_epoch=skip_epoch)
    with analytics.open_run(path) as run, analytics.open_run(tmp_path / "text") as text_run:
        by_integer = run.mapd(k=5)  # one block; sample 5's repeat sends it to the exact sorted read
        by_ranges = run.mapd(k=5, block_values=7 * EPOCHS)  # ranges of 7 ids, most written cell by cell
        by_text = text_run.mapd(k=5, block_values=8 * 7 * EPOCHS)  # sorted batches of 7 observations
    assert by_ranges.equals(by_integer)
    expected = by_integer.with_columns(pl.format("s{}", "sample_id").alias("sample_id")).sort("sample_id")
    assert by_text.sort("sample_id").equals(expected)


def test_heldout_probes_are_assigned_far_above_chance(probe_run) -> None:
    path, _ = probe_run
    with analytics.open_run(path) as run:
        confusion = run.mapd_accuracy(k=10)
        online = run.mapd(k=10, upto_epoch=1)
        assert run.mapd_accuracy(assigned=online).equals(run.mapd_accuracy(k=10, epochs=range(0, 2)))
    assert confusion["probe"].to_list() == sorted(SUITE_LEVELS)
    assert confusion["accuracy"].min() > 0.8  # chance is 1/3
    assert online.height == REAL + PER_SUITE * len(SUITE_LEVELS)


def test_forward_fill_takes_the_previous_epoch_and_leading_from_first() -> None:
    matrix = np.array([[np.nan, 1.0, np.nan, 3.0], [4.0, np.nan, np.nan, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(forward_fill(matrix), [[1.0, 1.0, 1.0, 3.0], [4.0, 4.0, 4.0, 4.0]])


def test_bad_mapd_arguments_are_clear_errors(probe_run, small_run) -> None:
    path, _ = probe_run
    with analytics.open_run(path) as run:
        with pytest.raises(ValueError, match="k: expected at most the number of reference probes"):
            run.mapd(k=1000)
        with pytest.raises(ValueError, match="device: expected 'auto', 'cpu' or 'cuda', got 'tpu'"):
            run.mapd(device="tpu")
        with pytest.raises(ValueError, match="epochs: no recorded epochs"):
            run.mapd(epochs=range(50, 60))
        if not gpu_available():
            with pytest.raises(ValueError, match="device: 'cuda' asked for"):
                run.mapd(device="cuda")
    with analytics.open_run(small_run[0]) as run, pytest.raises(ValueError, match="reference probes"):
        run.mapd()


def test_cli_mapd_writes_the_api_result(probe_run, tmp_path) -> None:
    path, _ = probe_run
    assert main(["mapd", str(path), "--k", "5", "--out", str(tmp_path / "mapd.parquet")]) == 0
    with analytics.open_run(path) as run:
        assert pl.read_parquet(tmp_path / "mapd.parquet").equals(run.mapd(k=5))
    assert main(["mapd", str(path), "--k", "5000", "--out", str(tmp_path / "x.parquet")]) == 1


def test_cli_mapd_corrected_labels_priority_and_score_columns(probe_run, tmp_path, capsys) -> None:
    path, _ = probe_run
    corrected, priority, scores = tmp_path / "soft.parquet", tmp_path / "priority.csv", tmp_path / "scores.parquet"
    assert main(["mapd", str(path), "--k", "5", "--corrected-labels", str(corrected), "--priority", str(priority)]) == 0
    assert main(["score", str(path), "--out", str(scores)]) == 0
    with analytics.open_run(path) as run:
        assert pl.read_parquet(corrected).equals(run.corrected_labels(k=5))
        assert pl.read_csv(priority).equals(run.training_priority(k=5))
        expected = run.mapd(k=20)
    written = pl.read_parquet(scores)
    joined = written.select(expected.columns).join(expected, on="sample_id", suffix="_api")
    assert joined.height == expected.height and (joined["mapd_suite"] == joined["mapd_suite_api"]).all()
    assert (written["mapd_flagged"] == (written["mapd_suite"] == "random_labels")).all()
    assert main(["score", str(path), "--no-mapd", "--out", str(scores)]) == 0
    assert "mapd_suite" not in pl.read_parquet(scores).columns
    capsys.readouterr()
    assert main(["mapd", str(path), "--k", "5", "--corrected-labels", str(tmp_path / "soft.csv")]) == 1
    assert "--corrected-labels: CSV cannot hold the list columns ['soft_label']" in capsys.readouterr().err
    assert main(["mapd", str(path)]) == 1
    assert "expected at least one output file, got none" in capsys.readouterr().err


@pytest.mark.skipif(not gpu_available(), reason="needs FAISS with GPU support and a GPU")
def test_gpu_index_gives_the_cpu_answer(probe_run) -> None:
    path, _ = probe_run
    with analytics.open_run(path) as run:
        assert run.mapd(k=7, device="cuda").equals(run.mapd(k=7, device="cpu"))

