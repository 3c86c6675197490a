"""Discovery of pruning methods through the ``benchsuite.methods`` entry-point group.

The built-in methods register through the same group as any third-party plugin, so the
harness never imports a method by name. A plugin that fails to load is reported and
skipped; it never hides the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points

from .method import PruningMethod

GROUP = "benchsuite.methods"


class UnknownMethod(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class BrokenPlugin:
    name: str
    target: str
    error: str


@dataclass(frozen=True)
class Registry:
    methods: dict[str, type[PruningMethod]]
    sources: dict[str, str]  # method name → distribution that provides it
    broken: tuple[BrokenPlugin, ...]


def discover() -> Registry:
    methods: dict[str, type[PruningMethod]] = {}
    sources: dict[str, str] = {}
    broken: list[BrokenPlugin] = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, PruningMethod)):
                raise TypeError(f"{ep.value} is not a benchsuite.method.PruningMethod subclass")
            if getattr(cls, "name", None) != ep.name:
                raise TypeError(
                    f"entry point {ep.name!r} loads a method named {cls.__dict__.get('name')!r}"
                )
        except Exception as exc:  # noqa: BLE001 - any plugin error is reported, not raised
            broken.append(BrokenPlugin(ep.name, ep.value, f"{type(exc).__name__}: {exc}"))
            continue
        if ep.name in methods:
            broken.append(BrokenPlugin(ep.name, ep.value, "duplicate method name"))
            continue
        methods[ep.name] = cls
        sources[ep.name] = ep.dist.name if ep.dist is not None else "?"
    return Registry(methods, sources, tuple(broken))


@cache
def registry() -> Registry:
    return discover()


def list_methods() -> list[str]:
    return sorted(registry().methods)


def get_method(name: str) -> type[PruningMethod]:
    methods = registry().methods
    if name not in methods:
        raise UnknownMethod(f"unknown method {name!r}; registered: {', '.join(sorted(methods))}")
    return methods[name]
