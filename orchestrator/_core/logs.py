"""An isolate's log records as the parent takes them: bounded, never trusted.

A worker's ``ctx.log`` sends each record over the control channel (a ``Log`` message);
the parent re-emits it into its own ``logging``. An isolate may be hostile, so what it
sends only ever fills in one record of a logger the parent chose:

- every record goes to one fixed logger per worker, ``isolates.worker.<worker name>``
  (the worker's name is the parent's, never the isolate's); the logger name the isolate
  gave travels as the record attribute ``isolate_logger``, so no name it sends creates a
  logger object here;
- the message and that name are cut to ``MAX_MESSAGE`` / ``MAX_LOGGER_NAME`` characters
  (marked as cut), and control characters other than newline and tab are escaped (no
  terminal escape sequences, no carriage returns rewriting a line);
- the level is clamped to 1..CRITICAL, and a ``created`` time that is not a plausible
  wall-clock time is replaced with the parent's clock;
- records past a per-isolate rate (a token bucket: ``BURST`` at once, ``RATE`` a second
  after that) are dropped, and one WARNING line says how many were: when the parent stops
  waiting for the isolate's next message, and every ``SUMMARY_EVERY`` seconds while a
  flood lasts.
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Final

from .wire import Log

#: Longest message kept from one record, in characters (the rest is cut, and marked).
MAX_MESSAGE: Final = 8192
#: Longest logger name kept from one record (``record.isolate_logger``).
MAX_LOGGER_NAME: Final = 200
#: Records an isolate may send at once, then per second on average.
BURST: Final = 200
RATE: Final = 100.0
#: While a flood lasts, the "dropped" summary is written at most this often (seconds).
SUMMARY_EVERY: Final = 5.0
#: A record's ``created`` may be at most this far from the parent's clock (seconds).
_CLOCK_SLACK: Final = 86400.0
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_NEWLINE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class IsolateLog:
    """The parent's end of one isolate's log records (one per isolate process)."""

    def __init__(self) -> None:
        self._tokens = float(BURST)
        self._refilled = time.monotonic()
        self._dropped = 0
        self._summarized = self._refilled
        self._worker = ""
        self._logger: logging.Logger | None = None

    def emit(self, worker: str, msg: Log) -> None:
        """Re-emit ``msg`` under ``isolates.worker.<worker>``, or drop it past the rate."""
        logger = self._logger_for(worker)
        if self._take():
            # handle(), as logging's own socket receiver does: the worker's logger chose
            # the level already, so only our handlers' levels apply here.
            logger.handle(_record(logger, worker, _level(msg.level), msg))
        else:
            self._dropped += 1
        if self._dropped and time.monotonic() - self._summarized >= SUMMARY_EVERY:
            self.flush()  # a flood that lasts: one line every SUMMARY_EVERY seconds

    def flush(self) -> None:
        """Write the summary of records dropped since the last one (if any were); the
        parent calls it whenever it stops reading the isolate's messages."""
        dropped, self._dropped = self._dropped, 0
        self._summarized = time.monotonic()
        if dropped and self._logger is not None:
            self._logger.warning(
                "isolate %s sent log records faster than %d a second (after a burst of "
                "%d): %d dropped",
                self._worker,
                RATE,
                BURST,
                dropped,
                extra={"worker": self._worker},
            )

    def _logger_for(self, worker: str) -> logging.Logger:
        if self._logger is None or worker != self._worker:
            self.flush()
            self._worker = worker
            self._logger = logging.getLogger(f"isolates.worker.{worker}")
        return self._logger

    def _take(self) -> bool:
        """One token from the bucket, refilled at RATE a second up to BURST."""
        now = time.monotonic()
        self._tokens = min(float(BURST), self._tokens + (now - self._refilled) * RATE)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def _record(logger: logging.Logger, worker: str, level: int, msg: Log) -> logging.LogRecord:
    text = _bounded(msg.message, MAX_MESSAGE, _CONTROL)
    record = logger.makeRecord(logger.name, level, "(isolate)", 0, text, (), None)
    created = _created(msg.created, record.created)
    record.created, record.msecs = created, int((created % 1) * 1000) + 0.0
    record.worker = worker
    record.isolate_logger = _bounded(msg.logger, MAX_LOGGER_NAME, _CONTROL_OR_NEWLINE)
    return record


def _level(level: int) -> int:
    return min(max(level, 1), logging.CRITICAL)


def _created(claimed: float, now: float) -> float:
    """The isolate's timestamp if it is a plausible wall-clock time, else ours."""
    if math.isfinite(claimed) and abs(claimed - now) <= _CLOCK_SLACK:
        return claimed
    return now


def _bounded(text: str, limit: int, control: re.Pattern[str]) -> str:
    """``text`` cut to ``limit`` characters (marked), control characters escaped."""
    cut = len(text) - limit
    if cut > 0:
        text = f"{text[:limit]}... [{cut} more characters dropped]"
    if control.search(text) is None:
        return text
    return control.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
