"""What this process's own listings and writes say of which agent pool names may exist."""

from __future__ import annotations

from provisioner.cloud.azure.cache import PoolNames


def test_nothing_is_surely_absent_before_a_listing() -> None:
    assert not PoolNames().surely_absent("ws1")


def test_a_name_missing_from_the_listing_is_absent_until_written() -> None:
    names = PoolNames()
    names.listed(names.listing_started(), ["nodepool1", "ws1"])
    assert not names.surely_absent("ws1")
    assert names.surely_absent("ws2")
    names.written("ws2")  # a PUT may have created it, whatever its answer said
    assert not names.surely_absent("ws2")


def test_a_write_during_a_listing_is_not_forgotten_by_it() -> None:
    names = PoolNames()
    started = names.listing_started()
    names.written("ws2")  # the listing may or may not include it
    names.listed(started, ["nodepool1"])
    assert not names.surely_absent("ws2")
    # A listing begun after the write is the authority: ws2 is not there (its PUT was refused).
    names.listed(names.listing_started(), ["nodepool1"])
    assert names.surely_absent("ws2")


def test_an_older_listing_finishing_last_keeps_later_writes() -> None:
    names = PoolNames()
    old = names.listing_started()
    new = names.listing_started()
    names.written("ws3")
    names.listed(new, ["nodepool1", "ws3"])
    names.listed(old, ["nodepool1"])  # read before ws3 was made
    assert not names.surely_absent("ws3")
