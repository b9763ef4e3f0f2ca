"""`python -m devtools.behaviors check|show|sync` (see devtools/behaviors/cli.py)."""

from devtools.behaviors.cli import main

raise SystemExit(main())
