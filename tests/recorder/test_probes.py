"""ProbeSuites: counts, roles, seeds, fresh ids, inputs and labels transformed as specified, registration."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from tdlog.recorder import ProbeSuites, Recorder

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    inputs = torch.rand(300, 3, 4, 4, generator=generator) * 0.8 + 0.1  # away from the clip range edges
    labels = torch.randint(0, NUM_CLASSES, (300,), generator=generator)
    return TensorDataset(inputs, labels)


def probes_by_suite(probes: ProbeSuites, suite: str) -> list[tuple[int, torch.Tensor, int, int]]:
    """(source index, input, label, sample id) of every probe of ``suite``."""
    size = len(probes.dataset)
    return [(int(probes.source[p]), *probes[size + p]) for p in np.flatnonzero(probes.suite == suite)]


def test_counts_roles_and_fresh_ids(dataset):
    probes = ProbeSuites(dataset, NUM_CLASSES, per_suite=40, heldout_share=0.25, seed=3)
    assert len(probes) == 300 + 4 * 40
    for suite in ("random_labels", "random_inputs", "corrupted", "clean"):
        roles = probes.role[probes.suite == suite]
        assert len(roles) == 40
        assert (roles == "heldout").sum() == 10 and (roles == "reference").sum() == 30
        sources = probes.source[probes.suite == suite]
        assert len(np.unique(sources)) == 40 and sources.max() < 300
    ids = [probes[i][2] for i in range(len(probes))]
    assert ids == list(range(len(probes)))
    assert set(probes.probe_ids.tolist()).isdisjoint(range(300))
    assert probes[5][2] == 5 and torch.equal(probes[5][0], dataset[5][0])


def test_same_seed_same_probes_other_seed_other_probes(dataset):
    first, again = (ProbeSuites(dataset, NUM_CLASSES, per_suite=30, seed=7) for _ in range(2))
    other = ProbeSuites(dataset, NUM_CLASSES, per_suite=30, seed=8)
    np.testing.assert_array_equal(first.source, again.source)
    np.testing.assert_array_equal(first.label, again.label)
    np.testing.assert_array_equal(first.role, again.role)
    for index in range(300, len(first)):
        assert torch.equal(first[index][0], again[index][0])
        assert torch.equal(first[index][0], first[index][0])  # rebuilt identically on every access
    assert not np.array_equal(first.source, other.source)


def test_inputs_and_labels_transformed_as_specified(dataset):
    probes = ProbeSuites(dataset, NUM_CLASSES, per_suite=100, noise_std=0.05, seed=0)
    for source, inputs, label, _ in probes_by_suite(probes, "clean"):
        assert torch.equal(inputs, dataset[source][0]) and label == int(dataset[source][1])
    differences = []
    for source, inputs, label, _ in probes_by_suite(probes, "corrupted"):
        assert label == int(dataset[source][1])
        differences.append((inputs - dataset[source][0]).flatten())
    differences = torch.cat(differences)
    # 4,800 Gaussian draws (inputs in [0.1, 0.9], sigma 0.05: clipping at 4 sigma is negligible): the sample
    # std is within 3 % of sigma (its relative standard error is 1 / sqrt(2 * 4800) = 1 %), mean near 0.
    assert differences.std().item() == pytest.approx(0.05, rel=0.03)
    assert abs(differences.mean().item()) < 3 * 0.05 / np.sqrt(differences.numel())
    noise = torch.cat([inputs.flatten() for _, inputs, _, _ in probes_by_suite(probes, "random_inputs")])
    assert noise.min() >= 0 and noise.max() < 1
    assert noise.mean().item() == pytest.approx(0.5, abs=3 * (1 / np.sqrt(12)) / np.sqrt(noise.numel()))
    for kind in ("random_labels", "random_inputs"):
        labels = np.array([label for _, _, label, _ in probes_by_suite(probes, kind)])
        assert set(labels.tolist()) == set(range(NUM_CLASSES))  # uniform over classes: every class drawn
    sources = [s for s, _, _, _ in probes_by_suite(probes, "random_labels")]
    kept = np.array([label for _, _, label, _ in probes_by_suite(probes, "random_labels")])
    original = dataset.tensors[1][sources].numpy()
    assert 0.05 < (kept == original).mean() < 0.4  # about 1 / C kept by chance, not all


def test_clipping_and_unbounded_inputs(dataset):
    clipped = ProbeSuites(dataset, NUM_CLASSES, suites=("corrupted",), per_suite=50, noise_std=1.0)
    values = torch.cat([x.flatten() for _, x, _, _ in probes_by_suite(clipped, "corrupted")])
    assert values.min() == 0.0 and values.max() == 1.0
    free = ProbeSuites(dataset, NUM_CLASSES, suites=("corrupted",), per_suite=50, noise_std=1.0, input_range=None)
    values = torch.cat([x.flatten() for _, x, _, _ in probes_by_suite(free, "corrupted")])
    assert values.min() < -1.0 and values.max() > 2.0


def test_typical_atypical_and_ood_suites(dataset):
    typicality = np.arange(300)[::-1].astype(float)  # sample 0 most typical
    ood = TensorDataset(torch.full((60, 3, 4, 4), -5.0))
    probes = ProbeSuites(dataset, NUM_CLASSES, suites=(), per_suite=20, typicality=typicality, ood=ood)
    assert sorted(probes.source[probes.suite == "typical"].tolist()) == list(range(20))
    assert sorted(probes.source[probes.suite == "atypical"].tolist()) == list(range(280, 300))
    for source, inputs, label, _ in probes_by_suite(probes, "typical"):
        assert torch.equal(inputs, dataset[source][0]) and label == int(dataset[source][1])
    ood_items = probes_by_suite(probes, "ood")
    assert len(ood_items) == 20 and all(torch.equal(x, ood[s][0]) for s, x, _, _ in ood_items)
    assert all(0 <= label < NUM_CLASSES for _, _, label, _ in ood_items)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"suites": ("mislabeled",)}, "suites: expected names among"),
        ({"per_suite": 0}, r"per_suite: expected 1 <= per_suite <= len\(dataset\) = 300, got 0"),
        ({"per_suite": 301}, r"per_suite: expected 1 <= per_suite <= len\(dataset\) = 300, got 301"),
        ({"heldout_share": 1.0}, r"heldout_share: expected a value in \[0, 1\), got 1.0"),
        ({"noise_std": -0.1}, "noise_std: expected a value >= 0, got -0.1"),
        ({"input_range": (1.0, 0.0)}, r"input_range: expected \(low, high\) with low < high, got \(1.0, 0.0\)"),
        ({"typicality": np.zeros(10)}, r"typicality: expected one score per dataset sample, shape \(300,\)"),
        ({"typicality": np.full(300, np.nan)}, "typicality: expected finite scores, got NaN or Inf"),
        ({"ood": TensorDataset(torch.zeros(5, 3))}, "ood: expected at least per_suite = 250 samples, got 5"),
    ],
)
def test_bad_arguments_name_the_argument(dataset, options, message):
    with pytest.raises(ValueError, match=message):
        ProbeSuites(dataset, NUM_CLASSES, **options)


def test_register_writes_suite_and_role(tmp_path, dataset):
    probes = ProbeSuites(dataset, NUM_CLASSES, per_suite=10, heldout_share=0.3)
    with Recorder(tmp_path / "run", num_classes=NUM_CLASSES) as rec:
        rec.register_samples(torch.arange(300), dataset.tensors[1])
        probes.register(rec)
    rows = duckdb.sql(
        f"SELECT probe, probe_role, count(*) AS n, min(sample_id) AS lo, max(sample_id) AS hi "
        f"FROM read_parquet('{tmp_path / 'run' / 'samples' / '*.parquet'}', union_by_name = true) "
        "WHERE probe IS NOT NULL GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert [(p, r, n) for p, r, n, _, _ in rows] == [
        (suite, role, n) for suite in sorted(("random_labels", "random_inputs", "corrupted", "clean"))
        for role, n in (("heldout", 3), ("reference", 7))
    ]
    assert min(lo for *_, lo, _ in rows) == 300 and max(hi for *_, hi in rows) == 339


def test_register_keeps_each_probes_source_index(tmp_path, dataset):
    probes = ProbeSuites(dataset, NUM_CLASSES, per_suite=10, seed=4)
    with Recorder(tmp_path / "run", num_classes=NUM_CLASSES) as rec:
        probes.register(rec)
    rows = duckdb.sql(
        f"SELECT sample_id, label, source_index FROM read_parquet('{tmp_path / 'run' / 'samples' / '*.parquet'}') "
        "ORDER BY sample_id"
    ).fetchnumpy()
    np.testing.assert_array_equal(rows["sample_id"], probes.probe_ids)
    np.testing.assert_array_equal(rows["source_index"], probes.source)
    np.testing.assert_array_equal(rows["label"], probes.label)
