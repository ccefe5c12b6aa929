"""Tools for trying Junction on one machine: a local OAuth 2.0 provider and its HTTP server."""
