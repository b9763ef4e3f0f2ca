"""Development tools that live in the checkout, outside the installed package (as trio keeps
its generators in `_tools/`): the behaviour-inventory checker and the scenario harness.

Run them from the repository root: `python -m devtools.behaviors check`,
`python -m devtools.scenarios run`. Nothing in `llm_worker_rbee` imports them.
"""
