"""Reading untrusted YAML into typed values, collecting every problem with its path.

A config mistake must stop start-up with one line per problem naming the field
(`models.gpt-4o.targets[1].provider: unknown provider 'azure-us'`), never a
traceback. `Section` reads one mapping and remembers which keys it consumed,
so typos are reported as unknown fields instead of being ignored.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

#: `${VAR}`, `${VAR:-default}`, or `${file:/run/secrets/name}` (a container's or an
#: orchestrator's secret file); one pass, so a value read in is never read again
_REF = re.compile(r"\$\{(?:file:([^}]+)|([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?)\}")
#: a secret file bigger than this is a mistake (a whole directory's tarball, a log)
MAX_SECRET_FILE = 65536
#: lists whose items may each be an unset `${VAR}` (a pool leaves that credential out)
_LENIENT_LISTS = frozenset({"api_keys"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
#: deeper than any real config; a YAML alias that contains itself is infinitely deep
MAX_DEPTH = 32
#: values read in all (aliases count every time they are used: a "billion laughs"
#: file is refused instead of being expanded)
MAX_NODES = 200_000


@dataclass(frozen=True, slots=True)
class MissingEnv:
    """A value that was exactly `${VAR}` with VAR unset: the field decides."""

    var: str


_CAUSES = ("environment variable", "cannot read secret file", "secret file ")


class Problems(list):
    """Every problem found, each `path: message`; also the secret files read (a
    watcher reloads when one of them changes)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.files: list[str] = []

    def add(self, path: str, message: str) -> None:
        # An unset variable (or unreadable secret file) is the one problem of its field:
        # what the emptied value then fails (a URL without host, '') is only noise.
        if path and any(p.startswith(f"{path}: {cause}") for p in self for cause in _CAUSES):
            return
        self.append(f"{path}: {message}" if path else message)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


class _Budget:
    """How many more values `interpolate` may read."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_NODES


class TooLarge(Exception):
    """The document is nested too deeply or holds too many values to be a config."""


def interpolate(node: Any, env: Mapping[str, str], problems: Problems, path: str = "",
                depth: int = 0, budget: _Budget | None = None, base: Path | None = None,
                lenient: bool = False) -> Any:
    """Replace `${VAR}`, `${VAR:-default}` and `${file:PATH}` in every string scalar (a
    relative PATH is read from `base`, the config file's folder). Raises TooLarge past
    MAX_DEPTH levels or MAX_NODES values (self-referencing or exploding aliases)."""
    budget = budget or _Budget()
    budget.left -= 1
    if depth > MAX_DEPTH:
        raise TooLarge(f"{path.split('.')[0].split('[')[0]}: nested more than {MAX_DEPTH} "
                       "levels deep (a YAML alias that contains itself?)")
    if budget.left < 0:
        raise TooLarge(f"more than {MAX_NODES} values, counting each use of a YAML alias")
    if isinstance(node, dict):
        return {k: interpolate(v, env, problems, join(path, str(k)), depth + 1, budget, base,
                               lenient=str(k) in _LENIENT_LISTS)
                for k, v in node.items()}
    if isinstance(node, list):
        items = [interpolate(v, env, problems, join(path, i), depth + 1, budget, base)
                 for i, v in enumerate(node)]
        return items if lenient else [_item(v, problems, join(path, i))
                                      for i, v in enumerate(items)]
    if not isinstance(node, str) or "${" not in node:
        return node
    whole = _REF.fullmatch(node)
    if whole and whole.group(2) and whole.group(3) is None and not env.get(whole.group(2)):
        return MissingEnv(whole.group(2))

    def substitute(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return read_secret_file(match.group(1), base, problems, path)
        name, default = match.group(2), match.group(3)
        value = env.get(name)
        if value:
            return value
        if default is not None:
            return default
        problems.add(path, f"environment variable {name} is not set")
        return ""

    return _REF.sub(substitute, node)


def read_secret_file(name: str, base: Path | None, problems: Problems, path: str) -> str:
    """The file's text without surrounding whitespace (secret files mostly end in a
    newline). Read on every load, so a reload picks up a rotated secret. A file that
    cannot be read is a problem of its field, never an empty secret; the message names
    the file, never what it holds."""
    file = Path(name.strip())
    if not file.is_absolute() and base is not None:
        file = base / file
    problems.files.append(str(file))
    try:
        if not stat.S_ISREG(os.stat(file).st_mode):  # a FIFO or a device would never end
            problems.add(path, f"secret file {file} is not a regular file")
            return ""
        with open(file, "rb") as handle:
            data = handle.read(MAX_SECRET_FILE + 1)
    except OSError as exc:
        problems.add(path, f"cannot read secret file {file}: {exc.strerror or exc}")
        return ""
    if len(data) > MAX_SECRET_FILE:
        problems.add(path, f"secret file {file} is larger than {MAX_SECRET_FILE} bytes")
        return ""
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        problems.add(path, f"secret file {file} is not UTF-8 text")
        return ""
    if not text:
        problems.add(path, f"secret file {file} is empty")
    return text


def _item(value: Any, problems: Problems, path: str) -> Any:
    """A list item is no field that could decide what an unset `${VAR}` means: an error."""
    if isinstance(value, MissingEnv):
        problems.add(path, f"environment variable {value.var} is not set")
        return ""
    return value


def parse_duration(value: Any) -> float | None:
    """`5s`, `0.25s`, `5m`, `250ms`, or a bare number of seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if 0 <= value < math.inf else None
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            number = float(match.group(1)) * _UNITS[match.group(2)]
            return number if number < math.inf else None
    return None


_MISSING = object()


class Section:
    """One mapping of the config, read field by field."""

    def __init__(self, raw: Any, path: str, problems: Problems) -> None:
        self.path = path
        self.problems = problems
        self.ok = isinstance(raw, dict)
        # A non-mapping is reported once here, not again as each field "is required".
        self._wrong = raw is not None and not self.ok
        if self._wrong:
            problems.add(path, f"must be a mapping, got {_kind(raw)}")
        self.raw: dict = raw if self.ok else {}
        self._seen: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.raw

    def _get(self, key: str, required: bool) -> Any:
        self._seen.add(key)
        value = self.raw.get(key, _MISSING)
        if value is _MISSING or value is None:
            if required and not self._wrong:
                self.problems.add(join(self.path, key), "is required")
            return _MISSING
        if isinstance(value, MissingEnv):
            self.problems.add(join(self.path, key), f"environment variable {value.var} is not set")
            return _MISSING
        return value

    def raw_value(self, key: str) -> Any:
        """The value as written (possibly `MissingEnv`), for fields that decide themselves."""
        self._seen.add(key)
        return self.raw.get(key)

    def str(self, key: str, default: Any = None, *, required: bool = False,
            choices: tuple[str, ...] | None = None) -> Any:
        value = self._get(key, required)
        if value is _MISSING:
            return default
        if not isinstance(value, str) or not value:
            self.problems.add(join(self.path, key), f"must be a non-empty string, got {_kind(value)}")
            return default
        if choices and value not in choices:
            self.problems.add(join(self.path, key),
                              f"must be one of {', '.join(choices)}; got '{value}'")
            return default
        return value

    def number(self, key: str, default: Any = None, *, minimum: float = 0,
               integer: bool = False, required: bool = False) -> Any:
        value = self._get(key, required)
        if value is _MISSING:
            return default
        wanted = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted) or not (
                minimum <= value < math.inf):  # NaN and infinity are no setting
            kind = "an integer" if integer else "a number"
            self.problems.add(join(self.path, key), f"must be {kind} >= {minimum:g}, got {value!r}")
            return default
        return value

    def duration(self, key: str, default: float | None) -> float | None:
        value = self._get(key, False)
        if value is _MISSING:
            return default
        seconds = parse_duration(value)
        if seconds is None:
            self.problems.add(join(self.path, key),
                              f"must be a duration like 5s, 250ms or 2m, got {value!r}")
            return default
        return seconds

    def bool(self, key: str, default: bool) -> bool:
        value = self._get(key, False)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.problems.add(join(self.path, key), f"must be true or false, got {value!r}")
            return default
        return value

    def section(self, key: str) -> "Section":
        self._seen.add(key)
        return Section(self.raw.get(key), join(self.path, key), self.problems)

    def names(self, key: str) -> tuple[str, ...]:
        """A list of non-empty strings (model names, for instance)."""

        def name(value: Any, path: str) -> str | None:
            if isinstance(value, str) and value:
                return value
            self.problems.add(path, f"must be a non-empty string, got {_kind(value)}")
            return None

        return tuple(v for v in self.list(key, name) if v is not None)

    def list(self, key: str, item: Callable[[Any, str], Any] | None = None) -> list:
        value = self._get(key, False)
        if value is _MISSING:
            return []
        if not isinstance(value, list):
            self.problems.add(join(self.path, key), f"must be a list, got {_kind(value)}")
            return []
        if item is None:
            return value
        return [item(v, join(join(self.path, key), i)) for i, v in enumerate(value)]

    def finish(self) -> None:
        """Report every key nobody read: a typo must not pass silently."""
        for key in self.raw:
            if key not in self._seen:
                self.problems.add(join(self.path, str(key)), "unknown field")


def _kind(value: Any) -> str:
    if isinstance(value, MissingEnv):
        return f"unset ${{{value.var}}}"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "nothing"}.get(type(value),
                                                                           type(value).__name__)
