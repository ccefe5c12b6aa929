"""Operators' tools: copying and verifying databases, keys, resets and imports (`junction …`)."""
