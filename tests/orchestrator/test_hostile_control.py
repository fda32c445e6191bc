"""A hostile isolate against its parent: whatever it writes on its control channel, the
parent's descriptors, memory and time stay bounded, and the call ends in its value or in
WorkerFailed, never in a raw exception or a hang.

Each test runs in a forked child (``in_child``) with the warm pool off, so that the
parent's descriptor count is the test's alone to compare."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from isolates.orchestrator import FORK_SERVER, POOL, Supervisor
from isolates.orchestrator._core.logs import BURST, MAX_LOGGER_NAME, MAX_MESSAGE, RATE
from tests.forked import in_child
from tests.orchestrator import hostile, targets
from tests.orchestrator.procs import zombies


@pytest.fixture(autouse=True)
def _no_zombies_after() -> object:
    yield
    assert zombies() == [], "an isolate was left unreaped"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def outcome(call: Callable[[], Any]) -> tuple[str, str]:
    """("value", repr) or (exception class name, message): what the caller got."""
    try:
        return "value", repr(call())
    except Exception as exc:
        return type(exc).__name__, str(exc)


def fds_after(call: Callable[[], Any]) -> tuple[tuple[str, str], int, int]:
    """What ``call`` (an @isolate call) ended in, and the parent's descriptor count
    before and after it. A legitimate call first opens what stays open for good (the
    monitor thread's wake-up socket)."""
    POOL.resize(0)  # a refilling pool would open descriptors meanwhile
    FORK_SERVER.pool.resize(0)
    FORK_SERVER.start()  # its channel stays open for good (else it starts mid-count)
    assert targets.echo(1) == 1
    before = open_fds()
    got = outcome(call)
    return got, before, open_fds()


# -- descriptors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: hostile.logs_with_fds(30), ("value", "'done'")),
        (hostile.result_with_fds, ("value", "'forged'")),
        (hostile.failure_with_fds, ("ValueError", "forged")),
        (hostile.frame_with_fds, ("value", "'done'")),
        (
            lambda: hostile.with_forged_ready(hostile.ForgeReady("extra_fds")),
            ("value", "'ran with extra_fds'"),
        ),
    ],
    ids=["log", "result", "failure", "multi-record", "ready-with-extra"],
)
def test_descriptors_on_control_messages_are_closed_and_the_call_goes_on(
    call: Callable[[], Any], expected: tuple[str, str]
) -> None:
    got, before, after = in_child(fds_after, call).unwrap()
    assert got == expected
    assert after == before


def test_a_supervised_worker_gets_no_descriptor_into_the_supervisor() -> None:
    def run() -> tuple[list[Any], int, int]:
        def once(fn: Callable[..., Any]) -> Any:
            sup = Supervisor()
            sup.add_worker("w", fn)
            try:
                return sup.run(timeout=60)["w"]
            except Exception as exc:
                return type(exc).__name__

        once(hostile.honest_worker)  # what stays open for good is open now
        before = open_fds()
        got = [once(hostile.worker_logs_with_fds), once(hostile.worker_nested_result)]
        return got, before, open_fds()

    got, before, after = in_child(run).unwrap()
    assert got == ["done", "WorkerFailed"]
    assert after == before


def test_an_idle_out_of_turn_with_descriptors_fails_the_call_and_leaks_none() -> None:
    (kind, text), before, after = in_child(fds_after, hostile.idle_with_fds).unwrap()
    assert (kind, after) == ("WorkerFailed", before)
    assert "sent Idle where a result was due" in text


def test_a_ready_whose_descriptor_is_no_seccomp_listener_is_refused() -> None:
    forged = hostile.ForgeReady("no_listener")
    (kind, text), before, after = in_child(
        fds_after, lambda: hostile.with_forged_ready(forged)
    ).unwrap()
    assert (kind, after) == ("WorkerFailed", before)
    assert "no seccomp listener" in text


def test_a_ready_with_a_malformed_status_is_the_isolates_failure() -> None:
    forged = hostile.ForgeReady("bad_status")
    (kind, text), before, after = in_child(
        fds_after, lambda: hostile.with_forged_ready(forged)
    ).unwrap()
    assert (kind, after) == ("WorkerFailed", before)
    # READY is typed: the status is checked as the message is decoded
    assert "broke its control channel" in text and "$.status" in text


# -- decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda: hostile.nested_result(200_000), "nested too deeply"),
        (lambda: hostile.nested_result(60_000), "nested too deeply"),
        (lambda: hostile.nested_failure_args(200_000), "broke its control channel"),
        (lambda: hostile.nested_control(200_000), "broke its control channel"),
        (lambda: hostile.nested_control(60_000), "broke its control channel"),
    ],
    ids=["result-framed", "result-one-record", "failure-args", "control", "control-record"],
)
def test_deeply_nested_data_from_an_isolate_is_a_worker_failure(
    call: Callable[[], Any], says: str
) -> None:
    kind, text = in_child(outcome, call).unwrap()
    assert kind == "WorkerFailed"
    assert says in text


def test_exception_arguments_nested_deeper_than_any_builtins_keep_the_message_only() -> None:
    def run() -> tuple[str, tuple[Any, ...]]:
        try:
            hostile.nested_failure_args(500)
        except ValueError as exc:
            return str(exc), exc.args
        return "", ()

    assert in_child(run).unwrap() == ("deep", ("deep",))


def test_a_result_nested_within_bounds_still_decodes() -> None:
    assert in_child(outcome, lambda: hostile.nested_result(50)).unwrap()[0] == "value"


# -- log records ------------------------------------------------------------------------


def test_a_log_flood_cannot_keep_a_call_past_its_timeout() -> None:
    def run() -> tuple[str, str, float, set[str]]:
        loggers = set(logging.Logger.manager.loggerDict)
        start = time.monotonic()
        kind, text = outcome(hostile.log_flood)  # timeout=2, a new logger name per record
        seconds = time.monotonic() - start
        return kind, text, seconds, set(logging.Logger.manager.loggerDict) - loggers

    kind, text, seconds, new_loggers = in_child(run, timeout=60).unwrap()
    assert kind == "ResourceExceeded"  # a WorkerFailed: the timeout is the wall-time limit
    assert "timed out during run" in text
    assert seconds < 2 + 1.5
    assert new_loggers <= {"isolates", "isolates.worker", "isolates.worker.log_flood"}


class Keep(logging.Handler):
    """Every record that reaches ``isolates.worker``."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        logging.getLogger("isolates.worker").addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_distinct_logger_names_create_no_loggers_in_the_parent() -> None:
    def run() -> tuple[str, int, set[str], set[str]]:
        keep = Keep()
        hostile.logs_named(1)  # the worker's one logger exists from now on
        loggers = len(logging.Logger.manager.loggerDict)
        keep.records.clear()
        value = hostile.logs_named(150)
        grown = len(logging.Logger.manager.loggerDict) - loggers
        names = {r.name for r in keep.records}
        return value, grown, names, {r.isolate_logger for r in keep.records}  # type: ignore[attr-defined]

    value, grown, names, claimed = in_child(run).unwrap()
    assert (value, grown) == ("done", 0)
    assert names == {"isolates.worker.logs_named"}
    assert claimed == {f"evil.{i}" for i in range(150)}


def test_records_past_the_rate_are_dropped_and_counted() -> None:
    def run() -> tuple[str, int, int, float]:
        keep = Keep()
        start = time.monotonic()
        value = hostile.log_burst(5000)
        seconds = time.monotonic() - start
        passed = [r for r in keep.records if r.getMessage().startswith("burst ")]
        summaries = [r.getMessage() for r in keep.records if "dropped" in r.getMessage()]
        dropped = sum(int(s.rsplit(": ", 1)[1].split()[0]) for s in summaries)
        return value, len(passed), dropped, seconds

    value, passed, dropped, seconds = in_child(run).unwrap()
    assert value == "done"
    assert BURST <= passed <= BURST + RATE * seconds + 1
    assert passed + dropped == 5000


def test_oversized_and_malformed_log_fields_are_bounded() -> None:
    def run() -> tuple[str, list[tuple[int, str, str, float]]]:
        keep = Keep()
        value = hostile.log_odd_record()
        now = time.time()
        rows = [(r.levelno, r.getMessage(), r.isolate_logger, abs(r.created - now))  # type: ignore[attr-defined]
                for r in keep.records]  # fmt: skip
        return value, rows

    value, rows = in_child(run).unwrap()
    assert value == "done"
    (lvl1, big, big_name, _), (lvl2, escaped, name, _), (lvl3, _, _, skew) = rows
    assert len(big) < MAX_MESSAGE + 100 and big.endswith("more characters dropped]")
    assert len(big_name) < MAX_LOGGER_NAME + 100
    assert escaped == "\\x1b[2J\\x0dfake line\nsecond\tline"
    assert name == "evil\\x0aname"
    assert (lvl1, lvl2, lvl3) == (logging.WARNING, logging.CRITICAL, 1)
    assert skew < 60  # a NaN timestamp became the parent's clock


def test_a_workers_own_log_records_arrive_with_their_level_and_message() -> None:
    def run() -> tuple[dict[str, Any], list[tuple[str, int, str, str]]]:
        keep = Keep()
        sup = Supervisor()
        sup.add_worker("talker", hostile.log_levels)
        results = sup.run(timeout=60)
        rows = [(r.name, r.levelno, r.getMessage(), r.worker) for r in keep.records]  # type: ignore[attr-defined]
        return results, rows

    results, rows = in_child(run).unwrap()
    assert results == {"talker": "logged"}
    assert rows == [
        ("isolates.worker.talker", logging.WARNING, "careful: 3 left", "talker"),
        ("isolates.worker.talker", logging.ERROR, "it broke", "talker"),
    ]
