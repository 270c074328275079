"""Every per-sample statistic against a float64 NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recorder import batch_statistics

from ..reference import record_statistics


@pytest.mark.parametrize("num_classes", [2, 10, 100])
def test_statistics_match_numpy_reference(num_classes: int) -> None:
    generator = torch.Generator().manual_seed(num_classes)
    logits = torch.randn(300, num_classes, generator=generator) * 4
    targets = torch.randint(0, num_classes, (300,), generator=generator)
    floats, ints = batch_statistics(logits, targets, None)
    expected = record_statistics(logits.numpy(), targets.numpy())
    # float32 statistics of float32 logits: relative error a few ulps of the inputs (|z| <~ 16).
    for index, name in enumerate(["loss", "margin", "target_logit", "other_logit", "prob", "el2n"]):
        np.testing.assert_allclose(floats[index].numpy(), expected[name], rtol=2e-6, atol=2e-6, err_msg=name)
    np.testing.assert_array_equal(ints[0].numpy(), targets.numpy())
    np.testing.assert_array_equal(ints[1].numpy(), expected["other_class"])
    np.testing.assert_array_equal(ints[2].numpy(), expected["pred"])


def test_confident_samples_keep_relative_precision() -> None:
    # loss and el2n near 0 are computed without cancellation. The float64 reference uses the
    # cancellation-free identities loss = log1p(sum_{j!=y} e^{z_j - z_y}) and
    # el2n^2 = (sum_{j!=y} p_j)^2 + sum_{j!=y} p_j^2 (1 - p_y in float64 would lose 1e-3 at 1e-13).
    logits = torch.tensor([[30.0, 0.0, -5.0], [12.0, 1.0, 0.5]])
    off_target = np.exp(logits.numpy()[:, 1:].astype(np.float64) - logits.numpy()[:, :1])
    p_off = off_target / (1 + off_target.sum(1, keepdims=True))
    floats, _ = batch_statistics(logits, torch.tensor([0, 0]), None)
    np.testing.assert_allclose(floats[0].numpy(), np.log1p(off_target.sum(1)), rtol=1e-6)
    expected_el2n = np.sqrt(p_off.sum(1) ** 2 + (p_off**2).sum(1))
    np.testing.assert_allclose(floats[5].numpy(), expected_el2n, rtol=1e-6)


def test_ties_give_zero_margin_and_first_index() -> None:
    logits = torch.tensor([[1.0, 3.0, 3.0], [3.0, 3.0, 0.0], [2.0, 2.0, 2.0]])
    targets = torch.tensor([2, 0, 1])
    floats, ints = batch_statistics(logits, targets, None)
    np.testing.assert_array_equal(floats[1].numpy(), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(ints[2].numpy(), logits.numpy().argmax(1))  # first maximum
    np.testing.assert_array_equal(ints[1].numpy(), [1, 1, 0])


def test_given_loss_is_kept_and_half_logits_are_upcast() -> None:
    logits = torch.randn(8, 5).half()
    targets = torch.randint(0, 5, (8,))
    loss = torch.rand(8)
    floats, _ = batch_statistics(logits, targets, loss)
    np.testing.assert_array_equal(floats[0].numpy(), loss.numpy())
    expected = record_statistics(logits.float().numpy(), targets.numpy())
    np.testing.assert_allclose(floats[1].numpy(), expected["margin"], rtol=1e-6, atol=1e-6)


def test_overwrite_logits_reuses_the_buffer_and_matches_copy() -> None:
    logits = torch.randn(20, 6)
    targets = torch.randint(0, 6, (20,))
    copied = batch_statistics(logits, targets, None)
    scratch = logits.clone()
    reused = batch_statistics(scratch, targets, None, overwrite_logits=True)
    torch.testing.assert_close(copied, reused, rtol=0, atol=0)
    assert not torch.equal(scratch, logits)  # the scratch tensor was used
