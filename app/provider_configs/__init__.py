"""Per-tenant provider configurations with version history, rollback and a two-tier cache."""
