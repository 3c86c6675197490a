"""One registry pattern for methods, models, datasets and presets (docs/extending.md).

Each kind is a table of names, filled from its entry-point group (``benchsuite.methods``,
``benchsuite.models``, ``benchsuite.datasets``, ``benchsuite.presets``) the first time it is
read. The built-ins register through the same groups as any third-party plugin, so the harness
never imports one by name. A plugin that fails to load is reported and skipped; it never hides
the others. ``register`` adds an entry at run time (tests, notebooks; such an entry lives in
this process only, so Ray workers see entry points, not it).

A name holding ``<field>`` parts is a template: ``wrn-<depth>-<width>`` matches ``wrn-28-10``,
and ``get`` hands the entry the matched text as keyword arguments (``depth="28"``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R", bound="Registry[Any]")

_FIELD = re.compile(r"<(\w+)>")


class UnknownName(KeyError):
    """A name no entry of the kind has; the message names the valid choices."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class BrokenPlugin:
    name: str
    target: str
    error: str
    group: str


class Registry(Generic[T]):
    """A table of one kind of named thing: list (``names``), ``get``, ``register``."""

    def __init__(self, kind: str, group: str, check: Callable[[str, Any], T]) -> None:
        self.kind = kind  # "method", "model", ... (for messages)
        self.group = group
        self._check = check  # validates (and may wrap) an entry; raises to refuse it
        self.entries: dict[str, T] = {}
        self.sources: dict[str, str] = {}  # name → distribution (or module) providing it
        self.broken: list[BrokenPlugin] = []

    def register(self, name: str, entry: Any, source: str = "__main__") -> T:
        """Add ``entry`` under ``name``; a second entry of one name is refused."""
        if name in self.entries:
            raise ValueError(f"{self.kind} {name!r} is already registered by {self.sources[name]}")
        checked = self._check(name, entry)
        self.entries[name] = checked
        self.sources[name] = source
        return checked

    def load(self, points: list[EntryPoint]) -> Registry[T]:
        """Register every entry point of the group; one that fails is kept in ``broken``."""
        for ep in sorted(points, key=lambda e: e.name):
            source = ep.dist.name if ep.dist is not None else "?"
            try:
                self.register(ep.name, ep.load(), source)
            except Exception as exc:  # noqa: BLE001 - any plugin error is reported, not raised
                error = f"{type(exc).__name__}: {exc}"
                if ep.name in self.entries:
                    error = f"duplicate {self.kind} name"
                self.broken.append(BrokenPlugin(ep.name, ep.value, error, ep.group))
        return self

    def names(self) -> list[str]:
        return sorted(self.entries)

    def choices(self) -> str:
        return ", ".join(self.names())

    def get(self, name: str) -> T:
        """The entry called ``name``, or a template's entry with its fields bound."""
        if _FIELD.search(name):
            raise UnknownName(f"{self.kind} {name!r} is a template: fill in each <field>")
        if name in self.entries:
            return self.entries[name]
        for template, entry in sorted(self.entries.items()):
            fields = _match(template, name)
            if fields is not None:
                return partial(entry, **fields)  # type: ignore[return-value, arg-type]
        failed = [b.error for b in self.broken if b.name == name]
        why = f" (its plugin failed to load: {failed[0]})" if failed else ""
        hint = f"choose from {self.choices()}"
        if not self.entries:  # not even the built-ins: their entry points are not installed
            hint = f"no {self.kind} is registered at all; reinstall benchsuite (pip install -e .)"
        raise UnknownName(f"unknown {self.kind} {name!r}{why}; {hint}")


def _match(template: str, name: str) -> dict[str, str] | None:
    """The fields of ``template`` matched in ``name``, or None (also for a plain name)."""
    if "<" not in template:
        return None
    parts = _FIELD.split(template)  # literal, field, literal, field, ..., literal
    pattern = "".join(
        f"(?P<{part}>.+?)" if i % 2 else re.escape(part) for i, part in enumerate(parts)
    )
    found = re.fullmatch(pattern, name)
    return found.groupdict() if found else None


def callable_entries(kind: str, what: str) -> Callable[[str, Any], Callable[..., Any]]:
    """The check of a table whose entries are called (a model's builder, a dataset's loader)."""

    def check(name: str, entry: Any) -> Callable[..., Any]:
        if not callable(entry):
            raise TypeError(f"{kind} {name!r}: {entry!r} is not a callable {what}")
        return entry

    return check


def discover(table: R) -> R:
    """``table`` filled from the entry points of its group installed now."""
    return table.load(list(entry_points(group=table.group)))
