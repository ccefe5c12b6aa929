"""Connected third-party platforms over OAuth 2.0: providers, clients, connections, refresh.

One module per job: `clients` (registered OAuth apps), `login` (start and callback), `reads`
(fresh-token reads and forced refresh), `connections` (disconnect), `refresh` (the single-flight
refresh path), `timing` (when a token is due, and the status it reports), `context`
(`TokenContext`, built once at start-up).

Calling convention: a function that works in the request's unit of work takes that session
first and the `TokenContext` second (`create_client(session, ctx, ...)`); a function that opens
short sessions of its own (reads, refresh, the callback, disconnect) takes the context first.
"""
