"""The command line as a package: who may import it, what it loads, one rule for ticket ids, the simulator as a plugin.

A technician's laptop has the simulator; a gate installed with `pip install .`
does not (segno comes with the `sim` extra). A missing package is made here
the way Python documents it: `sys.modules[name] = None` makes every import of
it raise ModuleNotFoundError, as on a machine where it is not installed.
`make check-nosim` does the same on a real install without extras.
"""

from __future__ import annotations

import ast
import json
import os
import random
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from gated.cli import build_parser
from gated.cli.args import UsageError
from tests.conftest import REPO

ROOT = REPO
SIM_NEEDS_LINE = "gated sim needs the simulator: pip install 'gated[sim]'"


def imports_of(path: Path, *, top_level_only: bool = False) -> list[str]:
    """Every module a file imports, lazily inside functions too (unless top_level_only)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def gated_without(missing: str, *args: str) -> subprocess.CompletedProcess:
    """`gated ARGS` on a machine where the package `missing` is not installed."""
    code = f"import sys; sys.modules[{missing!r}] = None; from gated.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


# ---------------------------------------------------------------- who imports what


def test_nothing_below_the_command_line_imports_it():
    offenders = []
    for path in [*(ROOT / "gated").rglob("*.py"), *(ROOT / "hw_sim").rglob("*.py")]:
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("gated/cli/") or rel == "gated/__main__.py":
            continue
        allowed = {"gated.cli.args"} if rel == "hw_sim/command.py" else set()  # a plugin uses the shared args only
        for name in imports_of(path):
            if (name == "gated.cli" or name.startswith("gated.cli.")) and name not in allowed and not (
                rel == "hw_sim/command.py" and name.startswith("gated.cli.args.")
            ):
                offenders.append(f"{rel}: {name}")
    assert offenders == []
    assert not (ROOT / "gated" / "rpc" / "commands.py").exists()


def test_the_command_line_names_no_plugin_and_loads_heavy_parts_only_inside_commands():
    for path in (ROOT / "gated" / "cli").glob("*.py"):
        assert not [n for n in imports_of(path) if n.startswith("hw_sim.command") or n.startswith("hw_sim.sim")], path
        top = imports_of(path, top_level_only=True)
        heavy = [n for n in top if not (n.startswith(("gated.cli", "gated.errors")) or n.split(".")[0] in sys.stdlib_module_names)]
        assert heavy == [], f"{path.name} imports at module level: {heavy}"


def test_the_simulator_command_and_its_run_import_each_other_in_one_direction_only():
    assert not [n for n in imports_of(ROOT / "hw_sim" / "sim.py") if n.startswith("hw_sim.command")]
    assert not [n for n in imports_of(ROOT / "hw_sim" / "traffic.py") if n.startswith("hw_sim.command")]


def test_building_the_whole_parser_loads_no_simulator_registry_rpc_or_camera_code():
    probe = (
        "import sys; from gated.cli import build_parser; build_parser(); "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('hw_sim', 'gated', 'grpc', 'google', 'cv2', 'numpy', 'segno', 'gpiozero', 'serial', 'structlog', 'cryptography'))))"
    )
    loaded = set(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split())
    assert {"gated.cli", "gated.cli.args", "gated.cli.registry", "hw_sim.command"} <= loaded  # the probe saw the CLI
    heavy = {m for m in loaded if not (m in ("gated", "gated.errors", "hw_sim", "hw_sim.command", "hw_sim.defaults") or m.startswith("gated.cli"))}
    assert heavy == set()


# ---------------------------------------------------------------- ticket ids: one rule


TICKET_ARGS = {
    "token mint --ticket": lambda t: ["token", "mint", "--keys", "k.json", "--kid", "1", "--ticket", t, "--static"],
    "token totp --ticket": lambda t: ["token", "totp", "--keys", "k.json", "--kid", "1", "--ticket", t],
    "token verify --manual": lambda t: ["token", "verify", "12345678", "--keys", "k.json", "--manual", t],
    "registry revoke": lambda t: ["registry", "revoke", t, "--db", "r.db"],
    "registry reissue": lambda t: ["registry", "reissue", t, "--db", "r.db"],
    "badge render --ticket": lambda t: ["badge", "render", "--keys", "k.json", "--kid", "1", "--ticket", t, "--serial", "0",
                                        "--name", "N", "--company", "C", "--category", "guest", "--format", "png", "--out", "b.png"],
}


def parsed_ticket(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.manual if "--manual" in argv else args.ticket


def show_ticket_ids() -> list[int]:
    rng = random.Random(10)
    consecutive = list(range(1, 6))
    registration = [5205320758, 5205320759, 9_999_999_999]
    blocks = [1_000_000 * k + n for k in (1, 7, 4_000) for n in (0, 1, 999_999)]
    random_63 = [rng.getrandbits(63) for _ in range(5)]
    return [0, *consecutive, *registration, *blocks, *random_63, 2**63, 2**64 - 1]


@pytest.mark.parametrize("where", TICKET_ARGS)
def test_every_ticket_argument_reads_the_ids_a_show_brings_in_decimal(where):
    build = TICKET_ARGS[where]
    for ticket in show_ticket_ids():
        assert parsed_ticket(build(str(ticket))) == ticket
    assert parsed_ticket(build("0005205320758")) == 5205320758  # leading zeros from a spreadsheet column


@pytest.mark.parametrize("where", TICKET_ARGS)
@pytest.mark.parametrize(
    "text, says",
    [
        ("0x2a", "'0x2a' is not a ticket id (decimal digits)"),  # hex: int(x, 0) once took it, base 10 never did
        ("0o17", "is not a ticket id"),
        ("1_000_000", "is not a ticket id"),
        ("-1", "is not a ticket id"),
        ("+42", "is not a ticket id"),
        (" 42", "is not a ticket id"),
        ("", "is not a ticket id"),
        ("\u0664\u0662", "is not a ticket id"),  # Arabic-Indic digits: str.isdigit() says yes, a badge never has them
        ("5205320758a", "is not a ticket id"),
        (str(2**64), f"{2**64} is not 0..2^64-1"),
        ("9" * 5000, "is not 0..2^64-1"),  # longer than int() converts: still one short line
    ],
)
def test_every_ticket_argument_refuses_the_same_text_with_one_line(where, text, says):
    with pytest.raises(UsageError) as refused:
        build_parser().parse_args(TICKET_ARGS[where](text))
    message = str(refused.value)
    assert says in message and "\n" not in message and len(message) < 200


@pytest.mark.parametrize("argv", [["keys", "new", "--out", "k.json", "--kid"], ["registry", "keys", "retire", "--db", "r.db", "--kid"]])
def test_kids_follow_the_same_rule(argv):
    assert [build_parser().parse_args([*argv, k]).kid for k in ("0", "1", "255", "007")] == [0, 1, 255, 7]
    for bad, says in (("256", "kid 256 is not 0..255"), ("-1", "is not a kid"), ("0x1", "is not a kid"), ("1_0", "is not a kid")):
        with pytest.raises(UsageError, match=says):
            build_parser().parse_args([*argv, bad])


def test_a_registration_number_round_trips_through_mint_and_verify(tmp_path):
    keys = tmp_path / "keys.json"
    gated = [sys.executable, "-m", "gated"]
    subprocess.run([*gated, "keys", "new", "--out", str(keys)], check=True, capture_output=True)
    for ticket in (5205320758, 1_000_000 * 3 + 17, 2**64 - 1):
        code = subprocess.run([*gated, "token", "mint", "--keys", str(keys), "--kid", "1", "--ticket", str(ticket), "--static"],
                              capture_output=True, text=True, check=True).stdout.strip()
        r = subprocess.run([*gated, "token", "verify", code, "--keys", str(keys)], capture_output=True, text=True)
        assert r.returncode == 0 and json.loads(r.stdout)["ticket_id"] == ticket


# ---------------------------------------------------------------- the simulator, a plugin


def test_gated_sim_is_found_through_its_entry_point():
    (sim,) = [ep for ep in entry_points(group="gated.commands") if ep.name == "sim"]
    assert sim.value == "hw_sim.command:add_parser"
    args = build_parser().parse_args(["sim", "--duration", "3", "--no-registry"])
    assert args.func.__module__ == "hw_sim.command" and args.duration == 3.0 and args.run_dir == "run/sim" and args.rate == 30.0


def test_without_the_simulator_gated_sim_says_so_in_one_line_and_the_rest_works(tmp_path):
    r = gated_without("segno", "sim", "--duration", "1", "--run-dir", str(tmp_path / "run"))
    assert (r.returncode, r.stderr, r.stdout) == (2, SIM_NEEDS_LINE + "\n", "")
    assert not (tmp_path / "run").exists()
    r = gated_without("segno", "--help")
    assert r.returncode == 0 and "sim" in r.stdout and "registry" in r.stdout
    r = gated_without("segno", "keys", "new", "--out", str(tmp_path / "keys.json"))
    assert r.returncode == 0 and (tmp_path / "keys.json").exists()


def test_without_the_simulator_package_at_all_gated_sim_still_answers_in_one_line():
    # No hw_sim: no command registered by the entry point; the command line puts a stand-in there.
    for argv in (["sim"], ["sim", "--duration", "5"], ["sim", "--help"]):
        r = gated_without("hw_sim", *argv)
        assert (r.returncode, r.stderr) == (2, SIM_NEEDS_LINE + "\n"), argv
    r = gated_without("hw_sim", "--help")
    assert r.returncode == 0 and "pip install 'gated[sim]'" in r.stdout


def test_without_segno_the_bench_skips_its_camera_section_in_one_line_and_runs_the_rest():
    r = gated_without("segno", "bench", "--json", "--quick", "--tickets", "2000", "--sections", "decide,camera")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert "camera" not in report and report["decide"]["cache"]["tickets"] == 2000
    assert r.stderr == ("gated bench: camera section skipped: its test frames are drawn with segno, "
                        "which comes with the simulator: pip install 'gated[sim]'\n")


@pytest.mark.skipif(not os.path.exists("/tmp") or sys.platform != "linux", reason="linux only")
def test_a_broken_plugin_does_not_take_the_gates_own_commands_with_it(tmp_path):
    # A real distribution on sys.path whose gated.commands entry point raises when loaded.
    site = tmp_path / "site"
    (site / "broken_plugin").mkdir(parents=True)
    (site / "broken_plugin" / "__init__.py").write_text("raise RuntimeError('half-installed')\n")
    dist = site / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[gated.commands]\nzap = broken_plugin:add_parser\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    gated = [sys.executable, "-m", "gated"]
    r = subprocess.run([*gated, "--help"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "zap" in r.stdout
    r = subprocess.run([*gated, "zap"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "half-installed" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*gated, "keys", "new", "--out", str(tmp_path / "k.json")], capture_output=True, text=True, env=env)
    assert r.returncode == 0
