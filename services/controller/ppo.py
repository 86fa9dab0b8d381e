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

This module is the strategy; the policy is :mod:`.ppo_policy`, its NumPy sampler
:mod:`.ppo_sampler`, the loss and update :mod:`.ppo_update`, and the saved state's formats
:mod:`.ppo_state`.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

from mnas.space import SearchSpace
from services.controller.learner import (
    LearnerError,
    LearnerProcess,
    UpdateRequest,
    UpdateResult,
    shared_learner,
)
from services.controller.ppo_policy import Policy
from services.controller.ppo_sampler import Sampler
from services.controller.ppo_state import (
    STATE_FORMAT,
    load_state,
    read_state,
    save_state,
    write_state,
)
from services.controller.ppo_update import Sample, apply_update, ppo_loss, run_epochs
from services.controller.strategy import (
    Outcome,
    Proposal,
    Strategy,
    StrategyConfig,
    StrategyStatus,
    derive_seed,
)

__all__ = ["PPOStrategy", "Policy", "apply_update", "ppo_loss", "run_epochs"]

_logger = logging.getLogger(__name__)

# Proposals sampled at once, at least: one pass over the decisions costs about twice as
# much for 16 sequences as for one. A draw covers a batch and a few more, so that about one
# draw serves each update; those not proposed before the next update are dropped.
PROPOSALS_AHEAD = 16
PROPOSALS_PAST_BATCH = 4


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
        self._sampler = Sampler(self.policy)
        # Proposals drawn ahead from ``self._sampler``, the next one last; dropped when an
        # update replaces the sampler.
        self._drawn: list[tuple[list[int], list[float]]] = []
        self._drawn_by: Sampler | None = None
        self._baseline: float | None = None
        self._pending: list[Sample] = []
        self._updates = 0
        self._entropy = self._mean_entropy([space.reference_decisions()])
        # Guards the policy and optimizer, and the batches handed to the learner.
        self._lock = threading.RLock()
        self._queued: list[list[Sample]] = []  # handed to the learner, not yet applied
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
            Sample(
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

    def _request(self, batch: Sequence[Sample]) -> UpdateRequest:
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

    def _update(self, batch: Sequence[Sample]) -> None:
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
        self._sampler = Sampler(self.policy)  # proposals switch to the new policy here

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

        The layout: :func:`~services.controller.ppo_state.write_state`'s, its weights the
        bytes the learner process sent, not serialized again.
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
            weights = self._saved_weights()
        return write_state(header, weights)

    def restore(self, data: bytes) -> None:
        payload = read_state(data)
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
            Sample(
                number=int(number),
                decisions=tuple(int(d) for d in decisions),
                reward=float(reward),
                advantage=float(advantage),
                log_probs=tuple(float(p) for p in log_probs),
            )
            for number, decisions, reward, advantage, log_probs in payload["pending"]
        ]
        self._sampler = Sampler(self.policy)
        self._drawn = [
            ([int(d) for d in decisions], [float(p) for p in log_probs])
            for decisions, log_probs in reversed(payload.get("drawn", []))
        ]
        self._drawn_by = self._sampler
