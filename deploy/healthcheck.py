#!/opt/phe-fl/bin/python
"""phe-fl-health [SERVICE] [ADDRESS]: ask a node's plaintext health port ([node] health)
whether SERVICE is serving; exit 0 if it is, 1 if not. For compose healthchecks and shells;
Kubernetes uses its native gRPC probes instead.

SERVICE: "" (default, liveness) or "phe_fl.v2.Ready" (keys installed, tree connected).
ADDRESS: default 127.0.0.1:9000.
"""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str]) -> int:
    service = argv[1] if len(argv) > 1 else ""
    address = argv[2] if len(argv) > 2 else "127.0.0.1:9000"
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5
            )
    except grpc.RpcError as exc:
        print(f"{address} {service or '(liveness)'}: {exc.code().name}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{address} {service or '(liveness)'}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
