"""A gRPC server on a unix socket, as the agent runs them next to its proxy (SDS, access
logs): a socket left by a killed agent is replaced, only root may connect (0600), the
socket goes when the server stops."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anyio
import anyio.abc
import grpc

log = logging.getLogger("pilotfish.agent")


def listen(server: grpc.aio.Server, path: Path, what: str) -> None:
    """Bind a gRPC server to a unix socket, or raise OSError naming it (grpcio raises
    RuntimeError or returns 0, depending on the version)."""
    try:
        bound = server.add_insecure_port(f"unix:{path}")
    except RuntimeError as exc:
        raise OSError(f"cannot listen for {what} on {path}: {exc}") from exc
    if not bound:
        raise OSError(f"cannot listen for {what} on {path}")


async def serve(path: Path, handler: grpc.GenericRpcHandler, what: str, *,
                task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve ``handler`` on ``path`` until cancelled; ``what`` names it in errors and logs."""
    path.unlink(missing_ok=True)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    listen(server, path, what)
    os.chmod(path, 0o600)
    await server.start()
    log.info("%s: serving on %s", what, path)
    task_status.started()
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await server.stop(grace=0.5)
            path.unlink(missing_ok=True)
