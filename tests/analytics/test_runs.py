"""``open_runs``: several runs of one dataset scored into one table, against a NumPy / scikit-learn / SciPy
reference computed from the logged logits; a sample missing from one run."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from scipy import stats
from sklearn.mixture import GaussianMixture

import tdlog.analytics as analytics
from tdlog.cli import main
from tdlog.recorder import Recorder, threshold_samples

N, C, E, RUNS = 90, 3, 6, 3
MISSING_ID, MISSING_RUN = 4, 2  # never logged in that run (a threshold sample of run 0, real in 1 and 2)


def write_runs(root) -> tuple[list, list[dict]]:
    """Three runs (seeds 0, 1, 2; threshold passes 0, 1, 2: disjoint) of the same 90 labels; ten samples
    seen twice in epoch 1 of every run (per-epoch means first). Returns the paths and what each logged."""
    labels = np.random.default_rng(99).integers(0, C, N)
    true_labels = labels.copy()
    labels[::6] = (labels[::6] + 1) % C
    paths, logged = [], []
    for run in range(RUNS):
        generator = torch.Generator().manual_seed(run)
        targets = threshold_samples(labels, C, seed=5, pass_index=run)
        ids = np.setdiff1d(np.arange(N), [MISSING_ID]) if run == MISSING_RUN else np.arange(N)
        rows: dict[str, list] = {"ids": [], "epoch": [], "logits": []}
        path = root / f"run{run}"
        with Recorder(path, num_classes=C, with_threshold_class=True) as rec:
            rec.register_samples(np.arange(N), labels, targets=targets, true_label=true_labels)
            for epoch in range(E):
                batches = [ids, ids[:10]] if epoch == 1 else [ids]
                for batch in batches:
                    logits = torch.randn(len(batch), C + 1, generator=generator) * 1.5
                    logits[torch.arange(len(batch)), torch.from_numpy(true_labels[batch])] += 0.6 * epoch
                    rec.log(torch.from_numpy(batch), logits, torch.from_numpy(targets[batch]), epoch=epoch)
                    rows["ids"].append(batch)
                    rows["epoch"].append(np.full(len(batch), epoch))
                    rows["logits"].append(logits.numpy())
        paths.append(path)
        logged.append({k: np.concatenate(v) for k, v in rows.items()} | {"targets": targets})
    return paths, logged


def reference_run(logged: dict, window: tuple[int, int], el2n_to: int) -> pl.DataFrame:
    """Per sample over the window, from the logits in float64: per-epoch means first, then the scores."""
    logits = logged["logits"].astype(np.float64)
    target = logged["targets"][logged["ids"]]
    rows = np.arange(len(target))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    others = logits.copy()
    others[rows, target] = -np.inf
    onehot = np.zeros_like(probs)
    onehot[rows, target] = 1
    observations = pl.DataFrame({
        "sample_id": logged["ids"], "epoch": logged["epoch"],
        "margin": logits[rows, target] - others.max(1), "loss": -np.log(probs[rows, target]),
        "prob": probs[rows, target], "correct": (probs.argmax(1) == target).astype(float),
        "el2n": np.linalg.norm(probs - onehot, axis=1),
    })
    per_epoch = observations.group_by("sample_id", "epoch").mean().sort("sample_id", "epoch")
    inside = per_epoch.filter(pl.col("epoch").is_between(window[0], window[1] - 1))
    learned = (pl.col("correct") > 0.5).cast(pl.Int64)
    scores = inside.group_by("sample_id").agg(
        aum=pl.col("margin").mean(), aul=pl.col("loss").sum(), confidence=pl.col("prob").mean(),
        variability=pl.col("prob").std(ddof=0), correctness=pl.col("correct").mean(),
        forgetting_events=pl.when(learned.max() == 1).then(
            ((learned.shift(1) == 1) & (learned == 0)).sum()).cast(pl.Float64))
    early = per_epoch.filter(pl.col("epoch") < el2n_to).group_by("sample_id").agg(el2n=pl.col("el2n").mean())
    return scores.join(early, on="sample_id", how="left").sort("sample_id")


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    return write_runs(tmp_path_factory.mktemp("runs"))


def test_combined_table_equals_the_reference(three_runs) -> None:
    paths, logged = three_runs
    with analytics.open_runs(paths) as runs:
        windows = runs.epoch_windows()
        table = runs.scores()
        run_counts = runs.sql("SELECT run, count(DISTINCT sample_id) AS n FROM records GROUP BY run ORDER BY run")
    assert run_counts["n"].to_list() == [N, N, N - 1]
    assert windows["chosen_by"].to_list() == ["threshold samples"] * RUNS
    per_run = []
    for run, window in enumerate(windows.iter_rows(named=True)):
        reference = reference_run(logged[run], (window["epoch_from"], window["epoch_to"]), window["el2n_to"])
        is_threshold = logged[run]["targets"] == C
        cutoff = np.percentile(reference.filter(pl.Series(is_threshold[reference["sample_id"]]))["aum"], 99)
        real = reference.filter(~pl.Series(is_threshold[reference["sample_id"]]))
        aul = real["aul"].to_numpy()[:, None]
        mixture = GaussianMixture(2, random_state=0).fit(aul)
        p_mislabeled = mixture.predict_proba(aul)[:, np.argmax(mixture.means_.ravel())]
        per_run.append(real.with_columns(p_mislabeled=pl.Series(p_mislabeled), cutoff=pl.lit(cutoff)))
    stacked = pl.concat(per_run)
    scores = ("aum", "aul", "confidence", "variability", "correctness", "forgetting_events", "el2n", "p_mislabeled")
    expected = stacked.group_by("sample_id").agg(
        runs=pl.len(), **{s: pl.col(s).mean() for s in scores}, **{f"{s}_sd": pl.col(s).std() for s in scores},
        aum_runs_flagged=(pl.col("aum") < pl.col("cutoff")).sum(),
        gmm_runs_flagged=(pl.col("p_mislabeled") > 0.5).sum(),
        margin=(pl.col("aum") - pl.col("cutoff")).mean()).sort("sample_id")
    assert table["sample_id"].to_list() == list(range(N))  # every sample real in at least one run
    assert table["runs"].to_list() == expected["runs"].to_list()
    real_and_logged = sum(logged[r]["targets"][MISSING_ID] != C and r != MISSING_RUN for r in range(RUNS))
    real = sum(logged[r]["targets"][MISSING_ID] != C for r in range(RUNS))
    assert table.filter(pl.col("sample_id") == MISSING_ID)["runs"][0] == real_and_logged == real - 1
    counts = expected["runs"].to_numpy()
    half = np.where(counts > 1, stats.t.ppf(0.975, np.maximum(counts - 1, 1)), np.nan) / np.sqrt(counts)
    # float32 stored statistics against float64 logits: 1e-5 relative (AUL sums 6 losses, the GMM fits them)
    for score in scores:
        np.testing.assert_allclose(table[score].to_numpy().astype(float), expected[score].to_numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=score)
        for side, sign in (("low", -1), ("high", 1)):
            bound = expected[score].to_numpy() + sign * half * expected[f"{score}_sd"].to_numpy()
            np.testing.assert_allclose(table[f"{score}_{side}"].to_numpy().astype(float), bound, rtol=1e-5,
                                       atol=1e-5, err_msg=f"{score}_{side}")
    assert table["aum_runs_flagged"].to_list() == expected["aum_runs_flagged"].to_list()
    assert table["gmm_runs_flagged"].to_list() == expected["gmm_runs_flagged"].to_list()
    assert table["aum_flagged"].to_list() == (expected["margin"] < 0).to_list()
    assert table["gmm_flagged"].to_list() == (expected["p_mislabeled"] > 0.5).to_list()
    assert table["flagged"].equals(table["aum_flagged"], check_names=False)
    assert table["true_label"].to_list() == analytics.open_run(paths[0]).sql(
        "SELECT true_label FROM samples ORDER BY sample_id")["true_label"].to_list()


def test_each_run_in_the_union_scores_as_when_opened_alone(three_runs) -> None:
    paths, _ = three_runs
    with analytics.open_runs(paths) as runs:
        per_run = runs.run_scores()
        for index, path in enumerate(paths):
            with analytics.open_run(path) as run:
                alone = run.scores(mapd=False)
            mine = per_run.filter(pl.col("run") == index).sort("sample_id")
            for column in ("aum", "aul", "confidence", "variability", "correctness", "forgetting_events", "el2n",
                           "p_mislabeled"):
                joined = alone.select("sample_id", column).join(mine.select("sample_id", column), on="sample_id")
                np.testing.assert_allclose(joined[column].to_numpy().astype(float),
                                           joined[f"{column}_right"].to_numpy().astype(float), rtol=1e-9,
                                           err_msg=f"run {index} {column}")


def test_bad_lists_of_runs(three_runs, tmp_path) -> None:
    paths, _ = three_runs
    with pytest.raises(ValueError, match="paths: expected at least one run, got none"):
        analytics.open_runs([])
    with pytest.raises(ValueError, match=r"paths: expected distinct runs, got .*run0.* more than once"):
        analytics.open_runs([paths[0], paths[1], paths[0]])
    with pytest.raises(FileNotFoundError):
        analytics.open_runs([paths[0], tmp_path / "nothing"])
    with analytics.open_runs(paths) as runs, pytest.raises(ValueError, match=r"percentile: expected a value in"):
        runs.scores(percentile=101)


def test_cli_scores_several_runs_into_one_table(three_runs, tmp_path, capsys) -> None:
    paths, _ = three_runs
    assert main(["score", *map(str, paths), "--out", str(tmp_path / "combined.parquet")]) == 0
    printed = capsys.readouterr().out
    for index, path in enumerate(paths):
        assert f"run {index}: {path}: epochs 0:" in printed
    assert "(threshold samples)" in printed and "noise rate: " in printed
    with analytics.open_runs(paths) as runs:
        assert pl.read_parquet(tmp_path / "combined.parquet").equals(runs.scores())
    assert main(["score", *map(str, paths), "--epochs", "all", "--out", str(tmp_path / "all.parquet")]) == 0
    assert "epochs 0:6 (every epoch)" in capsys.readouterr().out
    assert main(["score", *map(str, paths), "--engine", "spark", "--out", str(tmp_path / "x.parquet")]) == 1
    assert "--engine: several runs are scored together with duckdb, got 'spark'" in capsys.readouterr().err
