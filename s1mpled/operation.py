"""The Operation: the service ``systemctl start s1mpled`` runs, with one code path for a first start and
for recovery after a crash ("crash-only").

    config (validated before this) ->
    A: open + lock the state directory, restore the environment, build every worker and load its state
       (then the bus runs, and the private stream starts: B must come after its subscription is
       confirmed, so that B itself is the catch-up of everything the stream could not deliver)
    B: reconcile every ledger with the exchange (the truth)
    C: only if A and B succeeded and market data is subscribed too: the scheduler, the in-flight
       checks and the strategies; READY=1

What A builds, and how it is wired to the bus, is s1mpled.assembly's; this module is the lifecycle.

Keep going safely: an exchange that does not answer in A (live: loading markets, checking the key) or
B is waited out -- tried again with capped backoff (s1mpled.startup), never traded around -- and a
stream that cannot confirm its subscription keeps retrying (with its backoff) while the operation
waits. Meanwhile the daemon says what it waits for: systemd's STATUS (each retry extends the start
timeout: EXTEND_TIMEOUT_USEC), the log, ``status``, and a critical alert after ``startup.alert_after``.
Any other failure in A or B raises (the CLI exits non-zero with the reason; a refused API key is a
configuration error, exit 78); nothing half-runs. SIGTERM and
SIGINT stop new decisions, wait for in-flight order requests, persist and exit 0; SIGHUP reloads what
can change safely (log level, alert URLs) and reports what needs a restart.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

from s1mpled import assembly
from s1mpled.alerts import Alerter
from s1mpled.assembly import BREAKER_STATE_NAME, IDENTITY_STATE_NAME, Components
from s1mpled.bus import EventBus
from s1mpled.clock import ClockMs, wall_ms
from s1mpled.config import Config, load_config
from s1mpled.control import ControlServer
from s1mpled.environments.base import ExecutionEnvironment, Stream
from s1mpled.errors import (
    ConfigError,
    ExchangeError,
    ExchangeUnavailable,
    LocalStateError,
    S1mpledError,
    StateDiskFullError,
)
from s1mpled.instruments import Instruments, MetricsServer
from s1mpled.logs import setup_logging
from s1mpled.scheduler import MonotonicClock, Schedule, Scheduler
from s1mpled.sd_notify import Notifier, watchdog_interval
from s1mpled.startup import STARTUP_BACKOFF, TRY_ALLOWANCE_S, Waiting
from s1mpled.state.store import StateDirectory
from s1mpled.status import ControlCommands

__all__ = ["BREAKER_STATE_NAME", "IDENTITY_STATE_NAME", "Components", "Operation", "run"]

log = logging.getLogger("s1mpled.operation")
WAITING_LOG_S = 10.0  # while a stream has not confirmed its subscription, say so this often
IN_FLIGHT_TICK_S = 1.0  # how often the strategies look for orders due for an in-flight check (and exit steps)
T = TypeVar("T")


class _Stop(Exception):
    """Raised inside the task group to end it (a requested shutdown, not a failure)."""


class Operation:
    """One operation: its state directory, its environment, its strategies."""

    def __init__(self, config: Config, *, clock_ms: ClockMs = wall_ms, notifier: Notifier | None = None):
        self.config = config
        self.phase = "starting"
        self.started_ms = clock_ms()
        self._clock_ms = clock_ms
        self.notifier = notifier or Notifier()
        self.bus = EventBus()
        self.alerter = Alerter(config.alerts.apprise_urls)
        self.instruments = Instruments(config.operation)  # what only this process measures (s1mpled.instruments)
        self.components: Components | None = None
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._pumps: list[asyncio.Task[None]] = []
        self.waiting: Waiting | None = None  # what the start waits for (s1mpled.startup), while it does
        self._startup_alerted = False
        self._rng = random.Random()

    def now_ms(self) -> int:
        """The operation's wall clock (injected in tests)."""
        return self._clock_ms()

    # -- phases --

    def _set_phase(self, phase: str, status: str) -> None:
        self.phase = phase
        self.notifier.status(status)
        log.info("phase %s: %s", phase, status, extra={"EVENT": "PHASE"})

    async def _step_a(self, state_dir: StateDirectory) -> Components | None:
        """Recovery step A: restore every piece of state before anything can act; an exchange that does not
        answer is waited for (None: a stop was requested meanwhile)."""
        self._set_phase("loading-state", "recovery A: loading state")
        await assembly.check_identity(self.config, state_dir)
        env = await self._retrying("recovery A", lambda: self._started(state_dir), ExchangeUnavailable)
        if env is None:
            return None
        try:
            return assembly.build(
                self.config, state_dir, env, publish=self.bus.publish, clock_ms=self._clock_ms, alert=self.alerter.send
            )
        except BaseException:
            await env.close()
            raise

    async def _started(self, state_dir: StateDirectory) -> ExecutionEnvironment:
        """A started environment (live: markets loaded, the API key proven, else ConfigError)."""
        env = assembly.environment(self.config, state_dir, self.bus.publish, self._clock_ms, self.instruments)
        try:
            await env.start()
        except BaseException:
            await env.close()  # never leave a half-open exchange client behind a failed start
            raise
        return env

    async def _step_b(self, c: Components) -> bool:
        """Recovery step B: the ledgers are made to agree with the exchange before any decision; a pass
        the exchange does not answer is tried again (False: a stop was requested meanwhile)."""
        self._set_phase("reconciling", "recovery B: reconciling with the exchange")
        report = await self._retrying("recovery B", c.reconciler.startup, ExchangeError)
        if report is None:
            return False
        log.info("startup reconciliation done: %d correction(s)", len(report.corrections))
        return True

    # -- waiting for the exchange at start (s1mpled.startup) --

    async def _retrying(
        self, step: str, attempt: Callable[[], Awaitable[T]], retry_on: type[ExchangeError]
    ) -> T | None:
        """``attempt()`` until it succeeds; whenever the exchange does not answer (``retry_on``), wait with
        capped backoff, saying so, and try again. None if a stop is requested while waiting."""
        waiting: Waiting | None = None
        while True:
            try:
                result = await attempt()
            except retry_on as exc:
                now, delay = self._clock_ms(), STARTUP_BACKOFF.delay(waiting.tries if waiting else 0, self._rng)
                waiting = (waiting or Waiting(step, "exchange unreachable", now)).failed(str(exc), now, delay)
                log.warning(
                    "%s (%s); not trading until it answers", waiting.text(now), exc, extra={"EVENT": "STARTUP_WAIT"}
                )
                await self._say_waiting(waiting, delay + TRY_ALLOWANCE_S)
                if await self._stopped_within(delay):
                    return None
                continue
            if waiting is not None:
                log.warning(
                    "%s: the exchange answers again after %d failed tries", step, waiting.tries,
                    extra={"EVENT": "STARTUP_WAIT_OVER"},
                )  # fmt: skip
            self.waiting = None
            return result

    async def _say_waiting(self, waiting: Waiting, extend_s: float) -> None:
        """Tell systemd (STATUS, and ``extend_s`` more to start), ``status`` and -- once the daemon has not
        been trading for ``startup.alert_after`` since it started -- the operator, what the start waits for."""
        now = self._clock_ms()
        self.waiting = waiting
        self.notifier.extend_timeout(extend_s, waiting.text(now))
        if not self._startup_alerted and now - self.started_ms >= self.config.startup.alert_after_s * 1000:
            self._startup_alerted = True
            await self.alerter.send(
                f"s1mpled {self.config.operation} is not trading {(now - self.started_ms) / 60_000:.1f} min "
                f"after its start: {waiting.text(now)} (last: {waiting.last_error})"
            )

    async def _stopped_within(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if a stop is requested: True then."""
        try:
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        except TimeoutError:
            return False
        return True

    # -- streams (the DataSource and the private user stream): the environment publishes what they carry on the
    # bus it was built with (its one road out, s1mpled.environments.base); the operation owns their tasks --

    @staticmethod
    async def _guarded(name: str, work: Awaitable[None]) -> None:
        """A stream pump that a library cancels without us asking must fail loudly, not vanish.

        A TaskGroup treats a child that ends "cancelled" as fine; a silently dead stream would leave
        the daemon running blind.
        """
        task = asyncio.current_task()
        try:
            await work
        except asyncio.CancelledError:
            if task is not None and task.cancelling():
                raise
            raise LocalStateError(f"the {name} pump was cancelled from inside; restarting") from None

    # -- running --

    def healthy(self) -> bool:
        """Checked before every watchdog ping (which only a running event loop can send at all):
        no bus subscriber may be wedged with a full queue."""
        return all(sub.depth < sub.capacity for sub in self.bus.statistics().subscribers)

    def steady_status(self) -> str:
        c = self.components
        if c is None or self.phase != "trading":
            return self.phase if self.waiting is None else self.waiting.text(self._clock_ms())
        breaker = "OPEN" if c.breaker.breaker.halted else "closed"
        last = c.reconciler.last_at_ms
        ago = f"{(self._clock_ms() - last) / 1000:.0f} s ago" if last is not None else "never"
        return f"trading: {len(c.workers)} strategies, breaker {breaker}, last reconciliation {ago}"

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(5)
            self.notifier.status(self.steady_status())
            c = self.components
            if c is not None and self.phase == "trading":
                await c.breaker.maybe_auto_close(c.env.streams_healthy_for, partial(c.reconciler.reconcile, "breaker"))
                await c.reconciler.follow_up()

    async def _signals(self) -> None:
        """SIGTERM/SIGINT set the stop event (the main path shuts down); SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        try:
            while True:
                await self._reload.wait()
                self._reload.clear()
                self._do_reload()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    def request_stop(self) -> None:
        """Ask the operation to shut down (what SIGTERM does)."""
        self._stop.set()

    def _do_reload(self) -> None:
        """Re-read what can change safely. READY=1 ends a reload only once trading: a SIGHUP while
        startup still waits for a stream must not announce a daemon that is not ready."""
        ready = self.phase == "trading"
        if ready:
            self.notifier.reloading()
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc, extra={"EVENT": "RELOAD"})
        else:
            setup_logging(new.log_level, operation=new.operation)
            self.alerter.urls = new.alerts.apprise_urls
            restart = ("mode", "state_dir", "strategies", "paper", "live", "schedule", "control_socket", "startup")
            for field in (*restart, "metrics"):
                if getattr(new, field) != getattr(self.config, field):
                    log.warning("reload: %s changed; it takes effect after a restart", field, extra={"EVENT": "RELOAD"})
            log.info("configuration reloaded (log level, alert URLs)", extra={"EVENT": "RELOAD"})
        if ready:
            self.notifier.ready(self.steady_status())

    async def _shutdown(self, c: Components) -> None:
        """Stop deciding, let in-flight requests finish, persist every worker, close the environment."""
        self.phase = "stopping"
        self.notifier.stopping()
        log.info("stopping: no new signals, persisting state", extra={"EVENT": "SHUTDOWN"})
        for w in c.workers:
            w.trading = False
        try:
            async with asyncio.timeout(self.config.shutdown_timeout_s):
                await self.bus.drain()  # fills already received are applied now, not "found missing" next start
                await c.reconciler.stop()
                for w in c.workers:
                    async with w.lock:
                        await w.save_state()
                await self._close_streams(c)
        except TimeoutError:
            if not any(w.disk_full for w in c.workers):
                raise
            raise StateDiskFullError(
                str(self.config.state_dir),
                f"stopped after {self.config.shutdown_timeout_s:g} s with state still waiting for space (the disk "
                "is full): everything acknowledged is on disk, the next start reconciles the rest with the exchange",
            ) from None

    async def _close_streams(self, c: Components) -> None:
        """Streams end before their client closes (no reconnect attempts), then the environment closes."""
        for pump in self._pumps:
            pump.cancel()
        if self._pumps:
            await asyncio.wait(self._pumps)
        await c.env.close()

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT; raises S1mpledError if recovery fails."""
        commands = ControlCommands(self)
        server = ControlServer(self.config.control_socket, commands.handlers())
        if self.config.state_dir_is_default:  # ~/.local/state may not exist yet on a fresh machine
            self.config.state_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with StateDirectory.open(self.config.state_dir) as state_dir:
            state_dir.on_saved = self.instruments.state_saved
            http = self._serve_metrics()
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._signals())
                    tg.create_task(state_dir.supervise(self.alerter.send))  # disk full: alert; failed fsync: stop
                    control_ready = asyncio.Event()
                    tg.create_task(server.serve(control_ready))
                    c = await self._step_a(state_dir)
                    if c is None:  # stopped while the exchange was unreachable: nothing was built
                        raise _Stop
                    self.components = c
                    assembly.wire(self.bus, c, self.instruments)
                    tg.create_task(self.bus.run())
                    if not await self._subscribe_and_reconcile(tg, c):
                        await self._shutdown(c)  # a stop came while a stream was still unconfirmed
                        raise _Stop
                    tg.create_task(Scheduler(self._schedules(), self.bus.publish, MonotonicClock()).run())
                    tg.create_task(self._status_loop())
                    tg.create_task(self.notifier.run_watchdog(self.healthy, watchdog_interval()))
                    tg.create_task(self._in_flight_loop(c))
                    for w in c.workers:
                        await w.start_trading()
                    await control_ready.wait()  # READY=1 promises a bound control socket
                    self.phase = "trading"
                    self.notifier.ready(self.steady_status())
                    log.info("READY: %s", self.steady_status(), extra={"EVENT": "READY"})
                    if self._startup_alerted:
                        await self.alerter.send(f"s1mpled {self.config.operation} is trading now: recovery is done")
                    await self._stop.wait()
                    await self._shutdown(c)
                    raise _Stop
            except* _Stop:
                pass
            finally:
                if http is not None:
                    http.stop()  # the port is free again before the process says it stopped
        log.info("stopped", extra={"EVENT": "SHUTDOWN"})

    def _serve_metrics(self) -> MetricsServer | None:
        """The optional metrics HTTP endpoint (``metrics.listen``), serving from now on, in every phase. A port
        that cannot be bound is logged: metrics never stop trading (and Prometheus reports the target down)."""
        if self.config.metrics.listen is None:
            return None
        host, port = self.config.metrics.listen
        server = MetricsServer(self.instruments, host, port)
        try:
            server.start()
        except OSError as exc:
            log.error(
                "metrics: cannot listen on %s:%d (%s); they are still written by `s1mpled metrics`", host, port, exc,
                extra={"EVENT": "METRICS_HTTP"},
            )  # fmt: skip
            return None
        return server

    async def _subscribe_and_reconcile(self, tg: asyncio.TaskGroup, c: Components) -> bool:
        """The private stream first, confirmed; then B, which catches up what it could not deliver before;
        then market data, confirmed. False if a stop was requested while waiting."""
        try:
            self._pumps.append(tg.create_task(self._guarded("user stream", c.env.run_user_stream())))
            if not await self._confirmed(c.env, "user") or not await self._step_b(c):
                return False
            symbols = tuple(sorted({w.symbol for w in c.workers}))
            self._pumps.append(tg.create_task(self._guarded("market data", c.env.run_market_data(symbols))))
            return await self._confirmed(c.env, "market")
        except BaseException:
            await self._close_streams(c)  # release connections before the failure propagates
            raise

    async def _confirmed(self, env: ExecutionEnvironment, stream: Stream) -> bool:
        """Wait for ``stream``'s subscription to be confirmed, logging what it waits for every
        WAITING_LOG_S (its pump keeps retrying meanwhile); False if a stop is requested first."""
        self._set_phase("subscribing", f"waiting for the {stream} stream to confirm its subscription")
        waiting = Waiting("subscribing", f"the {stream} stream has not confirmed its subscription", self._clock_ms())
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(WAITING_LOG_S):
                    await _first_of(env.stream_confirmed(stream), self._stop.wait())
            except TimeoutError:
                problem = env.stream_problem(stream)
                log.warning(
                    "still waiting for the %s stream to confirm its subscription (%s); not trading until it does",
                    stream, problem, extra={"EVENT": "STREAM_UNCONFIRMED"},
                )  # fmt: skip
                await self._say_waiting(replace(waiting, last_error=problem), 3 * WAITING_LOG_S)
                continue
            if not self._stop.is_set():
                log.info("the %s stream is subscribed", stream, extra={"EVENT": "STREAM_CONFIRMED"})
                self.waiting = None
                return True
        return False

    async def _in_flight_loop(self, c: Components) -> None:
        """Every IN_FLIGHT_TICK_S, let each strategy ask about its orders that are due (s1mpled.in_flight),
        then take the next step of a pending emergency exit (which waits for those answers)."""
        while True:
            await asyncio.sleep(IN_FLIGHT_TICK_S)
            for w in c.workers:
                await w.check_in_flight()
            await c.breaker.pursue_exit(c.workers)

    def _schedules(self) -> list[Schedule]:
        return [Schedule(e.name, e.every_s) for e in self.config.schedule]


async def _first_of(*waits: Coroutine[Any, Any, Any]) -> None:
    """Return as soon as one of ``waits`` has (the others are cancelled)."""
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(w) for w in waits]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if isinstance(exc, S1mpledError):
            return exc
    return group.exceptions[0]


async def run(config: Config) -> None:
    """Run an operation; a failure inside the task group surfaces as its first S1mpledError."""
    try:
        await Operation(config).run()
    except BaseExceptionGroup as group:
        raise _first_error(group) from group
