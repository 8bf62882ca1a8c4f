"""The one YAML reader for files a user hands unetkit (training configs): PyYAML's `SafeLoader` (plain data,
no Python objects), made strict where plain YAML is dangerous or ambiguous:

- the text is at most `MAX_BYTES` long (a training config is a few hundred bytes);
- aliases (`*name`, and with them `<<` merge keys) are refused: each alias may repeat a whole subtree, so a
  kilobyte of them ("billion laughs") expands to gigabytes when the data is printed, copied or checked;
- a key given twice in one mapping is refused (PyYAML keeps the last one silently: `epochs: 1` then
  `epochs: 999` would train for 999 epochs);
- nesting deeper than `MAX_DEPTH` is refused.

Each refusal is a `ValueError` naming the source and the line.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["MAX_BYTES", "MAX_DEPTH", "safe_load"]

MAX_BYTES = 1 << 20  # 1 MiB
MAX_DEPTH = 50


class _Refused(yaml.YAMLError):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message, self.line = message, line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases, duplicate keys or deep nesting."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(
                f"YAML aliases (*{event.anchor}) are not accepted in a config; write the value out",
                event.start_mark.line + 1,
            )
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key (a list): SafeLoader reports it
                continue
            if first is not None:
                raise _Refused(f"key {str(key)[:80]!r} is given twice (first at line {first})", line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def safe_load(text: str, *, source: str) -> Any:
    """The YAML document in `text` as plain data; `None` for an empty one.

    Raises:
        ValueError: too long, malformed (with the line), an alias, a duplicate key or too deep, naming `source`.
    """
    if len(text) > MAX_BYTES:
        raise ValueError(f"{source}: {len(text):,} characters; a config may hold at most {MAX_BYTES:,}")
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _Refused as err:
        raise ValueError(f"{source}: line {err.line}: {err.message}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{source}: malformed YAML{where}") from err
    except RecursionError as err:
        raise ValueError(f"{source}: YAML nested too deeply") from err
