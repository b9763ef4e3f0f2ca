"""Side-by-side benchmarks: this worker, llama-cpp-python's server, llama-server, the ceiling.

Run with `make bench` or `llm-worker-rbee bench` (needs the `bench` extra). Not part of the
test suite: benchmarks print figures, tests never time anything. See docs/PERFORMANCE.md.
"""
