"""Run names (`--run`): checked when the replay options are built, before any database work."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from trader.config import Settings
from trader.errors import ConfigError
from trader.persistence import repository
from trader.persistence.database import make_engine
from trader.persistence.models import MAX_RUN_ID_CHARS
from trader.replay.runner import ReplayOptions, replay

SAMPLE = Path(__file__).resolve().parents[2] / "trader" / "sample_data" / "BTCUSDT_5m.csv.gz"
#: Twenty bars into the sample: enough to create and finish a run, quickly.
TO_MS = int(datetime(2025, 6, 18, 18, 45, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("r" * (MAX_RUN_ID_CHARS + 1), f"at most {MAX_RUN_ID_CHARS}"),
        ("", "must not be empty"),
        ("first\nsecond", "control characters"),
    ],
    ids=["too_long", "empty", "line_break"],
)
def test_options_refuse_the_run_name_when_the_database_cannot_hold_it(
    name: str, fragment: str
) -> None:
    """A name longer than `runs.id`, empty, or with a line break is a `--run` usage error."""
    with pytest.raises(ConfigError, match=fragment) as raised:
        ReplayOptions(sources=(SAMPLE,), run_name=name)
    assert raised.value.key == "--run"


@pytest.mark.postgres
async def test_replay_stores_the_run_when_its_name_has_the_longest_allowed_length(
    postgres_url: str,
) -> None:
    """A name of exactly `MAX_RUN_ID_CHARS` characters fits PostgreSQL's `runs.id`."""
    name = "r" * MAX_RUN_ID_CHARS
    settings = Settings(database={"url": postgres_url}, strategy={"name": "random"})
    outcome = await replay(settings, ReplayOptions(sources=(SAMPLE,), to_ms=TO_MS, run_name=name))
    db = make_engine(postgres_url)
    try:
        run = await repository.get_run(db, name)
    finally:
        await db.dispose()
    assert outcome.results.run_id == name
    assert run is not None
    assert run.ended_at is not None
