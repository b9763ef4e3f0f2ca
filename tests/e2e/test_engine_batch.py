"""The real engine's batch: running streams reach llama.cpp in slot order."""

from __future__ import annotations

from typing import Any

import llama_cpp
import pytest

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.bundled import bundled_model_path
from llm_worker_rbee.engine.llama import LlamaEngine
from llm_worker_rbee.messages.inference import SamplingParams

pytestmark = pytest.mark.real_model


@pytest.mark.behavior("INF-025")
def test_streams_admitted_out_of_order_are_decoded_in_slot_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With a KV stream per slot llama.cpp splits a batch wherever the next sequence id is not
    # the previous one plus one: [3, 0, 1, 2] would be two passes over the weights.
    settings = Settings(backend="cpu", ctx_size=1024, slots=4, batch_size=64, threads=2)
    engine = LlamaEngine.load(bundled_model_path(), settings, "gemma")
    try:
        for seq_id in (3, 0, 1, 2):
            prompt = engine.tokenize(f"Slot {seq_id} counts:", add_special=True)
            engine.admit(seq_id, prompt, SamplingParams(temperature=0))
        while len(engine.step()) < 4:  # the prompts, one decode each, then the first stream step
            pass
        decoded: list[list[int]] = []
        real_decode = llama_cpp.llama_decode

        def recording(ctx: Any, batch: Any) -> int:
            decoded.append([batch.seq_id[i][0] for i in range(batch.n_tokens)])
            return int(real_decode(ctx, batch))

        monkeypatch.setattr(llama_cpp, "llama_decode", recording)
        outputs = engine.step()
        assert decoded == [[0, 1, 2, 3]]
        assert [o.seq_id for o in outputs] == [0, 1, 2, 3]
    finally:
        engine.close()
