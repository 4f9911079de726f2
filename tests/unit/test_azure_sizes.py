"""The built-in facts of GPU sizes (used while the Resource SKUs API is denied) agree with the
catalog of real sizes the offline cloud serves, and cover every GPU size in it."""

from __future__ import annotations

from fakes import skus
from provisioner.cloud.azure.sizes import KNOWN_SIZES, known_size


def test_the_table_agrees_with_the_catalog() -> None:
    compared = 0
    for facts in KNOWN_SIZES.values():
        sku = skus.get_sku(facts.name)
        if sku is None:
            continue
        compared += 1
        assert (facts.family, facts.vcpus, facts.memory_gib, facts.gpus) == (
            sku.family,
            sku.vcpus,
            sku.memory_gib,
            sku.gpus,
        ), facts.name
    assert compared >= 10


def test_every_gpu_size_of_the_catalog_is_in_the_table() -> None:
    missing = [s.name for s in skus.all_skus() if s.is_gpu and known_size(s.name) is None]
    assert missing == []


def test_lookups_ignore_case_and_know_nothing_of_other_sizes() -> None:
    a100 = known_size("standard_nc24ads_a100_v4")
    assert a100 is not None and a100.gpus == 1 and a100.zones == ()
    assert known_size("Standard_D4s_v3") is None
