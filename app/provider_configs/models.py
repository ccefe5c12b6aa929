"""Tables of the provider_configs domain."""

from __future__ import annotations
