"""What TPE with local moves does beyond the strategy contract (``test_strategies.py``):
where its local moves land, how it treats failures and outcomes it did not propose, and
what its state holds."""

from __future__ import annotations

import json

import pytest

from mnas.space import SearchSpace
from services.controller.strategy import Outcome, StrategyConfig, TPEConfig
from services.controller.tpe import TPEStrategy

SPACE = SearchSpace()


def reward_of(decisions: tuple[int, ...]) -> float:
    """The share of decisions at their first choice."""
    return sum(d == 0 for d in decisions) / len(decisions)


def new(local_fraction: float = 0.5, startup_trials: int = 5) -> TPEStrategy:
    config = TPEConfig(startup_trials=startup_trials, local_fraction=local_fraction)
    return TPEStrategy(SPACE, 3, StrategyConfig(tpe=config))


def differences(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))


def test_every_other_proposal_is_a_new_neighbour_of_the_best_trial() -> None:
    strategy = new()
    first = strategy.propose()  # nothing completed yet: TPE's (uniform) proposal
    strategy.observe(Outcome(0, first.decisions, reward_of(first.decisions)))
    seen = {first.decisions}
    best = first.decisions  # the first of the highest reward
    for number in range(1, 41):
        proposal = strategy.propose()
        if number % 2 == 1:  # proposals 1, 3, 5...: local moves
            assert differences(proposal.decisions, best) == 1
            assert proposal.decisions not in seen
        seen.add(proposal.decisions)
        strategy.observe(Outcome(number, proposal.decisions, reward_of(proposal.decisions)))
        if reward_of(proposal.decisions) > reward_of(best):
            best = proposal.decisions
    assert reward_of(best) > reward_of(first.decisions)


def test_without_local_moves_proposals_are_tpe_alone() -> None:
    local = new(local_fraction=0.5)
    plain = new(local_fraction=0.0)
    moves = []
    for number in range(12):
        a, b = local.propose(), plain.propose()
        moves.append(a.decisions != b.decisions)
        local.observe(Outcome(number, a.decisions, reward_of(a.decisions)))
        plain.observe(Outcome(number, b.decisions, reward_of(b.decisions)))
    assert moves[0] is False  # the same seed, and nothing to move from yet
    assert all(moves[1::2])


def test_a_failed_trial_stays_in_flight() -> None:
    strategy = new()
    proposals = [strategy.propose() for _ in range(3)]
    assert strategy.observe(Outcome(1, proposals[1].decisions, None)) is False
    assert strategy.observe(Outcome(0, proposals[0].decisions, 0.5)) is True
    trials = json.loads(strategy.state())["trials"]
    assert trials == [
        [list(proposals[0].decisions), 0.5],
        [list(proposals[1].decisions), None],
        [list(proposals[2].decisions), None],
    ]


def test_an_outcome_it_did_not_propose_joins_as_completed() -> None:
    strategy = new()
    mine = strategy.propose()
    other = tuple(SPACE.reference_decisions())
    assert mine.decisions != other
    assert strategy.observe(Outcome(7, other, 0.25)) is True
    trials = json.loads(strategy.state())["trials"]
    assert trials == [[list(mine.decisions), None], [list(other), 0.25]]
    # Its result counts: the next local move is a neighbour of it, the best so far.
    local = strategy.propose()
    assert differences(local.decisions, other) == 1


def test_identical_proposals_take_outcomes_in_order() -> None:
    strategy = new()
    proposal = strategy.propose()
    other = strategy.propose()
    assert strategy.observe(Outcome(5, proposal.decisions, 0.1)) is True
    assert strategy.observe(Outcome(6, proposal.decisions, 0.2)) is True  # not proposed twice
    trials = json.loads(strategy.state())["trials"]
    assert trials == [
        [list(proposal.decisions), 0.1],
        [list(other.decisions), None],
        [list(proposal.decisions), 0.2],
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(format=9), "not a TPE state of a known format"),
        (lambda p: p.update(trials=[[[0, 1], 0.5]]), "not a trial"),
        (lambda p: p.update(trials=[[[9] * 42, 0.5]]), r"trial\[0\] \(block0\.op\)"),
        (lambda p: p.update(trials=[[[0] * 42, "x"]]), "not a trial"),
    ],
)
def test_restore_rejects_a_malformed_state(change: object, message: str) -> None:
    strategy = new()
    strategy.observe(Outcome(0, strategy.propose().decisions, 0.5))
    payload = json.loads(strategy.state())
    change(payload)  # type: ignore[operator]
    with pytest.raises(ValueError, match=f"strategy state: .*{message}"):
        new().restore(json.dumps(payload).encode())


# -- looking for a front (objective pareto) ---------------------------------------------


WEIGHTS = [((i * 7) % 5 + 1, (i * 3) % 4 + 1) for i in range(len(SPACE.decisions))]


def accuracy_of(decisions: tuple[int, ...]) -> float:
    """Higher choices are more accurate, each decision by its own weight."""
    total = sum(w for w, _ in WEIGHTS)
    sizes = [d.size for d in SPACE.decisions]
    return (
        sum(w * d / (n - 1) for (w, _), d, n in zip(WEIGHTS, decisions, sizes, strict=True)) / total
    )


def latency_of(decisions: tuple[int, ...]) -> float:
    """Higher choices are slower, by other weights: accuracy and latency pull apart."""
    return 0.001 * (1 + sum(v * d for (_, v), d in zip(WEIGHTS, decisions, strict=True)))


def front_search(local_fraction: float = 0.5) -> TPEStrategy:
    config = TPEConfig(startup_trials=5, local_fraction=local_fraction)
    return TPEStrategy(SPACE, 3, StrategyConfig(tpe=config, front=True))


def finish(number: int, decisions: tuple[int, ...]) -> Outcome:
    accuracy = accuracy_of(decisions)
    return Outcome(number, decisions, accuracy, (), accuracy, latency_of(decisions))


def front_of(points: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    values = {p: (accuracy_of(p), latency_of(p)) for p in points}
    return [
        p
        for p, (acc, lat) in values.items()
        if not any(a >= acc and t <= lat and (a, t) != (acc, lat) for a, t in values.values())
    ]


def test_looking_for_a_front_its_local_moves_start_from_the_front() -> None:
    strategy = front_search()
    done: list[tuple[int, ...]] = []
    parents: set[tuple[int, ...]] = set()
    for number in range(41):
        proposal = strategy.propose()
        if number % 2 == 1:  # local moves: one decision away from a trial of the front
            neighbours = [p for p in front_of(done) if differences(proposal.decisions, p) == 1]
            assert neighbours
            assert proposal.decisions not in done
            parents.update(neighbours)
        strategy.observe(finish(number, proposal.decisions))
        done.append(proposal.decisions)
    assert len(front_of(done)) > 2
    assert len(parents) > 2  # the moves spread along the front


def test_looking_for_a_front_it_learns_from_accuracy_and_latency_not_the_reward() -> None:
    a, b = front_search(), front_search()
    for number in range(12):
        pa, pb = a.propose(), b.propose()
        assert pa.decisions == pb.decisions
        accuracy, latency = accuracy_of(pa.decisions), latency_of(pa.decisions)
        a.observe(Outcome(number, pa.decisions, accuracy, (), accuracy, latency))
        b.observe(Outcome(number, pb.decisions, 0.0, (), accuracy, latency))  # reward unused
    assert a.propose().decisions == b.propose().decisions
    assert a.state() == b.state()
    state = json.loads(a.state())
    assert state["front"] is True
    assert all(len(value) == 2 for _, value in state["trials"] if value is not None)


def test_a_front_search_and_a_reward_search_do_not_take_each_others_state() -> None:
    front, reward = front_search(), new()
    with pytest.raises(ValueError, match="strategy state: made for another objective"):
        front.restore(reward.state())
    with pytest.raises(ValueError, match="strategy state: made for another objective"):
        reward.restore(front.state())


@pytest.mark.parametrize("name", ["ppo", "evolution"])
def test_strategies_that_climb_one_reward_refuse_to_look_for_a_front(name: str) -> None:
    from services.controller.strategies import make_strategy

    with pytest.raises(ValueError, match=f"strategy {name} cannot look for a front"):
        make_strategy(name, SPACE, 0, StrategyConfig(front=True))


def test_looking_for_a_front_a_quarter_of_the_proposals_are_local_moves_by_default() -> None:
    config = StrategyConfig(tpe=TPEConfig(startup_trials=5), front=True)
    local, plain = (
        TPEStrategy(SPACE, 3, config),
        TPEStrategy(
            SPACE,
            3,
            StrategyConfig(tpe=TPEConfig(startup_trials=5, local_fraction=0.0), front=True),
        ),
    )
    moved = []
    for number in range(16):
        a, b = local.propose(), plain.propose()
        moved.append(a.decisions != b.decisions)
        local.observe(finish(number, a.decisions))
        plain.observe(finish(number, b.decisions))
    assert [i for i, m in enumerate(moved) if m][:1] == [3]  # proposals 3, 7, 11, 15
    assert all(moved[3::4])
