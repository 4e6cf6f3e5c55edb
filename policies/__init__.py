"""Policies: one module each, composed into the pipeline in DESIGN.md's order."""
