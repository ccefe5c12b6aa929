"""Tables of the tokens domain."""

from __future__ import annotations
