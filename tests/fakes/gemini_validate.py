"""Request validation of the fake Gemini API, as strict as the real one.

`validate` returns None for a good `generateContent` body, else the message of
the 400 `INVALID_ARGUMENT` the API answers (its own wording where known).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

TOP_LEVEL = frozenset({"contents", "tools", "toolConfig", "safetySettings", "systemInstruction",
                       "generationConfig", "cachedContent"})
DATA_FIELDS = ("text", "inlineData", "functionCall", "functionResponse", "fileData",
               "executableCode", "codeExecutionResult")
PART_FIELDS = frozenset({*DATA_FIELDS, "thought", "thoughtSignature", "videoMetadata"})
GEN_CONFIG = frozenset({
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema",
    "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed",
    "presencePenalty", "frequencyPenalty", "responseLogprobs", "logprobs", "thinkingConfig",
    "responseModalities", "mediaResolution"})
FN_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$")
SIGNATURE_NEEDED = (
    "Function call is missing a thought_signature in functionCall parts. This is required "
    "for tools to work correctly, and missing thought_signature may lead to degraded model "
    "performance. Additional data, function call `default_api:{name}` , position {pos}. "
    "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.")





def _unknown(name: str, where: str) -> str:
    return f'Invalid JSON payload received. Unknown name "{name}" at \'{where}\': Cannot find field.'


def validate(body: dict[str, Any], model: str, signatures: set[str]) -> str | None:
    for key in body:
        if key not in TOP_LEVEL:
            return f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified\n"
    system = body.get("systemInstruction")
    if system is not None:
        problem = _parts(system.get("parts") if isinstance(system, dict) else None,
                         "system_instruction")
        if problem:
            return problem
    for i, content in enumerate(contents):
        if not isinstance(content, dict):
            return f"* GenerateContentRequest.contents[{i}]: expected an object\n"
        for key in content:
            if key not in ("role", "parts"):
                return _unknown(key, f"contents[{i}]")
        if content.get("role") not in (None, "user", "model"):
            return (f"Please use a valid role: user, model. (contents[{i}].role = "
                    f"{content.get('role')!r})")
        problem = _parts(content.get("parts"), f"contents[{i}]")
        if problem:
            return problem
    return (_pairing(contents) or _signatures(contents, model, signatures)
            or _config(body.get("generationConfig")) or _tools(body))


def _parts(parts: Any, where: str) -> str | None:
    if not isinstance(parts, list) or not parts:
        return f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.\n"
    for j, part in enumerate(parts):
        if not isinstance(part, dict):
            return f"* GenerateContentRequest.{where}.parts[{j}]: expected an object\n"
        for key in part:
            if key not in PART_FIELDS:
                return _unknown(key, f"{where}.parts[{j}]")
        data = [key for key in DATA_FIELDS if key in part]
        if len(data) != 1:
            return (f"* GenerateContentRequest.{where}.parts[{j}].data: required oneof field "
                    "'data' must have one initialized field\n")
        kind = data[0]
        value = part[kind]
        if kind == "text" and not isinstance(value, str):
            return f"Invalid value at '{where}.parts[{j}].text'"
        if kind == "inlineData":
            if not isinstance(value, dict) or not value.get("mimeType"):
                return f"* GenerateContentRequest.{where}.parts[{j}].inline_data.mime_type: required\n"
            try:
                base64.b64decode(value.get("data") or "", validate=True)
            except (binascii.Error, ValueError):
                return (f"Invalid value at '{where}.parts[{j}].inline_data.data' (TYPE_BYTES), "
                        "Base64 decoding failed")
        if kind == "functionCall" and (not isinstance(value, dict) or not isinstance(
                value.get("name"), str) or not isinstance(value.get("args", {}), dict)):
            return f"* GenerateContentRequest.{where}.parts[{j}].function_call.name: required\n"
        if kind == "functionResponse":
            if not isinstance(value, dict) or not isinstance(value.get("name"), str):
                return f"* GenerateContentRequest.{where}.parts[{j}].function_response.name: required\n"
            if not isinstance(value.get("response"), dict):
                return (f"Invalid value at '{where}.parts[{j}].function_response.response' "
                        "(type.googleapis.com/google.protobuf.Struct), expected an object")
    return None


def _pairing(contents: list[dict[str, Any]]) -> str | None:
    for i, content in enumerate(contents):
        calls = sum("functionCall" in p for p in content["parts"])
        if not calls:
            continue
        following = contents[i + 1]["parts"] if i + 1 < len(contents) else None
        if following is None:
            continue
        answers = sum("functionResponse" in p for p in following)
        if answers != calls:
            return ("Please ensure that the number of function response parts is equal to the "
                    "number of function call parts of the function call turn.")
    return None


def _signatures(contents: list[dict[str, Any]], model: str, signatures: set[str]) -> str | None:
    """Gemini 3: in the current turn (since the last user text), each model turn's first
    function call must carry the signature the API issued."""
    if not model.startswith("gemini-3"):
        return None
    start = 0
    for i, content in enumerate(contents):
        if content.get("role") == "user" and any("text" in p for p in content["parts"]):
            start = i
    position = 0
    for content in contents[start:]:
        first = True
        for part in content["parts"]:
            position += 1
            if content.get("role") != "model" or "functionCall" not in part:
                continue
            if first and part.get("thoughtSignature") not in signatures:
                return SIGNATURE_NEEDED.format(name=part["functionCall"]["name"], pos=position)
            first = False
    return None


def _config(config: Any) -> str | None:
    if config is None:
        return None
    for key in config:
        if key not in GEN_CONFIG:
            return _unknown(key, "generation_config")
    stops = config.get("stopSequences")
    if stops is not None and len(stops) > 5:
        return ("* GenerateContentRequest.generation_config.stop_sequences: "
                "stop_sequences must have at most 5 items\n")
    temperature = config.get("temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        return "Unable to submit request because it has a temperature value outside [0.0, 2.0]."
    if not 1 <= config.get("candidateCount", 1) <= 8:
        return "Unable to submit request because candidateCount must be between 1 and 8."
    if "responseJsonSchema" in config and config.get("responseMimeType") != "application/json":
        return "responseMimeType must be application/json when a response schema is set."
    thinking = config.get("thinkingConfig") or {}
    for key in thinking:
        if key not in ("thinkingBudget", "thinkingLevel", "includeThoughts"):
            return _unknown(key, "generation_config.thinking_config")
    if "thinkingBudget" in thinking and "thinkingLevel" in thinking:
        return "thinking_budget and thinking_level are not supported together."
    return None


def _tools(body: dict[str, Any]) -> str | None:
    for k, tool in enumerate(body.get("tools") or []):
        for d, decl in enumerate(tool.get("functionDeclarations") or []):
            if not FN_NAME.match(decl.get("name") or ""):
                return (f"* GenerateContentRequest.tools[{k}].function_declarations[{d}].name: "
                        "Invalid function name.\n")
            if "parameters" in decl and "parametersJsonSchema" in decl:
                return "parameters and parametersJsonSchema cannot both be set."
    mode_config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = mode_config.get("mode", "AUTO")
    if mode not in ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"):
        return f"Invalid value at 'tool_config.function_calling_config.mode' ({mode!r})"
    if mode_config.get("allowedFunctionNames") and mode != "ANY":
        return "allowed_function_names is only allowed when the mode is ANY."
    return None
