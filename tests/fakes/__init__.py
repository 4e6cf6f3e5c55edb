"""Faithful fake upstreams: strict like the real APIs, exact in their formats."""
