"""Find cloud providers by name through installed entry points.

A package adds a cloud by declaring, in its ``pyproject.toml``::

    [project.entry-points."gpu_provisioner.cloud_providers"]
    mycloud = "mypackage.cloud:MyCloud"

where the target is a callable taking a ``ProviderContext`` and returning a ``CloudProvider``
(a class whose ``__init__`` takes the context is fine).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

from provisioner.cloud.provider import CloudProvider, ProviderContext

ENTRY_POINT_GROUP = "gpu_provisioner.cloud_providers"

ProviderFactory = Callable[[ProviderContext], CloudProvider]


class ProviderNotFoundError(LookupError):
    """No installed provider has the requested name."""


class ProviderLoadError(RuntimeError):
    """A provider is installed but could not be imported or started."""


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        # The same distribution can be visible twice (an editable install plus its source tree
        # on sys.path); the first one wins, as it does for imports.
        found.setdefault(ep.name, ep)
    return found


# Providers this project ships as a distribution of their own, left out of the controller's wheel
# and image: name -> how to get it.
SEPARATE_PROVIDERS = {
    "fake": (
        "it is the offline test cloud, shipped separately from the controller as gpu-provisioner-fakes: "
        "install it with `pip install 'gpu-provisioner[fake]'`, or from a source checkout with "
        "`pip install -e ./fakes` (`make venv` does this)"
    ),
}


def unknown_provider_message(name: str) -> str:
    """One line saying that provider ``name`` is not installed and what to do about it."""
    known = ", ".join(available_providers()) or "none"
    hint = SEPARATE_PROVIDERS.get(name)
    if hint is not None:
        return f"cloud provider {name!r} is not installed ({hint}); installed providers: {known}"
    return (
        f"unknown cloud provider {name!r}; installed providers: {known} "
        f"(a provider is a package with an entry point in group {ENTRY_POINT_GROUP!r})"
    )


def available_providers() -> list[str]:
    """Names of the installed providers, sorted."""
    return sorted(_entry_points())


def load_factory(name: str) -> ProviderFactory:
    """Import the factory registered as ``name``."""
    eps = _entry_points()
    ep = eps.get(name)
    if ep is None:
        raise ProviderNotFoundError(unknown_provider_message(name))
    try:
        factory = ep.load()
    except Exception as e:
        raise ProviderLoadError(
            f"cloud provider {name!r} ({ep.value}) failed to import: {type(e).__name__}: {e}"
        ) from e
    if not callable(factory):
        raise ProviderLoadError(f"cloud provider {name!r} ({ep.value}) is not callable")
    loaded: ProviderFactory = factory
    return loaded


def load_provider(name: str, context: ProviderContext) -> CloudProvider:
    """Import provider ``name`` and build it with ``context``."""
    factory = load_factory(name)
    try:
        provider = factory(context)
    except Exception as e:
        raise ProviderLoadError(f"cloud provider {name!r} failed to start: {type(e).__name__}: {e}") from e
    if not isinstance(provider, CloudProvider):
        raise ProviderLoadError(
            f"cloud provider {name!r} returned {type(provider).__name__}, which does not implement "
            "CloudProvider (create, get, list, delete, instance_types, close)"
        )
    return provider
