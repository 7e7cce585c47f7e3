"""CLI command modules, one per area; each defines its commands at module level and exposes
`register(app)`, which only adds them to the `synthct` app."""
