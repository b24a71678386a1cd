"""The standard gRPC services every gated server offers beside its own.

`grpc.health.v1.Health`: the empty service name (the server as a whole) and
the served service's full name answer SERVING while it runs, NOT_SERVING
once it is stopping. Server reflection (`grpc.reflection.v1alpha`): the
served service, health and reflection itself, so grpcurl and load balancers
need no .proto files. Both come from the kept packages grpcio-health-checking
and grpcio-reflection.
"""

from __future__ import annotations

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

__all__ = ["add_standard_services", "set_not_serving"]


async def add_standard_services(server: grpc.aio.Server, service: ServiceDescriptor) -> health.aio.HealthServicer:
    """Add health checking and reflection for `service` to `server` (before it starts).

    Returns the health servicer: SERVING for "" and `service.full_name` from the start."""
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection((service.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    for name in ("", service.full_name):
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer


async def set_not_serving(servicer: health.aio.HealthServicer) -> None:
    """Stopping: every name answers NOT_SERVING (and watchers are told)."""
    await servicer.enter_graceful_shutdown()
