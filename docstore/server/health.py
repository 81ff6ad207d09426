"""The standard gRPC health check, ``/grpc.health.v1.Health/Check``.

Implemented here (a dozen lines) from the vendored messages in proto/immudoc/v1/health.proto
rather than with grpcio-health-checking: one runtime dependency fewer to keep pinned to the
grpcio version, and its generated module is reproduced and checked with ours. ``Watch`` is not
offered (UNIMPLEMENTED), which the protocol allows clients to handle; probes use ``Check``.

Answers SERVING for the service names "" (the whole server) and "immudoc.v1.Docstore", and
NOT_SERVING once shutdown has begun; NOT_FOUND for any other name. Needs no token.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from docstore.rpc import codec
from docstore.rpc import health_pb2 as hpb

SERVING = hpb.HealthCheckResponse.SERVING
NOT_SERVING = hpb.HealthCheckResponse.NOT_SERVING


def health_handler(is_serving: Callable[[], bool]) -> grpc.GenericRpcHandler:
    def check(request: hpb.HealthCheckRequest, context: grpc.ServicerContext) -> hpb.HealthCheckResponse:
        if request.service not in ("", codec.SERVICE):
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return hpb.HealthCheckResponse(status=SERVING if is_serving() else NOT_SERVING)

    return grpc.method_handlers_generic_handler(
        codec.HEALTH_SERVICE,
        {
            "Check": grpc.unary_unary_rpc_method_handler(
                check,
                request_deserializer=hpb.HealthCheckRequest.FromString,
                response_serializer=hpb.HealthCheckResponse.SerializeToString,
            )
        },
    )
