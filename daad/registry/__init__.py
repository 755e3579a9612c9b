"""The registry core: the source catalogue, the manifests, where files live, the queries and
leak-free views over all records, and the checks on them (validate, exclusion, audit, dedup).

``from daad.registry import Registry, RegistryView`` is the entry point; the classes load on
first use, so that importing one of the package's modules (the catalogue, say) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daad.registry.registry import Registry, RegistryView

__all__ = ["Registry", "RegistryView"]


def __getattr__(name: str):
    if name in __all__:
        from daad.registry import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'daad.registry' has no attribute {name!r}")
