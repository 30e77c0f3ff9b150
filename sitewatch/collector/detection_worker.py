"""Detection in a process of its own, so that ingest and detection use two cores.

Python runs one thread at a time, and scoring a reading costs about as much as validating,
tracking and storing it; inline, detection halves what one collector can take in. With
``detection.process: true`` (the default) the collector hands every telemetry message, as
validated, to a child process that runs ``sitewatch.collector.detection.Detection``: its
readings as rows of plain values (``detection.reading_rows``) in ``marshal``'s format, which
the child reads back many times faster than it would parse the JSON again; status payloads go
as received (they are rare). Telemetry goes in batches of up to ``_BATCH_READINGS`` readings,
held at most ``_BATCH_WAIT_S`` (``flush_due``, from the ingest thread's tick): one write and
one wake-up of the child per message cost it as much as unpacking the message's readings.
The child sends back the lines to store (``anomaly`` scores, detection's own ``alerts``
points) and the decisions for the alert engine, which the parent takes on a reader thread.

What stays the same as inline: every reading is scored in the order it arrived, status
messages update the child's copy of the sensor catalog in that same order (labels and tags
are those of the reading's time), ``tick`` uses the parent's clock (tests inject one), and
the state is checkpointed to the same file and restored at start. What differs: the lines
are stored a moment after the readings rather than with them, and the hand-over blocks when
the child is behind (a pipe holds a batch or two), so a collector that cannot keep
up slows down rather than scoring less.

If the child dies (it should not; a bug or the OOM killer), the parent logs it, counts the
messages it had not confirmed as lost to detection (``lost_messages``), and starts a new child
from the last checkpoint.
"""

from __future__ import annotations

import json
import logging
import marshal
import multiprocessing
import signal
import struct
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sitewatch.atomicfile import write_atomic
from sitewatch.collector.catalog import SensorCatalog
from sitewatch.collector.decisions import Decision
from sitewatch.collector.detection import Detection, Row, reading_rows
from sitewatch.collector.gctune import tune_for_throughput
from sitewatch.collector.rules import DetectionConfig
from sitewatch.wire import StatusMessage, TelemetryMessage

__all__ = ["DetectionWorker"]

log = logging.getLogger(__name__)

# Requests, parent → child: one byte of kind, then its data.
_TELEMETRY = b"t"  # + [(site, device, rows), ...] in marshal's format version _MARSHAL_VERSION
_STATUS = b"s"
_TICK = b"k"  # + now_s as a double
_CHECKPOINT = b"c"
_STOP = b"q"
_NOW = struct.Struct("d")
_MARSHAL_VERSION = 2
"""Without the back-references of later versions, which cost time to track and save nothing
on rows of plain values (dumped a third faster)."""

_COUNTS_EVERY = 200
"""The child reports its counters after this many messages (and at every tick)."""
_BATCH_READINGS = 1000
_BATCH_WAIT_S = 0.02
"""Telemetry is handed over once this many readings are held, or this long (seconds) after
the first of them, whichever comes first."""
_QUICK_DEATH_S = 10.0
_MAX_BACKOFF_S = 60.0
"""A child that dies within ``_QUICK_DEATH_S`` of its start is restarted after a back-off
doubling from 2 s to ``_MAX_BACKOFF_S`` (a child that cannot start must not spin); requests
meanwhile are counted as lost."""


class DetectionWorker:
    """``Detection`` in a child process; see the module docstring.

    ``on_lines`` receives the lines to store and ``on_decision`` each decision (both on the
    worker's reader thread). ``catalog`` seeds the child's copy of the sensor catalog;
    ``state_path`` is the checkpoint file (read at start, written by ``checkpoint`` and
    ``stop``). The counters mirror ``Detection``'s, as last reported by the child.
    """

    def __init__(
        self,
        config: DetectionConfig,
        state_path: Path,
        catalog: SensorCatalog,
        *,
        write_decisions: bool,
        on_lines: Callable[[list[str]], None],
        on_decision: Callable[[Decision], None] | None = None,
    ) -> None:
        self.config = config
        self.state_path = state_path
        self._catalog = catalog
        self.write_decisions = write_decisions
        self.on_lines = on_lines
        self.on_decision = on_decision
        self.scored_values = 0
        self.late_values = 0
        self.decisions = 0
        self.restarts = 0
        self.lost_messages = 0
        self._sent = 0  # messages (and other requests) sent to the current child
        self._done = 0  # ... that it has reported done
        self._batch: list[tuple[str, str, list[Row]]] = []  # telemetry not yet handed over
        self._batch_readings = 0
        self._batch_since_s = 0.0  # monotonic, when the oldest in the batch came
        self._generation = 0  # of the current child: a dead one's reader restarts only it
        self._send_lock = threading.Lock()
        self._progress = threading.Condition()  # notified when the child reports
        self._stopping = False
        self._started_s = 0.0
        self._quick_deaths = 0
        self._process: multiprocessing.process.BaseProcess | None = None
        self._requests: Connection | None = None
        self._reader: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the child (it restores the checkpoint) and the reader thread."""
        self._generation += 1
        self._started_s = time.monotonic()
        context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
        child_requests, self._requests = context.Pipe(duplex=False)
        results, child_results = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_serve,
            args=(child_requests, child_results, self.config.model_dump(mode="json"),
                  str(self.state_path), self._catalog.to_json(), self.write_decisions),
            name="sitewatch-detection",
            daemon=True,
        )  # fmt: skip
        self._process.start()
        child_requests.close()
        child_results.close()
        self._sent = self._done = 0
        self._reader = threading.Thread(
            target=self._read, args=(results, self._generation), name="detection-results",
            daemon=True,
        )
        self._reader.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Checkpoint and stop the child, waiting up to ``timeout_s`` for it. Requests after
        this are ignored."""
        self._stopping = True
        self._send(_STOP)
        with self._send_lock:
            if self._requests is not None:
                self._requests.close()
                self._requests = None
        if self._process is not None:
            self._process.join(timeout_s)
            if self._process.is_alive():
                log.error("detection process did not stop in %.0f s; killing it", timeout_s)
                self._process.kill()
                self._process.join()
        if self._reader is not None:
            self._reader.join(timeout_s)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until the child has done every request sent so far (its lines and decisions
        handed on); False after ``timeout_s``. A checkpoint request makes it report."""
        self.checkpoint()
        with self._progress:
            return self._progress.wait_for(lambda: self._done >= self._sent, timeout_s)

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    # -- requests (ingest and service threads) ------------------------------------------
    def telemetry(self, message: TelemetryMessage) -> None:
        """A telemetry message, validated by ingest: score its readings (handed over in a
        batch: see ``flush_due``)."""
        rows = reading_rows(message)
        with self._send_lock:
            if not self._batch:
                self._batch_since_s = time.monotonic()
            self._batch.append((message.site, message.device, rows))
            self._batch_readings += len(rows)
            if self._batch_readings >= _BATCH_READINGS:
                self._flush_locked()

    def flush_due(self) -> None:
        """Hand over the telemetry held back if the oldest of it waited ``_BATCH_WAIT_S``
        (call it often: the ingest thread's tick)."""
        if self._batch and time.monotonic() - self._batch_since_s >= _BATCH_WAIT_S:
            with self._send_lock:
                self._flush_locked()

    def status(self, payload: bytes) -> None:
        """A status (birth) message's payload: the child's catalog learns the sensors."""
        self._send(_STATUS + payload)

    def tick(self, now_s: float) -> None:
        """Let time-watching detectors score ``now_s`` (UTC seconds, the parent's clock)."""
        self._send(_TICK + _NOW.pack(now_s))

    def checkpoint(self) -> None:
        """Have the child write its state to ``state_path``."""
        self._send(_CHECKPOINT)

    def _send(self, request: bytes) -> None:
        with self._send_lock:
            self._flush_locked()  # what came before it goes first
            self._send_locked(request, 1)

    def _flush_locked(self) -> None:
        if not self._batch:
            return
        batch, self._batch, self._batch_readings = self._batch, [], 0
        self._send_locked(_TELEMETRY + marshal.dumps(batch, _MARSHAL_VERSION), len(batch))

    def _send_locked(self, request: bytes, messages: int) -> None:
        """Send a request standing for ``messages`` messages (send lock held)."""
        if self._requests is None:  # stopped, or between a dead child and the next
            if not self._stopping:
                self.lost_messages += messages
            return
        try:
            self._requests.send_bytes(request)
            self._sent += messages
        except OSError:  # the child is gone; its reader thread starts another
            self.lost_messages += messages

    # -- results (reader thread) --------------------------------------------------------
    def _read(self, results: Connection, generation: int) -> None:
        while True:
            try:
                reply = results.recv()
            except (EOFError, OSError):
                break
            lines, decisions, counts = reply
            if lines:
                self.on_lines(lines)
            if self.on_decision is not None:
                for decision in decisions:
                    self.on_decision(decision)
            with self._progress:
                self._done, self.scored_values, self.late_values, self.decisions = counts
                self._progress.notify_all()
        results.close()
        if not self._stopping:
            with self._send_lock:
                if generation == self._generation:
                    self._restart()

    def _restart(self) -> None:
        """The child died: count what it had not done, and start another (send lock held:
        requests wait for the new child, about a second)."""
        lost = max(0, self._sent - self._done)
        self.lost_messages += lost
        self.restarts += 1
        if self._requests is not None:
            self._requests.close()
            self._requests = None
        code = None
        if self._process is not None:
            self._process.join(5.0)
            code = self._process.exitcode
        quick = time.monotonic() - self._started_s < _QUICK_DEATH_S
        self._quick_deaths = self._quick_deaths + 1 if quick else 0
        if not self._quick_deaths:
            log.error("detection process died (exit code %s) with %d messages not yet "
                      "scored; starting another from the last checkpoint", code, lost)
            self.start()
            return
        delay_s = min(_MAX_BACKOFF_S, 2.0**self._quick_deaths)
        log.error("detection process died (exit code %s) %.0f s after its start; starting "
                  "another in %.0f s (messages meanwhile are not scored)", code,
                  time.monotonic() - self._started_s, delay_s)  # fmt: skip
        timer = threading.Timer(delay_s, self._start_later)
        timer.daemon = True
        timer.start()

    def _start_later(self) -> None:
        with self._send_lock:
            if not self._stopping and self._requests is None:
                self.start()


# -- the child ---------------------------------------------------------------------------
def _serve(
    requests: Connection,
    results: Connection,
    config_data: Mapping[str, Any],
    state_path: str,
    catalog_data: Mapping[str, Any],
    write_decisions: bool,
) -> None:
    """The child's loop: one request at a time, in order, until ``stop`` or the parent goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = DetectionConfig.model_validate(config_data)
    catalog = SensorCatalog.from_json(catalog_data) if catalog_data else SensorCatalog()
    decisions: list[Decision] = []
    detection = Detection(config, catalog, on_decision=decisions.append,
                          write_decisions=write_decisions)  # fmt: skip
    path = Path(state_path)
    try:
        saved = json.loads(path.read_bytes())
    except FileNotFoundError:
        saved = None
    except (OSError, ValueError) as error:
        log.warning("detection checkpoint %s unreadable (%s); starting afresh", path, error)
        saved = None
    if isinstance(saved, dict):
        detection.restore(saved)
    tune_for_throughput()
    done = reported = 0  # messages (and other requests) done; when last reported
    while True:
        try:
            request = requests.recv_bytes()
        except (EOFError, OSError):  # the parent is gone: keep what was learnt
            write_atomic(path, detection.checkpoint_chunks())
            return
        kind, data = request[:1], request[1:]
        lines: list[str] = []
        report = False
        if kind == _TELEMETRY:
            # The parent's own rows, through a pipe only the two of us hold.
            batch = marshal.loads(data)  # noqa: S302
            for site, device, rows in batch:
                lines += detection.observe_rows(site, device, rows)
            done += len(batch) - 1
        elif kind == _STATUS:
            try:
                catalog.update(StatusMessage.model_validate_json(data))
            except ValidationError as error:
                log.error("detection: status the collector accepted does not parse: %s", error)
        elif kind == _TICK:
            (now_s,) = _NOW.unpack(data)
            lines = detection.tick(now_s)
            report = True
        elif kind in (_CHECKPOINT, _STOP):
            write_atomic(path, detection.checkpoint_chunks())
            report = True
        done += 1
        if report or lines or decisions or done - reported >= _COUNTS_EVERY:
            reported = done
            counts = (done, detection.scored_values, detection.late_values, detection.decisions)
            results.send((lines, decisions, counts))  # pickled here, so the list can be reused
            decisions.clear()
        if kind == _STOP:
            results.close()
            return
