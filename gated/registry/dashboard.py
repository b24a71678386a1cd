"""The live dashboard of the registry's staff pages, on the one web stack (`gated.web`).

    RegistryWeb(server, settings, pages=[add_dashboard_pages])   # or pages.staff_pages(): the desk's too

- `GET /dashboard`              the page (charts drawn by Chart.js, vendored under static/vendor/)
- `GET /dashboard/data`         everything it draws, as JSON (`dashdata.dashboard`)
- `GET /dashboard/events`       server-sent events: the same JSON every `REFRESH_S` while anyone watches
- `GET /export/checkins.csv`    every check-in and check-out with time, place and category (streamed)
- `GET /export/report.pdf`      the report as a PDF (fpdf2, the `print` extra)

Every page needs the viewer role at least (`pages.allowed`). The figures
come from the tables `dashdata` keeps with triggers, read on the registry's
reads worker: the loop only sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time

from aiohttp import web

from gated.registry import dashdata, engine
from gated.registry.http import Registry
from gated.registry.pages import STATIC_DIR, allowed, nav
from gated.web import Broadcast

REFRESH_S = 2.0
DASHBOARD: web.AppKey[Broadcast] = web.AppKey("dashboard_events", Broadcast)


def add_dashboard_pages(app: web.Application, registry: Registry) -> None:
    events = Broadcast()
    app[DASHBOARD] = events
    template = (STATIC_DIR / "dashboard.html").read_text(encoding="utf-8")

    async def data_now() -> dict:
        gates, version = registry.service.watching_gates(), registry.service.cache.version  # on the loop that owns them
        reported = registry.service.gate_states()
        return await registry.reads.run(lambda store: dashdata.dashboard(store.conn, gates, version=version, reported=reported))

    async def page(request: web.Request) -> web.StreamResponse:
        who = allowed(request, "viewer")
        return web.Response(text=template.replace("<!--nav-->", nav(who)), content_type="text/html")

    async def data(request: web.Request) -> web.Response:
        allowed(request, "viewer")
        return web.json_response(await data_now())

    async def stream(request: web.Request) -> web.StreamResponse:
        allowed(request, "viewer")
        first = await data_now()
        return await events.respond(request, initial=lambda: [("dashboard", first)])

    async def checkins_csv(request: web.Request) -> web.StreamResponse:
        allowed(request, "viewer")
        stamp = time.strftime("%Y%m%d-%H%M", time.gmtime())
        response = web.StreamResponse(headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="checkins-{stamp}.csv"',
        })
        await response.prepare(request)
        # Its own connection and thread: a long export never holds the pages' reads worker.
        conn = await asyncio.to_thread(_connect, registry.db)
        rows = dashdata.checkins_csv(conn)
        try:
            while True:
                chunk = await asyncio.to_thread(next, rows, None)
                if chunk is None:
                    break
                await response.write(chunk)
        finally:
            await asyncio.to_thread(conn.close)
        await response.write_eof()
        return response

    async def report_pdf(request: web.Request) -> web.Response:
        allowed(request, "viewer")
        snapshot = await data_now()
        try:
            from gated.registry.report_pdf import report_pdf as render
        except ImportError as exc:
            return web.Response(status=501, text=f"the PDF report needs the print extra ({exc.name} is missing): pip install 'gated[print]'")
        body = await asyncio.to_thread(render, snapshot)
        stamp = time.strftime("%Y%m%d-%H%M", time.gmtime())
        return web.Response(body=body, content_type="application/pdf",
                            headers={"Content-Disposition": f'attachment; filename="report-{stamp}.pdf"'})

    async def refresher(app: web.Application):
        async def loop() -> None:
            while True:
                await asyncio.sleep(REFRESH_S)
                if len(events):
                    try:
                        events.publish("dashboard", await data_now())
                    except Exception:  # a busy file: the next tick tries again
                        continue

        task = asyncio.create_task(loop(), name="dashboard-refresh")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        events.close()

    app.cleanup_ctx.append(refresher)
    app.router.add_get("/dashboard", page)
    app.router.add_get("/dashboard/data", data)
    app.router.add_get("/dashboard/events", stream)
    app.router.add_get("/export/checkins.csv", checkins_csv)
    app.router.add_get("/export/report.pdf", report_pdf)


def _connect(db):
    """A connection of the export's own, to the registry's database on either engine."""
    return engine.connect_postgres(db) if engine.is_url(db) else sqlite3.connect(str(db), check_same_thread=False)
