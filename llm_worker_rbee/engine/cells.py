"""How KV cells are counted when every slot draws from one pool (fast mode).

A request reserves `prompt + completion limit` cells when it is granted a slot, and the
SlotScheduler grants it only while the reservations of the requests running fit the pool
(`fits`); otherwise it waits in the queue, in order. A running sequence never uses more
cells than it reserved, so a step never runs out of cells under any load the scheduler
admitted. What is left over holds the prompt cache: a slot keeps its cells after its
sequence ends, and the engine drops those of the least recently used idle slots when a
step needs the room (`LlamaEngine._make_room`, `FakeEngine._make_room`).

With `--batch-invariant` each slot owns a stream of `n_ctx / slots` cells (ModelInfo.kv_pool
is None) and none of this applies: a request can never take another's cells.
"""

from __future__ import annotations

from llm_worker_rbee.engine.base import ModelInfo


def completion_limit(info: ModelInfo, prompt_tokens: int, max_tokens: int | None) -> int:
    """How many tokens a request may generate, given its prompt and its `max_tokens`.

    Never past the context a request may use (`seq_capacity`). Without `max_tokens`: to
    the end of the slot's stream (exact mode), or, from a shared pool, up to the slot's
    share of it (`kv_pool / slots`) less the prompt and at least a quarter of the share, so
    that as many requests without `max_tokens` as there are slots fit at once.
    """
    room = info.seq_capacity - prompt_tokens
    if max_tokens is not None:
        return min(max_tokens, room)
    if info.kv_pool is None:
        return room
    share = info.kv_pool // max(info.n_slots, 1)
    return min(room, max(share - prompt_tokens, share // 4))


def fits(reserved: int, cells: int, pool: int | None) -> bool:
    """Whether a request reserving `cells` may start beside reservations of `reserved`.

    A request alone always starts (the routes never let one ask for more than the pool),
    so nothing can wait forever.
    """
    return pool is None or reserved == 0 or reserved + cells <= pool
