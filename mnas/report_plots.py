"""The report's plots, drawn with matplotlib and returned as SVG text ready to inline.

matplotlib (the ``report`` extra) is imported when a plot is first drawn; figures are
built without pyplot, so nothing global is touched and any thread may draw.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mnas.errors import UsageError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "Point",
    "latency_histogram_svg",
    "pareto_svg",
    "require_matplotlib",
    "reward_svg",
]

_FRONT = "#d62728"
_TARGET = "#444444"
_BEST = "#ff7f0e"
_STOPPED = "#7f7f7f"


@dataclass(frozen=True)
class Point:
    """One trial as the plots see it."""

    number: int
    reward: float
    accuracy: float
    latency_ms: float
    stopped: bool = False  # ended early by the stopping rule (its accuracy is partial)


def require_matplotlib() -> None:
    """Raise a UsageError naming the ``report`` extra when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise UsageError(
            f"the report needs the report extra (pip install 'mnas[report]'): {err}"
        ) from None


def _figure(width: float, height: float) -> Figure:
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _svg(figure: Figure, name: str) -> str:
    """The figure as an ``<svg>`` element to inline: no XML prolog, every id (and every
    reference to one) prefixed with ``name``, so figures in one page never share an id.
    The same figure always gives the same text (a fixed hash salt, no date)."""
    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context({"svg.hashsalt": "mnas", "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :].strip()
    text = re.sub(r'\bid="', f'id="{name}-', text)
    text = text.replace("url(#", f"url(#{name}-")
    return text.replace('href="#', f'href="#{name}-')


def _style(axes: Axes) -> None:
    axes.grid(True, color="#dddddd", linewidth=0.6)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)


def _target_line(axes: Axes, target_ms: float) -> None:
    if target_ms > 0:
        axes.axvline(
            target_ms,
            color=_TARGET,
            linestyle="--",
            linewidth=1.2,
            label=f"target T = {target_ms:g} ms",
        )


def pareto_svg(points: Sequence[Point], front: Sequence[Point], target_ms: float) -> str:
    """Accuracy against latency, each trial coloured by reward, the Pareto front joined by
    a line and the target latency T drawn as a vertical line (as in the paper's figures)."""
    figure = _figure(8.0, 5.2)
    axes = figure.add_subplot()
    _style(axes)
    ordered = sorted(points, key=lambda p: p.reward)  # the best drawn last, on top
    cloud = axes.scatter(
        [p.latency_ms for p in ordered],
        [p.accuracy for p in ordered],
        c=[p.reward for p in ordered],
        cmap="viridis",
        s=36,
        edgecolors="white",
        linewidths=0.4,
        label="trials",
        zorder=3,
    )
    axes.plot(
        [p.latency_ms for p in front],
        [p.accuracy for p in front],
        color=_FRONT,
        marker="o",
        markersize=8,
        markerfacecolor="none",
        markeredgewidth=1.4,
        linewidth=1.2,
        drawstyle="steps-post",
        label="Pareto front",
        zorder=4,
    )
    _target_line(axes, target_ms)
    colorbar = figure.colorbar(cloud, ax=axes)
    colorbar.set_label("reward")
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("accuracy")
    axes.set_title("Accuracy against latency")
    axes.legend(loc="lower right", fontsize="small")
    return _svg(figure, "pareto")


def reward_svg(points: Sequence[Point]) -> str:
    """Reward by trial number, with the best reward so far as a step line."""
    figure = _figure(6.0, 4.0)
    axes = figure.add_subplot()
    _style(axes)
    ordered = sorted(points, key=lambda p: p.number)
    finished = [p for p in ordered if not p.stopped]
    stopped = [p for p in ordered if p.stopped]
    axes.scatter(
        [p.number for p in finished],
        [p.reward for p in finished],
        s=18,
        color="#1f77b4",
        label="completed",
        zorder=3,
    )
    if stopped:
        axes.scatter(
            [p.number for p in stopped],
            [p.reward for p in stopped],
            s=22,
            marker="x",
            color=_STOPPED,
            label="stopped early",
            zorder=3,
        )
    best: list[float] = []
    for p in ordered:
        best.append(max(p.reward, best[-1]) if best else p.reward)
    axes.plot(
        [p.number for p in ordered],
        best,
        color=_BEST,
        linewidth=1.6,
        drawstyle="steps-post",
        label="best so far",
        zorder=4,
    )
    axes.set_xlabel("trial")
    axes.set_ylabel("reward")
    axes.set_title("Reward over the search")
    axes.legend(loc="lower right", fontsize="small")
    return _svg(figure, "reward")


def latency_histogram_svg(latencies_ms: Sequence[float], target_ms: float) -> str:
    """How the measured latencies spread, with the target latency T."""
    figure = _figure(6.0, 4.0)
    axes = figure.add_subplot()
    _style(axes)
    bins = max(5, min(40, len(latencies_ms) // 2))
    axes.hist(latencies_ms, bins=bins, color="#2ca02c", edgecolor="white", linewidth=0.5)
    _target_line(axes, target_ms)
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("trials")
    axes.set_title("Latency of the measured networks")
    if target_ms > 0:
        axes.legend(loc="upper right", fontsize="small")
    return _svg(figure, "latency")
