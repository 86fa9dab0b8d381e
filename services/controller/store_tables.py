"""The controller store's tables (SQLAlchemy Core): searches, their trials, strategy
checkpoints, trained weights and latency measurements."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import (
    Column,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = ["Tables", "define_tables"]


class Tables(NamedTuple):
    """The store's tables and the metadata that creates them."""

    metadata: MetaData
    searches: Table
    trials: Table
    strategy_states: Table
    weights: Table
    measurements: Table


def define_tables(schema: str | None) -> Tables:
    """The store's tables, in `schema` (PostgreSQL) or the default one.

    A strategy checkpoint (up to megabytes for PPO) has a table of its own: SQLite rewrites
    a whole row on every update, and the search row is updated with every trial.
    """
    metadata = MetaData(schema=schema)
    searches = Table(
        "searches",
        metadata,
        Column("id", String(), primary_key=True),
        Column("name", String(), nullable=False),
        Column("state", Integer, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, index=True),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Column("search_json", Text, nullable=False),
    )
    trials = Table(
        "trials",
        metadata,
        Column(
            "search_id",
            String(),
            ForeignKey(searches.c.id, ondelete="CASCADE"),
            primary_key=True,
        ),
        Column("number", Integer, primary_key=True, autoincrement=False),
        Column("state", Integer, nullable=False),
        Column("arch_id", String(), nullable=False),
        Column("reward", Double, nullable=True),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Column("trial_json", Text, nullable=False),
        Index("ix_trials_search_arch", "search_id", "arch_id"),
    )
    strategy_states = Table(
        "strategy_states",
        metadata,
        Column(
            "search_id",
            String(),
            ForeignKey(searches.c.id, ondelete="CASCADE"),
            primary_key=True,
        ),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Column("state", LargeBinary, nullable=False),
    )
    weights = Table(
        "weights",
        metadata,
        Column("search_id", String(), primary_key=True),
        Column("number", Integer, primary_key=True, autoincrement=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Column("data", LargeBinary, nullable=False),
        ForeignKeyConstraint(
            ["search_id", "number"],
            [trials.c.search_id, trials.c.number],
            ondelete="CASCADE",
        ),
    )
    # Latency measurements by what determines them (architecture, device class, build and
    # settings; see :func:`services.latency.keys.measurement_key`), across searches: none
    # is measured twice.
    measurements = Table(
        "measurements",
        metadata,
        Column("key", String(), primary_key=True),
        Column("arch_id", String(), nullable=False),
        Column("device_class", String(), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("stats_json", Text, nullable=False),
    )
    return Tables(metadata, searches, trials, strategy_states, weights, measurements)
