"""Token revocation."""
