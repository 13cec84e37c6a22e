"""Recipe configuration: one dataclass per paper, overridden from a notebook or ``--set key=value``.

Every recipe's config class calls ``override_fields`` so the command line, config.json and notebooks
parse values the same way (bools, ints, floats, strings, tuples of numbers or of names).
"""
from __future__ import annotations

import re
from dataclasses import fields, replace
from typing import Any, Iterable, Mapping, TypeVar

C = TypeVar("C")


def parse_value(value: Any, current: Any, key: str) -> Any:
    """Convert ``value`` (a string from the command line, or JSON) to the type of ``current``."""
    if not isinstance(value, str):
        return tuple(value) if isinstance(current, tuple) else value
    text = value.strip()
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(current, tuple):
            parts = [p for p in re.split(r"[,\s]+", text.strip("()[] ")) if p]
            if current and all(isinstance(x, str) for x in current):
                return tuple(parts)             # names, e.g. selected_attrs=Blond_Hair,Male
            return tuple(float(p) for p in parts)
        return type(current)(text)  # int, float or str
    except ValueError:
        raise ValueError(f"{key}={value!r}: expected a {type(current).__name__}") from None


def override_fields(config: C, changes: Mapping[str, Any] | Iterable[str], what: str) -> C:
    """A copy of the dataclass ``config`` with fields replaced from a mapping or ``key=value`` items.

    Unknown keys are an error that lists the valid ones; ``-`` in keys reads as ``_``.
    """
    if not isinstance(changes, Mapping):
        pairs = [item.split("=", 1) for item in changes]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError(f"expected key=value items, got {list(changes)!r}")
        changes = dict(pairs)
    names = [f.name for f in fields(config)]
    updates = {}
    for key, value in changes.items():
        key = key.strip().replace("-", "_")
        if key not in names:
            raise ValueError(f"unknown {what} setting {key!r}; choose from {', '.join(names)}")
        updates[key] = parse_value(value, getattr(config, key), key)
    return replace(config, **updates)
