"""QueenHeartbeatActor: rbee's worker-contract heartbeat to the queen, best effort.

With `--queen-url`, a `WorkerHeartbeat` goes to `POST {queen}/v1/worker-heartbeat` every
30 s (rbee's HEARTBEAT_INTERVAL_SECS; its queen forgets a worker after 90 s), the first at
once, and at once when the worker becomes ready, starts draining or has stopped, so the
queen never routes to a worker that said `starting` 29 s ago. Busy and ready in between
only go out on the 30 s tick: a worker flipping between them with every request would
otherwise flood the queen.

Nothing here may hurt serving: rbee's queen at the commit this follows has no such route
(its web UI answers every unknown path), so a queen that says so (404, 405, or a web page)
is logged once and never asked again; refusals, 5xx and timeouts keep the 30 s cadence with
one log line per transition, never a fast retry. The last heartbeat (`stopped`) is shielded
and given up after 2 s, like the hive's goodbye. Payload: `status.worker_heartbeat_payload`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from llm_worker_rbee.actors.lifecycle import LifecycleHandle
from llm_worker_rbee.hive.queen_client import QUEEN_HEARTBEAT_PATH, QueenClient
from llm_worker_rbee.messages.hive import HiveCall, HiveOutcome, HiveReply
from llm_worker_rbee.messages.lifecycle import WorkerState
from llm_worker_rbee.tracing import Tracer, no_trace

log = logging.getLogger(__name__)

# rbee's shared-contract HEARTBEAT_INTERVAL_SECS.
QUEEN_HEARTBEAT_INTERVAL_S = 30.0
CALL_TIMEOUT_S = 5.0
LAST_HEARTBEAT_TIMEOUT_S = 2.0

Payload = dict[str, Any]

# The lifecycle moments that go to the queen at once rather than on the next tick.
_MOMENTS = {
    WorkerState.STARTING: "starting",
    WorkerState.LOADING: "starting",
    WorkerState.READY: "ready",
    WorkerState.DRAINING: "stopping",
    WorkerState.STOPPED: "stopped",
}


class QueenHeartbeatActor:
    """The worker's side of rbee's worker contract; see the module docstring."""

    def __init__(
        self,
        *,
        client: QueenClient,
        lifecycle: LifecycleHandle,
        payload: Callable[[], Payload],
        interval: float = QUEEN_HEARTBEAT_INTERVAL_S,
        tracer: Tracer = no_trace,
    ) -> None:
        self._client = client
        self._lifecycle = lifecycle
        self._payload = payload
        self._interval = interval
        self._trace = tracer
        # None: nothing answered yet; then whether the last call was answered.
        self._reachable: bool | None = None
        self._done = trio.Event()

    async def wait_done(self) -> None:
        """Blocks until the last heartbeat is sent, or the queen said it takes none."""
        await self._done.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self._client.run)
            task_status.started()
            try:
                await self._converse()
            finally:
                self._done.set()
            nursery.cancel_scope.cancel()

    async def _converse(self) -> None:
        next_at = trio.current_time()
        told: str | None = None
        while True:
            state = self._lifecycle.state
            with trio.move_on_at(next_at):
                while _MOMENTS[state] == told:
                    state = await self._lifecycle.wait_state_change(state)
            told = _MOMENTS[self._lifecycle.state]
            if told == "stopped":
                await self._last_heartbeat()
                return
            sent_at = trio.current_time()
            reply = HiveReply(HiveOutcome.FAILED, f"no answer within {CALL_TIMEOUT_S:g} s")
            with trio.move_on_after(CALL_TIMEOUT_S):
                reply = await self._call()
            if not self._note(reply):
                return
            next_at = sent_at + self._interval

    async def _last_heartbeat(self) -> None:
        # The worker is on its way out: shielded, with its own short deadline.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + LAST_HEARTBEAT_TIMEOUT_S):
            self._note(await self._call())
            return
        late = f"no answer within {LAST_HEARTBEAT_TIMEOUT_S:g} s"
        self._note(HiveReply(HiveOutcome.FAILED, late))

    async def _call(self) -> HiveReply:
        payload = self._payload()
        self._trace("queen", HiveCall("heartbeat", str(payload["worker"]["status"])))
        try:
            reply = await self._client.heartbeat(payload)
        except Exception as exc:  # a broken queen must never take the worker down
            reply = HiveReply(HiveOutcome.FAILED, f"{type(exc).__name__}: {exc}")
        self._trace("queen_heartbeat", reply)
        return reply

    def _note(self, reply: HiveReply) -> bool:
        """Logs once per transition; False once the queen said it takes no heartbeats."""
        url = f"{self._client.url}{QUEEN_HEARTBEAT_PATH}"
        if reply.outcome is HiveOutcome.NOT_FOUND:
            log.info("queen %s takes no heartbeats (%s): not sending any more", url, reply.detail)
            return False
        if reply.outcome is HiveOutcome.OK:
            if self._reachable is None:
                log.info("queen %s takes heartbeats: one every %g s", url, self._interval)
            elif not self._reachable:
                log.info("queen %s is reachable again", url)
            self._reachable = True
            return True
        if self._reachable is not False:
            log.warning(
                "queen %s is unreachable (%s): serving goes on, the next heartbeat in %g s",
                url,
                reply.detail,
                self._interval,
            )
        self._reachable = False
        return True
