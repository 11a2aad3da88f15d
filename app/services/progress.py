"""How a long service says how far it has got, without knowing who listens (the CLI draws a bar)."""

from __future__ import annotations

from collections.abc import Callable

# what is being worked through (a table, a step), units done, units to do
Progress = Callable[[str, int, int], None]
