"""An inventory's YAML, read safely: line numbers kept for every key, bounded.

YAML is parsed to nodes (``yaml.compose``, safe loader) and turned into plain values here,
so every key path keeps its line for error messages. Input is bounded: a file over
``MAX_BYTES``, more than ``MAX_NODES`` values once aliases are expanded (an "alias
bomb"), an alias that contains itself, a tag the safe loader does not know
(``!!python/...``) or a NUL character is one InventoryError naming the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from releasebook.errors import InventoryError

MAX_BYTES = 1_000_000
MAX_NODES = 20_000
_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class _Walk:
    def __init__(self, where: Path) -> None:
        self.where = where
        self.lines: dict[str, int] = {}
        self.nodes = 0
        self.open: set[int] = set()  # the nodes being converted: an alias to one recurses

    def error(self, node: yaml.Node, message: str) -> InventoryError:
        return InventoryError(f"{self.where}:{node.start_mark.line + 1}: {message}")

    def value(self, node: yaml.Node, path: str) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            top = re.split(r"[.\[]", path, maxsplit=1)[0] or "(top)"
            raise self.error(
                node,
                f"{top}: more than {MAX_NODES} values once aliases are expanded; "
                "an inventory is not that big",
            )
        if id(node) in self.open:
            raise self.error(node, f"{path or '(top)'}: an alias that contains itself")
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            if node.tag not in _PLAIN_TAGS:
                raise self.error(node, f"{path or '(top)'}: YAML tag {node.tag!r} is not allowed")
            self.open.add(id(node))
            try:
                return (
                    self._mapping(node, path)
                    if isinstance(node, yaml.MappingNode)
                    else [self.value(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
                )
            finally:
                self.open.discard(id(node))
        try:
            value = yaml.SafeLoader("").construct_object(node)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise self.error(node, f"{path or '(top)'}: {problem}") from None
        if isinstance(value, str) and "\0" in value:
            # No shell word or file name can hold it: the value would silently change.
            raise self.error(node, f"{path}: contains a NUL character")
        return value

    def _mapping(self, node: yaml.MappingNode, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if not isinstance(key_node, yaml.ScalarNode) or not isinstance(key, str):
                raise self.error(key_node, f"{path or '(top)'}: expected string keys")
            child = f"{path}.{key}" if path else key
            if key in out:
                raise self.error(key_node, f"{child}: duplicate key")
            out[key] = self.value(value_node, child)
            self.lines[child] = key_node.start_mark.line + 1  # the key, not its value
        return out


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The inventory as plain values, and the line of every key path."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise InventoryError(f"{path}: inventory file not found") from None
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read inventory: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise InventoryError(f"{path}: larger than {MAX_BYTES} bytes; not an inventory")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise InventoryError(f"{path}{line}: YAML syntax error: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"{path}: YAML syntax error: {exc}") from None
    if node is None:
        raise InventoryError(f"{path}: inventory is empty; expected a mapping with 'hosts'")
    walk = _Walk(path)
    data = walk.value(node, "")
    if not isinstance(data, dict):
        raise InventoryError(f"{path}:1: expected a mapping at the top level")
    return data, walk.lines
