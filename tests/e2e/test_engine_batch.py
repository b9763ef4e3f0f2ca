"""The real engine's batch: running streams reach llama.cpp as one run of sequence ids.

With a KV stream per slot (`--batch-invariant`), llama.cpp splits a batch wherever the next
sequence id is not the previous one plus one, and each part is a pass over all the weights.
The fast mode's one pool has no such split (tests/e2e/test_engine_pool.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import llama_cpp
import pytest

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.llama import EXACT_CHUNK, LlamaEngine
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.messages.inference import SamplingParams

pytestmark = pytest.mark.real_model

GREEDY = SamplingParams(temperature=0)


@pytest.fixture
def engine() -> Iterator[LlamaEngine]:
    settings = Settings(
        backend="cpu", ctx_size=1024, slots=4, batch_size=64, threads=2, batch_invariant=True
    )
    engine = LlamaEngine.load(bundled_model_path(), settings, "gemma")
    yield engine
    engine.close()


def record_decodes(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[int, int, bool]]]:
    """Each llama_decode from now on, as its (sequence id, position, logits) rows."""
    decoded: list[list[tuple[int, int, bool]]] = []
    real_decode = llama_cpp.llama_decode

    def recording(ctx: Any, batch: Any) -> int:
        rows = range(batch.n_tokens)
        decoded.append([(batch.seq_id[i][0], batch.pos[i], bool(batch.logits[i])) for i in rows])
        return int(real_decode(ctx, batch))

    monkeypatch.setattr(llama_cpp, "llama_decode", recording)
    return decoded


def start(engine: LlamaEngine, seq_ids: tuple[int, ...]) -> None:
    """Admits a prompt in each slot and steps until every prompt is decoded."""
    for seq_id in seq_ids:
        engine.admit(seq_id, engine.tokenize(f"Slot {seq_id} counts:", add_special=True), GREEDY)
    while len(engine.step()) < len(seq_ids):  # one decode per prompt, then the streams
        pass


@pytest.mark.behavior("INF-025")
def test_streams_admitted_out_of_order_are_decoded_in_slot_order(
    engine: LlamaEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    start(engine, (3, 0, 1, 2))
    decoded = record_decodes(monkeypatch)
    outputs = engine.step()
    assert [[seq_id for seq_id, _, _ in rows] for rows in decoded] == [[0, 1, 2, 3]]
    assert [o.seq_id for o in outputs] == [0, 1, 2, 3]


@pytest.mark.behavior("INF-025", "INF-027")
def test_a_free_slot_between_streams_takes_a_stand_in_and_keeps_its_cache(
    engine: LlamaEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Over one 64-token chunk (EXACT_CHUNK), so that its first chunk's cells can be reused.
    prompt = engine.tokenize("The cache of slot one holds this prompt. " * 8, add_special=True)
    assert EXACT_CHUNK < len(prompt) <= 2 * EXACT_CHUNK
    engine.admit(1, prompt, GREEDY)
    while not engine.step():  # its chunks, then the first token
        pass
    engine.cancel(1)  # slot 1 is free and holds the prompt and one token in its cells
    held_end = llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(engine._ctx), 1)
    start(engine, (0, 2))
    decoded = record_decodes(monkeypatch)
    outputs = engine.step()
    # One run 0, 1, 2: slot 1's stand-in goes after its cells and asks for no logits.
    assert [[(s, logits) for s, _, logits in rows] for rows in decoded] == [
        [(0, True), (1, False), (2, True)]
    ]
    assert decoded[0][1][1] == held_end + 1
    assert [o.seq_id for o in outputs] == [0, 2]
    memory = llama_cpp.llama_get_memory(engine._ctx)
    assert llama_cpp.llama_memory_seq_pos_max(memory, 1) == held_end
    assert engine.admit(1, prompt, GREEDY) == EXACT_CHUNK  # its whole chunk is still there


@pytest.mark.behavior("INF-025")
def test_a_free_slot_with_no_cell_left_takes_no_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in in a full slot would find no KV cell and fail the whole step.
    settings = Settings(
        backend="cpu", ctx_size=768, slots=3, batch_size=256, threads=2, batch_invariant=True
    )
    engine = LlamaEngine.load(bundled_model_path(), settings, "gemma")
    try:
        capacity = engine.info.seq_capacity
        prompt = engine.tokenize("word " * capacity, add_special=True)[:capacity]
        engine.admit(1, prompt, GREEDY)
        engine.step()
        engine.cancel(1)  # slot 1 is free, every one of its cells taken
        start(engine, (0, 2))
        decoded = record_decodes(monkeypatch)
        outputs = engine.step()
        # The streams alone (llama.cpp then splits them in two passes), and the step succeeds.
        assert [[(s, logits) for s, _, logits in rows] for rows in decoded] == [
            [(0, True), (2, True)]
        ]
        assert [o.seq_id for o in outputs] == [0, 2]
    finally:
        engine.close()
