"""The gate's local admin service (`gated.v1.GateAdminService`): server, client, addresses.

The service has no authentication of its own, so it is reachable from this
machine only: a unix socket (mode 0660: root and the gated group) or a
loopback address. Any other address is refused before anything listens.

The daemon implements `GateControl`; this module only translates between
gRPC and those calls. `status()` returns a dict shaped like

    {"gate_id": str, "lanes": [{"id", "zone", "direction", "mode", "state"}],
     "uplink": Uplink.status() or None, "cache_version": int, "cache_tickets": int,
     "clock": {"offset_s", "trusted", ...}, "journal_backlog": int, "emergency": bool, ...}

Missing keys read as empty/zero; the whole dict also travels as JSON, so the
daemon may add fields without a contract change.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any, Protocol

import grpc
import structlog

from gated.errors import AdminAddressError, AdminError
from gated.rpc.standard import add_standard_services, set_not_serving
from gated.rpc.v1 import admin_pb2 as pb
from gated.rpc.v1 import admin_pb2_grpc as pb_grpc
from gated.web.security import is_loopback

__all__ = ["AdminAddressError", "AdminClient", "AdminError", "AdminServer", "GateControl", "admin_target"]

log = structlog.get_logger()

SOCKET_MODE = 0o660
CALL_TIMEOUT_S = 10.0


class GateControl(Protocol):
    """What the daemon offers the admin service."""

    def status(self) -> dict[str, Any]: ...

    async def open_lane(self, lane_id: str) -> bool: ...

    async def set_emergency(self, active: bool) -> None: ...

    async def reload_config(self) -> tuple[bool, str]: ...

    def journal_stats(self) -> dict[str, Any]: ...


def admin_target(*, socket_path: str | os.PathLike[str] | None = None, address: str | None = None) -> str:
    """The gRPC target for a socket path or a "host:port"; refuses a non-loopback host."""
    if (socket_path is None) == (address is None):
        raise AdminAddressError("give a unix socket path or a loopback host:port, not both or neither")
    if socket_path is not None:
        return f"unix:{Path(socket_path)}"
    host, sep, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise AdminAddressError(f"admin address {address!r} is not host:port")
    if not is_loopback(host):
        raise AdminAddressError(
            f"admin address {address!r} is not loopback (127.0.0.1, [::1] or localhost): "
            "the admin service has no authentication"
        )
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def status_reply(status: dict[str, Any]) -> pb.StatusResponse:
    uplink = status.get("uplink") or {}
    clock = status.get("clock") or uplink.get("clock") or {}
    reply = pb.StatusResponse(
        gate_id=str(status.get("gate_id", "")),
        lanes=[
            pb.LaneStatus(
                id=str(lane.get("id", "")), zone=str(lane.get("zone", "")), direction=str(lane.get("direction", "")),
                mode=str(lane.get("mode", "")), state=str(lane.get("state", "")),
            )
            for lane in status.get("lanes", ())
        ],
        uplink_connected=bool(uplink.get("connected", False)),
        uplink_target=str(uplink.get("target", "")),
        cache_version=int(status.get("cache_version", uplink.get("cache_version", 0)) or 0),
        cache_tickets=int(status.get("cache_tickets", uplink.get("cache_tickets", 0)) or 0),
        clock_trusted=bool(clock.get("trusted", False)),
        journal_backlog=int(status.get("journal_backlog", uplink.get("backlog", 0)) or 0),
        emergency=bool(status.get("emergency", False)),
        details_json=json.dumps(status, default=str, sort_keys=True),
    )
    offset = _opt_float(clock.get("offset_s"))
    if offset is not None:
        reply.clock_offset_s = offset
    return reply


def journal_stats_reply(stats: dict[str, Any]) -> pb.JournalStatsResponse:
    reply = pb.JournalStatsResponse(
        path=str(stats.get("path", "")),
        records=int(stats.get("records", 0)),
        unacked=int(stats.get("unacked", 0)),
        last_seq=int(stats.get("last_seq", 0)),
        file_size=int(stats.get("file_size", 0)),
        wal_size=int(stats.get("wal_size", 0)),
        transactions=int(stats.get("transactions", 0)),
    )
    oldest = _opt_float(stats.get("oldest_unacked_at"))
    if oldest is not None:
        reply.oldest_unacked_at = oldest
    return reply


class _AdminService(pb_grpc.GateAdminServiceServicer):
    def __init__(self, control: GateControl) -> None:
        self.control = control

    async def Status(self, request, context):
        return status_reply(self.control.status())

    async def OpenLane(self, request, context):
        if not request.lane_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name the lane to open")
        opened = await self.control.open_lane(request.lane_id)
        log.info("admin_open_lane", lane=request.lane_id, opened=opened)
        return pb.OpenLaneResponse(opened=bool(opened))

    async def SetEmergency(self, request, context):
        await self.control.set_emergency(request.active)
        log.warning("admin_emergency", active=request.active)
        return pb.SetEmergencyResponse()

    async def ReloadConfig(self, request, context):
        ok, message = await self.control.reload_config()
        log.info("admin_reload_config", ok=ok, message=message)
        return pb.ReloadConfigResponse(ok=bool(ok), message=str(message))

    async def JournalStats(self, request, context):
        return journal_stats_reply(self.control.journal_stats())


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket left by a previous run; refuse a live one or any other file."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise AdminError(f"admin socket {path}: exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise AdminError(f"admin socket {path}: {exc.strerror}") from None
        path.unlink(missing_ok=True)
    else:
        raise AdminError(f"admin socket {path}: another process is serving on it")
    finally:
        probe.close()


class AdminServer:
    """The GateAdminService on the daemon's event loop."""

    def __init__(self, control: GateControl, *, socket_path: str | os.PathLike[str] | None = None, address: str | None = None) -> None:
        self.target = admin_target(socket_path=socket_path, address=address)  # refuses before anything listens
        self.socket_path = None if socket_path is None else Path(socket_path)
        self.control = control
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health = None

    async def start(self) -> str:
        """Listen; returns the target clients should use (with the real port)."""
        if self.socket_path is not None:
            if not self.socket_path.parent.is_dir():
                raise AdminError(f"admin socket {self.socket_path}: directory {self.socket_path.parent} does not exist")
            _clear_stale_socket(self.socket_path)
        server = grpc.aio.server()
        pb_grpc.add_GateAdminServiceServicer_to_server(_AdminService(self.control), server)
        health = await add_standard_services(server, pb.DESCRIPTOR.services_by_name["GateAdminService"])
        try:
            port = server.add_insecure_port(self.target)
        except RuntimeError as exc:
            raise AdminError(f"admin service: cannot listen on {self.target}: {exc}") from None
        if port == 0:
            raise AdminError(f"admin service: cannot listen on {self.target}")
        await server.start()
        self._server = server
        self._health = health
        if self.socket_path is not None:
            os.chmod(self.socket_path, SOCKET_MODE)
            bound = self.target
        else:
            self.port = port
            bound = f"{self.target.rpartition(':')[0]}:{port}"
        log.info("admin_listening", target=bound)
        return bound

    async def stop(self, grace: float | None = 0.5) -> None:
        if self._health is not None:
            await set_not_serving(self._health)
            self._health = None
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)


class AdminClient:
    """A blocking client for `gated admin ...` (one short call at a time)."""

    def __init__(self, target: str, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.GateAdminServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise AdminError(f"no gate answering on {self.target} (is gated running?)") from None
            raise AdminError(f"{self.target}: {exc.code().name}: {exc.details()}") from None

    def status(self) -> dict[str, Any]:
        reply = self._call(self._stub.Status, pb.StatusRequest())
        return json.loads(reply.details_json) if reply.details_json else {}

    def open_lane(self, lane_id: str) -> bool:
        return self._call(self._stub.OpenLane, pb.OpenLaneRequest(lane_id=lane_id)).opened

    def set_emergency(self, active: bool) -> None:
        self._call(self._stub.SetEmergency, pb.SetEmergencyRequest(active=active))

    def reload_config(self) -> tuple[bool, str]:
        reply = self._call(self._stub.ReloadConfig, pb.ReloadConfigRequest())
        return reply.ok, reply.message

    def journal_stats(self) -> dict[str, Any]:
        reply = self._call(self._stub.JournalStats, pb.JournalStatsRequest())
        stats = {
            "path": reply.path, "records": reply.records, "unacked": reply.unacked, "last_seq": reply.last_seq,
            "file_size": reply.file_size, "wal_size": reply.wal_size, "transactions": reply.transactions,
            "oldest_unacked_at": reply.oldest_unacked_at if reply.HasField("oldest_unacked_at") else None,
        }
        return stats
