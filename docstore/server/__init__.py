"""The immudoc server: the embedded database served over gRPC (service immudoc.v1.Docstore).

Run it with ``python -m docstore.server --db PATH`` (or ``immudoc --db PATH serve``); the
function behind both is :func:`docstore.server.cli_hook.serve`. Connect with
:func:`docstore.connect`. The service is defined in ``proto/immudoc/v1/immudoc.proto``.
"""
