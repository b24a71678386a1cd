"""Typed, bounded reads of the parsed TOML: every message names file, line and key."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

from gated.config.locator import Locator, TomlPath, dotted
from gated.config.schema import GPIO_MAX, GPIO_MIN
from gated.errors import ConfigError

# --------------------------------------------------------------------------
# Typed, bounded reads (Klipper's ConfigWrapper, for nested TOML tables)
# --------------------------------------------------------------------------

REQUIRED: Any = object()


def show(value: Any) -> str:
    """A value as the technician would have written it in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:56] + '..."'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    return f"a {type(value).__name__}"  # dates and times


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


def _header(path: TomlPath, array: bool = False) -> str:
    name = ".".join(str(part) for part in path if isinstance(part, str))
    return f"[[{name}]]" if array else f"[{name}]"


def _num(x: float) -> str:
    return f"{x:g}"


class Context:
    """What every section of one load shares: the file, its lines, claimed resources."""

    def __init__(self, file: str, locator: Locator, base_dir: Path, check_files: bool) -> None:
        self.file = file
        self.locator = locator
        self.base_dir = base_dir
        self.check_files = check_files
        self._claims: dict[str, TomlPath] = {}

    def fail(self, path: TomlPath, message: str) -> NoReturn:
        line = self.locator.line_of(path) or 1
        raise ConfigError(f"{self.file}:{line}: {dotted(path)}: {message}")

    def claim(self, resource: str, path: TomlPath, advice: str) -> None:
        """Record that `path` uses `resource`; refuse a second user, naming the first."""
        first = self._claims.setdefault(resource, path)
        if first != path:
            where = self.locator.line_of(first)
            self.fail(path, f"{resource} is already used by {dotted(first)} (line {where}); {advice}")

    def resolve(self, raw: str) -> Path:
        path = Path(raw)
        return path if path.is_absolute() else self.base_dir / path


class Section:
    """One TOML table, read through typed getters that name the key on failure.

    `allowed` lists every key the table may hold; anything else is refused up
    front, before a misspelt key can surface as a confusing "missing" error.
    `allowed=None` is a free-form table (colors, zones) whose keys are data.
    """

    def __init__(
        self, ctx: Context, path: TomlPath, data: dict[str, Any], allowed: Iterable[str] | None
    ) -> None:
        self.ctx = ctx
        self.path = path
        self.data = data
        self._allowed = None if allowed is None else tuple(allowed)
        if self._allowed is not None:
            for key in data:
                if key not in self._allowed:
                    kind = "table" if _is_table(data[key]) else "key"
                    self.fail(key, f"unknown {kind}; allowed here: {', '.join(self._allowed)}")

    def fail(self, key: str | None, message: str) -> NoReturn:
        self.ctx.fail(self.path if key is None else self.path + (key,), message)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str, default: Any, what: str) -> tuple[Any, bool]:
        if self._allowed is not None and key not in self._allowed:
            raise KeyError(f"{dotted(self.path + (key,))} is read but not in the allowed keys")
        if key in self.data:
            return self.data[key], True
        if default is REQUIRED:
            self.fail(key, f"required key is missing: expected {what}")
        return default, False

    def get_int(
        self,
        key: str,
        default: Any = REQUIRED,
        minval: int | None = None,
        maxval: int | None = None,
        what: str = "an integer",
    ) -> Any:
        if minval is not None and maxval is not None:
            what = f"{what} {minval}..{maxval}"
        elif minval is not None:
            what = f"{what} >= {minval}"
        elif maxval is not None:
            what = f"{what} <= {maxval}"
        value, present = self._get(key, default, what)
        if not present:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected {what}, got {show(value)}")
        if (minval is not None and value < minval) or (maxval is not None and value > maxval):
            self.fail(key, f"expected {what}, got {show(value)}")
        return value

    def get_float(
        self,
        key: str,
        default: Any = REQUIRED,
        minval: float | None = None,
        maxval: float | None = None,
        above: float | None = None,
    ) -> Any:
        bounds = []
        if above is not None:
            bounds.append(f"> {_num(above)}")
        if minval is not None and maxval is not None and above is None:
            what = f"a number {_num(minval)}..{_num(maxval)}"
        else:
            if minval is not None:
                bounds.append(f">= {_num(minval)}")
            if maxval is not None:
                bounds.append(f"<= {_num(maxval)}")
            what = "a number" + (" " + " and ".join(bounds) if bounds else "")
        value, present = self._get(key, default, what)
        if not present:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"expected {what}, got {show(value)}")
        number = float(value)
        if (
            number != number  # nan
            or (minval is not None and number < minval)
            or (maxval is not None and number > maxval)
            or (above is not None and number <= above)
        ):
            self.fail(key, f"expected {what}, got {show(value)}")
        return number

    def get_str(
        self,
        key: str,
        default: Any = REQUIRED,
        choices: Iterable[str] | None = None,
        pattern: re.Pattern[str] | None = None,
        what: str = "a non-empty string",
    ) -> Any:
        if choices is not None:
            choices = tuple(choices)
            what = "one of " + ", ".join(json.dumps(c) for c in choices)
        value, present = self._get(key, default, what)
        if not present:
            return value
        if (
            not isinstance(value, str)
            or not value
            or (choices is not None and value not in choices)
            or (pattern is not None and not pattern.fullmatch(value))
        ):
            self.fail(key, f"expected {what}, got {show(value)}")
        return value

    def get_bool(self, key: str, default: Any = REQUIRED) -> Any:
        value, present = self._get(key, default, "true or false")
        if present and not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {show(value)}")
        return value

    def get_path(self, key: str, default: Any = REQUIRED, must_exist: bool = False) -> Any:
        """A file path, resolved against the config file's directory.

        With `must_exist`, the file is checked only when the load asked for
        `check_files`: the daemon does, a config check on a laptop need not.
        """
        if key not in self.data and default is not REQUIRED:
            return None if default is None else self.ctx.resolve(str(default))
        path = self.ctx.resolve(self.get_str(key, what="a path"))
        if must_exist and self.ctx.check_files and not path.is_file():
            self.fail(key, f"file not found: {path}")
        return path

    def get_str_list(
        self, key: str, default: Any = REQUIRED, pattern: re.Pattern[str] | None = None,
        what: str = "a non-empty string",
    ) -> Any:
        full = f"a non-empty array of strings ({what} each)"
        value, present = self._get(key, default, full)
        if not present:
            return value
        if not isinstance(value, list) or not value:
            self.fail(key, f"expected {full}, got {show(value)}")
        for item in value:
            if not isinstance(item, str) or (pattern is not None and not pattern.fullmatch(item)):
                self.fail(key, f"expected {full}, got {show(item)} in the array")
        return tuple(value)

    def get_pin(self, key: str, default: Any = REQUIRED) -> Any:
        pin = self.get_int(key, default, GPIO_MIN, GPIO_MAX, what="an integer GPIO pin")
        if pin is not None:
            self.ctx.claim(f"GPIO {pin}", self.path + (key,), "each pin drives or reads one thing")
        return pin

    def section(self, key: str, allowed: Iterable[str] | None, required: bool = False) -> Section | None:
        what = f"a table {_header(self.path + (key,))}"
        value, present = self._get(key, None, what)
        if not present:
            if required:
                self.fail(key, f"required table {_header(self.path + (key,))} is missing")
            return None
        if not isinstance(value, dict):
            self.fail(key, f"expected {what}, got {show(value)}")
        return Section(self.ctx, self.path + (key,), value, allowed)

    def section_or_empty(self, key: str, allowed: Iterable[str]) -> Section:
        """A table whose keys all have defaults: absent reads as empty."""
        return self.section(key, allowed) or Section(self.ctx, self.path + (key,), {}, allowed)

    def sections(self, key: str, allowed: Iterable[str]) -> list[Section]:
        """An array of tables, `[[key]]`; absent means empty."""
        value, present = self._get(key, None, "")
        if not present:
            return []
        header = _header(self.path + (key,), array=True)
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.fail(key, f"expected an array of tables {header}, got {show(value)}")
        return [Section(self.ctx, self.path + (key, i), item, allowed) for i, item in enumerate(value)]


