"""The PPO controller's policy: a one-layer LSTM emitting one token per decision of the
search space, each decision with its own embedding table and softmax head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["INIT_RANGE", "Policy"]

INIT_RANGE = 0.1


class Policy(nn.Module):
    """The controller: a one-layer LSTM emitting one token per decision.

    The embedding tables and softmax heads of all decisions are stacked into one matrix
    each; decision ``i`` owns the rows ``offsets[i] : offsets[i] + sizes[i]``.
    """

    def __init__(self, sizes: Sequence[int], hidden_size: int, generator: torch.Generator):
        super().__init__()
        self.sizes = tuple(sizes)
        self.hidden_size = hidden_size
        vocabulary = sum(self.sizes)
        offsets = [0]
        for size in self.sizes[:-1]:
            offsets.append(offsets[-1] + size)
        self.offsets_list = offsets
        self.start = nn.Parameter(torch.empty(hidden_size))
        self.embedding = nn.Parameter(torch.empty(vocabulary, hidden_size))
        # Built on "meta" then allocated: nn.LSTM's own initialization would draw from torch's
        # global generator.
        self.lstm = nn.LSTM(hidden_size, hidden_size, batch_first=True, device="meta")
        self.lstm.to_empty(device="cpu")
        self.head_weight = nn.Parameter(torch.empty(vocabulary, hidden_size))
        self.head_bias = nn.Parameter(torch.empty(vocabulary))
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.uniform_(-INIT_RANGE, INIT_RANGE, generator=generator)
        # Decision i's head rows, padded to the largest vocabulary: (n, widest).
        widest = max(self.sizes)
        rows = torch.zeros(len(self.sizes), widest, dtype=torch.long)
        valid = torch.zeros(len(self.sizes), widest, dtype=torch.bool)
        for i, (offset, size) in enumerate(zip(offsets, self.sizes, strict=True)):
            rows[i, :size] = torch.arange(offset, offset + size)
            valid[i, :size] = True
        self.offsets: torch.Tensor
        self.rows: torch.Tensor
        self.valid: torch.Tensor
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("valid", valid, persistent=False)

    def forward(self, decisions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-decision log-probabilities and entropies of a batch ``(B, n)`` of choice
        indices, each ``(B, n)``."""
        tokens = decisions + self.offsets
        batch = decisions.shape[0]
        inputs = torch.cat([self.start.expand(batch, 1, -1), self.embedding[tokens[:, :-1]]], dim=1)
        outputs, _ = self.lstm(inputs)
        # Each step's logits over its own decision's choices only.
        weight = self.head_weight[self.rows]  # (n, widest, hidden)
        logits = torch.einsum("bnh,nkh->bnk", outputs, weight) + self.head_bias[self.rows]
        logits = logits.masked_fill(~self.valid, float("-inf"))
        log_probs = torch.log_softmax(logits, dim=-1)
        chosen = log_probs.gather(-1, decisions.unsqueeze(-1)).squeeze(-1)
        finite = log_probs.masked_fill(~self.valid, 0.0)
        entropy = -(log_probs.exp() * finite).sum(-1)
        return chosen, entropy
