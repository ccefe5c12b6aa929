"""Connected third-party platforms over OAuth 2.0: providers, clients, connections, refresh."""
