"""Selection by training dynamics (``run.select``) and its signals, on runs written by the real recorder,
against NumPy / FAISS references computed from the records themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

import tdlog.analytics as analytics
from tdlog.analytics.allocation import balanced_counts, sample_keys
from tdlog.analytics.probes import gpu_available
from tdlog.recorder import Recorder

CLASSES = 4


def write_run(path: Path, *, samples: int = 600, epochs: int = 6, initial: bool = True, sources: int = 3,
              thresholds: int = 0, seed: int = 0, repeat_every: int = 0) -> dict:
    """Random logits whose target logit grows at one of four per-sample speeds; returns what was written."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (samples,), generator=generator)
    speed = torch.randint(0, 4, (samples,), generator=generator).float() * 0.6
    source = np.array([f"src{i}" for i in range(sources)])[np.random.default_rng(seed).integers(0, sources, samples)]
    targets = labels.clone()
    is_threshold = torch.zeros(samples, dtype=torch.bool)
    is_threshold[:thresholds] = True
    with Recorder(path, num_classes=CLASSES, with_threshold_class=thresholds > 0) as rec:
        rec.register_samples(torch.arange(samples), labels, targets=torch.where(is_threshold, CLASSES, labels),
                             source=source.tolist())
        for epoch in range(-1 if initial else 0, epochs):
            for rows in torch.randperm(samples, generator=generator).split(128):
                logits = torch.randn(len(rows), CLASSES + (thresholds > 0), generator=generator)
                logits[torch.arange(len(rows)), labels[rows]] += speed[rows] * max(epoch, 0)
                batch_targets = torch.where(is_threshold[rows], CLASSES, targets[rows]) if thresholds else targets[rows]
                split = "initial" if epoch < 0 else "train"
                rec.log(rows, logits, batch_targets, epoch=max(epoch, 0), split=split)
                if repeat_every and epoch >= 0:  # some samples seen twice in an epoch
                    again = rows[rows % repeat_every == 0]
                    rec.log(again, logits[rows % repeat_every == 0] * 0.5, batch_targets[rows % repeat_every == 0],
                            epoch=epoch, split=split)
    return {"source": source, "thresholds": thresholds}


def reference_matrix(run: analytics.Run, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """``(ids, [n, E] per-epoch mean losses)`` from the records, in NumPy (forward fill not needed: every
    sample is in every epoch here)."""
    rows = run.sql("SELECT sample_id, epoch, loss FROM records WHERE split = $split", {"split": split})
    ids, id_rows = np.unique(rows["sample_id"].to_numpy(), return_inverse=True)
    epochs, columns = np.unique(rows["epoch"].to_numpy(), return_inverse=True)
    sums = np.zeros((len(ids), len(epochs)))
    counts = np.zeros((len(ids), len(epochs)))
    np.add.at(sums, (id_rows, columns), rows["loss"].to_numpy())
    np.add.at(counts, (id_rows, columns), 1)
    return ids, (sums / counts).astype(np.float32)


def test_s2l_matches_a_faiss_reference_and_shares_the_budget_exactly(tmp_path) -> None:
    import faiss

    write_run(tmp_path / "run", thresholds=40, repeat_every=7)
    clusters, budget, seed = 8, 101, 5
    with analytics.open_run(tmp_path / "run") as run:
        chosen = run.select(budget, method="s2l", clusters=clusters, seed=seed)
        ids, matrix = reference_matrix(run)
    real = ids >= 40  # the threshold samples are never selected
    ids, matrix = ids[real], matrix[real]
    training = np.argsort(sample_keys(ids, seed, stream=1))[:256 * clusters]
    kmeans = faiss.Kmeans(matrix.shape[1], clusters, niter=20, seed=seed, min_points_per_centroid=1,
                          max_points_per_centroid=256)
    kmeans.train(np.ascontiguousarray(matrix[training]))
    distances = ((matrix[:, None, :] - kmeans.centroids[None]) ** 2).sum(-1)
    cluster = distances.argmin(1)
    assert chosen.height == budget
    assert chosen["sample_id"].is_unique().all() and chosen["sample_id"].min() >= 40
    assigned = dict(zip(ids.tolist(), cluster.tolist(), strict=True))
    assert [assigned[i] for i in chosen["sample_id"].to_list()] == chosen["cluster"].to_list()
    sizes = np.bincount(cluster, minlength=clusters)
    taken = np.bincount(chosen["cluster"].to_numpy(), minlength=clusters)
    whole = taken == sizes
    assert taken.sum() == budget and (taken[~whole].max() - taken[~whole].min() <= 1 if (~whole).any() else True)
    assert (taken[whole] <= taken[~whole].min()).all() if (~whole).any() else True
    keys = sample_keys(ids, seed)
    for c in range(clusters):  # inside a cluster: the lowest pick keys
        members = ids[cluster == c]
        expected = np.sort(members[np.argsort(keys[cluster == c])[:taken[c]]])
        np.testing.assert_array_equal(np.sort(chosen.filter(pl.col("cluster") == c)["sample_id"].to_numpy()),
                                      expected)


def test_streaming_twice_selects_what_one_pass_selects(tmp_path) -> None:
    write_run(tmp_path / "run")
    with analytics.open_run(tmp_path / "run") as run:
        held = run.select(0.2, method="s2l", clusters=6, seed=1)
        streamed = run.select(0.2, method="s2l", clusters=6, seed=1, block_values=600)  # blocks of 100 samples
    assert held.equals(streamed)


def test_balanced_counts_is_water_filling() -> None:
    sizes = np.array([3, 50, 10, 50, 1])
    counts = balanced_counts(sizes, 40)
    assert counts.tolist() == [3, 13, 10, 13, 1]  # 1 and 3 whole, 10 whole (< 36 // 3), then 26 in two
    assert counts.sum() == 40 and (counts <= sizes).all()
    open_groups = counts < sizes
    assert counts[open_groups].max() - counts[open_groups].min() <= 1
    assert (counts[~open_groups] <= counts[open_groups].min()).all()
    with pytest.raises(ValueError, match="budget: expected 0 to 114 samples, got 115"):
        balanced_counts(sizes, 115)


def test_sources_share_the_budget_equally_and_random_is_uniform_inside(tmp_path) -> None:
    written = write_run(tmp_path / "run", sources=3, samples=900)
    with analytics.open_run(tmp_path / "run") as run:
        chosen = run.select(300, method="random", source="source", seed=2)
    per_source = chosen.group_by("source").len().sort("source")["len"].to_list()
    sizes = np.unique(written["source"], return_counts=True)[1]
    assert per_source == balanced_counts(sizes, 300).tolist()
    keys = sample_keys(np.arange(900), 2)
    for name in np.unique(written["source"]):
        members = np.flatnonzero(written["source"] == name)
        taken = chosen.filter(pl.col("source") == name)["sample_id"].to_numpy()
        np.testing.assert_array_equal(np.sort(taken), np.sort(members[np.argsort(keys[members])[:len(taken)]]))


def test_loss_drop_and_learning_percentage_follow_their_definitions(tmp_path) -> None:
    # two classes, logits [0, z]: loss = log(1 + exp(-z)) for target 1, known in every pass
    samples, epochs = 50, 4
    z = np.linspace(-2, 3, samples)[:, None] * np.arange(-1, epochs)[None, :] * 0.7  # column 0: the initial pass
    with Recorder(tmp_path / "run", num_classes=2) as rec:
        rec.register_samples(torch.arange(samples), torch.ones(samples, dtype=torch.long))
        for column in range(epochs + 1):
            logits = torch.zeros(samples, 2)
            logits[:, 1] = torch.from_numpy(z[:, column]).float()
            rec.log(torch.arange(samples), logits, torch.ones(samples, dtype=torch.long), epoch=max(column - 1, 0),
                    split="initial" if column == 0 else "train")
    loss = np.log1p(np.exp(-z.astype(np.float32).astype(np.float64)))
    with analytics.open_run(tmp_path / "run") as run:
        drop = run.loss_drop()
        percentage = run.learning_percentage()
        scores = run.scores()
        chosen = run.select(10, method="loss_drop")
        late = run.select(10, method="learning_percentage")
    np.testing.assert_allclose(drop["loss_drop"].to_numpy(), loss[:, 0] - loss[:, -1], rtol=1e-5, atol=1e-6)
    perplexity = np.exp(loss)
    expected = (perplexity[:, 0] - perplexity[:, 2]) / (perplexity[:, 0] - perplexity[:, -1])
    np.testing.assert_allclose(percentage["learning_percentage"].to_numpy(), expected, rtol=1e-4)
    np.testing.assert_allclose(scores.sort("sample_id")["loss_drop"].to_numpy(), loss[:, 0] - loss[:, -1], rtol=1e-5,
                               atol=1e-6)
    assert set(chosen["sample_id"].to_list()) == set(np.argsort(loss[:, 0] - loss[:, -1])[:10].tolist())
    assert set(late["sample_id"].to_list()) == set(np.argsort(expected)[:10].tolist())


def test_loss_drop_without_an_initial_pass_starts_at_the_first_epoch(tmp_path) -> None:
    write_run(tmp_path / "run", initial=False)
    with analytics.open_run(tmp_path / "run") as run:
        drop = run.loss_drop()
        _, matrix = reference_matrix(run)
        with pytest.raises(ValueError, match="split: learning percentage needs the pre-training pass"):
            run.learning_percentage()
        with pytest.raises(ValueError, match="learning percentage needs the pre-training pass"):
            run.select(10, method="learning_percentage")
        assert "loss_drop" not in run.scores().columns
    np.testing.assert_allclose(drop["loss_drop"].to_numpy(), matrix[:, 0] - matrix[:, -1], rtol=1e-5, atol=1e-6)


def test_source_curves_match_numpy(tmp_path) -> None:
    written = write_run(tmp_path / "run", thresholds=30, repeat_every=5)
    with analytics.open_run(tmp_path / "run") as run:
        curves = run.source_curves()
        rows = run.sql("SELECT sample_id, epoch, loss, correct FROM records WHERE split = 'train'")
    per_epoch = rows.group_by("sample_id", "epoch").agg(pl.col("loss", "correct").cast(pl.Float64).mean())
    sources = pl.DataFrame({"sample_id": np.arange(len(written["source"])), "source": written["source"]})
    per_epoch = per_epoch.filter(pl.col("sample_id") >= 30).join(sources, on="sample_id")
    for (name, epoch), part in per_epoch.group_by("source", "epoch"):
        row = curves.filter((pl.col("source") == name) & (pl.col("epoch") == epoch))
        assert row["samples"].item() == part.height
        assert row["mean_loss"].item() == pytest.approx(float(np.mean(part["loss"].to_numpy())), rel=1e-9)
        assert row["accuracy"].item() == pytest.approx(float(np.mean(part["correct"].to_numpy())), rel=1e-9)
    assert curves.height == 3 * 6


def test_selection_is_an_sql_view_and_filters_a_dataset(tmp_path) -> None:
    import datasets

    write_run(tmp_path / "run")
    with analytics.open_run(tmp_path / "run") as run:
        chosen = run.select(60, method="random")
        seen = run.sql("SELECT count(*) AS n, min(sample_id) AS low FROM selection")
    assert seen.rows() == [(60, chosen["sample_id"].min())]
    dataset = datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(600)], "sample_id": list(range(600))})
    subset = analytics.filter_dataset(dataset, chosen)
    assert subset["sample_id"] == sorted(chosen["sample_id"].to_list())
    by_position = analytics.filter_dataset(dataset.remove_columns("sample_id"), chosen, id_column=None)
    assert by_position["text"] == [f"t{i}" for i in sorted(chosen["sample_id"].to_list())]
    with pytest.raises(ValueError, match="id_column: expected a column of the dataset"):
        analytics.filter_dataset(dataset, chosen, id_column="idx")


@pytest.mark.parametrize(("arguments", "error", "message"), [
    ({"budget": 10, "method": "kmeans"}, ValueError, "method: expected one of s2l, random, loss_drop"),
    ({"budget": 601}, ValueError, "budget: expected 0 to 600 samples"),
    ({"budget": 1.5}, ValueError, r"budget: expected a share in \(0, 1\], got 1.5"),
    ({"budget": True}, TypeError, "budget: expected an int count or a float share, got bool"),
    ({"budget": 10, "clusters": 0}, ValueError, "clusters: expected a positive int, got 0"),
    ({"budget": 10, "source": "domain"}, ValueError, "source: expected a column of the samples table"),
    ({"budget": 10, "device": "tpu"}, ValueError, "device: expected 'auto', 'cpu' or 'cuda', got 'tpu'"),
])
def test_bad_selection_arguments_are_named(tmp_path, arguments, error, message) -> None:
    write_run(tmp_path / "run")
    with analytics.open_run(tmp_path / "run") as run, pytest.raises(error, match=message):
        run.select(**arguments)


def test_cli_select_writes_the_selection(tmp_path, capsys) -> None:
    from tdlog.cli import main

    write_run(tmp_path / "run")
    assert main(["select", str(tmp_path / "run"), "--budget", "0.1", "--method", "s2l", "--clusters", "5",
                 "--source", "source", "--out", str(tmp_path / "chosen.parquet")]) == 0
    assert "wrote 60 samples selected by s2l" in capsys.readouterr().out
    written = pl.read_parquet(tmp_path / "chosen.parquet")
    with analytics.open_run(tmp_path / "run") as run:
        assert written.equals(run.select(0.1, method="s2l", clusters=5, source="source"))
    assert main(["select", str(tmp_path / "run"), "--budget", "25", "--method", "random",
                 "--out", str(tmp_path / "ids.txt")]) == 0
    assert len((tmp_path / "ids.txt").read_text().split()) == 25
    assert main(["select", str(tmp_path / "run"), "--budget", "25", "--out", str(tmp_path / "ids.xlsx")]) == 1
    assert "--out: expected a file name ending in one of ('.parquet', '.csv', '.json', '.txt')" in \
        capsys.readouterr().err


def test_static_report_draws_the_per_source_curves(tmp_path) -> None:
    from tdlog.analytics.report import write_report

    write_run(tmp_path / "run")
    with analytics.open_run(tmp_path / "run") as run:
        page = write_report(run, tmp_path / "report.html", static=True).read_text()
    section = page.split("<h2>Per data source</h2>")[1]
    assert section.startswith('<img alt="loss per source" src="data:image/png;base64,')


def test_text_ids_select_exactly_and_reproducibly(tmp_path) -> None:
    ids = [f"ex-{i:04d}" for i in range(300)]
    generator = torch.Generator().manual_seed(3)
    with Recorder(tmp_path / "run", num_classes=2) as rec:
        rec.register_samples(ids, torch.zeros(300, dtype=torch.long),
                             source=["a" if i < 100 else "b" for i in range(300)])
        for epoch in range(4):
            logits = torch.randn(300, 2, generator=generator)
            logits[:, 0] += torch.arange(300) % 3 * epoch
            rec.log(ids, logits, torch.zeros(300, dtype=torch.long), epoch=epoch)
    with analytics.open_run(tmp_path / "run") as run:
        chosen = run.select(30, method="s2l", clusters=3, source="source", seed=7)
        again = run.select(30, method="s2l", clusters=3, source="source", seed=7, block_values=40)
        draws = [run.select(30, method="random", seed=seed)["sample_id"] for seed in (8, 8, 9)]
    assert chosen.height == 30 and chosen.equals(again)  # two passes (blocks of 10 samples) = one
    assert chosen.group_by("source").len().sort("source")["len"].to_list() == [15, 15]
    assert set(chosen["sample_id"].to_list()) <= set(ids)
    assert draws[0].equals(draws[1]) and not draws[0].equals(draws[2])


def test_device_cuda_without_a_gpu_is_named_and_cpu_is_the_fallback(tmp_path) -> None:
    write_run(tmp_path / "run")
    with analytics.open_run(tmp_path / "run") as run:
        on_cpu = run.select(0.2, method="s2l", clusters=6, device="cpu")
        if not gpu_available():
            assert run.select(0.2, method="s2l", clusters=6).equals(on_cpu)  # "auto" falls back to the CPU
            with pytest.raises(ValueError, match="device: 'cuda' asked for, but FAISS has no GPU support"):
                run.select(0.2, method="s2l", clusters=6, device="cuda")


@pytest.mark.skipif(not gpu_available(), reason="needs FAISS with GPU support and a GPU")
def test_s2l_on_the_gpu_picks_the_same_budget_per_cluster(tmp_path) -> None:
    write_run(tmp_path / "run", samples=3000)
    with analytics.open_run(tmp_path / "run") as run:
        on_gpu = run.select(0.2, method="s2l", clusters=6, device="cuda")
        on_cpu = run.select(0.2, method="s2l", clusters=6, device="cpu")
    assert on_gpu.height == on_cpu.height == 600
    # GPU k-means sums in another order: clusters may be numbered or drawn differently, the shares may not
    assert sorted(on_gpu.group_by("cluster").len()["len"].to_list()) == \
        sorted(on_cpu.group_by("cluster").len()["len"].to_list())
