"""Control examples for sequence tasks: the threshold samples' counterpart for instruction and chat
fine-tuning data.

A seeded share of the training examples get a known-wrong target: by default the completion of another
example (a real, fluent answer to another prompt: wrong the way a mismatched or shuffled completion is
wrong), or whatever ``corrupt`` makes of them. Registered with ``controls=`` (:func:`register_examples`),
they are the run's threshold samples: the engine calibrates the AUM cutoff and chooses the epoch window from
them exactly as for a classifier (``threshold_cutoff``, ``epochs="auto"``, the noise-rate estimate). As with
threshold samples, score the controls of one run with a second run whose controls are disjoint
(``pass_index=1``) to flag the first run's controls too (``open_runs``).

Shapes: prompt-completion (``prompt``, ``completion``: text or messages), conversational (``messages``:
the last assistant turn is the completion), and tokenised examples (``input_ids`` with ``labels``, ``-100``
on the prompt: the labelled tail is the completion). :func:`plant_controls` takes a ``datasets.Dataset`` or
a list of dicts and returns the same kind, with a boolean ``is_control`` column.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np

CONTROL_COLUMN = "is_control"
IGNORE_INDEX = -100


def control_indices(num_examples: int, *, share: float = 0.1, seed: int = 0, pass_index: int = 0) -> np.ndarray:
    """Indices of the control examples of one pass: ``m = round(share * N)`` of them, slice ``pass_index`` of one
    seeded permutation of ``range(N)``, so passes 0 and 1 are disjoint."""
    if not 0 < share < 1:
        raise ValueError(f"share: expected a share in (0, 1), got {share}")
    count = max(1, round(share * num_examples))
    if pass_index < 0 or (pass_index + 1) * count > num_examples:
        raise ValueError(f"pass_index: expected 0 <= pass_index < {num_examples // count} (N={num_examples}, "
                         f"m={count}), got {pass_index}")
    permutation = np.random.default_rng(seed).permutation(num_examples)
    return np.sort(permutation[pass_index * count:(pass_index + 1) * count])


def example_shape(columns: list[str]) -> str:
    """``"prompt-completion"``, ``"conversational"`` or ``"tokens"`` from an example's keys."""
    if "completion" in columns:
        return "prompt-completion"
    if "messages" in columns:
        return "conversational"
    if "input_ids" in columns and "labels" in columns:
        return "tokens"
    raise ValueError(f"dataset: expected prompt/completion, messages, or input_ids/labels columns, got {columns}; "
                     f"pass corrupt= for another shape")


def completion_of(example: dict[str, Any], shape: str) -> Any:
    """The part of ``example`` its loss is computed on: the completion, the last assistant turn's content, or
    the labelled token tail."""
    if shape == "prompt-completion":
        return example["completion"]
    if shape == "conversational":
        return next(m["content"] for m in reversed(example["messages"]) if m["role"] == "assistant")
    return [token for token in example["labels"] if token != IGNORE_INDEX]


def with_completion(example: dict[str, Any], completion: Any, shape: str) -> dict[str, Any]:
    """``example`` with its completion replaced by ``completion`` (see :func:`completion_of`)."""
    example = dict(example)
    if shape == "prompt-completion":
        example["completion"] = completion
    elif shape == "conversational":
        messages = [dict(m) for m in example["messages"]]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        messages[last]["content"] = completion
        example["messages"] = messages
    else:
        prompt = [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label == IGNORE_INDEX]
        example["input_ids"] = prompt + list(completion)
        example["labels"] = [IGNORE_INDEX] * len(prompt) + list(completion)
        if "attention_mask" in example:
            example["attention_mask"] = [1] * len(example["input_ids"])
    return example


def plant_controls(dataset: Any, *, share: float = 0.1, seed: int = 0, pass_index: int = 0,
                   corrupt: Callable[[dict[str, Any], random.Random], dict[str, Any]] | None = None) -> Any:
    """``dataset`` (a ``datasets.Dataset`` or a list of dicts) with control examples planted: for the examples
    of :func:`control_indices`, the completion replaced by the completion of another example chosen at random
    among those whose completion differs (or ``corrupt(example, rng)``, your corruption, returning the
    example), and an ``is_control`` column (True for them). Deterministic for a seed."""
    rows = dataset if isinstance(dataset, list) else None
    columns = list(rows[0]) if rows is not None else list(dataset.column_names)
    if CONTROL_COLUMN in columns:
        raise ValueError(f"dataset: already has a {CONTROL_COLUMN!r} column (controls planted once per dataset)")
    count = len(dataset)
    chosen = control_indices(count, share=share, seed=seed, pass_index=pass_index)
    rng = random.Random(f"{seed}-{pass_index}")
    shape = None if corrupt is not None else example_shape(columns)
    replacements: dict[int, dict[str, Any]] = {}
    for index in chosen.tolist():
        example = dict(dataset[index])
        if corrupt is not None:
            replacements[index] = corrupt(example, rng)
            continue
        own = completion_of(example, shape)
        for _ in range(100):
            donor = rng.randrange(count)
            if donor != index and completion_of(dict(dataset[donor]), shape) != own:
                break
        else:
            raise ValueError("dataset: found no example with another completion to plant as a control")
        replacements[index] = with_completion(example, completion_of(dict(dataset[donor]), shape), shape)
    if rows is not None:
        return [{**replacements.get(i, row), CONTROL_COLUMN: i in replacements} for i, row in enumerate(rows)]

    def plant(example: dict[str, Any], index: int) -> dict[str, Any]:
        return {**replacements.get(index, example), CONTROL_COLUMN: index in replacements}

    return dataset.map(plant, with_indices=True)


def register_examples(recorder: Any, dataset: Any, *, id_column: str = "sample_id",
                      text_columns: tuple[str, ...] = ("prompt", "completion", "text")) -> None:
    """Register the examples of ``dataset`` with ``recorder`` (a ``Recorder``, or what ``attach`` returns):
    their ids, their ``is_control`` flags (if planted) and their text columns (a conversation as
    ``prompt``/``completion``: its turns before the last assistant turn, and that turn), which the report
    shows."""
    rows = dataset if isinstance(dataset, list) else None
    columns = list(rows[0]) if rows is not None else list(dataset.column_names)

    def column(name: str) -> list[Any]:
        return [row[name] for row in rows] if rows is not None else list(dataset[name])

    extra: dict[str, Any] = {}
    if "messages" in columns and "completion" not in columns:
        conversations = column("messages")
        lasts = [max(i for i, m in enumerate(c) if m["role"] == "assistant") for c in conversations]
        extra["prompt"] = [_rendered(c[:last]) for c, last in zip(conversations, lasts, strict=True)]
        extra["completion"] = [c[last]["content"] for c, last in zip(conversations, lasts, strict=True)]
    for name in text_columns:
        if name in columns:
            extra[name] = [_rendered(value) for value in column(name)]
    controls = np.asarray(column(CONTROL_COLUMN), dtype=bool) if CONTROL_COLUMN in columns else None
    recorder.register_samples(column(id_column), controls=controls, **extra)


def _rendered(value: str | list[dict[str, str]]) -> str:
    """Text as it is, or messages as ``role: content`` lines."""
    return value if isinstance(value, str) else "\n".join(f"{m['role']}: {m['content']}" for m in value)
