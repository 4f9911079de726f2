"""Example gpu-provisioner cloud plugin: an in-memory cloud (entry point ``inmemory-example``)."""

from inmemory_cloud.provider import CATALOG, InMemoryCloud

__all__ = ["CATALOG", "InMemoryCloud"]
