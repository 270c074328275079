"""Every per-sample statistic against a float64 NumPy reference, for both implementations: torch (on the
logits' device) and NumPy (the writer thread's, for CPU batches)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tdlog.recorder import batch_statistics
from tdlog.recorder.host_stats import TRANSPOSE_MAX_CLASSES, host_kept_logits, host_statistics
from tdlog.recorder.stats import kept_logits

from ..reference import record_statistics


def numpy_statistics(logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor | None):
    """host_statistics with batch_statistics' signature (on a float32 copy of the logits)."""
    floats, ints = host_statistics(
        logits.float().numpy().copy(), targets.long().numpy(), None if loss is None else loss.numpy()
    )
    return torch.from_numpy(floats), torch.from_numpy(ints)


IMPLEMENTATIONS = pytest.mark.parametrize("statistics", [batch_statistics, numpy_statistics], ids=["torch", "numpy"])


@IMPLEMENTATIONS
@pytest.mark.parametrize("num_classes", [2, 10, TRANSPOSE_MAX_CLASSES, TRANSPOSE_MAX_CLASSES + 1, 100])
def test_statistics_match_numpy_reference(statistics, num_classes: int) -> None:
    generator = torch.Generator().manual_seed(num_classes)
    logits = torch.randn(300, num_classes, generator=generator) * 4
    targets = torch.randint(0, num_classes, (300,), generator=generator)
    floats, ints = statistics(logits, targets, None)
    expected = record_statistics(logits.numpy(), targets.numpy())
    # float32 statistics of float32 logits: relative error a few ulps of the inputs (|z| <~ 16).
    for index, name in enumerate(["loss", "margin", "target_logit", "other_logit", "prob", "el2n"]):
        np.testing.assert_allclose(floats[index].numpy(), expected[name], rtol=2e-6, atol=2e-6, err_msg=name)
    np.testing.assert_array_equal(ints[0].numpy(), targets.numpy())
    np.testing.assert_array_equal(ints[1].numpy(), expected["other_class"])
    np.testing.assert_array_equal(ints[2].numpy(), expected["pred"])


@IMPLEMENTATIONS
def test_confident_samples_keep_relative_precision(statistics) -> None:
    # loss and el2n near 0 are computed without cancellation. The float64 reference uses the
    # cancellation-free identities loss = log1p(sum_{j!=y} e^{z_j - z_y}) and
    # el2n^2 = (sum_{j!=y} p_j)^2 + sum_{j!=y} p_j^2 (1 - p_y in float64 would lose 1e-3 at 1e-13).
    logits = torch.tensor([[30.0, 0.0, -5.0], [12.0, 1.0, 0.5]])
    off_target = np.exp(logits.numpy()[:, 1:].astype(np.float64) - logits.numpy()[:, :1])
    p_off = off_target / (1 + off_target.sum(1, keepdims=True))
    floats, _ = statistics(logits, torch.tensor([0, 0]), None)
    np.testing.assert_allclose(floats[0].numpy(), np.log1p(off_target.sum(1)), rtol=1e-6)
    expected_el2n = np.sqrt(p_off.sum(1) ** 2 + (p_off**2).sum(1))
    np.testing.assert_allclose(floats[5].numpy(), expected_el2n, rtol=1e-6)


@IMPLEMENTATIONS
def test_ties_give_zero_margin_and_first_index(statistics) -> None:
    logits = torch.tensor([[1.0, 3.0, 3.0], [3.0, 3.0, 0.0], [2.0, 2.0, 2.0]])
    targets = torch.tensor([2, 0, 1])
    floats, ints = statistics(logits, targets, None)
    np.testing.assert_array_equal(floats[1].numpy(), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(ints[2].numpy(), logits.numpy().argmax(1))  # first maximum
    np.testing.assert_array_equal(ints[1].numpy(), [1, 1, 0])


@IMPLEMENTATIONS
def test_given_loss_is_kept_and_half_logits_are_upcast(statistics) -> None:
    logits = torch.randn(8, 5).half()
    targets = torch.randint(0, 5, (8,))
    loss = torch.rand(8)
    floats, _ = statistics(logits, targets, loss)
    np.testing.assert_array_equal(floats[0].numpy(), loss.numpy())
    expected = record_statistics(logits.float().numpy(), targets.numpy())
    np.testing.assert_allclose(floats[1].numpy(), expected["margin"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("num_classes", [6, 100])  # both layouts of the NumPy version
def test_numpy_and_torch_agree_on_nonfinite_ties_and_extremes(num_classes: int) -> None:
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(40, num_classes, generator=generator) * 3
    targets = torch.randint(0, num_classes, (40,), generator=generator)
    logits[0] = 0.0  # all tied
    logits[1, 3] = float("nan")
    logits[2] = float("nan")
    logits[3, targets[3]] = float("nan")
    logits[4, 2] = float("inf")
    logits[5, targets[5]] = float("-inf")
    logits[6, targets[6]] = 200.0  # every other probability underflows
    logits[7, (targets[7] + 1) % num_classes] = 200.0
    expected_floats, expected_ints = batch_statistics(logits, targets, None)
    floats, ints = numpy_statistics(logits, targets, None)
    np.testing.assert_allclose(floats.numpy(), expected_floats.numpy(), rtol=2e-6, atol=1e-7, equal_nan=True)
    np.testing.assert_array_equal(ints.numpy(), expected_ints.numpy())


@pytest.mark.parametrize("mode, dtype", [("full", "float16"), ("full", "float32"), ("topk", "float16")])
def test_numpy_kept_logits_match_torch(mode: str, dtype: str) -> None:
    logits = torch.randn(30, 12, generator=torch.Generator().manual_seed(3))
    expected = kept_logits(logits, mode, 4, dtype)
    kept = host_kept_logits(logits.numpy(), mode, 4, dtype)
    assert len(kept) == len(expected)
    for ours, theirs in zip(kept, expected, strict=True):
        assert ours.dtype == theirs.numpy().dtype
        np.testing.assert_array_equal(ours, theirs.numpy())
