"""The real engine in fast mode: one KV pool, streams and prompt chunks in one decode.

What llama.cpp receives is recorded (tests/e2e/test_engine_batch.py's `record_decodes`),
and its own memory is asked what each slot holds.
"""

from __future__ import annotations

from collections.abc import Iterator

import llama_cpp
import pytest

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.llama import LlamaEngine
from llm_worker_rbee.inspection.bundled import bundled_model_path
from tests.e2e.test_engine_batch import GREEDY, record_decodes, start

pytestmark = pytest.mark.real_model


def load(ctx_size: int, slots: int) -> LlamaEngine:
    settings = Settings(backend="cpu", ctx_size=ctx_size, slots=slots, batch_size=64, threads=2)
    return LlamaEngine.load(bundled_model_path(), settings, "gemma")


@pytest.fixture
def engine() -> Iterator[LlamaEngine]:
    engine = load(1024, 4)
    yield engine
    engine.close()


@pytest.mark.behavior("INF-046")
def test_a_new_prompt_is_decoded_with_the_streams_in_one_decode(
    engine: LlamaEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (engine.info.kv_pool, engine.info.seq_capacity) == (1024, 1024)
    start(engine, (0, 1))
    prompt = engine.tokenize("word " * 100, add_special=True)
    engine.admit(2, prompt, GREEDY)
    decoded = record_decodes(monkeypatch)
    outputs = engine.step()
    # One decode: a token for each stream, then the rest of the 64-token batch of prompt.
    assert len(decoded) == 1
    rows = decoded[0]
    assert [(s, logits) for s, _, logits in rows[:2]] == [(0, True), (1, True)]
    assert [(s, pos) for s, pos, _ in rows[2:]] == [(2, pos) for pos in range(62)]
    assert [o.seq_id for o in outputs] == [0, 1]
    while not any(o.seq_id == 2 for o in engine.step()):  # the rest, still beside them
        pass


@pytest.mark.behavior("RES-021")
def test_a_step_drops_the_least_recently_used_idle_cache_for_room() -> None:
    engine = load(512, 2)
    try:
        memory = llama_cpp.llama_get_memory(engine._ctx)
        first = engine.tokenize("apple " * 300, add_special=True)[:300]
        engine.admit(0, first, GREEDY)
        while not engine.step():
            pass
        engine.cancel(0)  # slot 0 is idle, its 300 cells kept for its prompt
        assert llama_cpp.llama_memory_seq_pos_max(memory, 0) == 299
        second = engine.tokenize("pear " * 300, add_special=True)[:300]
        engine.admit(1, second, GREEDY)
        assert engine.cells_free() == 212
        while not engine.step():  # 300 cells wanted with 212 free: slot 0's cache goes
            pass
        assert llama_cpp.llama_memory_seq_pos_max(memory, 0) == -1
        assert llama_cpp.llama_memory_seq_pos_max(memory, 1) == 299
        assert engine.admit(0, first, GREEDY) == 0  # nothing left to reuse
    finally:
        engine.close()


@pytest.mark.behavior("INF-063")
def test_special_tokens_written_by_a_template_are_tokens(engine: LlamaEngine) -> None:
    """A chat template writes `{{ bos_token }}` and its turn markers as text: they must reach
    the model as the special tokens, not spelled out in pieces."""
    bos = llama_cpp.llama_vocab_bos(llama_cpp.llama_model_get_vocab(engine._model))
    tokens = engine.tokenize("<bos><start_of_turn>user\nhi<end_of_turn>\n", add_special=False)
    assert tokens[0] == bos
    turn = engine.tokenize("<start_of_turn>", add_special=False)
    assert len(turn) == 1 and engine.token_piece(turn[0]) == b""  # a control token
    assert tokens[1] == turn[0]
