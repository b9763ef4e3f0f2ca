"""EngineThread: runs the DecodeLoop on its own OS thread, stepping back to back.

The next decode never waits for the event loop: while trio hands one step's tokens to the
sessions and sockets, the engine is already computing the next. Steps that the trio side has
not taken yet are bounded (`ahead`), and a session that falls behind finds several tokens
waiting, which it sends in one write.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

import trio

from llm_worker_rbee.actors.decode import Abandon, DecodeLoop, Delivery
from llm_worker_rbee.messages.inference import ModelCommand

log = logging.getLogger(__name__)

STEPS_AHEAD = 16
# How often a thread waiting for the trio side looks whether it was told to stop.
STOP_POLL_S = 0.05


class EngineThread:
    def __init__(
        self,
        loop: DecodeLoop,
        deliver: Callable[[list[Delivery]], None],
        *,
        ahead: int = STEPS_AHEAD,
    ) -> None:
        self._loop = loop
        self._deliver = deliver
        self._ahead = ahead
        self._commands: deque[ModelCommand | Abandon] = deque()
        self._wake = threading.Condition()
        self._window = threading.Semaphore(ahead)
        self._stopping = False

    def submit(self, command: ModelCommand | Abandon) -> None:
        """Queues a command; the thread applies it before its next step. Any thread."""
        with self._wake:
            self._commands.append(command)
            self._wake.notify()

    async def run(self) -> None:
        """Runs until cancelled; then stops the thread after its current step and returns."""
        token = trio.lowlevel.current_trio_token()
        steps_send, steps_receive = trio.open_memory_channel[list[Delivery]](self._ahead)

        def hand_over(out: list[Delivery]) -> None:
            # Runs on the trio thread, outside any task: it must never raise. The buffer has
            # room (`_window` holds the engine back) unless the actor is already stopping.
            try:
                steps_send.send_nowait(out)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                log.debug("dropped a step's events while stopping")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver_steps, steps_receive)
            nursery.start_soon(self._stop_when_cancelled)
            # Not abandoned on cancel: llama.cpp would go on using a context we no longer
            # own. `_stop_when_cancelled` tells the thread to end after its current step.
            await trio.to_thread.run_sync(self._main, token, hand_over)
            nursery.cancel_scope.cancel()

    async def _deliver_steps(self, steps: trio.MemoryReceiveChannel[list[Delivery]]) -> None:
        async for out in steps:
            # Every step already waiting is delivered before the sessions run, so a session
            # that fell behind takes several tokens in one wake-up.
            while True:
                self._window.release()
                self._deliver(out)
                try:
                    out = steps.receive_nowait()
                except trio.WouldBlock:
                    break

    async def _stop_when_cancelled(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            with self._wake:
                self._stopping = True
                self._wake.notify()

    def _main(
        self, token: trio.lowlevel.TrioToken, hand_over: Callable[[list[Delivery]], None]
    ) -> None:
        while True:
            with self._wake:
                while not (self._stopping or self._commands or self._loop.busy):
                    self._wake.wait()
                if self._stopping:
                    return
                commands = list(self._commands)
                self._commands.clear()
            out: list[Delivery] = []
            for command in commands:
                out += self._loop.apply(command)
            if self._loop.busy:
                out += self._loop.step()
            if out:
                while not self._window.acquire(timeout=STOP_POLL_S):
                    if self._stopping:
                        return
                token.run_sync_soon(hand_over, out)
