"""One structured log line per request, whatever its outcome."""

from __future__ import annotations

import logging
import time

from proxy.core.exchange import Exchange
from proxy.core.pipeline import CallNext


class AccessLog:
    """Outermost policy: sees every outcome, including errors and cancels."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("gatewise.access")

    async def __call__(self, ex: Exchange, call_next: CallNext) -> None:
        try:
            await call_next(ex)
        except BaseException as exc:
            # the status the client gets: the error's, 499 only when it went away,
            # 500 for a fault of the gateway's own (the middleware answers that)
            ex.failed(exc)
            raise
        finally:
            if self._log.isEnabledFor(logging.INFO):
                self._log.info("request", extra={"fields": self._fields(ex)})

    def outside(self, request_id: str, endpoint: str, method: str, status: int,
                error: GatewayError | None, started_ns: int) -> None:
        """The line of a request that never reached the pipeline: refused before it
        (400, 401, 404, 413, 503 overloaded), or not a model call (/v1/models, health)."""
        if self._log.isEnabledFor(logging.INFO):
            self._log.info("request", extra={"fields": {
                "request_id": request_id, "endpoint": endpoint, "method": method,
                "status": status,
                "error_code": (error.code or error.type) if error is not None else None,
                "latency_ms": round((time.perf_counter_ns() - started_ns) / 1e6, 3)}})

    @staticmethod
    def _fields(ex: Exchange) -> dict:
        """Names, classes and numbers only: never a prompt, a key or an error's text."""
        error = ex.error
        usage = ex.usage
        status, error_class = ex.outcome()
        now = time.perf_counter_ns()
        fields = {
            "request_id": ex.request_id,
            "endpoint": ex.endpoint,
            "key_name": ex.key_name,
            "model": ex.model.name,
            "target": ex.target.label if ex.target else None,
            "stream": ex.stream,
            "status": status,
            "error_class": error_class,
            "error_code": error.code if error else None,
            "attempts": len(ex.attempts),
            "attempt_targets": [a.target.label for a in ex.attempts] if len(ex.attempts) > 1
            else None,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "cost_usd": ex.cost,  # streams: the only place besides the ledger that has it
            "cache": ex.cache_status,
            "cost_saved_usd": ex.cost_saved,
            "latency_ms": round((now - ex.started_ns) / 1e6, 3),
            "overhead_ms": round(ex.overhead_ms(now), 3),
        }
        return fields
