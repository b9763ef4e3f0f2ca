"""The real engine out of KV cells: llama_decode's 1 becomes EngineOutOfMemory, and the slot
serves the next prompt."""

from __future__ import annotations

import pytest

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.base import EngineOutOfMemory
from llm_worker_rbee.engine.llama import LlamaEngine
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.messages.inference import SamplingParams

pytestmark = pytest.mark.real_model


@pytest.mark.behavior("RES-008")
def test_a_prompt_past_the_slots_cells_is_out_of_memory_and_the_slot_recovers() -> None:
    # Per-slot streams: 256 cells a slot (from the shared pool the scheduler's reservations
    # keep a step from ever running out, tests/test_kv_pool.py).
    settings = Settings(
        backend="cpu", ctx_size=512, slots=2, batch_size=64, threads=2, batch_invariant=True
    )
    engine = LlamaEngine.load(bundled_model_path(), settings, "gemma")
    greedy = SamplingParams(temperature=0)
    try:
        # The ModelActor never admits this (the HTTP layer refuses prompts over a slot's
        # context); here it stands for a step that finds no free KV cells.
        prompt = engine.tokenize("word " * 400, add_special=True)
        assert len(prompt) > engine.info.seq_capacity == 256
        engine.admit(0, prompt, greedy)
        with pytest.raises(EngineOutOfMemory, match="llama_decode returned 1"):
            for _ in range(len(prompt) // 64 + 1):
                engine.step()
        engine.cancel(0)
        engine.admit(0, engine.tokenize("Hello", add_special=True), greedy)
        [output] = engine.step()  # whichever token the model picks, even its end
        assert output.seq_id == 0
    finally:
        engine.close()
