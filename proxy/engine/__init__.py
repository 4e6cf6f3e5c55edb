"""The engine: dispatch, the request plan and retry rules, routing, breakers, relay,
transports and health checks: everything between the pipeline and an upstream."""
