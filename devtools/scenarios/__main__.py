"""`python -m devtools.scenarios run [PATH...] [--trace FILE]` (see devtools/scenarios/cli.py)."""

from devtools.scenarios.cli import main

raise SystemExit(main())
