"""Argument checks for the recorder. Each error names the argument, what was expected and what came."""

from __future__ import annotations

import operator
import re
from typing import Any

import numpy as np
import pyarrow as pa
import torch

SPLIT_PATTERN = re.compile(r"^[A-Za-z0-9_\-]+$")
INT64_MAX = 2**63 - 1


def check_logits(logits: Any, num_outputs: int) -> None:
    """``logits``: a floating-point ``[batch, num_outputs]`` tensor, or token logits ``[batch, tokens,
    num_outputs]`` of a sequence model."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits: expected a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() not in (2, 3):
        raise ValueError(f"logits: expected a 2-D tensor [batch, {num_outputs}] (or token logits [batch, tokens, "
                         f"{num_outputs}]), got shape {tuple(logits.shape)}")
    if logits.shape[-1] != num_outputs:
        expected = f"{num_outputs} columns" if logits.dim() == 2 else f"token logits [batch, tokens, {num_outputs}]"
        raise ValueError(f"logits: expected {expected} (the run's number of model outputs), "
                         f"got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits: expected a floating-point tensor, got dtype {logits.dtype}")


def check_targets(targets: Any, shape: tuple[int, ...], device: torch.device) -> None:
    """``targets``: integer class indices (token ids) of ``shape`` (``(B,)``, or ``(B, T)`` for token logits)."""
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets: expected a torch.Tensor of class indices, got {type(targets).__name__}")
    if targets.device != device:
        raise ValueError(f"targets: expected a tensor on the logits' device {device}, got {targets.device}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"targets: expected an integer tensor of class indices, got dtype {targets.dtype}")
    if tuple(targets.shape) != shape:
        raise ValueError(f"targets: expected shape {shape} to match logits, got {tuple(targets.shape)}")


def check_loss(loss: Any, batch_size: int) -> None:
    if loss is None:
        return
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss: expected a torch.Tensor of per-sample losses or None, got {type(loss).__name__}")
    if not loss.is_floating_point():
        raise TypeError(f"loss: expected a floating-point tensor, got dtype {loss.dtype}")
    if loss.numel() != batch_size or loss.dim() > 2:
        raise ValueError(
            f"loss: expected per-sample losses of shape ({batch_size},) (use reduction='none'), "
            f"got shape {tuple(loss.shape)}"
        )


def check_batch_loss(batch_loss: Any, num_items_in_batch: Any) -> None:
    """The model's own batch loss (a scalar) and the Trainer's ``num_items_in_batch`` (a positive count)."""
    if batch_loss is not None:
        if isinstance(batch_loss, torch.Tensor):
            if batch_loss.numel() != 1 or not batch_loss.is_floating_point():
                raise ValueError("batch_loss: expected the model's loss of the batch, a floating-point scalar, got "
                                 f"a {batch_loss.dtype} tensor of shape {tuple(batch_loss.shape)}")
        elif isinstance(batch_loss, bool) or not isinstance(batch_loss, int | float):
            raise TypeError(f"batch_loss: expected a scalar tensor or a float, got {type(batch_loss).__name__}")
    if num_items_in_batch is not None:
        if batch_loss is None:
            raise ValueError("num_items_in_batch: expected it with a batch_loss, got it alone")
        count = num_items_in_batch.item() if isinstance(num_items_in_batch, torch.Tensor) else num_items_in_batch
        if isinstance(count, bool) or not isinstance(count, int | float) or count <= 0:
            raise ValueError(f"num_items_in_batch: expected a positive count, got {num_items_in_batch!r}")


def check_target_range(name: str, lowest: int, highest: int, num_outputs: int) -> None:
    if lowest < 0 or highest >= num_outputs:
        bad = lowest if lowest < 0 else highest
        raise ValueError(f"{name}: expected class indices in [0, {num_outputs}), got {bad}")


def check_epoch(epoch: Any) -> int:
    try:
        value = operator.index(epoch)
    except TypeError:
        raise TypeError(f"epoch: expected a non-negative int, got {type(epoch).__name__}") from None
    if value < 0:
        raise ValueError(f"epoch: expected a non-negative int, got {value}")
    return value


def check_split(split: Any) -> str:
    if not isinstance(split, str) or not SPLIT_PATTERN.match(split):
        raise ValueError(f"split: expected a name of letters, digits, '_' or '-', got {split!r}")
    return split


def id_type_of(array: pa.Array) -> str:
    """'int64' or 'string' for an Arrow array of sample ids."""
    if pa.types.is_integer(array.type):
        return "int64"
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return "string"
    raise TypeError(f"sample_ids: expected int64 or str ids, got {array.type}")


def ids_to_arrow(sample_ids: Any, batch_size: int | None) -> pa.Array:
    """Host-side sample ids (numpy array, list or tuple of int or str) as an Arrow array of int64/string."""
    if isinstance(sample_ids, np.ndarray):
        if sample_ids.dtype.kind == "u" and sample_ids.size and int(sample_ids.max()) > INT64_MAX:
            raise ValueError(f"sample_ids: expected ids that fit int64 (at most 2**63 - 1), "
                             f"got {int(sample_ids.max())}")
        if sample_ids.dtype.kind in "iu":
            array = pa.array(sample_ids.astype(np.int64, copy=False))
        elif sample_ids.dtype.kind in "UO":
            array = _list_to_arrow(sample_ids.tolist())
        else:
            raise TypeError(f"sample_ids: expected int or str ids, got numpy dtype {sample_ids.dtype}")
    elif isinstance(sample_ids, (list, tuple)):
        array = _list_to_arrow(sample_ids)
    else:
        raise TypeError(
            "sample_ids: expected an int64 tensor, a numpy array or a list of int or str, "
            f"got {type(sample_ids).__name__}"
        )
    if batch_size is not None and len(array) != batch_size:
        raise ValueError(f"sample_ids: expected {batch_size} ids to match logits, got {len(array)}")
    if array.null_count:
        raise ValueError("sample_ids: expected no None ids")
    return array


def _list_to_arrow(ids: list | tuple) -> pa.Array:
    try:
        array = pa.array(ids)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise TypeError("sample_ids: expected all ids of one type (all int or all str), got a mix") from None
    except OverflowError:
        raise ValueError(f"sample_ids: expected ids that fit int64 (at most 2**63 - 1), got {max(ids)}") from None
    if pa.types.is_integer(array.type):
        return array.cast(pa.int64())
    if pa.types.is_null(array.type):  # empty list
        return pa.array([], pa.int64())
    id_type_of(array)
    return array


def check_id_type(expected: str | None, actual: str) -> None:
    if expected is not None and expected != actual:
        raise TypeError(f"sample_ids: this run uses {expected} ids, got {actual} ids")
