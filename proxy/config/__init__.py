"""Ground floor: the YAML config's types, its loader and section parsers, the model catalog.

Imports nothing of gatewise above it. Provider-type schemas (the translators'
options and model-name rules) are handed to the loader, never imported by it.
"""
