"""The top floor: the aiohttp app, one handler module per endpoint family, admin
routes, the composition root (`gateway.py`), scale-out wiring, the CLI, workers, logs."""
