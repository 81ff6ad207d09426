"""The wire format shared by the server (docstore.server) and the client (docstore.remote).

``immudoc_pb2``, ``immudoc_pb2_grpc`` and ``health_pb2`` are generated from
``proto/immudoc/v1/*.proto`` by ``scripts/gen_proto.sh`` (do not edit them; a test checks they
are exactly what the pinned grpcio-tools generates). ``codec`` is hand-written.
"""
