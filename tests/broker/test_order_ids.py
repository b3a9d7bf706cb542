"""Deterministic client order ids: Bybit's orderLinkId rule and collision resistance."""

from __future__ import annotations

import itertools

import pytest

from trader.order_ids import LEGS, client_order_id, is_valid_client_order_id


def test_id_is_identical_when_inputs_repeat() -> None:
    """The same run, symbol, bar and leg always give the same id (a retry reuses it)."""
    first = client_order_id("run-1", "BTCUSDT", 1_750_000_200_000, "open")
    assert client_order_id("run-1", "BTCUSDT", 1_750_000_200_000, "open") == first


@pytest.mark.parametrize("leg", sorted(LEGS))
def test_id_satisfies_bybit_rule_when_inputs_are_long(leg: str) -> None:
    """Ids stay within 36 characters of [A-Za-z0-9_-] whatever the run id looks like."""
    value = client_order_id(
        "a very long run id / with spaces & ünïcode" * 3, "1000PEPEUSDT", 0, leg
    )
    assert len(value) <= 36
    assert is_valid_client_order_id(value)
    assert value.startswith(f"{leg}-")


@pytest.mark.parametrize(
    "other",
    [
        ("run-2", "BTCUSDT", 1_750_000_200_000, "open"),
        ("run-1", "ETHUSDT", 1_750_000_200_000, "open"),
        ("run-1", "BTCUSDT", 1_750_000_500_000, "open"),
        ("run-1", "BTCUSDT", 1_750_000_200_000, "close"),
    ],
)
def test_id_differs_when_any_input_differs(other: tuple[str, str, int, str]) -> None:
    """Changing any one input changes the id."""
    assert client_order_id("run-1", "BTCUSDT", 1_750_000_200_000, "open") != client_order_id(*other)


def test_ids_do_not_collide_when_many_are_generated() -> None:
    """Twenty thousand ids over runs, symbols, bars and legs are all distinct."""
    ids = {
        client_order_id(run, symbol, bar * 300_000, leg)
        for run, symbol, bar, leg in itertools.product(
            ["r1", "r2"],
            ["BTCUSDT", "ETHUSDT"],
            range(1_000),
            ["open", "close", "sl", "tp", "reduce"],
        )
    }
    assert len(ids) == 2 * 2 * 1_000 * 5


def test_id_separates_fields_when_they_contain_separators() -> None:
    """Fields are encoded unambiguously, so shifting text between them changes the id."""
    assert client_order_id("a|b", "c", 0, "open") != client_order_id("a", "b|c", 0, "open")


@pytest.mark.parametrize("leg", ["", "takeprofit", "Open", "o-pen"])
def test_id_rejects_leg_when_it_breaks_the_format(leg: str) -> None:
    """Legs must be 1-7 lower-case letters, digits or underscores."""
    with pytest.raises(ValueError, match="leg"):
        client_order_id("run-1", "BTCUSDT", 0, leg)
