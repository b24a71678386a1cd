"""`python -m reliability` (`make reliability`): the whole campaign, then docs/reliability.md.

    python -m reliability [--cuts 1000] [--fuzz-runs 1000000] [--sim-s 120] [--out docs/reliability.md]

Exit status 0 only when every promise held (0 lost, 0 duplicated, 0 double
admissions, restart p99 <= 1.5 s, partitions exactly once with conflicts
reported, 0 fuzz crashes, 0 secrets found); the report is written either way.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from reliability import fuzzing, partition, powercut, secrets_scan
from reliability.venue import REPO


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reliability")
    p.add_argument("--cuts", type=int, default=1000)
    p.add_argument("--fuzz-runs", type=int, default=1_000_000)
    p.add_argument("--sim-s", type=float, default=120.0, help="length of the simulated day for the secrets scan")
    p.add_argument("--seed", type=int, default=9)
    p.add_argument("--out", default=str(REPO / "docs" / "reliability.md"))
    args = p.parse_args(argv)
    say = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731
    started = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory(prefix="gated-reliability-") as tmp:
        tmp = Path(tmp)
        say(f"power cuts: {args.cuts}")
        cuts = powercut.run(tmp / "cuts", args.cuts, seed=args.seed, wal_every=10, progress=say)
        say(f"power cuts done: {cuts.problems() or 'all promises held'}; {cuts.timing()}")
        parts = []
        for policy in ("strict", "lenient"):
            say(f"partition, {policy}")
            parts.append(partition.run(tmp / f"partition-{policy}", policy, seed=args.seed))
            say(f"partition {policy}: {parts[-1].problems() or 'held'}")
        say(f"secrets: a simulated day of {args.sim_s:g} s")
        secrets = secrets_scan.run(tmp / "secrets", duration=args.sim_s)
        say(f"secrets found: {len(secrets.found)}")
        fuzz = []
        for target in fuzzing.targets():
            say(f"fuzz {target}: {args.fuzz_runs:,} runs")
            fuzz.append(fuzzing.run_target(target, runs=args.fuzz_runs))
            say(fuzz[-1].describe())
    report = render(started, args, cuts, parts, secrets, fuzz)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    say(f"wrote {args.out}")
    failed = cuts.problems() + [f"partition {r.policy}: {x}" for r in parts for x in r.problems()]
    if (cuts.restart_p99() or 99) > 1.5:  # the long run holds the target; make test only reports it
        failed.append(cuts.timing())
    failed += [f.describe() for f in fuzz if f.crashes] + [f"secret: {s}" for s in secrets.found]
    for line in failed:
        print(f"FAILED: {line}", flush=True)
    return 1 if failed else 0


def _fmt(x: float | None, unit: str = " s") -> str:
    return "-" if x is None else f"{x:.3f}{unit}"


def _mark(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def render(started, args, cuts: powercut.CutResult, parts, secrets, fuzz) -> str:
    cpu = platform.processor() or platform.machine()
    import os

    lines = [
        "# Reliability campaign",
        "",
        "Written by `make reliability` (`python -m reliability`); rerun it to refresh this page.",
        f"Run: {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()}-CPU {cpu} {platform.system()} VM, Python {platform.python_version()};"
        f" git {_git_head()}.",
        f"Parameters: `--cuts {args.cuts} --fuzz-runs {args.fuzz_runs} --sim-s {args.sim_s:g} --seed {args.seed}`"
        + ("" if args.cuts >= 1000 and args.fuzz_runs >= 1_000_000 else " (shorter than the full campaign: 1,000 cuts, 10^6 runs per target)") + ".",
        "",
        "The promises (docs/architecture.md): no one passes without a durable record; a single-entry",
        "ticket is used once; every record reaches the registry exactly once. Each is asserted strictly: the target",
        "column is what must hold, the result column is what this run found.",
        "",
        "## Power cuts (kill -9 of the gate process)",
        "",
        "`gated run` in its own process (`reliability/gate_process.py`: the daemon's mock pins, with a simulated person",
        "walking through the beam after 85% of relay openings), two entry lanes on ptys with passage sensors, the",
        "reference registry as its own process (mTLS, up throughout). Each cut: start, scan on both lanes (fresh",
        "single-entry tickets, multi-entry tickets (max 3), re-scans of admitted single-entry tickets), kill -9 at a",
        "random moment (10% during start-up). At the end every single-entry ticket a cut left with an unknown outcome,",
        "and 200 other admitted ones, are scanned again; then the journal drains and the gate's log, its journal and",
        "the registry's database are compared.",
        "",
        f"Data: {sum(cuts.shapes.values()):,} single-entry tickets, a quarter each of "
        + ", ".join(cuts.shapes) + " ids; 200 multi-entry tickets; static and dynamic codes half and half.",
        "",
        "| | result | target | held |",
        "|---|---|---|---|",
        f"| cuts survived (gate restarted and decided again) | {cuts.cuts:,} cuts, {cuts.restarts_ok:,} restarts measured, "
        f"{cuts.cuts_in_startup} during start-up, {len(cuts.restart_failures)} failed | {args.cuts:,} | {_mark(cuts.cuts >= args.cuts and not cuts.restart_failures)} |",
        f"| scans sent / decisions logged / admitted | {cuts.scans_sent:,} / {cuts.decisions_logged:,} / {cuts.admitted_logged:,} | | |",
        f"| journal records / stored at the registry | {cuts.journal_records:,} / {cuts.registry_records:,} | | |",
        f"| records lost | {cuts.lost:,} | 0 | {_mark(cuts.lost == 0)} |",
        f"| records duplicated | {cuts.duplicated:,} | 0 | {_mark(cuts.duplicated == 0)} |",
        f"| double admissions (tickets admitted beyond max_entries) | {cuts.double_admissions:,} | 0 | {_mark(cuts.double_admissions == 0)} |",
        f"| single-entry tickets admitted but entries_used 0 at the registry | {cuts.uncounted_admissions:,} | 0 (reported) | {_mark(cuts.uncounted_admissions == 0)} |",
        f"| restart to first decision, median / p99 | {_fmt(cuts.restart_median())} / {_fmt(cuts.restart_p99())} | p99 <= 1.5 s | "
        f"{_mark((cuts.restart_p99() or 99) <= 1.5)} |",
        "| restart phases: seconds from spawn to the first of each event, median / p99 | "
        + "; ".join(f"{name} {med:.3f} / {p99:.3f}" for name, med, p99 in powercut.restart_phases(cuts)) + " | | |",
        f"| journal drained, last gate exited 0 on SIGTERM | {cuts.drained}, exit {cuts.final_exit} | yes | {_mark(cuts.drained and cuts.final_exit == 0)} |",
        "",
        "## SD card rollback (the journal's WAL truncated at a random offset after every 10th cut)",
        "",
        "| | result |",
        "|---|---|",
        f"| WAL truncations | {cuts.wal_truncations:,} |",
        f"| records dropped locally that the registry already held (allowed) | {cuts.wal_records_dropped_held_by_registry:,} |",
        f"| records the card destroyed before they reached the registry (the card's loss, not counted as lost) | {cuts.wal_records_destroyed_before_upload:,} |",
        f"| single-entry tickets admitted again after the card dropped the gate's record of the earlier admission | {cuts.readmitted_after_card_loss:,} |",
        f"| of those, the registry held the dropped admission (its decision at least) before the re-admission: the gate must catch up first, target 0 | **{cuts.readmitted_registry_knew:,}** ({_mark(cuts.readmitted_registry_knew == 0)}) |",
        f"| of those, the registry had counted it as used | {cuts.readmitted_registry_had_counted:,} |",
        f"| the rest: the card destroyed the admission before it reached the registry (the card's loss, nothing anywhere knew it) | {cuts.readmitted_after_card_loss - cuts.readmitted_registry_knew:,} |",
        "",
        "Records written after a rollback count in the table above: a new record silently dropped is a lost record.",
        "",
        "How a re-admission after the card's loss is prevented (docs/architecture.md, \"Durability\"): the registry",
        "counts an admitted decision left without an outcome record once the gate's next epoch reaches it",
        "(`gated/registry/epochs.py`, exactly once, paired by `decision_seq`); a gate starting after an unclean stop",
        "(or with its journal behind its saved cache) journals a `boot` record and holds admissions of limited-entry",
        "tickets until the registry has acknowledged it and the cache holds the version that ack names (`[uplink]",
        "catchup_wait_s`, 3 s at most; offline, the policy decides at once). Only an admission the card destroyed",
        "before the registry received it remains the card's loss: nothing anywhere knows of it.",
        "",
    ]
    if cuts.lost_examples or cuts.double_examples or cuts.restart_failures or cuts.readmitted_examples:
        lines += ["Examples from this run:", ""]
        lines += [f"- lost: {x}" for x in cuts.lost_examples[:5]]
        lines += [f"- double admission: {x}" for x in cuts.double_examples[:5]]
        lines += [f"- re-admitted after the card's loss: {x}" for x in cuts.readmitted_examples[:3]]
        lines += [f"- restart failed: {x}" for x in cuts.restart_failures[:3]]
        lines.append("")
    lines += [
        "## Partitions (registry down and back, two gate processes)",
        "",
        "Changes while apart: a revoke, a reissue, an import; the same single-entry ticket at both gates, the revoked",
        "ticket and the old badge used while apart; gate B rebooted with no registry (clock untrusted). See",
        "`reliability/partition.py` for every check.",
        "",
        "Conflicts expected: the registry's kinds (`over_entry`, `over_redemption`, `revoked_use`) for what happened while apart (C over-entered,",
        "R used after its revocation), each in its conflicts table with both records and a line of the report's Conflicts section; none other.",
        "",
        "| offline policy | records | lost | duplicated | double admissions at one gate | conflicts reported | checks held | problems |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in parts:
        held = sum(r.checks.values())
        lines.append(f"| {r.policy} | {r.records} | {r.lost} | {r.duplicated} | {r.double_admissions} | "
                     f"{r.conflicts_reported} of {r.conflicts_expected} | {held} of {len(r.checks)} | {'; '.join(r.problems()) or 'none'} |")
    lines += [
        "",
        "## Fuzzing (atheris, coverage-guided, from the seed corpora in `fuzz/corpus/`)",
        "",
        "| target | what it takes | executions | crashes | finding |",
        "|---|---|---|---|---|",
    ]
    what = {"token": "`validation/token.py` codes (verify, round trips)", "framer": "`drivers/base.py` Framer (split-independence)",
            "hid_keys": "`drivers/hid_scanner.py` KeyTranslator", "config": "`config.py` load_config (one-line errors)",
            "snapshot": "`validation/cache.py` load_snapshot (all or nothing, round trip)",
            "registry_update": "`rpc/convert.py` updates as the gate receives them, applied to a cache"}
    for f in fuzz:
        finding = (f.finding.replace("|", "\\|") + f" (input hex `{f.input_hex[:80]}`)") if f.crashes else ""
        lines.append(f"| {f.target} | {what.get(f.target, '')} | {f.executions:,} | {f.crashes} | {finding} |")
    lines += [
        "",
        "A target stops at its first crash (the executions column then counts up to it).",
        "",
        "## Secrets",
        "",
        f"A simulated day (`gated sim --duration {args.sim_s:g}` without a terminal, {secrets.decisions} decisions), then "
        f"{secrets.places} places searched ({secrets.bytes_searched:,} bytes: log lines, journal file and exports, registry",
        f"text fields, the report, error messages of bad commands) for {secrets.keys} event key(s) and {secrets.tickets} ticket keys as",
        "hex, base64 and raw bytes.",
        "",
        f"Secrets found: **{len(secrets.found)}**" + ("" if not secrets.found else ": " + "; ".join(secrets.found[:10])),
        "",
    ]
    return "\n".join(lines)


def _git_head() -> str:
    import subprocess

    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    return r.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
