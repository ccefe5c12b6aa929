"""Cross-cutting plumbing: settings, database, cache, crypto, auth, errors, logging, metrics."""
