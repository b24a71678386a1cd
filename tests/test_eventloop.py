"""gated.eventloop: which loop a gated process runs on, in a real interpreter each time."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PROBE = """
import asyncio
from gated import eventloop

async def main():
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, eventloop.loop_name())
    return await done

print(eventloop.run(main()))
"""


def _run(env_value: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("GATED_EVENT_LOOP", None)
    if env_value is not None:
        env["GATED_EVENT_LOOP"] = env_value
    return subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60)


def test_uvloop_is_the_default_where_it_is_installed():
    pytest.importorskip("uvloop")
    done = _run(None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "uvloop"


def test_the_standard_loop_on_request():
    done = _run("asyncio")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "asyncio"


def test_a_misspelt_choice_is_one_line_naming_the_variable_and_the_choices():
    done = _run("uv-loop")
    assert done.returncode != 0
    assert done.stderr.strip() == "gated: GATED_EVENT_LOOP='uv-loop': expected 'uvloop' or 'asyncio'"


def test_run_cleans_up_as_asyncio_run_does():
    """Tasks left running are cancelled and async generators closed when the main coroutine returns."""
    probe = """
import asyncio
from gated import eventloop

closed = []

async def ticker():
    try:
        while True:
            yield 1
            await asyncio.sleep(3600)
    finally:
        closed.append("generator")

async def main():
    gen = ticker()
    await gen.__anext__()
    async def forever():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            closed.append("task")
            raise
    asyncio.get_running_loop().create_task(forever())
    await asyncio.sleep(0)
    return eventloop.loop_name()

name = eventloop.run(main())
print(name, sorted(closed))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(" ", 1)[1].strip() == "['generator', 'task']"


def test_no_process_of_gated_starts_children_through_the_loop():
    """On uvloop the loop's subprocess API fork()s and so runs gRPC's fork handlers (gated/eventloop.py):
    children are started with `subprocess`, in a thread when the loop must not wait."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for top in ("gated", "hw_sim")
        for path in sorted((root / top).rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bcreate_subprocess_(exec|shell)\b|\bsubprocess_(exec|shell)\(", line)
    ]
    assert offenders == []
