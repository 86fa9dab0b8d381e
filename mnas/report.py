"""A search's report as one self-contained HTML page: a summary, the Pareto front of
accuracy against latency, reward over the trials, the latency histogram, and the best
trials with their architectures. Plots are inline SVG; the page has no scripts and loads
nothing from anywhere.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from mnas.defaults import DEFAULT_DATASET, DEFAULT_DEVICE_CLASS, DEFAULT_STRATEGY, DEFAULT_WIDTH
from mnas.latency import reported_seconds
from mnas.objective import describe, looks_for_front, target_ms
from mnas.pareto import pareto_front
from mnas.report_plots import Point, latency_histogram_svg, pareto_svg, reward_svg
from mnas.v1 import common_pb2

__all__ = ["reference_summary", "render_report"]

TS = common_pb2.TrialState
RS = common_pb2.ReferenceState
_SCORED = (TS.TRIAL_STATE_COMPLETED, TS.TRIAL_STATE_STOPPED)

_CSS = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
       color: #1b1b1b; background: #fff; margin: 0; }
main { max-width: 1150px; margin: 0 auto; padding: 24px 28px 40px; }
h1 { font-size: 1.6em; margin: 0 0 2px; }
h2 { font-size: 1.2em; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #555; margin: 0 0 16px; }
.summary { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr));
           gap: 4px 24px; margin: 0; }
.summary div { display: flex; gap: 8px; border-bottom: 1px dotted #e3e3e3; padding: 3px 0; }
.summary dt { color: #555; min-width: 110px; }
.summary dd { margin: 0; font-weight: 600; }
.error { color: #a40000; }
figure { margin: 0; }
figure svg { display: block; width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9em; margin-top: 2px; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; margin-top: 16px; }
.empty { padding: 24px; background: #f6f6f6; border: 1px solid #e3e3e3; color: #444; }
table { border-collapse: collapse; width: 100%; font-size: 0.92em; }
th, td { text-align: right; padding: 4px 8px; border-bottom: 1px solid #e6e6e6;
         vertical-align: top; }
th { background: #f3f3f3; }
td.arch, th.arch { text-align: left; }
code { font: 0.92em/1.35 ui-monospace, "DejaVu Sans Mono", monospace; word-break: break-word; }
.front { color: #d62728; font-weight: 700; }
@media print {
  main { max-width: none; padding: 0; }
  figure, tr, .summary { break-inside: avoid; }
  h2 { break-after: avoid; }
}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _state_name(search: common_pb2.Search) -> str:
    return common_pb2.SearchState.Name(search.state).removeprefix("SEARCH_STATE_").lower()


def _trial_state_name(state: common_pb2.TrialState.ValueType) -> str:
    return TS.Name(state).removeprefix("TRIAL_STATE_").lower()


def _latency_ms(trial: common_pb2.Trial) -> float:
    return reported_seconds(trial.latency) * 1e3


def _point(trial: common_pb2.Trial) -> Point:
    return Point(
        number=trial.number,
        reward=trial.reward,
        accuracy=trial.training.accuracy,
        latency_ms=_latency_ms(trial),
        stopped=trial.state == TS.TRIAL_STATE_STOPPED,
    )


def reference_summary(search: common_pb2.Search) -> str | None:
    """What the search's reference network (``spec.reference``) scored on the trials'
    proxy, e.g. "mnasnet-a1 at width 0.5, 28x28: held-out accuracy 0.8120 on the same
    proxy"; None when the search has none."""
    if not search.HasField("reference"):
        return None
    reference = search.reference
    name = "mobilenetv2-like (space reference)" if reference.name == "space" else reference.name
    space = search.spec.space
    where = f"{name} at width {space.width or DEFAULT_WIDTH:g}"
    if space.resolution:
        where += f", {space.resolution}x{space.resolution}"
    if reference.state == RS.REFERENCE_STATE_MEASURED:
        accuracy = reference.training.accuracy
        return f"{where}: held-out accuracy {accuracy:.4f} on the same proxy"
    if reference.state == RS.REFERENCE_STATE_FAILED:
        return f"{where}: failed ({reference.error or 'no reason given'})"
    return f"{where}: not measured yet"


def _summary(
    search: common_pb2.Search, trials: Sequence[common_pb2.Trial], best: common_pb2.Trial | None
) -> str:
    spec = search.spec
    by_state = Counter(_trial_state_name(t.state) for t in trials)
    order = ("completed", "stopped", "failed", "cancelled", "running", "pending")
    counts = ", ".join(f"{by_state[name]} {name}" for name in order if by_state[name])
    rows: list[tuple[str, str]] = [
        ("state", _state_name(search)),
        (
            "trials",
            f"{by_state['completed'] + by_state['stopped']} of {spec.budget.max_trials} done"
            f"{': ' if counts else ''}{counts}",
        ),
        (
            "best reward",
            f"{best.reward:.4f} (trial {best.number})" if best is not None else "none yet",
        ),
    ]
    reference = reference_summary(search)
    if reference is not None:
        rows.append(("reference", reference))
    rows += [
        ("objective", describe(spec.objective)),
        ("strategy", spec.strategy or DEFAULT_STRATEGY),
        ("device class", spec.latency.device_class or DEFAULT_DEVICE_CLASS),
        ("dataset", spec.training.dataset or DEFAULT_DATASET),
        ("budget", f"{spec.budget.max_trials} trials, {spec.budget.parallel_trials or 1} at once"),
    ]
    if search.HasField("created_at"):
        rows.append(("created", _time(search.created_at.ToDatetime(tzinfo=UTC))))
    if search.HasField("finished_at"):
        rows.append(("finished", _time(search.finished_at.ToDatetime(tzinfo=UTC))))
    items = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in rows)
    error = f'<p class="error">error: {_e(search.error)}</p>' if search.error else ""
    return f'<dl class="summary">{items}</dl>{error}'


def _results(
    spec: common_pb2.SearchSpec,
    best: Sequence[common_pb2.Trial],
    front: Sequence[common_pb2.Trial],
) -> str:
    """The table of results: the best trials by reward; with a pareto objective the front,
    which is the search's result."""
    if looks_for_front(spec.objective):
        return f"<h2>Pareto front: {len(front)} trials, fastest first</h2>{_table(front, front)}"
    return f"<h2>Best {len(best)} trials by reward</h2>{_table(best, front)}"


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _plots(
    spec: common_pb2.SearchSpec,
    completed: Sequence[common_pb2.Trial],
    scored: Sequence[common_pb2.Trial],
    front: Sequence[common_pb2.Trial],
) -> str:
    if not completed:
        return '<p class="empty">No completed trial yet: there is nothing to plot.</p>'
    target = spec.objective.target_latency_seconds * 1e3  # 0: none (pareto)
    pareto = pareto_svg([_point(t) for t in completed], [_point(t) for t in front], target)
    reward = reward_svg([_point(t) for t in scored])
    latency = latency_histogram_svg([_latency_ms(t) for t in scored], target)
    caption = (
        "no target latency: the front is the result"
        if looks_for_front(spec.objective)
        else f"the dashed line is the target latency T = {_e(target_ms(spec.objective))} ms"
    )
    return (
        f'<figure id="pareto">{pareto}<figcaption>Each completed trial, coloured by reward; '
        f"the Pareto front (no other trial is both faster and more accurate) in red; "
        f"{caption}.</figcaption></figure>"
        f'<div class="pair"><figure id="reward">{reward}<figcaption>Reward by trial number '
        f"and the best so far (trials stopped early score their last accuracy)."
        f'</figcaption></figure><figure id="latency">{latency}<figcaption>Latency of every '
        f"completed or stopped trial{'' if looks_for_front(spec.objective) else ', against T'}."
        f"</figcaption></figure></div>"
    )


def _table(best: Sequence[common_pb2.Trial], front: Sequence[common_pb2.Trial]) -> str:
    if not best:
        return '<p class="empty">No completed trial yet.</p>'
    on_front = {t.number for t in front}
    head = (
        "<tr><th>rank</th><th>trial</th><th>reward</th><th>accuracy</th><th>latency (ms)</th>"
        '<th>Pareto</th><th class="arch">architecture</th></tr>'
    )
    rows = []
    for rank, t in enumerate(best, start=1):
        mark = '<span class="front" title="on the Pareto front">&#9679;</span>'
        rows.append(
            f'<tr id="trial-{t.number}"><td>{rank}</td><td>{t.number}</td>'
            f"<td>{t.reward:.4f}</td><td>{t.training.accuracy:.4f}</td>"
            f"<td>{_latency_ms(t):.3f}</td><td>{mark if t.number in on_front else ''}</td>"
            f'<td class="arch"><code>{_e(t.architecture.id or "-")}</code><br>'
            f"<code>{_e(t.architecture.canonical)}</code></td></tr>"
        )
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def render_report(
    search: common_pb2.Search,
    trials: Sequence[common_pb2.Trial],
    *,
    top: int = 10,
    generated: datetime | None = None,
) -> str:
    """The HTML page for ``search`` and its ``trials`` (any order, any states).

    Failed, cancelled and unfinished trials are counted in the summary and left out of the
    plots; the Pareto plot and the table take the completed trials, the reward and latency
    plots the trials stopped early too. Every string from the spec or store is escaped.
    """
    trials = sorted(trials, key=lambda t: t.number)
    completed = [t for t in trials if t.state == TS.TRIAL_STATE_COMPLETED]
    scored = [t for t in trials if t.state in _SCORED]
    front = pareto_front(completed, accuracy=lambda t: t.training.accuracy, latency=_latency_ms)
    ranked = sorted(completed, key=lambda t: (-t.reward, t.number))
    best = ranked[: max(top, 0)]
    name = search.spec.name or "unnamed"
    title = f"mnas report: {name} ({search.id})"
    when = f" &middot; generated {_e(_time(generated))}" if generated is not None else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>Search {_e(name)}</h1>"
        f'<p class="sub">id <code>{_e(search.id)}</code>{when}</p>'
        f"{_summary(search, trials, ranked[0] if ranked else None)}"
        f"<h2>Plots</h2>{_plots(search.spec, completed, scored, front)}"
        f"{_results(search.spec, best, front)}"
        "</main></body></html>\n"
    )
