"""Ground floor: the Exchange, errors, usage, pricing, the pipeline protocol and framing.

Imports only `proxy.config` below it; everything else builds on it.
"""
