"""The parameter-table engine: OpenAI request parameters → an upstream's fields.

Each provider declares one table, `{openai_name: Rule}`; `apply` walks the
client's parameters once and, per rule, copies (renamed, transformed), leaves
it to the translator's own code, ignores it, or refuses it. A refusal is a 400
that names the parameter (OpenAI's `unsupported_parameter` /
`unsupported_value` codes), unless the model's config says
`drop_unsupported: true`, in which case it is dropped. Nothing is clamped:
a value the upstream cannot take is refused or dropped, never altered.
A parameter missing from the table is unknown to this upstream and refused
the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.core.errors import GatewayError, bad_request

#: a transform gets the client's value and returns the upstream's (raise ValueError to refuse)
Transform = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Rule:
    """How one OpenAI parameter reaches the upstream.

    `to`: the upstream field (dotted for nesting, e.g. "metadata.user_id"), or
    None when the translator handles the parameter itself (or it is ignored).
    `supported`: False for never, or a predicate on the value (True = fine).
    """

    to: str | None = None
    transform: Transform | None = None
    supported: bool | Callable[[Any], bool] = True
    why: str = ""
    ignore: bool = False


def rename(to: str, transform: Transform | None = None, *,
           supported: bool | Callable[[Any], bool] = True, why: str = "") -> Rule:
    return Rule(to=to, transform=transform, supported=supported, why=why)


def handled() -> Rule:
    """The translator's own code maps this parameter (messages, tools, ...)."""
    return Rule()


def ignored() -> Rule:
    """Meaningful only to OpenAI's platform (e.g. `store`): no effect on the answer."""
    return Rule(ignore=True)


def unsupported(why: str, *, unless: Callable[[Any], bool] | None = None) -> Rule:
    """Refused (or dropped), except for the values `unless` accepts (e.g. n == 1)."""
    return Rule(supported=unless or False, why=why)


def apply(table: Mapping[str, Rule], chat: Mapping[str, Any], out: dict[str, Any], *,
          provider_type: str, drop_unsupported: bool = False) -> list[str]:
    """Map `chat`'s parameters into `out` per `table`; returns the dropped names.

    A `null` value is treated as absent, as OpenAI does."""
    dropped: list[str] = []
    for name, value in chat.items():
        if value is None:
            continue
        rule = table.get(name)
        if rule is None:
            if drop_unsupported:
                dropped.append(name)
                continue
            raise GatewayError(
                400, f"Unsupported parameter: '{name}' is not supported by this model's "
                f"provider ({provider_type}).", "invalid_request_error", param=name,
                code="unsupported_parameter")
        if rule.ignore:
            continue
        ok = rule.supported(value) if callable(rule.supported) else rule.supported
        if not ok:
            if drop_unsupported:
                dropped.append(name)
                continue
            raise refusal(name, value, rule, provider_type)
        if rule.to is None:
            continue
        if rule.transform is not None:
            try:
                value = rule.transform(value)
            except (ValueError, TypeError) as exc:
                raise bad_request(f"Invalid value for '{name}': {exc}", param=name,
                                  code="invalid_value") from None
        _put(out, rule.to, value)
    return dropped


def refusal(name: str, value: Any, rule: Rule, provider_type: str) -> GatewayError:
    """The 400 for a parameter (or one of its values) the upstream cannot honour."""
    why = f" {rule.why}" if rule.why else ""
    if rule.supported is False:
        return GatewayError(
            400, f"Unsupported parameter: '{name}' is not supported by this model's provider "
            f"({provider_type}).{why} The model's config can set drop_unsupported: true to "
            "drop it instead.", "invalid_request_error", param=name,
            code="unsupported_parameter")
    shown = repr(value) if not isinstance(value, (dict, list)) else "this value"
    return GatewayError(
        400, f"Unsupported value: '{name}' does not support {shown} with this model's "
        f"provider ({provider_type}).{why} The model's config can set drop_unsupported: "
        "true to drop it instead.", "invalid_request_error", param=name,
        code="unsupported_value")


def _put(out: dict[str, Any], path: str, value: Any) -> None:
    if "." not in path:
        out[path] = value
        return
    *parents, leaf = path.split(".")
    node = out
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


# --- transforms shared by tables -------------------------------------------------

def number(low: float, high: float) -> Transform:
    """A number within [low, high] (OpenAI's own range for the parameter)."""
    def check(value: Any) -> float | int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError("expected a number.")
        if not low <= value <= high:
            raise ValueError(f"expected a number between {low:g} and {high:g}, got {value}.")
        return value
    return check


def string_list(value: Any) -> list[str]:
    """`stop`: a string or a list of strings → a list."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError("expected a string or an array of strings.")


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("expected a positive integer.")
    return value


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer.")
    return value


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string.")
    return value
