"""How many CPU cores this process may use, and how many torch threads a training gets.

``os.cpu_count()`` counts the machine's cores, not the ones this process is allowed: a
container limited to two CPUs by its cgroup quota, or a process pinned to some cores by
its CPU affinity (``taskset``, a cpuset), still sees every core of the host. More torch
threads than usable cores make every parallel region wait for threads that are not
running, so a step gets several times slower instead of faster.

:func:`usable_cores` is the size of the CPU affinity capped by the CPU quota of the
process's cgroup (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``),
looking at the process's own cgroup and every cgroup above it. A missing or unreadable
file means no limit. :func:`threads_per_slot` shares those cores among training slots.

A core busy with another process is as bad: a thread that shares it runs in turns with
that process, and every parallel region of every step waits for it. :func:`threads_to_use`
gives a training starting now no more threads than there are idle usable cores, as
``/proc/stat`` counts them over a short window.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

__all__ = [
    "cgroup_cpu_limit",
    "cpu_idle_ticks",
    "idle_cores",
    "idle_share",
    "threads_per_slot",
    "threads_to_use",
    "usable_cores",
]

_logger = logging.getLogger(__name__)

_CGROUP_MOUNT = PurePosixPath("sys/fs/cgroup")
IDLE_WINDOW_SECONDS = 0.25


def usable_cores(root: str | os.PathLike[str] = "/") -> int:
    """The number of CPUs this process may use: its CPU affinity, capped by its cgroup's
    CPU quota (rounded up), at least 1.

    ``root`` is where ``/proc`` and ``/sys`` are found (tests build fake trees).
    """
    cores = _affinity_size()
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cores = min(cores, limit)
    return max(1, cores)


def threads_per_slot(slots: int, cores: int | None = None) -> int:
    """Torch threads for each of ``slots`` trainings running at once: ``cores`` (default
    :func:`usable_cores`) shared evenly, at least 1."""
    if slots < 1:
        raise ValueError(f"slots: must be >= 1, got {slots}")
    available = usable_cores() if cores is None else cores
    return max(1, available // slots)


def threads_to_use(
    limit: int, window: float = IDLE_WINDOW_SECONDS, root: str | os.PathLike[str] = "/"
) -> int:
    """Threads for a training starting now: ``limit``, or fewer when fewer of this
    process's CPUs are idle (a core counts when more than half idle), at least 1.

    Watches the CPUs for ``window`` seconds; ``limit`` when their use cannot be read.
    """
    idle = idle_cores(window, root)
    if idle is None:
        return limit
    return max(1, min(limit, math.floor(idle + 0.5)))


def idle_cores(
    window: float = IDLE_WINDOW_SECONDS, root: str | os.PathLike[str] = "/"
) -> float | None:
    """How many of this process's CPUs (its affinity) sat idle over the next ``window``
    seconds, from ``root``/proc/stat; None when it cannot be read."""
    before = cpu_idle_ticks(root)
    start = time.monotonic()
    time.sleep(window)
    after = cpu_idle_ticks(root)
    seconds = time.monotonic() - start
    if before is None or after is None:
        return None
    return idle_share(before, after, seconds, _affinity(), _ticks_per_second())


def cpu_idle_ticks(root: str | os.PathLike[str] = "/") -> dict[int, int] | None:
    """Idle plus I/O-wait time of each CPU so far, in clock ticks, from /proc/stat's
    ``cpuN`` lines; None when it cannot be read."""
    text = _read(Path(root) / "proc/stat")
    if text is None:
        return None
    ticks: dict[int, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or not fields[0].startswith("cpu") or fields[0] == "cpu":
            continue
        try:
            ticks[int(fields[0][3:])] = int(fields[4]) + int(fields[5])
        except ValueError:
            continue
    return ticks or None


def idle_share(
    before: Mapping[int, int],
    after: Mapping[int, int],
    seconds: float,
    cpus: set[int],
    ticks_per_second: float,
) -> float:
    """CPUs of ``cpus`` idle between two :func:`cpu_idle_ticks` readings ``seconds``
    apart: each CPU's idle ticks over the wall-clock ticks (so time a hypervisor
    withholds counts as busy), at most 1 each."""
    if seconds <= 0:
        return 0.0
    wall = seconds * ticks_per_second
    total = 0.0
    for cpu in cpus & before.keys() & after.keys():
        total += min(1.0, max(0.0, (after[cpu] - before[cpu]) / wall))
    return total


def cgroup_cpu_limit(root: str | os.PathLike[str] = "/") -> int | None:
    """The CPU quota of this process's cgroup in whole CPUs (rounded up, at least 1), the
    smallest along the path to the hierarchy's root; None when nothing sets one.

    Reads cgroup v2 ``cpu.max`` and cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``
    under ``root``/sys/fs/cgroup, for the cgroups that ``root``/proc/self/cgroup names.
    """
    base = Path(root)
    mount = base / _CGROUP_MOUNT
    quotas: list[float] = []
    for controllers, path in _own_cgroups(base / "proc/self/cgroup"):
        if controllers is None:  # the v2 hierarchy, or its hybrid-mode mount
            for directory in (mount, mount / "unified"):
                quotas += (q for q in map(_v2_quota, _ancestors(directory, path)) if q)
            continue
        for directory in _v1_cpu_mounts(mount, controllers):
            quotas += (q for q in map(_v1_quota, _ancestors(directory, path)) if q)
    if not quotas:
        return None
    return max(1, math.ceil(min(quotas)))


def _affinity_size() -> int:
    return len(_affinity())


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def _ticks_per_second() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, OSError, ValueError):
        return 100.0


def _own_cgroups(proc_cgroup: Path) -> Iterator[tuple[tuple[str, ...] | None, str]]:
    """(controllers, path) for each line of /proc/self/cgroup that can bound the CPU:
    controllers None for the v2 hierarchy (``0::/path``), else the v1 controllers."""
    text = _read(proc_cgroup)
    for line in (text or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if parts[0] == "0" and not controllers:
            yield None, path
        elif "cpu" in controllers.split(","):
            yield tuple(controllers.split(",")), path


def _v1_cpu_mounts(mount: Path, controllers: tuple[str, ...]) -> list[Path]:
    """Where a v1 hierarchy with ``controllers`` is mounted, by the usual names."""
    names = dict.fromkeys([",".join(controllers), "cpu,cpuacct", "cpuacct,cpu", "cpu"])
    return [mount / name for name in names if (mount / name).is_dir()]


def _ancestors(mount: Path, path: str) -> Iterator[Path]:
    """The cgroup directory for ``path`` under ``mount``, then each one above it up to
    ``mount``. In a container the path may be the host's while ``mount`` is the
    container's own cgroup: directories that do not exist are skipped, ``mount`` is not."""
    parts = PurePosixPath(path).parts[1:] if path.startswith("/") else PurePosixPath(path).parts
    for depth in range(len(parts), -1, -1):
        yield mount.joinpath(*parts[:depth])


def _v2_quota(directory: Path) -> float | None:
    """CPUs allowed by ``directory``/cpu.max ("QUOTA PERIOD" or "max PERIOD")."""
    text = _read(directory / "cpu.max")
    if text is None:
        return None
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    period = fields[1] if len(fields) > 1 else "100000"
    return _ratio(fields[0], period, directory / "cpu.max")


def _v1_quota(directory: Path) -> float | None:
    """CPUs allowed by ``directory``/cpu.cfs_quota_us over cpu.cfs_period_us (-1: none)."""
    quota = _read(directory / "cpu.cfs_quota_us")
    period = _read(directory / "cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    return _ratio(quota.strip(), period.strip(), directory / "cpu.cfs_quota_us")


def _ratio(quota: str, period: str, where: Path) -> float | None:
    try:
        value, span = int(quota), int(period)
    except ValueError:
        _logger.debug("ignoring unparsable CPU quota in %s: %r / %r", where, quota, period)
        return None
    if value <= 0 or span <= 0:
        return None
    return value / span


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
