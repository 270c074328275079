"""What a model computes, whatever wraps it: the task that decides how its token logits are scored.

:func:`unwrap` removes the wrappers people train through: PEFT's ``PeftModel`` and its task classes
(``get_base_model()``), ``torch.nn.parallel.DistributedDataParallel``/``DataParallel``, FSDP and DeepSpeed
engines (``.module``; accelerate wraps in these), and ``torch.compile``'s ``OptimizedModule``
(``._orig_mod``). :func:`model_task` then tells apart, by the Hugging Face task mappings that list every
model class of each task (any class of the model's MRO, so that FSDP2's generated subclasses count):

| task | logits | scored against |
|---|---|---|
| ``causal_lm`` | ``[B, T, V]`` | ``labels`` shifted: token ``t`` against ``labels[t + 1]`` |
| ``seq2seq_lm`` | ``[B, T_dec, V]`` | the decoder ``labels``, not shifted (the model shifts its decoder inputs) |
| ``masked_lm`` | ``[B, T, V]`` | ``labels``, not shifted |
| ``token_classification`` | ``[B, T, C]`` | ``labels``, not shifted |
| ``sequence_classification`` | ``[B, C]`` | ``labels`` ``[B]`` |

A model in none of the mappings is classified by its config and PEFT's ``task_type``: an encoder-decoder
config is ``seq2seq_lm``, a ``GenerationMixin`` decoder ``causal_lm``; else its task is unknown (None) and
token logits are not shifted. The loss cross-check (:mod:`tdlog.recorder.loss_check`) catches a wrong guess.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import torch

CAUSAL_LM, SEQ2SEQ_LM, MASKED_LM = "causal_lm", "seq2seq_lm", "masked_lm"
TOKEN_CLASSIFICATION, SEQUENCE_CLASSIFICATION = "token_classification", "sequence_classification"
TASKS = (CAUSAL_LM, SEQ2SEQ_LM, MASKED_LM, TOKEN_CLASSIFICATION, SEQUENCE_CLASSIFICATION)
# the wrappers whose .module is the model they run (class names: FSDP, DeepSpeed and torch's own)
MODULE_WRAPPERS = {"DistributedDataParallel", "DataParallel", "FullyShardedDataParallel", "DeepSpeedEngine",
                   "PipelineEngine"}
PEFT_TASKS = {"CAUSAL_LM": CAUSAL_LM, "SEQ_2_SEQ_LM": SEQ2SEQ_LM, "TOKEN_CLS": TOKEN_CLASSIFICATION,
              "SEQ_CLS": SEQUENCE_CLASSIFICATION}


def wrappers(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model``, then each model inside it, through PEFT, DDP/FSDP/DeepSpeed/accelerate and ``torch.compile``
    wrappers (any nesting), the innermost last."""
    for _ in range(16):  # wrappers nest a few levels at most
        yield model
        if isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        elif type(model).__name__ in MODULE_WRAPPERS and isinstance(getattr(model, "module", None), torch.nn.Module):
            model = model.module
        elif callable(getattr(model, "get_base_model", None)) and hasattr(model, "peft_config"):
            model = model.get_base_model()
        else:
            return


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside PEFT, DDP/FSDP/DeepSpeed/accelerate and ``torch.compile`` wrappers (any nesting)."""
    return deque(wrappers(model), maxlen=1)[0]


def _peft_task(model: torch.nn.Module) -> str | None:
    """The ``task_type`` of the first PEFT adapter config of a (wrapped) PEFT model."""
    for layer in wrappers(model):
        configs = getattr(layer, "peft_config", None)
        if isinstance(configs, dict) and configs:
            task_type = getattr(next(iter(configs.values())), "task_type", None)
            return PEFT_TASKS.get(str(getattr(task_type, "value", task_type)))
    return None


def _mapped_task(classes: set[str]) -> str | None:
    from transformers.models.auto import modeling_auto as auto

    mappings = [
        (SEQ2SEQ_LM, auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES),
        (CAUSAL_LM, auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
        (MASKED_LM, auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES),
        (TOKEN_CLASSIFICATION, auto.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES),
        (SEQUENCE_CLASSIFICATION, auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES),
    ]
    for task, mapping in mappings:
        names = {name for value in mapping.values() for name in ((value,) if isinstance(value, str) else value)}
        if classes & names:
            return task
    return None


def model_task(model: torch.nn.Module) -> str | None:
    """The task of ``model`` (one of ``TASKS``) once unwrapped, or None when it cannot be told."""
    inner = unwrap(model)
    classes = {cls.__name__ for cls in type(inner).__mro__}
    try:
        task = _mapped_task(classes)
    except ImportError:  # no transformers: not a Hugging Face model
        task = None
    if task is not None:
        return task
    task = _peft_task(model)
    if task is not None:
        return task
    config = getattr(inner, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return SEQ2SEQ_LM
    if "GenerationMixin" in classes:
        return CAUSAL_LM
    return None


def shifts_labels(task: str | None) -> bool:
    """Whether the task's loss scores token ``t`` against ``labels[t + 1]`` (causal language models)."""
    return task == CAUSAL_LM


def is_hugging_face_model(module: Any) -> bool:
    """A transformers ``PreTrainedModel`` (or a PEFT model around one)."""
    inner = unwrap(module)
    return any(cls.__name__ == "PreTrainedModel" for cls in type(inner).__mro__)
