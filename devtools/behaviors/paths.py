"""Where the checker looks: the package's source, the checkout around it, the inventory."""

from __future__ import annotations

from pathlib import Path

import llm_worker_rbee

PACKAGE = "llm_worker_rbee"
PACKAGE_DIR = Path(llm_worker_rbee.__file__).resolve().parent
# The source checkout: docs/BEHAVIORS.md, tests/ and scenarios/ live beside the package.
SOURCE_ROOT = PACKAGE_DIR.parent
INVENTORY = Path("docs/BEHAVIORS.md")
# The checkout's development tools, which a row's "where" may also name (`devtools.x:f`).
TOOLS = "devtools"


def relative(path: Path) -> str:
    """`path` relative to the checkout, for messages."""
    try:
        return path.relative_to(SOURCE_ROOT).as_posix()
    except ValueError:
        return path.as_posix()
