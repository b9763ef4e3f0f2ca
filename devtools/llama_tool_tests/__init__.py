"""llama.cpp's own tool-call tests (tools/server/tests/unit/test_tool_call.py, the slow ones
included) run against this worker: `python -m devtools.llama_tool_tests [-n 2] [-k EXPR]`
(docs/API.md, "Tool-call formats", has the counts).

The test module and its harness (utils.py) come from the installed llama-cpp-python's sdist
at run time (devtools/sdist.py; the repository copies none of llama.cpp's files), unchanged on disk.
What is translated, every edit:

1. conftest.py is replaced (plugin.py): llama.cpp's starts and stops a llama-server per test
   and downloads models first (`ServerPreset.load_all`); this one does neither.
2. `ServerProcess.start` starts this worker on the bundled model (Gemma 3 270M) in place of
   llama-server on the test's model, with the template the test names as
   `--chat-template-file`: its file under models/templates/, `chatml` as llama.cpp's
   CHATML_TEMPLATE_SRC (read from the sdist's common/chat.cpp), and a model named by its HF
   repo as that model's published template (plugin.MODEL_TEMPLATES). `n_ctx`, `n_slots` and
   `reasoning_format` become `--ctx-size`, `--slots` and `--reasoning-format`.
3. A worker is kept for the next test that asks for the same one, and `ServerProcess.stop`
   leaves it running; all stop at the session's end.
4. llama-server's server-wide `--temp`, `--seed` and `--n-predict` (utils.py passes the
   preset's 0.8, 42 and `n_predict`) go into each request that does not set them
   (`temperature`, `seed`, `max_tokens`): the worker takes them per request.
5. A stream's first delta is OpenAI's `{"role": "assistant", "content": ""}`; utils.py takes
   any content for a text delta and refuses an empty one (llama-server sends none there), so
   that empty content is left out before utils.py reads the chunk.
6. utils.py imports `wget` (model downloads, not made here): a stub module stands in.

No assertion of test_tool_call.py is changed, not even the expected texts (the 270M model
does not say what an 8B model says: those failures are counted as the model's answer).
"""
