"""The scenario harness: the real worker (actors and HTTP app) on the scripted fake engine,
driven by scripted clients in trio's virtual time, every message recorded.

A scenario file (TOML, see docs/SCENARIOS.md) gives the settings, the engine's script, a
timeline of requests and actions, and what must be true afterwards. `spec` reads the file,
`runner` runs it (in `scheduling`'s repeatable trio), `observed` is what the clients saw,
`checks` compares it with the file's expectations, `cli` prints a table:
`python -m devtools.scenarios run [PATH...] [--trace FILE]`.
"""
