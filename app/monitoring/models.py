"""Tables of the monitoring domain."""

from __future__ import annotations
