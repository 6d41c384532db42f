"""Named tables of interchangeable parts (model architectures, loss terms, degradations,
presets): config picks an entry by name, and adding one is adding an entry.

    ARCHS = Registry("model.arch")

    @ARCHS.register("edsr", help="EDSR (Lim et al. 2017)")
    class EDSR(nn.Module): ...

    ARCHS.get("edsr")        # the class; an unknown name raises ValueError naming the known ones
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    item: T
    help: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """An ordered name -> item table. ``kind`` names the config key it serves, for errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, item: T, help: str = "", **meta: Any) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind}: {name!r} is registered twice")
        self._entries[name] = Entry(name, item, help, meta)
        return item

    def register(self, name: str, help: str = "", **meta: Any) -> Callable[[T], T]:
        """Decorator form of ``add``."""

        def deco(item: T) -> T:
            return self.add(name, item, help, **meta)

        return deco

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"{self.kind}: unknown {name!r} (known: {', '.join(self._entries)})") from None

    def get(self, name: str) -> T:
        return self.entry(name).item

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())


def spec_items(spec: str, registry: Registry, what: str) -> list[tuple[str, str]]:
    """``"a:1, b"`` -> [("a", "1"), ("b", "")]: the comma-separated ``name:value`` items of
    a config spec, each name an entry of ``registry`` (lower-cased), none twice. ``what``
    names the items in errors, e.g. "train.loss: unknown term"."""
    items: list[tuple[str, str]] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, value = (x.strip() for x in part.partition(":"))
        name = name.lower()
        if name not in registry:
            raise ValueError(f"{registry.kind}: unknown {what} {name!r} ({', '.join(registry.names())})")
        if any(name == n for n, _ in items):
            raise ValueError(f"{registry.kind}: {name!r} given twice")
        items.append((name, value))
    return items
