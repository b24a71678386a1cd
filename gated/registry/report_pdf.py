"""The dashboard's report as a PDF (fpdf2, the `print` extra, as for badges): the same
figures as `/dashboard/data`, as tables a lead can print or mail."""

from __future__ import annotations

import time

from fpdf import FPDF


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(at))


def report_pdf(data: dict) -> bytes:
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(True, margin=12)
    pdf.add_page()
    pdf.set_font("helvetica", "B", 16)
    pdf.cell(0, 10, "Check-in report", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", "", 9)
    pdf.cell(0, 5, f"as of {_when(data['at'])} UTC; {data['unique_attendees']} unique attendees checked in",
             new_x="LMARGIN", new_y="NEXT")

    def table(title: str, header: tuple[str, ...], rows: list[tuple], widths: tuple[int, ...]) -> None:
        pdf.ln(3)
        pdf.set_font("helvetica", "B", 11)
        pdf.cell(0, 7, title, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", "B", 8)
        for text, width in zip(header, widths):
            pdf.cell(width, 5, text, border="B")
        pdf.ln()
        pdf.set_font("helvetica", "", 8)
        for row in rows or [("(none)",)]:
            for text, width in zip(row, widths):
                pdf.cell(width, 5, str(text).encode("latin-1", "replace").decode("latin-1")[:60])
            pdf.ln()

    table("Entries and exits per hour (UTC) per gate and lane", ("hour", "gate", "lane", "in", "out"),
          [(_when(r["hour"]), r["gate"], r["lane"], r["in"], r["out"]) for r in data["hourly"]], (40, 45, 45, 25, 25))
    table("Attendance by category", ("category", "registered", "checked in", "rate"),
          [(c["category"], c["registered"], c["attended"], f"{c['rate']:.1%}") for c in data["categories"]], (60, 35, 35, 30))
    table("Occupancy per zone (end of the last hour)", ("zone", "inside"),
          [(zone, points[-1][1]) for zone, points in sorted(data["occupancy"].items())], (60, 30))
    table("Denials by reason", ("reason", "count"), list(data["denials"].items()), (60, 30))
    table("Offline-admission conflicts", ("kind", "count"), list(data["conflicts"]["counts"].items()), (60, 30))
    table("Gates", ("gate", "connected", "epochs", "acked seq", "last event"),
          [(g["gate"], "yes" if g["connected"] else "no", g["epochs"], g["acked_seq"], _when(g["last_event_at"]))
           for g in data["gates"]], (45, 25, 30, 30, 45))
    return bytes(pdf.output())
