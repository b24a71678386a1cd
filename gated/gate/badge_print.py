"""Printing a badge at a desk lane: what the operator screen calls after a
check-in (`print_badge(lane, ticket_id)`).

The words come from the entitlement cache's record (name, company,
category), the code is the static code of the ticket's current badge
serial, signed with the newest key of the ring, and the band takes the
category's colour from the policy. Rendering and sending run on a worker
thread, never on the loop that decides. A badge that reached its printer is
journaled as `badge_printed` with the ticket and serial, so a second print
of the same badge shows as a second record; a badge that failed to print is
not journaled (the operator sees the printer's one-line error).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from gated.errors import BadgeError
from gated.validation.cache import TicketState

if TYPE_CHECKING:
    from gated.gate.lane import LaneRunner

log = structlog.get_logger("gated.gate.badge_print")

KIND = "badge_printed"


@dataclass(frozen=True, slots=True)
class BadgePrinted:
    ticket_id: int
    serial: int
    kid: int
    printer: str  # the printer's kind
    sent: str  # where it went, in words ("request id is desk-3", a file path...)
    seq: int  # the journal record


async def print_badge(lane: LaneRunner, ticket_id: int, *, photo: str | None = None) -> BadgePrinted:
    """Print the current badge of `ticket_id` on `lane`'s printer; BadgeError/PrinterError say why not."""
    printer = lane.config.printer
    if printer is None:
        raise BadgeError(f"lane {lane.id} has no [lane.printer]")
    s = lane.services
    record = s.validator.cache.get(ticket_id)
    if record is None:
        raise BadgeError(f"ticket {ticket_id} is not in this gate's cache")
    if record.state == TicketState.REVOKED:
        raise BadgeError(f"ticket {ticket_id} is revoked: no badge for it")
    ring = s.validator.keyring
    if not ring.kids():
        raise BadgeError("the key ring is empty: no badge can be signed")
    kid = ring.kids()[-1]
    colors = dict(s.validator.policy.colors)

    def render_and_send() -> str:
        from gated.badge import make_badge, render
        from gated.badge.printers import format_for, send

        badge = make_badge(
            ring.get(kid), kid, ticket_id, record.badge_serial, name=record.name or f"#{ticket_id}",
            company=record.company, category=record.category, colors=colors, photo=photo,
        )
        fmt = format_for(printer.kind, printer.format)
        data = render(badge, fmt, printer.size, dpi=printer.dpi, model=printer.model)
        title = f"badge-{ticket_id}-{record.badge_serial}"
        return send(printer.kind, printer.target, data, title=title, file_format=fmt)

    sent = await asyncio.to_thread(render_and_send)
    payload = {"serial": record.badge_serial, "kid": kid, "printer": printer.kind, "size": printer.size}
    rec = await s.journal.append_async(KIND, at=s.clock.now(), lane=lane.id, ticket_id=ticket_id, reason="ok", payload=payload)
    s.on_record()
    log.info("badge_printed", lane=lane.id, ticket_id=ticket_id, serial=record.badge_serial, printer=printer.kind)
    return BadgePrinted(ticket_id, record.badge_serial, kid, printer.kind, sent, rec.seq)
