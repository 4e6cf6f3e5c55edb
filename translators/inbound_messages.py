"""An Anthropic Messages request → the one internal request (an OpenAI chat body).

`/v1/messages` (proxy/server/messages.py) runs the same pipeline as chat:
limits, budgets, routing and every non-Anthropic translator read this chat
body. An Anthropic upstream never sees it: it gets the client's own body
(translators/inbound_messages_native.py). Translation is therefore lenient:
what has no chat form is recorded as a problem (translators/
inbound_messages_content.py) and only raised when an attempt goes to another
upstream. docs/messages.md has the whole mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.core.errors import GatewayError
from translators.inbound_messages_content import Problems, map_messages

#: top-level fields with no effect on what a chat upstream should answer: not sent.
#: context_management only ever removes context (old tool results, thinking) to save
#: tokens; another upstream gets the whole conversation instead.
IGNORED = frozenset({"stream", "service_tier", "cache_control", "speed", "diagnostics",
                     "context_management"})
#: fields only Anthropic can honour; left out (a 400 unless the model drops them)
ANTHROPIC_ONLY = {
    "container": "containers are an Anthropic server-side feature.",
    "mcp_servers": "remote MCP servers are called by Anthropic's API itself.",
    "inference_geo": "inference regions are chosen by Anthropic's API.",
}
#: output_config.effort → reasoning_effort
EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
#: Anthropic param names for the chat names a translator's 400 may quote
PARAM_NAMES = {"max_tokens": "max_tokens", "max_completion_tokens": "max_tokens",
               "stop": "stop_sequences", "reasoning_effort": "thinking",
               "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
               "user": "metadata.user_id", "response_format": "output_config.format",
               "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
               "tools": "tools", "tool_choice": "tool_choice"}


@dataclass(slots=True)
class Translated:
    """The chat body, and what it could not carry (see `Problems`)."""

    chat: dict[str, Any]
    strict: GatewayError | None = None
    optional: GatewayError | None = None
    #: thinking was asked for with a budget: a model that cannot reason must refuse it
    #: (adaptive thinking and `effort` are hints such a model simply goes without)
    thinking_required: bool = False


def translate(body: dict[str, Any]) -> Translated:
    """`body` has a string `model` and a list `messages` (the handler checked them)."""
    problems = Problems()
    chat: dict[str, Any] = {"model": body["model"]}
    messages: list[dict[str, Any]] = []
    system = _system(body.get("system"), problems)
    if system:
        messages.append({"role": "system", "content": system})
    messages += map_messages(body["messages"], problems)
    chat["messages"] = messages
    if body.get("stream") is True:
        chat["stream"] = True
    for name, value in body.items():
        if value is None or name in IGNORED or name in ("model", "messages", "system"):
            continue
        handler = _FIELDS.get(name)
        if handler is not None:
            handler(value, chat, problems)
        elif name in ANTHROPIC_ONLY:
            problems.left_out(name, ANTHROPIC_ONLY[name])
        elif name != "thinking":
            problems.left_out(name, "this parameter is unknown to the gateway's translation.")
    if "tools" not in chat and chat.get("tool_choice") in ("auto", "none"):
        chat.pop("tool_choice")  # every tool was Anthropic's own: nothing left to choose
        chat.pop("parallel_tool_calls", None)
    effort = _effort(body.get("thinking"), body.get("output_config"), problems)
    if effort is not None:
        chat["reasoning_effort"] = effort
    thinking = body.get("thinking")
    required = isinstance(thinking, dict) and thinking.get("type") == "enabled"
    return Translated(chat, problems.strict, problems.optional, required)


def _system(system: Any, problems: Problems) -> str | None:
    """A string, or text blocks joined by blank lines (cache_control is a hint: dropped)."""
    if system is None or isinstance(system, str):
        return system
    if isinstance(system, list):
        texts = []
        for j, block in enumerate(system):
            if isinstance(block, dict) and block.get("type") == "text" \
                    and isinstance(block.get("text"), str):
                texts.append(block["text"])
            else:
                problems.cannot(f"system.{j}", "expected a text block.")
        return "\n\n".join(t for t in texts if t)
    problems.cannot("system", "expected a string or an array of text blocks.")
    return None


def _max_tokens(value: Any, chat: dict[str, Any], problems: Problems) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        chat["max_tokens"] = value
    elif value == 0 and not isinstance(value, bool):
        problems.cannot("max_tokens", "0 (warming the prompt cache) needs Anthropic.")
    else:
        problems.cannot("max_tokens", "expected an integer of at least 1.")


def _number(name: str, low: float, high: float):
    def put(value: Any, chat: dict[str, Any], problems: Problems) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and low <= value <= high:
            chat[name] = value
        else:
            problems.cannot(name, f"expected a number from {low:g} to {high:g}.")
    return put


def _top_k(value: Any, chat: dict[str, Any], problems: Problems) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        chat["top_k"] = value
    else:
        problems.cannot("top_k", "expected a positive integer.")


def _stop(value: Any, chat: dict[str, Any], problems: Problems) -> None:
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        if value:
            chat["stop"] = list(value)
    else:
        problems.cannot("stop_sequences", "expected an array of strings.")


def _metadata(value: Any, chat: dict[str, Any], problems: Problems) -> None:
    if not isinstance(value, dict):
        problems.cannot("metadata", "expected an object.")
    elif isinstance(value.get("user_id"), str) and value["user_id"]:
        chat["user"] = value["user_id"]


def _tools(value: Any, chat: dict[str, Any], problems: Problems) -> None:
    if not isinstance(value, list):
        problems.cannot("tools", "expected an array.")
        return
    tools = []
    for k, tool in enumerate(value):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in (None, "custom"):
            problems.left_out(f"tools.{k}", f"'{kind}' is a tool that Anthropic runs itself.")
            continue
        name, schema = (tool.get("name"), tool.get("input_schema")) \
            if isinstance(tool, dict) else (None, None)
        if not isinstance(name, str) or not name or not isinstance(schema, dict):
            problems.cannot(f"tools.{k}", "expected a tool with a 'name' and an "
                                          "'input_schema' object.")
            continue
        function: dict[str, Any] = {"name": name, "parameters": schema}
        if isinstance(tool.get("description"), str) and tool["description"]:
            function["description"] = tool["description"]
        if tool.get("strict") is True:
            function["strict"] = True
        tools.append({"type": "function", "function": function})
    if tools:
        chat["tools"] = tools


def _tool_choice(value: Any, chat: dict[str, Any], problems: Problems) -> None:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "auto":
        choice: Any = "auto"
    elif kind == "any":
        choice = "required"
    elif kind == "none":
        choice = "none"
    elif kind == "tool" and isinstance(value.get("name"), str):
        choice = {"type": "function", "function": {"name": value["name"]}}
    else:
        problems.cannot("tool_choice", "expected a type of 'auto', 'any', 'tool' (with a "
                                       "'name') or 'none'.")
        return
    chat["tool_choice"] = choice
    if value.get("disable_parallel_tool_use") is True and kind != "none":
        chat["parallel_tool_calls"] = False


def _output_config(value: Any, chat: dict[str, Any], problems: Problems) -> None:
    if not isinstance(value, dict):
        problems.cannot("output_config", "expected an object.")
        return
    fmt = value.get("format")
    if fmt is None:
        return
    schema = fmt.get("schema") if isinstance(fmt, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" \
            or not isinstance(schema, dict):
        problems.cannot("output_config.format", "expected {'type': 'json_schema', "
                                                "'schema': {...}}.")
        return
    chat["response_format"] = {"type": "json_schema",
                               "json_schema": {"name": "output", "schema": schema,
                                               "strict": True}}


def _effort(thinking: Any, output_config: Any, problems: Problems) -> str | None:
    """`output_config.effort`, else `thinking`, as OpenAI's reasoning_effort: a budget
    under 4096 tokens is low, under 16384 medium, more high; adaptive is medium."""
    effort = output_config.get("effort") if isinstance(output_config, dict) else None
    if effort is not None:
        if isinstance(effort, str) and effort in EFFORTS:
            return EFFORTS[effort]
        problems.cannot("output_config.effort", f"unknown effort {effort!r}.")
    if thinking is None:
        return None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled":
        return None
    if kind == "adaptive":
        return "medium"
    budget = thinking.get("budget_tokens") if kind == "enabled" else None
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        problems.cannot("thinking", "expected {'type': 'enabled', 'budget_tokens': N}, "
                                    "'adaptive' or 'disabled'.")
        return None
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


_FIELDS = {
    "max_tokens": _max_tokens,
    "temperature": _number("temperature", 0, 1),
    "top_p": _number("top_p", 0, 1),
    "top_k": _top_k,
    "stop_sequences": _stop,
    "metadata": _metadata,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "output_config": _output_config,
}
