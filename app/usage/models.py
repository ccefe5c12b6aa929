"""Tables of the usage domain."""

from __future__ import annotations
