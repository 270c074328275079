"""Each counted token's target logit and runner-up logit from a causal LM's last hidden states and its LM head,
without the ``[B, T, V]`` logits: what the margin needs where the loss came from a fused LM head (TRL's
SFTTrainer), computed without gradient, on the counted tokens only, in blocks of rows.

``z_t = W h_t + b`` (the LM head's raw logits: a model that scales or soft-caps its logits after the head,
``logit_scale``, ``final_logit_softcapping``, is measured before that), ``target_t = z_{t,y_t}``,
``other_t = max_{j != y_t} z_{t,j}``.
"""

from __future__ import annotations

import torch

BLOCK_ROWS = 4096  # tokens projected at once: BLOCK_ROWS x vocabulary floats


def target_and_other_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                            targets: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target, other)``, each ``[B, T]`` float32, zero where ``mask`` is false, from ``hidden`` ``[B, T, H]``,
    the head's ``weight`` ``[V, H]`` (and ``bias`` ``[V]``) and ``targets`` ``[B, T]`` (see the module)."""
    with torch.no_grad():
        target = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device)
        other = torch.zeros_like(target)
        positions = mask.nonzero(as_tuple=True)
        rows, labels = hidden[positions], targets[positions].long()
        chosen, runner_up = [], []
        for start in range(0, rows.shape[0], BLOCK_ROWS):
            logits = (rows[start:start + BLOCK_ROWS].to(weight.dtype) @ weight.T).float()
            if bias is not None:
                logits = logits + bias.float()
            picked = labels[start:start + BLOCK_ROWS, None]
            chosen.append(logits.gather(1, picked).squeeze(1))
            runner_up.append(logits.scatter(1, picked, float("-inf")).amax(1))
        if chosen:
            target[positions] = torch.cat(chosen)
            other[positions] = torch.cat(runner_up)
    return target, other
