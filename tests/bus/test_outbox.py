"""Tests for trader.bus.outbox: order, bounds and the drop policy of the outgoing queue."""

from __future__ import annotations

import itertools

from trader.bus.events import QOS_BY_KIND, EventKind, Outbound
from trader.bus.outbox import Outbox

_ORDER = itertools.count()


def _message(kind: EventKind) -> Outbound:
    order = next(_ORDER)
    return Outbound(
        order=order,
        kind=kind,
        topic=f"t/{kind.value}",
        payload=str(order).encode(),
        qos=QOS_BY_KIND[kind],
        retain=kind is EventKind.STATE,
    )


def _drain(outbox: Outbox) -> list[Outbound]:
    taken = []
    while (message := outbox.take()) is not None:
        taken.append(message)
        outbox.ack(message)
    return taken


def test_messages_leave_in_publish_order_when_classes_interleave() -> None:
    """Telemetry, reliable events and the state leave in the order they were published."""
    outbox = Outbox(telemetry_max=10, reliable_max=10)
    kinds = [EventKind.DECISION, EventKind.ORDER, EventKind.STATE, EventKind.HEARTBEAT]
    published = [_message(kind) for kind in [*kinds, EventKind.FILL]]
    for message in published:
        outbox.put(message)
    assert _drain(outbox) == published
    assert outbox.idle
    assert outbox.acked == len(published)


def test_oldest_telemetry_is_dropped_when_telemetry_is_full() -> None:
    """A full telemetry queue drops its oldest message and counts it; reliable ones stay."""
    outbox = Outbox(telemetry_max=2, reliable_max=10)
    fill = _message(EventKind.FILL)
    outbox.put(fill)
    decisions = [_message(EventKind.DECISION) for _ in range(5)]
    dropped = [outbox.put(message) for message in decisions]
    assert dropped == [None, None, *decisions[:3]]
    assert outbox.telemetry_dropped == 3
    assert _drain(outbox) == [fill, *decisions[3:]]


def test_oldest_reliable_event_is_dropped_only_when_its_bound_is_reached() -> None:
    """QoS 1 events all wait up to `reliable_max`; past it the oldest goes and is counted."""
    outbox = Outbox(telemetry_max=1, reliable_max=3)
    fills = [_message(EventKind.FILL) for _ in range(3)]
    assert [outbox.put(message) for message in fills] == [None, None, None]
    assert outbox.reliable_dropped == 0
    extra = _message(EventKind.RISK)
    assert outbox.put(extra) is fills[0]
    assert outbox.reliable_dropped == 1
    assert _drain(outbox) == [*fills[1:], extra]


def test_newer_state_replaces_waiting_state_when_published_twice() -> None:
    """Only the latest state waits: the broker always gets the current one."""
    outbox = Outbox(telemetry_max=1, reliable_max=1)
    old, new = _message(EventKind.STATE), _message(EventKind.STATE)
    outbox.put(old)
    outbox.put(new)
    assert outbox.state_superseded == 1
    assert _drain(outbox) == [new]


def test_unacknowledged_messages_go_back_in_front_when_requeued() -> None:
    """Messages in flight when the connection broke are sent again, in their original order."""
    outbox = Outbox(telemetry_max=10, reliable_max=10)
    published = [_message(kind) for kind in (EventKind.ORDER, EventKind.DECISION, EventKind.FILL)]
    for message in published:
        outbox.put(message)
    first, second = outbox.take(), outbox.take()
    assert (first, second) == tuple(published[:2])
    later = _message(EventKind.ORDER)
    outbox.put(later)
    assert outbox.in_flight == 2
    outbox.requeue_unacked()
    assert outbox.in_flight == 0
    assert _drain(outbox) == [*published, later]


def test_requeued_state_is_discarded_when_a_newer_state_waits() -> None:
    """A state lost in flight is not resent over a newer one."""
    outbox = Outbox(telemetry_max=1, reliable_max=1)
    old = _message(EventKind.STATE)
    outbox.put(old)
    assert outbox.take() is old
    new = _message(EventKind.STATE)
    outbox.put(new)
    outbox.requeue_unacked()
    assert _drain(outbox) == [new]
