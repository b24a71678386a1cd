"""Where things are in the config's source text.

tomllib gives no line numbers, so `Locator` re-reads the text to map each
table and key to the line that defines it; every error message starts with
that line.
"""

from __future__ import annotations

import json
import re

MAX_NESTING = 32  # a gate's config needs 3; tomllib gives up somewhere past 300

# --------------------------------------------------------------------------
# Where things are in the source text
# --------------------------------------------------------------------------

# A path names a table or key the way the parsed document nests it:
# ("lane", 1, "relay", "pin") is `pin` in `[lane.relay]` under the 2nd [[lane]].
TomlPath = tuple[str | int, ...]

_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def dotted(path: TomlPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            shown = part if _BARE_KEY_RE.fullmatch(part) else json.dumps(part)
            out += f".{shown}" if out else shown
    return out


class Locator:
    """Maps table and key paths to the line (1-based) that defines them.

    A line scanner, not a TOML parser: it runs on text tomllib has accepted
    (or, for a syntax error, up to the error), tracks multi-line strings and
    arrays so their contents are never mistaken for keys, and counts
    `[[array]]` headers per parent so `[lane.relay]` after the 2nd `[[lane]]`
    maps to ("lane", 1, "relay"). A key inside an inline table maps to the
    line of the inline table, which is the same line.

    It also finds the first line where values or keys nest deeper than
    `MAX_NESTING` (`too_deep`): it runs before tomllib for that, so it must
    (and does) take any text, one line at a time.
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[TomlPath, int] = {}
        self.duplicate: tuple[TomlPath, int, int] | None = None  # path, first line, second line
        self._aot_last: dict[TomlPath, int] = {}
        self._table: TomlPath = ()
        self._in_string: str | None = None  # the closing delimiter of an open multi-line string
        self._depth = 0  # open brackets of a value spanning lines
        self.too_deep: int | None = None
        self._lineno = 0
        for lineno, line in enumerate(text.split("\n"), start=1):
            self._lineno = lineno
            try:
                self._line(lineno, line)
            except (IndexError, ValueError):
                continue  # unparseable line: only reachable on text tomllib refused
            if self.too_deep is not None:
                break  # the file is refused for that; the rest need not be mapped

    def line_of(self, path: TomlPath) -> int | None:
        """The line of `path`, or of its nearest enclosing table or key that has one."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def _register(self, path: TomlPath, lineno: int) -> None:
        first = self.lines.setdefault(path, lineno)
        if first != lineno and self.duplicate is None:
            self.duplicate = (path, first, lineno)

    def _line(self, lineno: int, line: str) -> None:
        pos = 0
        if self._in_string is not None:
            pos = _multiline_string_end(line, 0, self._in_string)
            if pos < 0:
                return
            self._in_string = None
            self._scan_value(line, pos)
            return
        if self._depth > 0:
            self._scan_value(line, 0)
            return
        stripped = line.lstrip()
        pos = len(line) - len(stripped)
        if not stripped or stripped.startswith("#"):
            return
        if stripped.startswith("[["):
            parts, end = _parse_key(line, pos + 2)
            if self._too_deep(len(parts)):
                return
            self._table = self._resolve(parts, append=True)
            self._register(self._table, lineno)
        elif stripped.startswith("["):
            parts, end = _parse_key(line, pos + 1)
            if self._too_deep(len(parts)):
                return
            self._table = self._resolve(parts, append=False)
            self._register(self._table, lineno)
        else:
            parts, end = _parse_key(line, pos)
            if self._too_deep(len(parts)):
                return
            key_path = self._table + tuple(parts)
            self._register(key_path, lineno)
            eq = line.index("=", end)
            self._scan_value(line, eq + 1)

    def _too_deep(self, depth: int) -> bool:
        if depth > MAX_NESTING and self.too_deep is None:
            self.too_deep = self._lineno
        return self.too_deep is not None

    def _resolve(self, parts: list[str], *, append: bool) -> TomlPath:
        path: TomlPath = ()
        for i, part in enumerate(parts):
            path += (part,)
            last = i == len(parts) - 1
            if last and append:
                index = self._aot_last.get(path, -1) + 1
                self._aot_last[path] = index
                path += (index,)
            elif path in self._aot_last:
                path += (self._aot_last[path],)
        return path

    def _scan_value(self, line: str, pos: int) -> None:
        """Advance over a value, tracking brackets and strings that continue past this line."""
        n = len(line)
        while pos < n:
            ch = line[pos]
            if ch == "#":
                return
            if ch in "\"'":
                delim = ch * 3
                if line.startswith(delim, pos):
                    pos = _multiline_string_end(line, pos + 3, delim)
                    if pos < 0:
                        self._in_string = delim
                        return
                    continue
                pos = _skip_string(line, pos)
                continue
            if ch in "[{":
                self._depth += 1
                self._too_deep(self._depth)
            elif ch in "]}":
                self._depth = max(0, self._depth - 1)
            pos += 1


def _multiline_string_end(line: str, pos: int, delim: str) -> int:
    """Where a multi-line string that is open at `pos` ends on this line, or -1."""
    while pos < len(line):
        if line[pos] == "\\" and delim == '"""':
            pos += 2
        elif line.startswith(delim, pos):
            end = pos + 3
            while end < len(line) and end < pos + 5 and line[end] == delim[0]:  # up to two quotes end the content
                end += 1
            return end
        else:
            pos += 1
    return -1


def _skip_string(line: str, pos: int) -> int:
    quote = line[pos]
    pos += 1
    while pos < len(line):
        ch = line[pos]
        if ch == "\\" and quote == '"':
            pos += 2
            continue
        if ch == quote:
            return pos + 1
        pos += 1
    return pos


def _parse_key(line: str, pos: int) -> tuple[list[str], int]:
    """Parse a dotted key at `pos`; returns its parts and the position after it."""
    parts: list[str] = []
    n = len(line)
    while True:
        while pos < n and line[pos] in " \t":
            pos += 1
        if line[pos] in "\"'":
            end = _skip_string(line, pos)
            raw = line[pos + 1 : end - 1]
            if line[pos] == '"':
                try:
                    raw = json.loads(f'"{raw}"')
                except ValueError:
                    pass  # a TOML-only escape (\e, \UXXXXXXXX): the raw text still names it
            parts.append(raw)
            pos = end
        else:
            match = _BARE_KEY_RE.match(line, pos)
            if match is None:
                raise ValueError("no key")
            parts.append(match.group())
            pos = match.end()
        while pos < n and line[pos] in " \t":
            pos += 1
        if pos < n and line[pos] == ".":
            pos += 1
            continue
        return parts, pos
