"""What rbee's hive says about a worker in its id alone: `worker-<type>-<port>`, whose type
is the backend (rbee's hive passes no other flag for it)."""

from __future__ import annotations

import re

_RBEE_WORKER_ID = re.compile(r"worker-([a-z0-9]+)-(\d+)")
_RBEE_BACKENDS = {"cpu": "cpu", "cuda": "cuda"}
# Worker types rbee knows (or other servers name) that this worker cannot run.
_UNSUPPORTED_TYPES = frozenset({"metal", "rocm", "hip", "vulkan", "sycl", "opencl", "mps"})


class UnsupportedWorkerType(Exception):
    """The worker id asks for a backend this worker cannot run; the message is one line."""


def backend_of_worker_id(worker_id: str, port: int) -> str | None:
    """The backend an rbee worker id (`worker-cuda-8080`, its port matching --port) asks
    for, or None when the id is not rbee's.

    Raises:
        UnsupportedWorkerType: the id asks for a backend this worker cannot run.
    """
    match = _RBEE_WORKER_ID.fullmatch(worker_id)
    if match is None or int(match.group(2)) != port:
        return None
    kind = match.group(1)
    if kind in _UNSUPPORTED_TYPES:
        raise UnsupportedWorkerType(
            f"--worker-id {worker_id}: the {kind} backend is not supported by this worker "
            "(cpu and cuda are)"
        )
    return _RBEE_BACKENDS.get(kind)
