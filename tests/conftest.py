"""What every test shares: the repository root, and waiting for a condition.

The tests mirror the package: validation/, drivers/, gate/, config/, rpc/,
registry/, cli/, bench/, sim/, reliability/; `gatekit.py` (a gate with ptys
and mock pins) and `rpc_helpers.py` (a registry and gates over loopback) are
the shared scenery.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

REPO = Path(__file__).resolve().parents[1]


def wait_until(condition: Callable[[], object], timeout: float = 5.0, what: str = "condition", step: float = 0.005) -> float:
    """Poll `condition()` from a thread that may block; the seconds it took, or AssertionError."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - start


async def until(condition: Callable[[], object], timeout: float = 5.0, what: str = "condition", step: float = 0.005) -> float:
    """Poll `condition()` from the event loop without blocking it; the seconds it took, or AssertionError."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(step)
    return time.monotonic() - start


# ------------------------------------------------------------------ the registry's two engines

#: A PostgreSQL URL whose role may CREATE DATABASE (.ci/run starts one and sets it).
POSTGRES_ENV = "GATED_TEST_POSTGRES"


def fresh_postgres_db(admin_url: str) -> Iterator[str]:
    """A new empty database on the server of `admin_url`, as a URL; dropped afterwards."""
    import psycopg

    name = f"gated_t_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        for attempt in range(50):  # a registry a test just stopped may still be closing its connection
            try:
                with psycopg.connect(admin_url, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                break
            except psycopg.Error:
                if attempt == 49:
                    raise
                time.sleep(0.1)


@pytest.fixture(params=["sqlite", "postgres"])
def registry_db(request, tmp_path) -> Iterator[Path | str]:
    """The registry's database on each engine: an SQLite file path, or the URL of a fresh
    PostgreSQL database (skipped, saying why, when GATED_TEST_POSTGRES is not set)."""
    if request.param == "sqlite":
        yield tmp_path / "r.db"
        return
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"no PostgreSQL: set {POSTGRES_ENV}=postgresql://ROLE@HOST/DB (a role that may create "
                    "databases; .ci/run starts one with .ci/postgres.sh)")
    yield from fresh_postgres_db(admin_url)
