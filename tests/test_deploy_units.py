"""deploy/trader.service and trader-record.service: systemd accepts them, and they keep the
directives we rely on."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RECORD_UNIT = DEPLOY / "trader-record.service"
RUN_UNIT = DEPLOY / "trader.service"
_SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

EXPECTED_RECORD = {
    "Type": "notify",
    "NotifyAccess": "main",
    "WatchdogSec": "60",
    "Restart": "on-failure",
    "RestartSec": "5",
    "TimeoutStopSec": "30",
    "DynamicUser": "yes",
    "StateDirectory": "trader-record",
    "ConfigurationDirectory": "trader",
    "EnvironmentFile": "-/etc/trader/trader.env",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "SystemCallFilter": "@system-service",
    "SystemCallArchitectures": "native",
    "MemoryMax": "512M",
    "LockPersonality": "yes",
    "RestrictRealtime": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
}


EXPECTED_RUN = EXPECTED_RECORD | {
    "StateDirectory": "trader",
    "WorkingDirectory": "%S/trader",
    "Environment": "TRADER_DATABASE__URL=sqlite+aiosqlite:////var/lib/trader/trader.db",
    "MemoryMax": "2G",
}
UNITS = {RECORD_UNIT: EXPECTED_RECORD, RUN_UNIT: EXPECTED_RUN}


def _service_section(unit: Path) -> dict[str, str]:
    # Unit files are INI-like; none of ours repeats a key, so configparser reads them faithfully.
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text(encoding="utf-8"))
    return dict(parser["Service"])


@pytest.mark.parametrize("unit", list(UNITS), ids=lambda unit: unit.name)
def test_unit_sets_every_required_directive_when_parsed(unit: Path) -> None:
    """The service section holds the notify, restart, state and hardening directives."""
    service = _service_section(unit)
    expected = UNITS[unit]
    assert {key: service.get(key) for key in expected} == expected


def test_unit_runs_the_recorder_into_the_state_directory_when_started() -> None:
    """ExecStart runs `trader record` with --out under the unit's StateDirectory."""
    exec_start = _service_section(RECORD_UNIT)["ExecStart"].split()
    assert exec_start[:3] == ["/usr/bin/env", "trader", "record"]
    out = exec_start[exec_start.index("--out") + 1]
    assert out in {"%S/trader-record/recordings", "${STATE_DIRECTORY}/recordings"}


def test_daemon_unit_runs_trader_run_in_its_state_directory() -> None:
    """ExecStart is `trader run`; the default relative database lands in the state directory."""
    service = _service_section(RUN_UNIT)
    assert service["ExecStart"].split() == ["/usr/bin/env", "trader", "run"]
    assert service["WorkingDirectory"] == "%S/" + service["StateDirectory"]


@pytest.mark.skipif(_SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", list(UNITS), ids=lambda unit: unit.name)
def test_systemd_analyze_reports_no_errors_when_verifying_the_unit(
    unit: Path, tmp_path: Path
) -> None:
    """`systemd-analyze verify` finds nothing wrong with the unit (its binary made to exist)."""
    text = unit.read_text(encoding="utf-8")
    # `trader` need not be installed on this machine; verify the rest with a binary that is.
    lines = [
        "ExecStart=/usr/bin/env true" if line.startswith("ExecStart=") else line
        for line in text.splitlines()
    ]
    copy = tmp_path / unit.name
    copy.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert _SYSTEMD_ANALYZE is not None
    result = subprocess.run(
        [_SYSTEMD_ANALYZE, "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Other units installed on the host may draw warnings; only ours must be clean.
    ours = [line for line in result.stderr.splitlines() if unit.name in line]
    assert ours == [], result.stderr
    assert result.returncode == 0, result.stderr
