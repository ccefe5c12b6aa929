"""The background token-monitoring loop and its events."""
