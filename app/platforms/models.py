"""Tables of the platforms domain."""

from __future__ import annotations
