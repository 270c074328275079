"""``ProbeSuites``: MAP-D probe suites (Siddiqui et al. 2022) added to a map-style dataset with fresh ids.

Each probe is a copy of a dataset sample (or of an OOD sample) transformed by its suite:

- ``random_labels``: the label replaced by a class drawn uniformly from ``[0, num_classes)``;
- ``random_inputs``: the input replaced by ``U(low, high)`` noise of the same shape, random label;
- ``corrupted``: ``clip(x + N(0, noise_std^2), low, high)``, label kept;
- ``clean``: untouched (the proxy for clean data);
- ``typical`` / ``atypical``: the ``per_suite`` samples with the highest / lowest ``typicality`` score;
- ``ood``: samples of another dataset, random label.

Probes are built lazily in ``__getitem__`` from a per-probe seed, so they cost no memory and every epoch
(and every process) sees the same probe.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

BUILT_IN_SUITES = ("random_labels", "random_inputs", "corrupted", "clean")
KEEPS_LABEL = ("corrupted", "clean", "typical", "atypical")


class ProbeSuites(Dataset):
    """``dataset`` (``ds[i] -> (input, label)``) plus probe samples; ``ps[i] -> (input, label, sample_id)``.

    Items ``0 .. len(dataset) - 1`` are the dataset's own (sample id = index, as
    :class:`tdlog.recorder.DatasetWithIndex`); probes follow with ids ``first_id, first_id + 1, ...`` (default
    ``len(dataset)``). In each suite a seeded ``heldout_share`` of the probes gets role ``heldout`` (trained
    on, used only to measure MAP-D accuracy), the rest ``reference`` (the k-NN neighbours). Register them
    with :meth:`register` (after registering the dataset's own samples).

    Args:
        dataset: map-style dataset yielding ``(input, label)`` with float tensor inputs.
        num_classes: number of classes ``C`` (random labels are drawn from ``[0, C)``).
        suites: built-in suites to add, any of ``random_labels, random_inputs, corrupted, clean``.
        per_suite: probes per suite (default 250, as the paper).
        heldout_share: share of each suite held out of the k-NN index.
        noise_std: ``sigma`` of the ``corrupted`` suite's Gaussian noise.
        input_range: ``(low, high)`` of inputs: the ``random_inputs`` distribution and the clip range of
            ``corrupted`` (``None``: ``U(0, 1)`` and no clipping, for normalised inputs).
        typicality: one score per dataset sample, higher = more typical (e.g. a previous run's data-map
            confidence); adds the ``typical`` and ``atypical`` suites.
        ood: a dataset of out-of-distribution inputs (``ds[i] -> input`` or ``(input, ...)``); adds ``ood``.
        seed: seed of every random choice; the same seed gives the same probes.
        first_id: id of the first probe (default ``len(dataset)``).
    """

    def __init__(
        self,
        dataset: Dataset,
        num_classes: int,
        *,
        suites: tuple[str, ...] | list[str] = BUILT_IN_SUITES,
        per_suite: int = 250,
        heldout_share: float = 0.2,
        noise_std: float = 0.1,
        input_range: tuple[float, float] | None = (0.0, 1.0),
        typicality: Any = None,
        ood: Dataset | None = None,
        seed: int = 0,
        first_id: int | None = None,
    ) -> None:
        size = len(dataset)
        unknown = sorted(set(suites) - set(BUILT_IN_SUITES))
        if unknown:
            raise ValueError(f"suites: expected names among {BUILT_IN_SUITES}, got {unknown}")
        if not 1 <= per_suite <= size:
            raise ValueError(f"per_suite: expected 1 <= per_suite <= len(dataset) = {size}, got {per_suite}")
        if not 0.0 <= heldout_share < 1.0:
            raise ValueError(f"heldout_share: expected a value in [0, 1), got {heldout_share}")
        if noise_std < 0:
            raise ValueError(f"noise_std: expected a value >= 0, got {noise_std}")
        if input_range is not None and not input_range[0] < input_range[1]:
            raise ValueError(f"input_range: expected (low, high) with low < high, got {input_range}")
        self.dataset = dataset
        self.num_classes = num_classes
        self.noise_std = noise_std
        self.input_range = input_range
        self.ood = ood
        self.seed = seed
        self.first_id = size if first_id is None else first_id
        rng = np.random.default_rng(seed)
        plan: list[tuple[str, np.ndarray]] = [(s, rng.choice(size, per_suite, replace=False)) for s in suites]
        if typicality is not None:
            plan += _typicality_suites(typicality, size, per_suite)
        if ood is not None:
            if len(ood) < per_suite:
                raise ValueError(f"ood: expected at least per_suite = {per_suite} samples, got {len(ood)}")
            plan.append(("ood", rng.choice(len(ood), per_suite, replace=False)))
        self.suite = np.concatenate([np.full(len(sources), name, dtype=object) for name, sources in plan])
        self.source = np.concatenate([sources for _, sources in plan]).astype(np.int64)
        heldout_count = round(heldout_share * per_suite)
        self.role = np.concatenate(
            [np.where(rng.permutation(len(sources)) < heldout_count, "heldout", "reference").astype(object)
             for _, sources in plan]
        )
        self.label = self._probe_labels(rng)

    def _probe_labels(self, rng: np.random.Generator) -> np.ndarray:
        """The label each probe is trained with: the source's label, or uniform in ``[0, C)``."""
        labels = rng.integers(0, self.num_classes, size=len(self.suite))
        for position in np.flatnonzero(np.isin(self.suite, KEEPS_LABEL)):
            labels[position] = int(self.dataset[int(self.source[position])][1])
        return labels

    @property
    def probe_ids(self) -> np.ndarray:
        """Sample ids of the probes, in probe order."""
        return np.arange(self.first_id, self.first_id + len(self.suite), dtype=np.int64)

    def register(self, recorder: Any, **columns: Any) -> None:
        """Register the probes in ``recorder``'s samples table: id, training label, ``probe`` = suite,
        ``probe_role`` and ``source_index`` (the index in ``dataset``, or in ``ood``, that the probe was
        made from); ``columns`` adds user columns (one value per probe)."""
        recorder.register_samples(self.probe_ids, self.label, probe=self.suite.tolist(),
                                  probe_role=self.role.tolist(), source_index=self.source, **columns)

    def __len__(self) -> int:
        return len(self.dataset) + len(self.suite)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        size = len(self.dataset)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index: expected 0 <= index < {len(self)}, got {index}")
        if index < size:
            inputs, label = self.dataset[index][:2]
            return inputs, label, index
        position = index - size
        return self.probe_input(position), int(self.label[position]), self.first_id + position

    def probe_input(self, position: int) -> torch.Tensor:
        """The input of probe ``position`` (0-based among probes), rebuilt from its per-probe seed."""
        suite, source = self.suite[position], int(self.source[position])
        if suite == "ood":
            item = self.ood[source]
            return item[0] if isinstance(item, tuple | list) else item
        inputs = self.dataset[source][0]
        if suite not in ("random_inputs", "corrupted"):
            return inputs
        probe_seed = int(np.random.SeedSequence([self.seed, position]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(probe_seed)
        if suite == "random_inputs":
            low, high = self.input_range or (0.0, 1.0)
            return torch.rand(inputs.shape, generator=generator, dtype=inputs.dtype) * (high - low) + low
        noisy = inputs + self.noise_std * torch.randn(inputs.shape, generator=generator, dtype=inputs.dtype)
        return noisy if self.input_range is None else noisy.clamp(*self.input_range)


def _typicality_suites(typicality: Any, size: int, per_suite: int) -> list[tuple[str, np.ndarray]]:
    scores = np.asarray(typicality.detach().cpu() if hasattr(typicality, "detach") else typicality, dtype=np.float64)
    if scores.shape != (size,):
        raise ValueError(f"typicality: expected one score per dataset sample, shape ({size},), got {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("typicality: expected finite scores, got NaN or Inf")
    if 2 * per_suite > size:
        raise ValueError(f"per_suite: typical and atypical need 2 * per_suite <= {size} samples, got {per_suite}")
    order = np.argsort(-scores, kind="stable")
    return [("typical", order[:per_suite]), ("atypical", order[-per_suite:])]
