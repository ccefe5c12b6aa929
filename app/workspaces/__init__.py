"""Workspaces (tenants) and their tiers."""
