"""The store's conformance suite, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Engine, select, text

from mnas.v1.common_pb2 import (
    Architecture,
    Budget,
    BuildParams,
    LatencySettings,
    LatencyStats,
    Reference,
    ReferenceState,
    Search,
    SearchSpaceSpec,
    SearchSpec,
    SearchState,
    Stage,
    TrainResult,
    Trial,
    TrialState,
)
from services.controller import store as store_module
from services.controller.store import (
    AlreadyExistsError,
    NotFoundError,
    Store,
    StoreError,
    measurement_key,
)
from tests.controller.conftest import (
    POSTGRES_URL,
    Backend,
    connect_postgres,
    postgres_schema,
    schema_exists,
)

PENDING = TrialState.TRIAL_STATE_PENDING
RUNNING = TrialState.TRIAL_STATE_RUNNING
COMPLETED = TrialState.TRIAL_STATE_COMPLETED
FAILED = TrialState.TRIAL_STATE_FAILED


def make_search(
    search_id: str = "s1",
    *,
    name: str = "search",
    created: int | None = 1_700_000_000,
    state: SearchState.ValueType = SearchState.SEARCH_STATE_RUNNING,
) -> Search:
    search = Search(
        id=search_id,
        state=state,
        spec=SearchSpec(
            name=name,
            strategy="random",
            seed=7,
            budget=Budget(max_trials=100, parallel_trials=4),
            space=SearchSpaceSpec(
                stages=[Stage(expansion=6, filters=24, layers=2, stride=2)],
                resolution=96,
                dropout=0.0,
            ),
        ),
    )
    if created is not None:
        search.created_at.CopyFrom(Timestamp(seconds=created, nanos=123_000))
    return search


def make_trial(
    search_id: str = "s1",
    number: int = 0,
    *,
    state: TrialState.ValueType = COMPLETED,
    arch_id: str = "a",
    reward: float = 0.5,
) -> Trial:
    return Trial(
        search_id=search_id,
        number=number,
        state=state,
        architecture=Architecture(canonical=f"arch {arch_id}", id=arch_id),
        reward=reward,
        training=TrainResult(accuracy=0.8, loss=0.4, samples_seen=1000),
        latency=LatencyStats(median_seconds=0.07, samples_seconds=[0.07, 0.071]),
        decisions=[1, 0, 2],
        attempts=1,
    )


def numbers(trials: list[Trial]) -> list[int]:
    return [trial.number for trial in trials]


def assert_same(got: Message | None, want: Message) -> None:
    assert got is not None
    assert got == want, f"{got} != {want}"


# Searches.


def test_create_and_get_search_round_trips_the_message(store: Store) -> None:
    search = make_search()
    store.create_search(search)
    got = store.get_search("s1")
    assert_same(got, search)
    assert got is not None and got.spec.space.HasField("dropout")  # presence survives


def test_get_missing_search_is_none(store: Store) -> None:
    assert store.get_search("nope") is None
    assert store.list_searches() == []


def test_duplicate_create_raises_and_keeps_the_original(store: Store) -> None:
    store.create_search(make_search(name="first"))
    with pytest.raises(AlreadyExistsError, match="'s1' already exists") as caught:
        store.create_search(make_search(name="second"))
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, StoreError)
    got = store.get_search("s1")
    assert got is not None and got.spec.name == "first"


def test_save_search_updates_an_existing_one(store: Store) -> None:
    search = make_search()
    store.create_search(search)
    search.state = SearchState.SEARCH_STATE_SUCCEEDED
    search.trials_completed = 12
    search.best_reward = 0.75
    search.finished_at.CopyFrom(Timestamp(seconds=1_700_000_500))
    store.save_search(search)
    assert_same(store.get_search("s1"), search)


def test_search_json_is_the_messages_json_as_its_spec_changes(store: Store) -> None:
    # The spec's JSON is kept between writes: a changed spec (or none) must not reuse it.
    def written() -> object:
        with store._engine.connect() as conn:
            row = conn.execute(select(store._searches.c.search_json)).scalar_one()
        return json.loads(row)

    def expected(search: Search) -> object:
        return json.loads(
            json_format.MessageToJson(search, preserving_proto_field_name=True, indent=None)
        )

    search = make_search()
    store.create_search(search)
    assert written() == expected(search)
    search.trials_completed = 3
    store.save_search(search)
    assert written() == expected(search)
    search.spec.budget.max_trials = 7
    store.save_search(search)
    assert written() == expected(search)
    assert "s1" in store._spec_values
    search.state = SearchState.SEARCH_STATE_SUCCEEDED
    store.save_search(search)
    assert written() == expected(search)
    assert "s1" not in store._spec_values  # kept only while the search runs
    search.ClearField("spec")
    store.save_search(search)
    assert written() == expected(search)
    assert_same(store.get_search("s1"), search)


def test_save_search_requires_it_to_exist(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.save_search(make_search("ghost"))
    assert store.get_search("ghost") is None


def test_list_searches_newest_first(store: Store) -> None:
    store.create_search(make_search("old", created=1_000))
    store.create_search(make_search("new", created=3_000))
    store.create_search(make_search("mid", created=2_000))
    store.create_search(make_search("undated", created=None))  # the store's clock: now
    assert [s.id for s in store.list_searches()] == ["undated", "new", "mid", "old"]


# Trials.


def test_save_trial_inserts_then_updates(store: Store) -> None:
    store.create_search(make_search())
    trial = make_trial(state=RUNNING)
    store.save_trial(trial)
    assert_same(store.get_trial("s1", 0), trial)

    trial.state = COMPLETED
    trial.reward = 0.9
    trial.finished_at.CopyFrom(Timestamp(seconds=1_700_000_100))
    store.save_trial(trial)
    assert_same(store.get_trial("s1", 0), trial)
    assert store.count_trials("s1") == 1
    assert store.get_trial("s1", 1) is None
    assert store.get_trial("other", 0) is None


def test_save_trial_of_unknown_search_raises(store: Store) -> None:
    with pytest.raises(NotFoundError, match="'ghost'"):
        store.save_trial(make_trial("ghost"))
    assert store.get_trial("ghost", 0) is None


def test_list_trials_pages_in_ascending_order(store: Store) -> None:
    store.create_search(make_search())
    store.create_search(make_search("s2"))
    for number in [*range(13, 25), *range(13)]:  # out of order on purpose
        store.save_trial(make_trial(number=number))
    store.save_trial(make_trial("s2", 5))

    assert numbers(store.list_trials("s1", limit=10)) == list(range(10))
    assert numbers(store.list_trials("s1", after=9, limit=10)) == list(range(10, 20))
    assert numbers(store.list_trials("s1", after=19, limit=10)) == list(range(20, 25))
    assert store.list_trials("s1", after=24) == []
    assert store.list_trials("s1", limit=0) == []
    assert numbers(store.list_trials("s1")) == list(range(25))  # default limit 100
    assert numbers(store.list_trials("s2")) == [5]

    seen: list[int] = []
    after = -1
    while page := store.list_trials("s1", after=after, limit=7):
        seen += numbers(page)
        after = page[-1].number
    assert seen == list(range(25))

    with pytest.raises(ValueError, match="limit"):
        store.list_trials("s1", limit=-1)


def test_state_filters_and_counts(store: Store) -> None:
    store.create_search(make_search())
    store.create_search(make_search("s2"))
    states = [PENDING, RUNNING, COMPLETED, FAILED, COMPLETED, RUNNING, COMPLETED]
    for number, state in enumerate(states):
        store.save_trial(make_trial(number=number, state=state))
    store.save_trial(make_trial("s2", 0, state=COMPLETED))

    assert numbers(store.list_trials("s1", states={COMPLETED})) == [2, 4, 6]
    assert numbers(store.list_trials("s1", states=[RUNNING, FAILED])) == [1, 3, 5]
    assert numbers(store.list_trials("s1", after=2, limit=1, states={COMPLETED})) == [4]
    assert store.list_trials("s1", states=()) == []

    assert store.count_trials("s1") == 7
    assert store.count_trials("s1", {COMPLETED}) == 3
    assert store.count_trials("s1", [PENDING, RUNNING]) == 3
    assert store.count_trials("s1", ()) == 0
    assert store.count_trials("s2") == 1
    assert store.count_trials("ghost") == 0


def test_find_completed_by_arch_takes_the_earliest_completed(store: Store) -> None:
    store.create_search(make_search())
    store.create_search(make_search("s2"))
    store.save_trial(make_trial(number=0, arch_id="a", state=RUNNING))
    store.save_trial(make_trial(number=3, arch_id="a", reward=0.3))
    store.save_trial(make_trial(number=1, arch_id="a", reward=0.1))
    store.save_trial(make_trial(number=2, arch_id="b", state=FAILED))
    store.save_trial(make_trial("s2", 0, arch_id="c"))

    found = store.find_completed_by_arch("s1", "a")
    assert found is not None and (found.number, found.reward) == (1, 0.1)
    assert store.find_completed_by_arch("s1", "b") is None  # only failed
    assert store.find_completed_by_arch("s1", "c") is None  # another search's
    assert store.find_completed_by_arch("s1", "zzz") is None

    store.save_trial(make_trial(number=2, arch_id="b", reward=0.2))  # retried, completed
    found = store.find_completed_by_arch("s1", "b")
    assert found is not None and found.number == 2


# Transactions.


def test_save_writes_search_and_trials_together(store: Store) -> None:
    search = make_search()
    store.create_search(search)
    search.trials_completed = 2
    trials = [make_trial(number=0), make_trial(number=1, arch_id="b")]
    store.save(search=search, trials=trials)
    assert_same(store.get_search("s1"), search)
    assert store.list_trials("s1") == trials
    store.save(trials=[make_trial(number=2)])  # trials alone
    store.save()  # nothing at all
    assert store.count_trials("s1") == 3


def test_failed_save_leaves_nothing_behind_on_a_foreign_key(store: Store) -> None:
    search = make_search()
    store.create_search(search)
    store.save_trial(make_trial(number=0, state=RUNNING))

    changed = make_search(state=SearchState.SEARCH_STATE_FAILED)
    trials = [make_trial(number=0), make_trial(number=1), make_trial("ghost", 0)]
    with pytest.raises(NotFoundError, match="'ghost'"):
        store.save(search=changed, trials=trials)

    assert_same(store.get_search("s1"), search)  # the update was rolled back
    got = store.get_trial("s1", 0)
    assert got is not None and got.state == RUNNING
    assert store.get_trial("s1", 1) is None
    assert store.count_trials("s1") == 1


def test_failed_save_of_an_unknown_search_writes_no_trials(store: Store) -> None:
    store.create_search(make_search())
    with pytest.raises(NotFoundError):
        store.save(search=make_search("ghost"), trials=[make_trial(number=0)])
    assert store.count_trials("s1") == 0


def test_failure_midway_rolls_everything_back(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    search = make_search()
    store.create_search(search)
    real_to_json = store_module._to_json

    def failing_to_json(message: Message) -> str:
        if isinstance(message, Trial) and message.number == 2:
            raise RuntimeError("injected failure")
        return real_to_json(message)

    monkeypatch.setattr(store_module, "_to_json", failing_to_json)
    changed = make_search(name="changed")
    with pytest.raises(RuntimeError, match="injected"):
        store.save(search=changed, trials=[make_trial(number=n) for n in range(4)])
    with pytest.raises(RuntimeError, match="injected"):
        store.save_strategy_state("s1", b"state", trials=[make_trial(number=2)])
    with pytest.raises(RuntimeError, match="injected"):
        store.save(search=changed, trials=[make_trial(number=2)], strategy_state=b"state")
    monkeypatch.undo()

    assert_same(store.get_search("s1"), search)
    assert store.count_trials("s1") == 0
    assert store.load_strategy_state("s1") is None
    store.save(search=changed)  # the store still works afterwards
    assert_same(store.get_search("s1"), changed)


# Strategy state.


def test_strategy_state_round_trips(store: Store) -> None:
    store.create_search(make_search())
    assert store.load_strategy_state("s1") is None
    assert store.load_strategy_state("ghost") is None

    blob = bytes(range(256)) * 4096  # 1 MiB, every byte value
    store.save_strategy_state("s1", blob)
    assert store.load_strategy_state("s1") == blob

    trials = [make_trial(number=0), make_trial(number=1)]
    store.save_strategy_state("s1", b"\x00second", trials=trials)
    assert store.load_strategy_state("s1") == b"\x00second"
    assert store.list_trials("s1") == trials

    search = make_search(name="renamed")
    store.save_search(search)  # saving the search keeps its checkpoint
    assert store.load_strategy_state("s1") == b"\x00second"

    # With a trial's end, as the controller writes a checkpoint taken after an update.
    store.save(search=search, trials=[make_trial(number=2)], strategy_state=b"third")
    assert store.load_strategy_state("s1") == b"third"
    assert store.count_trials("s1") == 3
    with pytest.raises(ValueError, match="strategy_state"):
        store.save(strategy_state=b"no search")


def test_strategy_state_is_atomic_with_its_trials(store: Store) -> None:
    store.create_search(make_search())
    store.save_strategy_state("s1", b"v1")
    with pytest.raises(NotFoundError):
        store.save_strategy_state("s1", b"v2", trials=[make_trial(number=0), make_trial("ghost")])
    assert store.load_strategy_state("s1") == b"v1"
    assert store.count_trials("s1") == 0

    with pytest.raises(NotFoundError):
        store.save_strategy_state("ghost", b"v3", trials=[make_trial(number=0)])
    assert store.count_trials("s1") == 0


def test_kept_weights_are_replaced_and_dropped(store: Store) -> None:
    search = make_search()
    store.create_search(search)
    store.save(search=search, trials=[make_trial(number=0)], weights={0: b"first"})
    store.save(search=search, weights={0: b"second"})
    assert store.load_weights("s1", 0) == b"second"
    store.save(search=search, drop_weights=[0])
    assert store.load_weights("s1", 0) is None


# Threads and restarts.


def run_threads(count: int, work: Callable[[int], None]) -> None:
    """Run work(0..count-1) on as many threads, started together; re-raise any failure."""
    barrier = threading.Barrier(count)

    def start(index: int) -> None:
        barrier.wait(timeout=30)
        work(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        for future in [pool.submit(start, index) for index in range(count)]:
            future.result(timeout=120)


def test_concurrent_writers_lose_no_updates(store: Store) -> None:
    threads, per_thread = 8, 15
    for index in range(threads):
        store.create_search(make_search(f"s{index}"))
    store.create_search(make_search("shared"))

    def work(index: int) -> None:
        search = make_search(f"s{index}")
        for step in range(per_thread):
            number = index * per_thread + step
            store.save_trial(make_trial("shared", number, state=RUNNING))
            store.save_trial(make_trial("shared", number, reward=number / 1000))
            search.trials_completed = step + 1
            store.save(search=search, trials=[make_trial(search.id, step)])
            store.save_strategy_state(search.id, f"{index}:{step}".encode())
            store.list_trials("shared", after=number - 5, limit=5)  # readers meanwhile
            store.count_trials("shared", {COMPLETED})

    run_threads(threads, work)

    total = threads * per_thread
    assert store.count_trials("shared") == total
    assert store.count_trials("shared", {COMPLETED}) == total
    shared = store.list_trials("shared", limit=total)
    assert [(t.number, t.reward) for t in shared] == [(n, n / 1000) for n in range(total)]
    for index in range(threads):
        search = store.get_search(f"s{index}")
        assert search is not None and search.trials_completed == per_thread
        assert store.count_trials(f"s{index}") == per_thread
        last = f"{index}:{per_thread - 1}".encode()
        assert store.load_strategy_state(f"s{index}") == last


def test_concurrent_creates_of_one_id_admit_exactly_one(store: Store) -> None:
    outcomes: list[str] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        try:
            store.create_search(make_search("same", name=f"by {index}"))
            outcome = "created"
        except AlreadyExistsError:
            outcome = "exists"
        with lock:
            outcomes.append(outcome)

    run_threads(6, work)
    assert sorted(outcomes) == ["created"] + ["exists"] * 5
    assert len(store.list_searches()) == 1


def test_a_reopened_store_sees_everything(backend: Backend) -> None:
    first = backend.open()
    search = make_search()
    first.create_search(search)
    first.save_strategy_state("s1", b"ckpt", trials=[make_trial(number=0)])
    first.close()  # the controller stops

    second = backend.open()  # and starts again on the same database
    assert_same(second.get_search("s1"), search)
    assert second.load_strategy_state("s1") == b"ckpt"
    assert numbers(second.list_trials("s1")) == [0]

    third = backend.open()  # two stores at once see each other's commits
    third.save_trial(make_trial(number=1))
    assert numbers(second.list_trials("s1")) == [0, 1]


def test_the_reference_is_kept_with_its_search(backend: Backend) -> None:
    """A search written without a reference (as submitted, or by an older controller)
    reads back without one; its reference, pending then measured, survives a reopening."""
    first = backend.open()
    search = make_search()
    first.create_search(search)
    got = first.get_search("s1")
    assert got is not None and not got.HasField("reference")
    search.reference.CopyFrom(
        Reference(
            name="mnasnet-a1",
            architecture=Architecture(canonical="stem:32 r1_k3_s11_e1_i32_o16", id="ab12"),
            state=ReferenceState.REFERENCE_STATE_PENDING,
        )
    )
    first.save(search=search)
    assert_same(first.get_search("s1"), search)
    search.reference.state = ReferenceState.REFERENCE_STATE_MEASURED
    search.reference.training.CopyFrom(
        TrainResult(accuracy=0.8125, loss=0.5, seconds=3.0, samples_seen=1000)
    )
    search.reference.trainer = "127.0.0.1:1"
    search.reference.attempts = 2
    search.reference.train_seconds = 3.5
    first.save(search=search)
    first.close()

    second = backend.open()
    got = second.get_search("s1")
    assert_same(got, search)
    assert got is not None and got.reference.training.accuracy == 0.8125
    assert [s.reference for s in second.list_searches()] == [search.reference]


# Opening.


def test_open_takes_a_path_and_creates_its_directories(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "mnas.db"
    store = Store.open(str(path))
    try:
        store.create_search(make_search())
    finally:
        store.close()
    assert path.is_file()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    again = Store.open(f"sqlite:///{path}")
    try:
        assert again.get_search("s1") is not None
        with again._engine.connect() as conn:
            cache = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
        assert cache == -store_module.SQLITE_CACHE_KIB
    finally:
        again.close()


def test_rejects_what_it_cannot_serve(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported store backend"):
        Store("mysql://root@localhost/mnas")
    with pytest.raises(ValueError, match="schema"):
        Store(f"sqlite:///{tmp_path / 'x.db'}", schema="nope")


def test_in_memory_sqlite_is_shared_between_threads() -> None:
    store = Store("sqlite://")
    try:
        store.create_search(make_search())
        run_threads(4, lambda index: store.save_trial(make_trial(number=index)))
        assert store.count_trials("s1") == 4
    finally:
        store.close()


# PostgreSQL specifics.


def test_plain_postgresql_url_uses_psycopg_in_its_own_schema(postgres_admin: Engine) -> None:
    plain_url = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://", 1)
    with postgres_schema(postgres_admin) as schema:
        store = Store(plain_url, schema=schema)
        try:
            store.create_search(make_search())
            store.save_trial(make_trial())
        finally:
            store.close()
        with postgres_admin.connect() as conn:
            tables = conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = :schema ORDER BY table_name"
                ),
                {"schema": schema},
            ).scalars()
            assert list(tables) == [
                "measurements",
                "searches",
                "strategy_states",
                "trials",
                "weights",
            ]
    assert not schema_exists(postgres_admin, schema)
    with postgres_admin.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :schema"),
            {"schema": schema},
        ).scalar_one()
    assert left == 0


def test_store_creates_a_missing_schema(postgres_admin: Engine) -> None:
    with postgres_schema(postgres_admin) as parent:
        schema = parent + "_own"
        try:
            store = Store(POSTGRES_URL, schema=schema)
            store.create_search(make_search())
            store.close()
            assert schema_exists(postgres_admin, schema)
        finally:
            with postgres_admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    assert not schema_exists(postgres_admin, schema)


def test_unreachable_postgres_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/test"
    monkeypatch.delenv("MNAS_TEST_SKIP_POSTGRES", raising=False)
    with pytest.raises(pytest.fail.Exception, match="not reachable"):
        connect_postgres(unreachable)
    monkeypatch.setenv("MNAS_TEST_SKIP_POSTGRES", "1")
    with pytest.raises(pytest.skip.Exception, match="not reachable"):
        connect_postgres(unreachable)


def test_measurements_are_kept_once_by_what_determines_them(store: Store) -> None:
    store.create_search(make_search())
    settings = LatencySettings(device_class="pixel-1", warmup_runs=5, runs=20, threads=1)
    build = BuildParams(resolution=224, num_classes=1000, width=1.0)
    key = measurement_key("a", settings, build)
    first = LatencyStats(median_seconds=0.01, samples_seconds=[0.01, 0.011], device="X")
    first.device_class = "pixel-1"
    assert store.find_measurement(key) is None
    store.save(search=make_search(), trials=[make_trial()], measurements={key: first})
    again = LatencyStats(median_seconds=0.02, device_class="pixel-1")
    store.save(search=make_search(), measurements={key: again})  # the first one stays
    assert store.find_measurement(key) == first
    # Any other setting is another measurement.
    other = LatencySettings(device_class="pixel-1", warmup_runs=5, runs=50, threads=1)
    assert store.find_measurement(measurement_key("a", other, build)) is None
    wider = BuildParams(resolution=224, num_classes=1000, width=1.4)
    assert store.find_measurement(measurement_key("a", settings, wider)) is None
