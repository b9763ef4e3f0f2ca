"""The model's vocabulary used from another thread while the engine steps, on the real model.

Routes tokenize, detokenize and check grammars on the trio thread while the engine thread
decodes (engine/vocab.py). ctypes lets go of the GIL in llama.cpp's calls, so here they
really overlap: a thread steps two sequences while this one tokenizes, reads pieces (the
piece cache both threads fill) and builds grammar samplers, and every answer must be the
one the vocabulary gives when nothing else runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.llama import LlamaEngine
from llm_worker_rbee.grammar import json_object_grammar
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.messages.inference import SamplingParams

pytestmark = pytest.mark.real_model

SETTINGS = Settings(backend="cpu", ctx_size=1024, slots=2, threads=1, log_level="warning")
TEXTS = ["The capital of France is", "héllo wörld 🙂", "<start_of_turn>user\nhi<end_of_turn>", ""]
GREEDY = SamplingParams(temperature=0.0, ignore_eos=True)  # both run all 16 steps


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    engine = LlamaEngine.load(bundled_model_path(), SETTINGS, "gemma")
    yield engine
    engine.close()


def test_the_vocabulary_answers_the_same_while_the_engine_steps(engine: LlamaEngine) -> None:
    vocab = engine.vocab
    expected = {text: vocab.tokenize(text, add_special=True) for text in TEXTS}
    pieces = {t: vocab.token_piece(t) for tokens in expected.values() for t in tokens}
    for seq_id, prompt in enumerate(["Count to twenty:", "List some colours:"]):
        engine.admit(seq_id, vocab.tokenize(prompt, add_special=True), GREEDY)
    stepped = threading.Event()
    generated: list[int] = []
    errors: list[BaseException] = []

    def step() -> None:
        try:
            for _ in range(16):
                generated.extend(o.token for o in engine.step())
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            stepped.set()

    stepper = threading.Thread(target=step)
    stepper.start()
    rounds = 0
    while not stepped.is_set() or rounds == 0:
        for text, tokens in expected.items():
            assert vocab.tokenize(text, add_special=True) == tokens
            assert [vocab.token_piece(t) for t in tokens] == [pieces[t] for t in tokens]
        vocab.check_grammar(json_object_grammar())
        rounds += 1
    stepper.join()
    engine.cancel(0)
    engine.cancel(1)
    assert errors == []
    assert len(generated) >= 16  # both sequences made tokens while this thread read
