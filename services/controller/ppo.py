"""The RL controller: an LSTM policy over the space's decisions, trained with PPO.

MnasNet (section 4.2) samples architectures token by token from an RNN controller (NASNet's
one-layer LSTM) and trains it with Proximal Policy Optimization to maximize the expected
reward. Here:

- The policy emits the space's decisions in order. Each decision has its own embedding
  table and its own softmax head over its choices; the first step reads a learned start
  input, every later step the embedding of the token before it. All weights start uniform
  in [-0.1, 0.1] (NASNet), drawn from a generator seeded from the strategy's seed.
- Sampling draws its uniforms from a ``torch.Generator`` (saved in :meth:`state`) and runs
  the LSTM step by step on NumPy copies of the weights, a batch's worth of sequences at
  once, which keeps a proposal near a tenth of a millisecond; log-probabilities, training and
  :meth:`PPOStrategy.log_prob` run the same weights through ``torch.nn.LSTM``,
  teacher-forced over whole sequences.
- Rewards arrive in any order. Each completed outcome's advantage is its reward minus the
  exponential moving average of the rewards observed before it (the first reward starts
  the average, so its advantage is 0); the average then takes the reward in:
  ``b <- decay * b + (1 - decay) * r``. Failed trials are counted and otherwise ignored.
- Every ``batch_size`` completed outcomes, PPO runs ``epochs`` Adam steps on the batch,
  maximizing the clipped surrogate per decision, ``min(r * A, clip(r, 1 - c, 1 + c) * A)``
  with ``r = exp(log_prob_now - log_prob_proposed)``, plus ``entropy_weight`` times the
  mean per-decision entropy. The proposed log-probs come with each outcome, so a trial
  sampled before the last update is weighted correctly.
- In the controller the updates run in the background (:meth:`learn_in_background`): a
  learner thread hands each batch to the learner process (:mod:`.learner`) and loads the
  answer, and proposals keep coming from the sampler of the last finished update while
  the next is computed, so an update never holds up dispatching trials. Used directly,
  the strategy updates inline and a search is reproducible from its seed.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from mnas.space import SearchSpace
from services.controller.learner import (
    LearnerError,
    LearnerProcess,
    UpdateRequest,
    UpdateResult,
    load_state,
    save_state,
    shared_learner,
)
from services.controller.strategies import (
    Outcome,
    PPOConfig,
    Proposal,
    Strategy,
    StrategyConfig,
    StrategyStatus,
    derive_seed,
    register,
)

__all__ = ["PPOStrategy", "Policy", "apply_update", "ppo_loss", "run_epochs"]

_logger = logging.getLogger(__name__)

INIT_RANGE = 0.1
# 2: a JSON header, then policy and optimizer as the learner process sends them (1: all
# in one torch.save, still read).
STATE_FORMAT = 2
STATE_MAGIC = b"mnas-ppo-state\n"
# Proposals sampled at once, at least: one pass over the decisions costs about twice as
# much for 16 sequences as for one. A draw covers a batch and a few more, so that about one
# draw serves each update; those not proposed before the next update are dropped.
PROPOSALS_AHEAD = 16
PROPOSALS_PAST_BATCH = 4

_F32 = npt.NDArray[np.float32]


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


class _Sampler:
    """The policy's weights as NumPy arrays, for sampling sequences step by step."""

    def __init__(self, policy: Policy) -> None:
        with torch.no_grad():
            lstm = dict(policy.lstm.named_parameters())
            weight_ih = lstm["weight_ih_l0"]
            bias = lstm["bias_ih_l0"] + lstm["bias_hh_l0"]
            # Input contribution of every token's embedding (and the start input), once.
            self.token_gates: _F32 = (policy.embedding @ weight_ih.T + bias).numpy()
            self.start_gates: _F32 = (weight_ih @ policy.start + bias).numpy()
            self.weight_hh_t: _F32 = np.ascontiguousarray(lstm["weight_hh_l0"].numpy().T)
            head_weight = policy.head_weight.numpy()
            head_bias = policy.head_bias.numpy()
        self.hidden = policy.hidden_size
        self.heads = [
            (np.ascontiguousarray(head_weight[o : o + s].T), head_bias[o : o + s].copy(), o)
            for o, s in zip(policy.offsets_list, policy.sizes, strict=True)
        ]

    def sample(
        self, uniforms: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Sequences drawn by inverse CDF from ``uniforms`` ``(B, n)`` (one per decision),
        all ``B`` at once, and their per-decision log-probabilities, each ``(B, n)``."""
        batch = uniforms.shape[0]
        hidden = self.hidden
        h: npt.NDArray[np.floating[Any]] = np.zeros((batch, hidden), dtype=np.float32)
        c: npt.NDArray[np.floating[Any]] = np.zeros((batch, hidden), dtype=np.float32)
        gates_in: npt.NDArray[np.floating[Any]] = self.start_gates
        decisions = np.empty(uniforms.shape, dtype=np.int64)
        log_probs = np.empty(uniforms.shape, dtype=np.float64)
        rows = np.arange(batch)
        for step, (weight_t, bias, offset) in enumerate(self.heads):
            gates = gates_in + h @ self.weight_hh_t
            sig = 1.0 / (1.0 + np.exp(-gates))
            candidate = np.tanh(gates[:, 2 * hidden : 3 * hidden])
            c = sig[:, hidden : 2 * hidden] * c + sig[:, :hidden] * candidate
            h = sig[:, 3 * hidden :] * np.tanh(c)
            logits = (h @ weight_t + bias).astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            cdf = np.cumsum(np.exp(logits), axis=1)
            total = cdf[:, -1]
            # The first index whose cumulative mass exceeds u (searchsorted, side="right").
            below = (cdf <= (uniforms[:, step] * total)[:, None]).sum(axis=1)
            choice = np.minimum(below, cdf.shape[1] - 1)
            decisions[:, step] = choice
            log_probs[:, step] = logits[rows, choice] - np.log(total)
            gates_in = self.token_gates[offset + choice]
        return decisions, log_probs


def ppo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    clip: float,
    entropy: torch.Tensor | None = None,
    entropy_weight: float = 0.0,
) -> torch.Tensor:
    """The negated PPO objective for per-decision ``log_probs`` ``(B, n)``, the log-probs
    they were sampled with, and one advantage per sequence ``(B,)``."""
    ratio = torch.exp(log_probs - old_log_probs)
    advantage = advantages.unsqueeze(-1)
    surrogate = torch.minimum(ratio * advantage, ratio.clamp(1.0 - clip, 1.0 + clip) * advantage)
    loss = -surrogate.mean()
    if entropy is not None and entropy_weight:
        loss = loss - entropy_weight * entropy.mean()
    return loss


@dataclass(frozen=True)
class _Sample:
    """A completed outcome waiting for the next update."""

    number: int
    decisions: tuple[int, ...]
    reward: float
    advantage: float
    log_probs: tuple[float, ...]


def run_epochs(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    settings: PPOConfig,
    batch: Sequence[_Sample],
) -> float:
    """``settings.epochs`` Adam steps of PPO on ``batch``; the mean per-decision entropy
    over the batch as the last epoch saw it."""
    decisions = torch.tensor([s.decisions for s in batch], dtype=torch.long)
    advantages = torch.tensor([s.advantage for s in batch], dtype=torch.float32)
    old = _old_log_probs(policy, batch, decisions)
    entropy = torch.zeros(())
    for _ in range(settings.epochs):
        log_probs, entropy = policy(decisions)
        loss = ppo_loss(log_probs, old, advantages, settings.clip, entropy, settings.entropy_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return float(entropy.detach().mean())


def _old_log_probs(
    policy: Policy, batch: Sequence[_Sample], decisions: torch.Tensor
) -> torch.Tensor:
    """The log-probs each sequence was proposed with, ``(B, n)``. An outcome without
    them (proposed by another strategy) takes the current policy's."""
    if all(s.log_probs for s in batch):
        return torch.tensor([s.log_probs for s in batch], dtype=torch.float32)
    with torch.no_grad():
        current, _ = policy(decisions)
    rows = [
        torch.tensor(s.log_probs, dtype=torch.float32) if s.log_probs else current[i]
        for i, s in enumerate(batch)
    ]
    return torch.stack(rows)


# The learner process's modules by shape: every request brings its own weights.
_MODULES: dict[tuple[tuple[int, ...], int], tuple[Policy, torch.optim.Optimizer]] = {}


def apply_update(
    sizes: tuple[int, ...],
    settings: PPOConfig,
    state: bytes,
    batch: Sequence[tuple[Sequence[int], float, Sequence[float]]],
) -> tuple[bytes, float]:
    """What the learner process does with a request: the update of the policy and
    optimizer in ``state`` (:func:`save_state`) on ``batch``, as :meth:`PPOStrategy._update`
    would do it; the new state and the entropy of :func:`run_epochs`."""
    key = (tuple(sizes), settings.hidden_size)
    if key not in _MODULES:
        policy = Policy(sizes, settings.hidden_size, torch.Generator().manual_seed(0))
        _MODULES[key] = (policy, torch.optim.Adam(policy.parameters()))
    policy, optimizer = _MODULES[key]
    load_state(state, policy, optimizer)
    for group in optimizer.param_groups:  # the state holds moments, not hyper-parameters
        group["lr"] = settings.learning_rate
    samples = [
        _Sample(number=0, decisions=tuple(d), reward=0.0, advantage=float(a), log_probs=tuple(p))
        for d, a, p in batch
    ]
    entropy = run_epochs(policy, optimizer, settings, samples)
    return save_state(policy, optimizer), entropy


def _read_state(data: bytes) -> dict[str, Any]:
    """A state of :meth:`PPOStrategy.state` as a dict, ``weights`` included; also reads
    format 1 (one ``torch.save`` of everything). ``ValueError`` when it is neither."""
    if data.startswith(STATE_MAGIC):
        start = len(STATE_MAGIC)
        size = int.from_bytes(data[start : start + 8], "big")
        try:
            payload = json.loads(data[start + 8 : start + 8 + size])
        except ValueError as err:
            raise ValueError(f"strategy state: not a PPO state ({err})") from None
        if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
            raise ValueError("strategy state: not a PPO state of a known format")
        payload["weights"] = data[start + 8 + size :]
        return payload
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as err:
        raise ValueError(f"strategy state: not a PPO state ({err})") from None
    if not isinstance(payload, dict) or payload.get("format") != 1:
        raise ValueError("strategy state: not a PPO state of a known format")
    return payload


@register
class PPOStrategy(Strategy):
    """Samples from the LSTM policy; a PPO update after every ``batch_size`` rewards."""

    name = "ppo"

    def __init__(self, space: SearchSpace, seed: int, config: StrategyConfig | None = None) -> None:
        super().__init__(space, seed, config)
        self.settings = self.config.ppo
        self.settings.validate()
        init = torch.Generator().manual_seed(derive_seed(seed, "init"))
        self.policy = Policy(self._sizes, self.settings.hidden_size, init)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.settings.learning_rate)
        self._generator = torch.Generator().manual_seed(derive_seed(seed, "sample"))
        self._sampler = _Sampler(self.policy)
        # Proposals drawn ahead from ``self._sampler``, the next one last; dropped when an
        # update replaces the sampler.
        self._drawn: list[tuple[list[int], list[float]]] = []
        self._drawn_by: _Sampler | None = None
        self._baseline: float | None = None
        self._pending: list[_Sample] = []
        self._updates = 0
        self._entropy = self._mean_entropy([space.reference_decisions()])
        # Guards the policy and optimizer, and the batches handed to the learner.
        self._lock = threading.RLock()
        self._queued: list[list[_Sample]] = []  # handed to the learner, not yet applied
        self._wake = threading.Condition(self._lock)
        self._on_update: Callable[[], None] | None = None
        self._learner: threading.Thread | None = None
        self._remote: LearnerProcess | None = None
        # save_state() of the policy and optimizer as they are, once made (None: not yet).
        self._weights: bytes | None = None
        self._updating = False
        self._closed = False

    # -- proposing -------------------------------------------------------------------

    def propose(self) -> Proposal:
        sampler = self._sampler  # the learner may replace it at any time
        if self._drawn_by is not sampler or not self._drawn:
            ahead = max(PROPOSALS_AHEAD, self.settings.batch_size + PROPOSALS_PAST_BATCH)
            shape = (ahead, len(self._sizes))
            uniforms = torch.rand(shape, generator=self._generator, dtype=torch.float64)
            decisions, log_probs = sampler.sample(uniforms.numpy())
            self._drawn = list(zip(decisions.tolist(), log_probs.tolist(), strict=True))[::-1]
            self._drawn_by = sampler
        decisions_, log_probs_ = self._drawn.pop()
        return self._proposal(decisions_, log_probs_)

    def log_prob(self, decisions: Sequence[int]) -> float | None:
        self._check_decisions(decisions, "decisions")
        with self._lock, torch.no_grad():
            chosen, _ = self.policy(torch.tensor([list(decisions)], dtype=torch.long))
        return float(chosen.sum())

    # -- learning --------------------------------------------------------------------

    @property
    def baseline(self) -> float | None:
        """The moving average of observed rewards (None before the first)."""
        return self._baseline

    def _learn(self, outcome: Outcome) -> bool:
        if outcome.reward is None:
            return False
        reward = float(outcome.reward)
        baseline = reward if self._baseline is None else self._baseline
        decay = self.settings.baseline_decay
        self._baseline = decay * baseline + (1.0 - decay) * reward
        log_probs = outcome.log_probs if len(outcome.log_probs) == len(self._sizes) else ()
        self._pending.append(
            _Sample(
                number=outcome.number,
                decisions=tuple(outcome.decisions),
                reward=reward,
                advantage=reward - baseline,
                log_probs=tuple(float(p) for p in log_probs),
            )
        )
        if len(self._pending) < self.settings.batch_size:
            return False
        batch, self._pending = self._pending, []
        if self._on_update is not None:
            with self._lock:
                self._queued.append(batch)
                self._wake.notify_all()
            return False
        self._update(batch)
        return True

    # -- the learner thread ----------------------------------------------------------

    def learn_in_background(
        self, on_update: Callable[[], None], *, learner: LearnerProcess | None = None
    ) -> bool:
        """See :meth:`Strategy.learn_in_background`. The updates run in ``learner`` (by
        default the controller's :func:`shared_learner`), or on the learner thread when
        that process cannot do one."""
        with self._lock:
            if self._learner is not None:
                raise RuntimeError("learn_in_background: already learning in the background")
            self._on_update = on_update
            self._remote = learner if learner is not None else shared_learner()
            self._learner = threading.Thread(
                target=self._learn_loop, name="ppo-learner", daemon=True
            )
            # Batches restored from a checkpoint (see state()) are learned first.
            size = self.settings.batch_size
            while len(self._pending) >= size:
                self._queued.append(self._pending[:size])
                self._pending = self._pending[size:]
        self._learner.start()
        return True

    def learning(self) -> bool:
        with self._lock:
            return bool(self._queued) or self._updating

    def backlog(self) -> int:
        with self._lock:
            return len(self._queued)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        learner = self._learner
        if learner is not None and learner is not threading.current_thread():
            learner.join()

    def _learn_loop(self) -> None:
        assert self._on_update is not None
        while True:
            with self._lock:
                while not self._queued and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                self._updating = True
                batch = self._queued[0]
                request = self._request(batch) if self._remote is not None else None
            result = self._update_remotely(request) if request is not None else None
            updated = False
            with self._lock:
                self._queued.pop(0)
                try:
                    if result is not None:
                        load_state(result.state, self.policy, self.optimizer)
                        self._updated(result.entropy)
                        self._weights = result.state
                    else:
                        self._update(batch)
                    updated = True
                except Exception:  # a bug must not stop the search: it goes on without it
                    _logger.exception("PPO update failed; its batch is dropped")
            try:
                if updated:
                    self._on_update()
            except Exception:  # the next update's checkpoint will be written in its place
                _logger.exception("after a PPO update")
            finally:
                with self._lock:
                    self._updating = False
                    self._wake.notify_all()

    def _request(self, batch: Sequence[_Sample]) -> UpdateRequest:
        """What the learner process needs for ``batch`` (lock held)."""
        return UpdateRequest(
            sizes=self._sizes,
            settings=self.settings,
            state=self._saved_weights(),
            batch=[(s.decisions, s.advantage, s.log_probs) for s in batch],
        )

    def _update_remotely(self, request: UpdateRequest) -> UpdateResult | None:
        """The update done by the learner process; None when it cannot (then the update
        runs here, on the learner thread)."""
        assert self._remote is not None
        try:
            return self._remote.update(request)
        except LearnerError as err:
            _logger.warning("%s; this update runs in the controller's process", err)
        except Exception:
            _logger.exception("learner process; this update runs in the controller's process")
        return None

    def _update(self, batch: Sequence[_Sample]) -> None:
        """``epochs`` Adam steps of PPO on ``batch``, here."""
        self._updated(run_epochs(self.policy, self.optimizer, self.settings, batch))

    def _saved_weights(self) -> bytes:
        """The policy and optimizer as bytes (lock held)."""
        if self._weights is None:
            self._weights = save_state(self.policy, self.optimizer)
        return self._weights

    def _updated(self, entropy: float) -> None:
        self._weights = None
        self._updates += 1
        self._entropy = entropy
        self._sampler = _Sampler(self.policy)  # proposals switch to the new policy here

    def _mean_entropy(self, sequences: Sequence[Sequence[int]]) -> float:
        with torch.no_grad():
            _, entropy = self.policy(torch.tensor([list(s) for s in sequences], dtype=torch.long))
        return float(entropy.mean())

    def status(self) -> StrategyStatus:
        """``entropy``: mean per-decision entropy over the last update's batch (over the
        reference architecture's decisions before the first update)."""
        return StrategyStatus(
            updates=self._updates, observed=len(self._observed), entropy=self._entropy
        )

    # -- state -----------------------------------------------------------------------

    def state(self) -> bytes:
        """Everything to continue from here; batches waiting for the learner are kept as
        outcomes not yet learned from (a restored strategy learns them first).

        The layout: :data:`STATE_MAGIC`, the length of a JSON header (8 bytes, big-endian),
        the header, then the policy and optimizer as :func:`save_state` writes them. The
        weights are the bytes the learner process sent, not serialized again.
        """
        with self._lock:
            waiting = [sample for batch in self._queued for sample in batch] + self._pending
            generator = self._generator.get_state().numpy().tobytes()
            header: dict[str, Any] = {
                **self._header(),
                "format": STATE_FORMAT,
                "hidden_size": self.settings.hidden_size,
                "generator": base64.b64encode(generator).decode(),
                "baseline": self._baseline,
                "updates": self._updates,
                "entropy": self._entropy,
                # Drawn from the current policy, not yet proposed: the next proposals.
                "drawn": [list(p) for p in reversed(self._drawn)]
                if self._drawn_by is self._sampler
                else [],
                "pending": [
                    [s.number, list(s.decisions), s.reward, s.advantage, list(s.log_probs)]
                    for s in waiting
                ],
            }
            text = json.dumps(header, separators=(",", ":")).encode()
            weights = self._saved_weights()
        return b"".join([STATE_MAGIC, len(text).to_bytes(8, "big"), text, weights])

    def restore(self, data: bytes) -> None:
        payload = _read_state(data)
        if payload.get("hidden_size") != self.settings.hidden_size:
            raise ValueError(
                f"strategy state: hidden_size {payload.get('hidden_size')}, "
                f"the config says {self.settings.hidden_size}"
            )
        self._check_header(payload)
        if payload["format"] == 1:  # one torch.save of everything
            self.policy.load_state_dict(payload["policy"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self._weights = None
            self._generator.set_state(payload["generator"])
        else:
            load_state(payload["weights"], self.policy, self.optimizer)
            self._weights = payload["weights"]
            generator = base64.b64decode(payload["generator"])
            self._generator.set_state(torch.frombuffer(bytearray(generator), dtype=torch.uint8))
        self._baseline = payload["baseline"]
        self._updates = int(payload["updates"])
        self._entropy = float(payload["entropy"])
        self._pending = [
            _Sample(
                number=int(number),
                decisions=tuple(int(d) for d in decisions),
                reward=float(reward),
                advantage=float(advantage),
                log_probs=tuple(float(p) for p in log_probs),
            )
            for number, decisions, reward, advantage, log_probs in payload["pending"]
        ]
        self._sampler = _Sampler(self.policy)
        self._drawn = [
            ([int(d) for d in decisions], [float(p) for p in log_probs])
            for decisions, log_probs in reversed(payload.get("drawn", []))
        ]
        self._drawn_by = self._sampler
