"""The Faust, mode and aiokafka internals the worker builds on, as they were when it was written.

The worker overrides private methods of Faust (its fetch loop, its consumer thread, recovery,
the RocksDB store) and reads private attributes of Faust, mode and aiokafka. pyproject.toml
pins their minor series; this test makes any other version (or a patch release that changes
one of them) fail here, loudly, instead of changing the worker's behaviour silently.

When it fails after an upgrade: read the new code of the method or attribute named, adapt the
override in streams/worker/ (a method whose *body* we replaced must be compared line by line
with the new one), then update the row. When an override is added or removed, add or remove
its row.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import textwrap
from collections.abc import Callable
from typing import Any, NamedTuple

import faust
import mode
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.group_coordinator import GroupCoordinator
from faust.app.router import Router
from faust.sensors.monitor import Monitor
from faust.stores import rocksdb
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport import consumer as faust_consumer
from faust.transport.conductor import Conductor
from faust.transport.drivers import aiokafka as aiokafka_driver
from mode.utils.queues import ThrowableQueue

from streams.worker.runtime import faust_app
from streams.worker.state import recovery, store
from streams.worker.web import views as web


class Override(NamedTuple):
    ours: type
    theirs: type
    name: str
    parameters: str
    """Faust's parameters, without annotations (they may change freely)."""
    replaced_body: str | None
    """Digest of Faust's source where our override does not call it (we copied or replaced
    what it does): then any change to it must be read. None where the override calls it."""


# fmt: off
OVERRIDES = (
    Override(faust_app._WorkerConsumer, aiokafka_driver.Consumer, "_drain_messages", "(self, fetcher)", "8f35dd7a11144daa"),
    Override(faust_app._WorkerConsumer, aiokafka_driver.Consumer, "_new_consumer_thread", "(self)", "8fd0d41b15145615"),
    Override(faust_app._WorkerConsumer, aiokafka_driver.Consumer, "_commit", "(self, offsets)", "91c201528438395b"),
    Override(faust_app._WorkerConsumer, aiokafka_driver.Consumer, "_commit_tps", "(self, tps, start_new_transaction)", None),
    Override(faust_app._WorkerConsumer, aiokafka_driver.Consumer, "_commit_handler", "(self)", "71024925b06f13eb"),
    Override(faust_app._WorkerConsumer, aiokafka_driver.Consumer, "on_stop", "(self)", None),
    Override(faust_app._WorkerConsumer, aiokafka_driver.Consumer, "seek_to_committed", "(self)", None),
    Override(faust_app._WorkerConsumer, aiokafka_driver.Consumer, "_getmany", "(self, active_partitions, timeout)", None),
    Override(faust_app._WorkerConsumer, aiokafka_driver.Consumer, "perform_seek", "(self)", None),
    Override(faust_app._ConsumerThread, aiokafka_driver.AIOKafkaConsumerThread, "_create_worker_consumer", "(self, transport)", None),
    Override(faust_app.WorkerApp, faust.App, "_new_transport", "(self)", "11beddacb9fee5b0"),
    Override(recovery.CatchUpRecovery, Recovery, "_build_offsets", "(self, consumer, tps, destination, title)", None),
    Override(recovery.CatchUpRecovery, Recovery, "_build_highwaters", "(self, consumer, tps, destination, title)", None),
    Override(recovery.CatchUpRecovery, Recovery, "_wait", "(self, coro, timeout=None)", None),
    Override(recovery.CatchUpTableManager, TableManager, "recovery", "property", "9e5e10447444e1df"),
    Override(recovery.CatchUpTableManager, TableManager, "changelog_queue", "property", "756bbb358089cfc4"),
    Override(recovery.ChangelogQueue, ThrowableQueue, "clear", "(self)", None),
    Override(store.ContactStore, rocksdb.Store, "apply_changelog_batch", "(self, batch, to_key, to_value)", "67ac93a2bea2a488"),
    Override(store.ContactStore, rocksdb.Store, "stop", "(self)", "a7b7e2eeae9e4689"),
    Override(store.ContactTable, faust.Table, "_new_store_by_url", "(self, url)", "28b01ee9bcc6a6e2"),
    Override(web.ContactRouter, Router, "key_store", "(self, table_name, key)", "6e1e0491a095c623"),
)

ATTRIBUTES: tuple[tuple[type, str, str], ...] = (
    # (their class, attribute, what of ours uses it)
    (aiokafka_driver.Consumer, "_unacked_messages", "_WorkerConsumer._drain_messages"),
    (aiokafka_driver.Consumer, "_read_offset", "_WorkerConsumer._drain_messages, _waiting"),
    (aiokafka_driver.Consumer, "_add_gap", "_WorkerConsumer._drain_messages"),
    (aiokafka_driver.Consumer, "_n_acked", "_WorkerConsumer._drain_messages"),
    (aiokafka_driver.Consumer, "_commit_every", "_WorkerConsumer._drain_messages"),
    (aiokafka_driver.Consumer, "getmany", "_WorkerConsumer._drain_messages"),
    (aiokafka_driver.Consumer, "ack", "_WorkerConsumer._drain_messages"),
    (aiokafka_driver.Consumer, "commit", "_WorkerConsumer._drain_messages"),
    (aiokafka_driver.Consumer, "callback", "_WorkerConsumer._drain_messages"),
    (aiokafka_driver.Consumer, "consumer_stopped_errors", "_WorkerConsumer._drain_messages"),
    (aiokafka_driver.Consumer, "diag", "_WorkerConsumer._drain_messages"),
    (aiokafka_driver.Consumer, "suspend_flow", "_WorkerConsumer._deliver"),
    (aiokafka_driver.Consumer, "wait_first", "_WorkerConsumer._deliver"),
    (aiokafka_driver.Consumer, "_thread", "_WorkerConsumer.seek_to_committed"),
    (mode.Service, "_stopped", "_WorkerConsumer._drain_messages"),
    (mode.Service, "sleep", "_WorkerConsumer._drain_messages"),
    (mode.Service, "should_stop", "_WorkerConsumer._drain_messages"),
    (Conductor, "acks_enabled_for", "_WorkerConsumer._drain_messages"),
    (Monitor, "stream_inbound_time", "_WorkerConsumer._drain_messages"),
    (aiokafka_driver.AIOKafkaConsumerThread, "seek_to_beginning", "_WorkerConsumer.seek_to_committed"),
    (AIOKafkaConsumer, "_fetch_max_wait_ms", "_ConsumerThread._create_worker_consumer"),
    (aiokafka_driver.Transport, "Consumer", "_Transport"),
    (Recovery, "signal_recovery_start", "CatchUpRecovery._catch_up"),
    (Recovery, "tp_to_table", "CatchUpRecovery._catch_up"),
    (Recovery, "completed", "Worker.ready"),
    (Recovery, "active_highwaters", "CatchUpRecovery._build_offsets"),
    (TableManager, "_recovery", "CatchUpTableManager.recovery"),
    (TableManager, "_changelog_queue", "CatchUpTableManager.changelog_queue"),
    (ThrowableQueue, "_flow_control", "ChangelogQueue.clear"),
    (aiokafka_driver.Consumer, "_acked", "_WorkerConsumer (seeking)"),
    (aiokafka_driver.Consumer, "_acked_index", "_WorkerConsumer (seeking)"),
    (aiokafka_driver.Consumer, "_gap", "_WorkerConsumer (seeking)"),
    (aiokafka_driver.Consumer, "_is_changelog_tp", "_WorkerConsumer.seek_to_committed"),
    (faust.App, "in_recovery", "Worker.ready"),
    (faust.App, "rebalancing", "Worker.ready"),
    (faust.App, "crashed", "the liveness view"),
    (rocksdb.Store, "_db_for_partition", "ContactStore._db"),
    (rocksdb.Store, "_dbs", "ContactStore.close"),
    (rocksdb.Store, "offset_key", "ContactStore.write, state_guard"),
    (rocksdb.Store, "persisted_offset", "ContactStore.catch_up"),
    (Router, "_get_table", "ContactRouter.key_store"),
    (Router, "_get_table_topic", "ContactRouter.key_store"),
    (Router, "table_metadata", "ContactRouter.key_store"),
    (aiokafka_driver.AIOKafkaConsumerThread, "tp_last_committed_at", "_WorkerConsumer._commit"),
    (aiokafka_driver.AIOKafkaConsumerThread, "_ensure_consumer", "fencing.member_of"),
    (AIOKafkaConsumer, "_coordinator", "fencing.member_of"),
    (GroupCoordinator, "group_id", "fencing.member_of"),
    (GroupCoordinator, "generation", "fencing.member_of (the generation the offsets commit in)"),
    (GroupCoordinator, "member_id", "fencing.member_of"),
    (GroupCoordinator, "_group_instance_id", "fencing.member_of"),
)
# fmt: on

READ_LATER: tuple[tuple[Callable[..., Any], str, str], ...] = (
    # (their function, what it must still read, why): an attribute we set after Faust or
    # aiokafka built the object only works while it is read later, here.
    (AIOKafkaConsumer.start, "self._fetch_max_wait_ms", "the fetcher is built in start()"),
    (AIOKafkaConsumer.start, "self._isolation_level", "fencing.read_committed, set before start()"),
)

OURS = tuple(dict.fromkeys(row.ours for row in OVERRIDES))
"""Our subclasses of Faust's classes: each method they override needs a row in `OVERRIDES`."""
NOT_OVERRIDES = frozenset({"logger", "_abc_impl"})
"""Set on every subclass by mode and abc, not by us."""

MODULE_NAMES: tuple[tuple[object, str], ...] = (
    (aiokafka_driver, "ensure_aiokafka_TP"),
    (faust_consumer, "CONSUMER_FETCHING"),
)


def _parameters(function: Any) -> str:
    if isinstance(function, property):
        return "property"
    if isinstance(function, mode.services.ServiceTask):  # a background task: its function
        function = function.fun
    signature = inspect.signature(function)
    bare = signature.replace(
        parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
        return_annotation=signature.empty,
    )
    return str(bare)


def _digest(function: Any) -> str:
    target = function.fget if isinstance(function, property) else function
    target = target.fun if isinstance(target, mode.services.ServiceTask) else target
    source = textwrap.dedent(inspect.getsource(target))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _theirs(row: Override) -> tuple[type, Any]:
    """The class that defines the overridden attribute, and the attribute."""
    for klass in row.theirs.__mro__:
        if row.name in vars(klass):
            return klass, vars(klass)[row.name]
    raise AssertionError(
        f"{row.theirs.__module__}.{row.theirs.__qualname__}.{row.name} is gone, and "
        f"{row.ours.__qualname__}.{row.name} overrides nothing now: find what replaced it"
    )


@pytest.mark.parametrize("row", OVERRIDES, ids=lambda row: f"{row.ours.__name__}.{row.name}")
def test_overridden_methods_are_as_the_overrides_expect(row: Override) -> None:
    assert row.name in vars(row.ours), (
        f"{row.ours.__qualname__} no longer overrides {row.name}: remove its row"
    )
    assert issubclass(row.ours, row.theirs)
    owner, theirs = _theirs(row)
    where = f"{owner.__module__}.{owner.__qualname__}.{row.name}"
    assert _parameters(theirs) == row.parameters, (
        f"{where} now takes {_parameters(theirs)}, not {row.parameters}: "
        f"adapt {row.ours.__qualname__}.{row.name} to it"
    )
    if row.replaced_body is not None:
        assert _digest(theirs) == row.replaced_body, (
            f"{where} changed (digest {_digest(theirs)}), and {row.ours.__qualname__}.{row.name} "
            "replaces it instead of calling it: compare the two, adapt ours, update the digest"
        )


def test_every_override_of_ours_has_a_row() -> None:
    """So that an override added later (or at a merge) is checked like the others."""
    listed = {(row.ours, row.name) for row in OVERRIDES}
    missing = [
        f"{ours.__qualname__}.{name}"
        for ours in OURS
        for name in vars(ours)
        if (name == "__init__" or not name.startswith("__"))
        and name not in NOT_OVERRIDES
        and any(hasattr(base, name) for base in ours.__mro__[1:])
        and (ours, name) not in listed
    ]
    assert not missing, f"add a row to OVERRIDES for each of {missing}"


def _has_attribute(klass: type, name: str) -> bool:
    """A class attribute (method, property, annotated default) or one `__init__` or any other
    method of the class or its bases assigns to `self`."""
    if hasattr(klass, name):
        return True
    assigned = re.compile(rf"\bself\.{re.escape(name)}\s*(?::[^=\n]+)?=(?!=)")
    for base in klass.__mro__:
        if name in getattr(base, "__annotations__", {}):
            return True
        try:
            source = inspect.getsource(base)
        except (OSError, TypeError):
            continue
        if assigned.search(source):
            return True
    return False


@pytest.mark.parametrize(
    ("klass", "name", "user"), ATTRIBUTES, ids=[f"{k.__name__}.{n}" for k, n, _ in ATTRIBUTES]
)
def test_attributes_the_overrides_use_exist(klass: type, name: str, user: str) -> None:
    assert _has_attribute(klass, name), (
        f"{klass.__module__}.{klass.__qualname__} has no {name!r} any more; {user} uses it"
    )


@pytest.mark.parametrize(("function", "text", "why"), READ_LATER)
def test_attributes_set_after_construction_are_still_read_later(
    function: Callable[..., Any], text: str, why: str
) -> None:
    assert text in inspect.getsource(function), (
        f"{function.__qualname__} no longer reads {text} ({why}): setting it has no effect now"
    )


@pytest.mark.parametrize(("module", "name"), MODULE_NAMES)
def test_module_level_names_exist(module: object, name: str) -> None:
    assert hasattr(module, name), f"{getattr(module, '__name__', module)} has no {name} any more"


def test_recovery_waits_for_the_active_offsets_right_after_the_active_highwaters() -> None:
    """`CatchUpRecovery._wait` lifts the time bound of the step that follows the active
    highwaters, which must be the one that reads the actives' offsets (and runs the catch-up)."""
    source = inspect.getsource(Recovery._restart_recovery.fun)  # a mode `ServiceTask`
    steps = re.findall(r"await self\._wait\(\s*T\(self\.(\w+)\)\(\s*consumer,\s*(\w+)", source)
    active = steps.index(("_build_highwaters", "assigned_active_tps"))
    assert steps[active + 1] == ("_build_offsets", "assigned_active_tps"), steps
