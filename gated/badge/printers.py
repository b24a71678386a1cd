"""Sending a rendered badge to the desk's printer: any CUPS queue (`lp`),
a Brother QL (brother_ql's network or device backends), a Zebra (raw TCP
9100 or its device file), or files in a folder (the simulator's printer).

Each kind takes the bytes of one output format (`FORMAT_OF`); a failure is a
`PrinterError` naming the printer, never a traceback at the desk.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from gated.errors import PrinterError

KINDS = ("cups", "brother-ql", "zpl", "file")
ZEBRA_PORT = 9100
BROTHER_PORT = 9100
FILE_FORMATS = ("png", "pdf", "zpl", "brother-ql")


def format_for(kind: str, file_format: str = "png") -> str:
    """What a printer of this kind is sent: CUPS takes PDF, Brother QL its raster, Zebra ZPL."""
    return {"cups": "pdf", "brother-ql": "brother-ql", "zpl": "zpl"}.get(kind, file_format)


def lp_command(queue: str, path: str, title: str) -> list[str]:
    """The `lp` command line for one badge: no shell, the file named after `--`."""
    return ["lp", "-d", queue, "-t", title, "-o", "fit-to-page", "--", path]


def _tcp_host_port(target: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(target)
    try:
        port = parts.port or default_port
    except ValueError:
        raise PrinterError(f"{target}: not a tcp://host[:port] address") from None
    if parts.scheme != "tcp" or not parts.hostname:
        raise PrinterError(f"{target}: not a tcp://host[:port] address")
    return parts.hostname, port


def send_cups(queue: str, data: bytes, title: str, timeout: float) -> str:
    if shutil.which("lp") is None:
        raise PrinterError("CUPS printer: the lp command is not installed (apt-get install cups-client)")
    with tempfile.NamedTemporaryFile(prefix="gated-badge-", suffix=".pdf") as f:
        f.write(data)
        f.flush()
        try:
            r = subprocess.run(lp_command(queue, f.name, title), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PrinterError(f"CUPS printer {queue}: lp did not answer in {timeout:g} s") from None
    if r.returncode != 0:
        said = (r.stderr.strip() or r.stdout.strip() or f"exit status {r.returncode}").splitlines()[0]
        raise PrinterError(f"CUPS printer {queue}: {said}")
    return r.stdout.strip()  # "request id is badges-12 (1 file(s))"


def send_raw_tcp(target: str, data: bytes, timeout: float, what: str) -> str:
    host, port = _tcp_host_port(target, ZEBRA_PORT)
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
    except OSError as exc:
        raise PrinterError(f"{what} {target}: {exc.strerror or exc}") from None
    return f"{len(data)} bytes to {host}:{port}"


def send_device(path: str, data: bytes, what: str) -> str:
    try:
        with open(path, "r+b" if Path(path).is_char_device() else "wb", buffering=0) as dev:
            dev.write(data)
    except OSError as exc:
        raise PrinterError(f"{what} {path}: {exc.strerror or exc}") from None
    return f"{len(data)} bytes to {path}"


def send_brother(target: str, data: bytes, timeout: float) -> str:
    """tcp://host[:port] (network backend), usb://0x04f9:0x209b (pyusb), or a device path (/dev/usb/lp0)."""
    import logging

    logging.getLogger("brother_ql").setLevel(logging.ERROR)
    from brother_ql.backends import backend_factory

    if target.startswith("tcp://"):
        host, port = _tcp_host_port(target, BROTHER_PORT)
        backend, spec = "network", f"tcp://{host}:{port}"
    elif target.startswith("usb://"):
        backend, spec = "pyusb", target
    else:
        backend, spec = "linux_kernel", target.removeprefix("file://")
    try:
        printer = backend_factory(backend)["backend_class"](spec)
    except Exception as exc:  # each backend raises its own kinds (OSError, ValueError, usb.core...)
        raise PrinterError(f"Brother QL printer {target}: cannot open: {exc}") from None
    try:
        printer.write(data)
    except Exception as exc:
        raise PrinterError(f"Brother QL printer {target}: {exc}") from None
    finally:
        try:
            printer.dispose()
        except Exception:
            pass
    return f"{len(data)} bytes to {target} ({backend})"


def send_file(folder: str, data: bytes, stem: str, file_format: str) -> str:
    """The simulator's printer: each badge a file in `folder`, never overwriting an earlier print."""
    ext = {"brother-ql": "bin"}.get(file_format, file_format)
    directory = Path(folder)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            path = directory / (f"{stem}.{ext}" if n == 1 else f"{stem}-{n}.{ext}")
            try:
                with open(path, "xb") as f:
                    f.write(data)
                return str(path)
            except FileExistsError:
                continue
    except OSError as exc:
        raise PrinterError(f"file printer {folder}: {exc.strerror or exc}") from None
    raise PrinterError(f"file printer {folder}: 9,999 copies of {stem} already")


def send(kind: str, target: str, data: bytes, *, title: str, file_format: str = "png", timeout: float = 10.0) -> str:
    """Send one rendered badge (`format_for(kind)`); returns where it went, in words."""
    if kind == "cups":
        return send_cups(target, data, title, timeout)
    if kind == "brother-ql":
        return send_brother(target, data, timeout)
    if kind == "zpl":
        if target.startswith("tcp://"):
            return send_raw_tcp(target, data, timeout, "Zebra printer")
        return send_device(target.removeprefix("file://"), data, "Zebra printer")
    if kind == "file":
        return send_file(target, data, title, file_format)
    raise PrinterError(f"unknown printer kind {kind!r}; kinds: {', '.join(KINDS)}")
