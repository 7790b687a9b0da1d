"""The escape hatch: a system spoken by a Python plugin (protocol: plugin) over a wire no
mapping describes (a line protocol on raw TCP), with everything else declared."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest

from adapters.declared.registry import load_registry
from adapters.declared.system import DeclaredSystem
from adapters.errors import BadResponse, NotFound, Unavailable
from adapters.resilience import Endpoint
from tests.harness import REPO, free_ports
from tests.plugins.device_line import DeviceServer
from tests.test_systems_units import line_of, problems_of

DEVICES = REPO / "tests" / "systems" / "devices"
HANDSETS = {
    "356938035643809": {
        "imei": "356938035643809",
        "msisdn": "13800138000",
        "model": "Mate 60",
        "lastSeen": "2026-12-01T08:00:00Z",
    },
    "490154203237518": {"imei": "490154203237518", "msisdn": "+8613900139000", "model": "P70"},
}


def _system(url: str, plugin: str | None = None, tmp_path=None) -> DeclaredSystem:
    folder = DEVICES.parent
    if plugin is not None:
        folder = tmp_path / "systems"
        shutil.copytree(DEVICES, folder / "devices")
        path = folder / "devices" / "system.yaml"
        path.write_text(path.read_text().replace("device_line:engine", f"device_line:{plugin}"))
    spec = load_registry(folder).systems["devices"]
    return DeclaredSystem(spec, {"devices": Endpoint("devices", url, timeout_s=1.0)})


async def test_a_plugin_system_is_read_through_its_mapping():
    server = DeviceServer(HANDSETS)
    async with server as url:
        system = _system(url)
        await system.start()
        found = await system.lookup_msisdns("devicesByMsisdn", ["+86 138 0013 8000", "13900139000"])
        assert sorted(f.record["imei"] for f in found) == sorted(HANDSETS)
        # MSISDNs reach the plugin in E.164 and come back normalised by the field's type.
        assert server.requests[0] == "FIND +8613800138000,+8613900139000"
        assert {f.record["msisdn"] for f in found} == {"+8613800138000", "+8613900139000"}
        read = await system.read_by_keys("devices", [("devices", "356938035643809")])
        device = read[("devices", "356938035643809")]
        assert device["model"] == "Mate 60"
        assert device["lastSeen"] == datetime(2026, 12, 1, 8, tzinfo=UTC)
        with pytest.raises(NotFound):
            await system.read_by_keys("devices", [("devices", "000000000000000")])
        await system.close()


async def test_what_the_plugin_raises_becomes_the_taxonomy_without_its_message(tmp_path):
    server = DeviceServer(HANDSETS)
    async with server as url:
        system = _system(url)
        with pytest.raises(NotFound):
            await system.call_raw("devices", "devices", {"$keys": ["0"], "$key": "0"})
        broken = _system(url, "broken", tmp_path)
        with pytest.raises(BadResponse) as raised:
            await broken.lookup_msisdns("devicesByMsisdn", ["13800138000"])
        assert "RuntimeError" in str(raised.value) and "13800000000" not in str(raised.value)
    (port,) = free_ports(1)
    down = _system(f"tcp://127.0.0.1:{port}")
    with pytest.raises(Unavailable):
        await down.lookup_msisdns("devicesByMsisdn", ["13800138000"])


def test_a_plugin_reference_that_does_not_load_is_refused_at_its_line(tmp_path):
    folder = tmp_path / "systems"
    shutil.copytree(DEVICES, folder / "devices")
    path = folder / "devices" / "system.yaml"
    path.write_text(path.read_text().replace("device_line:engine", "device_lines:engine"))
    (problem,) = problems_of(folder)
    assert "plugin module 'tests.plugins.device_lines' cannot be imported" in problem
    path.write_text(path.read_text().replace("device_lines:engine", "device_line:engin"))
    (problem,) = problems_of(folder)
    assert problem.startswith(f"{path}:")
    assert "is not a callable" in problem
    path.write_text(
        path.read_text().replace("protocol: plugin\n", "protocol: rest\ncontract: api.json\n")
    )
    assert any("plugin is for protocol: plugin" in p for p in problems_of(folder))
    assert line_of(path, "protocol: rest") > 0
