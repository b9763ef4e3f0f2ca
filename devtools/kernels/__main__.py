"""`python -m devtools.kernels build|info|run` (see devtools/kernels/cli.py)."""

from devtools.kernels.cli import main

raise SystemExit(main())
