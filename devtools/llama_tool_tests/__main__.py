"""`python -m devtools.llama_tool_tests [pytest args]` (see devtools/llama_tool_tests/cli.py)."""

from devtools.llama_tool_tests.cli import main

raise SystemExit(main())
