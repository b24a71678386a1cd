"""`gated sim` on the rehearsal: the gate as its own process, the control API, a crowd or a scripted day.

Two ways to run (hw_sim.command picks):

- `run_live`: the gate, its registry behind the proxy, the console and its
  control API on 127.0.0.1, the registry's staff pages behind the demo account
  (their addresses printed first, then one plain line per event), and a
  crowd at `--rate` (the entry lane, a quarter of that leaving, a few bad
  codes) until Ctrl-C, SIGTERM or `--duration`. `gated sim --in-process` is the
  older simulator, the gate inside this process with its full-screen console.
- `run_scripted`: `--scenario FILE`, headless, the summary on stdout (or one
  JSON object with `--json`; progress lines then go to stderr), exit status 1
  if anything was lost, duplicated or admitted twice.

This process logs (the registry's lines) to `<run dir>/sim.log`; the gate's own
JSON log is `<run dir>/gated.log`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

from gated import eventloop
from hw_sim.control import DEFAULT_API_PORT, start_api
from hw_sim.rehearsal import SIM_LOG, Rehearsal, RehearsalError
from hw_sim.scenario import Scenario, ScenarioError, ScenarioRun, failed, format_summary, load, summarize
from hw_sim.sim import STAFF_PAGES_PORT, dashboard_line


def _print(out: TextIO, line: str) -> None:
    with contextlib.suppress(OSError):
        print(line, file=out, flush=True)


def _printer(out: TextIO):
    def say(lane: str, text: str = "") -> None:
        stamp = time.strftime("%H:%M:%S")
        with contextlib.suppress(OSError):
            print(f"{stamp} {lane or 'sim':<6} {text}", file=out, flush=True)
    return say


@contextlib.contextmanager
def _logging_to(path: Path):
    import structlog

    from gated.logs import configure

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", buffering=1) as fh:
        configure("info", stream=fh)
        try:
            yield
        finally:
            structlog.reset_defaults()


def _stop_on_signals(stop: asyncio.Event) -> list[int]:
    loop = asyncio.get_running_loop()
    signals = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    return signals


def live_scenario(rate: float, lanes: list[dict], duration_s: float | None) -> Scenario:
    """The crowd of a live run: `rate` per minute at the first entry lane, a quarter of it leaving."""
    rates = {}
    entry = next((lane["id"] for lane in lanes if lane["direction"] == "in" and lane["mode"] == "turnstile"), None)
    leave = next((lane["id"] for lane in lanes if lane["direction"] == "out"), None)
    if entry:
        rates[entry] = rate
    if leave:
        rates[leave] = rate / 4
    bad = {"forged": 0.03, "expired": 0.03, "noise": 0.02, "revoked": 0.02, "old_badge": 0.02, "wrong_day": 0.02}
    return Scenario("live crowd", duration_s or 7 * 86400, 1.0, 1, rates, bad, ())


async def run_live(run_dir: str, *, duration: float | None, rate: float, api_port: int = DEFAULT_API_PORT,
                   template: str | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    say = _printer(out)
    stop = asyncio.Event()
    signals = _stop_on_signals(stop)
    rehearsal = Rehearsal(run_dir, template=template, say=say, staff_pages_port=STAFF_PAGES_PORT)
    api = None
    crowd = None
    try:
        # The console first: it shows the gate booting, then running.
        api = await start_api(rehearsal, api_port)
        _print(out, f"console: {api.url}")
        say("", f"starting in {run_dir}: the gate as its own process, the registry behind a proxy ...")
        await rehearsal.start()
        _print(out, dashboard_line(rehearsal.staff_pages.url, rehearsal.demo_password))
        say("", f"control API: {api.url}api/state  (live: {api.url}api/events; POST /api/present, /api/fault/..., /api/registry/...)")
        say("", f"gate log: {rehearsal.gate.log_path}  journal: {rehearsal.journal_path}")
        rehearsal.listeners.append(lambda event, data: _echo(say, event, data))
        crowd = asyncio.create_task(ScenarioRun(live_scenario(rate, rehearsal.lanes, duration), rehearsal,
                                                lambda text: say("", text)).run())
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({crowd, waiter}, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        summary = summarize(rehearsal, drained=await rehearsal.drain(10.0)) if rehearsal.gate else None
    except RehearsalError as exc:
        print(f"gated sim: {exc}", file=sys.stderr)
        return 2
    finally:
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.remove_signal_handler(sig)
        if crowd is not None:
            crowd.cancel()
            await asyncio.gather(crowd, return_exceptions=True)
        if api is not None:
            await api.stop()
        await rehearsal.stop()
    if summary is not None:
        summary.update({"scenario": "live crowd", "real_seconds": round(time.monotonic() - rehearsal_started(rehearsal), 1),
                        "duration_s": duration or 0, "speed": 1})
        (Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        with contextlib.suppress(OSError):
            print(format_summary(summary), file=out, flush=True)
    return 0


def rehearsal_started(rehearsal: Rehearsal) -> float:
    return rehearsal.gate.started_at if rehearsal.gate and rehearsal.gate.started_at else time.monotonic()


def _echo(say, event: str, data: dict) -> None:
    if event != "record":
        return
    kind, lane, ticket = data["kind"], data["lane"] or "", data["ticket"]
    who = "" if ticket is None else f" #{ticket}"
    if kind == "decision":
        say(lane, f"{'✔' if data['reason'] == 'ok' else '✘'} {data['reason']}{who}")
    elif kind in ("passage", "not_passed", "unexpected_passage", "emergency", "manual_open"):
        say(lane, f"{kind}{who}")


async def run_scripted(path: str, run_dir: str, *, as_json: bool = False, template: str | None = None,
                       out: TextIO | None = None) -> int:
    out = out or sys.stdout
    progress = sys.stderr if as_json else out
    say = _printer(progress)
    try:
        scenario = load(path)
    except ScenarioError as exc:
        print(f"gated sim: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    signals = _stop_on_signals(stop)
    rehearsal = Rehearsal(run_dir, template=template, seed=scenario.seed, say=say)
    summary = None
    try:
        await rehearsal.start()
        run = asyncio.create_task(ScenarioRun(scenario, rehearsal, lambda text: say("", text)).run())
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({run, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not run.done():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            print("gated sim: interrupted", file=sys.stderr)
            return 130
        summary = run.result()
    except (RehearsalError, ScenarioError) as exc:
        print(f"gated sim: {exc}", file=sys.stderr)
        return 2
    finally:
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.remove_signal_handler(sig)
        await rehearsal.stop()
    (Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with contextlib.suppress(OSError):
        print(json.dumps(summary) if as_json else format_summary(summary), file=out, flush=True)
    return 1 if failed(summary) else 0


def main_live(run_dir: str, **kwargs) -> int:
    with _logging_to(Path(run_dir) / SIM_LOG):
        return eventloop.run(run_live(run_dir, **kwargs))


def main_scripted(path: str, run_dir: str, **kwargs) -> int:
    with _logging_to(Path(run_dir) / SIM_LOG):
        return eventloop.run(run_scripted(path, run_dir, **kwargs))
