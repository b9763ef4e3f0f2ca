"""LlamaVocab: llama.cpp's vocabulary of the loaded model, for any thread.

The routes tokenize prompts, detokenize token ids and check grammars on the trio thread
while the engine thread steps. llama.cpp builds a vocabulary once, when the model loads
(its tokens, merges and piece cache), and only reads it afterwards: `llama_tokenize` and
`llama_token_to_piece` are `const` on `llama_vocab` and tokenize in a session of their own
per call, and a grammar sampler reads the vocabulary to build its own state (llama-server
tokenizes on its HTTP threads while its loop thread decodes, the same way). The one thing
written here, the Python cache of token pieces, is guarded by a lock.
"""

from __future__ import annotations

import ctypes
import json
import re
import threading
from typing import Any

import llama_cpp

# The rule a lazy grammar starts at (grammar_sampler's `after`); not a name the JSON schema
# converter or a tool grammar writes.
AFTER_THINKING = "rbee-after-thinking"
# The most spaces, tabs and newlines the lazy grammar takes between its marker and `root`.
AFTER_SPACE = 8


class LlamaVocab:
    """The `Vocabulary` of a llama.cpp model: tokenize, token pieces, grammar checks.

    Valid while the model is loaded: the ModelActor frees the model only after the HTTP
    server, and with it every route, has returned (worker.py).
    """

    def __init__(self, vocab: Any) -> None:
        self._vocab = vocab  # a `const llama_vocab *`
        self._lock = threading.Lock()
        self._pieces: dict[int, bytes] = {}

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        """Special tokens written as text become those tokens, as in llama-server: a chat
        template writes its turn markers (`<start_of_turn>`, `<|im_start|>`) and often
        `{{ bos_token }}` as text, and the model was trained on the tokens, not on their
        spelling in pieces."""
        data = text.encode("utf-8")
        size = len(data) + 8
        while True:
            buffer = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), buffer, size, add_special, True
            )
            if n >= 0:
                return list(buffer[:n])
            size = -n

    def token_piece(self, token: int) -> bytes:
        with self._lock:
            piece = self._pieces.get(token)
        if piece is None:
            buffer = ctypes.create_string_buffer(64)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, 64, 0, False)
            if n < 0:
                buffer = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, -n, 0, False)
            piece = buffer.raw[:n]
            with self._lock:
                self._pieces[token] = piece
        return piece

    def special_text(self, token: int) -> str:
        """A control token's name (`<eos>`); "" for no token."""
        if token < 0:
            return ""
        return bytes(llama_cpp.llama_vocab_get_text(self._vocab, token) or b"").decode(
            "utf-8", "replace"
        )

    def grammar_sampler(self, grammar: str, *, after: str | None = None) -> Any:
        """llama.cpp's grammar sampler for `grammar` (root rule `root`); NULL if it fails.

        `after`: a lazy grammar, asleep until the reply writes `after` (the end of its
        thinking), then matching `after`, a little white space, then `root` (as llama.cpp's
        chat code does for a template that opens the thinking block)."""
        if after is None:
            return llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root")
        space = f"[ \\t\\n]{{0,{AFTER_SPACE}}}"
        wrapped = f"{grammar}\n{AFTER_THINKING} ::= {json.dumps(after)} {space} root\n"
        patterns = (ctypes.c_char_p * 1)(re.escape(after).encode())
        return llama_cpp.llama_sampler_init_grammar_lazy_patterns(
            self._vocab,
            wrapped.encode(),
            AFTER_THINKING.encode(),
            patterns,
            1,
            (llama_cpp.llama_token * 0)(),
            0,
        )

    def check_grammar(self, grammar: str) -> None:
        """Raises ValueError if llama.cpp cannot parse `grammar`."""
        sampler = self.grammar_sampler(grammar)
        if not sampler:
            raise ValueError("llama.cpp could not parse the grammar")
        llama_cpp.llama_sampler_free(sampler)
