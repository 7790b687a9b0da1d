"""wrk as the load generator: a separate C process, so the load itself costs the cores little.

The Python generator in `bench/load.py` shares the interpreter's time with its own httpx
client, which on a 2-core machine takes a large part of what the gateway could use. wrk runs
one OS thread with an event loop per thread and costs a fraction of that. It is optional:
`available()` says whether it is installed, and the benchmark falls back to `load.py`.

Every run is bounded by time (`-d`) and by a request budget (the Lua script stops each thread
once its share is spent), so a load test always stops by itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

WRK = shutil.which("wrk")

# The script cycles through the request bodies, counts answers that are not HTTP 200 or that
# carry GraphQL errors, stops a thread when its budget is spent, and prints one JSON line.
SCRIPT = r"""
local bodies = {%(bodies)s}
local headers = {%(headers)s}
local budget = %(budget)d
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  sent = 0
  answered = 0
  bad = 0
  cursor = id
end

function request()
  cursor = cursor + 1
  sent = sent + 1
  return wrk.format("POST", "%(path)s", headers, bodies[(cursor %% #bodies) + 1])
end

function response(status, response_headers, body)
  answered = answered + 1
  if status ~= 200 or string.find(body, '"errors"', 1, true) then
    bad = bad + 1
  end
  if answered >= budget then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local bad_total = 0
  for _, thread in ipairs(threads) do
    bad_total = bad_total + thread:get("bad")
  end
  io.write(string.format(
    'WRK_JSON {"requests": %%d, "duration_us": %%d, "bad": %%d, "socket_errors": %%d, ' ..
    '"p50_us": %%d, "p95_us": %%d, "p99_us": %%d, "mean_us": %%f}\n',
    summary.requests, summary.duration, bad_total,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean))
end
"""


def available() -> bool:
    return WRK is not None


def _lua_string(text: str) -> str:
    # A long bracket string never needs escaping as long as its closing level is unused.
    level = "="
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


def run_wrk(
    url: str,
    headers: dict[str, str],
    bodies: list[dict],
    *,
    connections: int,
    duration_s: float,
    max_requests: int,
    threads: int = 1,
) -> dict[str, float]:
    """Drive POSTs of `bodies` (cycled) at `url`; returns the same summary as LoadResult."""
    if WRK is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    parts = urlsplit(url)
    all_headers = {"Content-Type": "application/json", **headers}
    script = SCRIPT % {
        "bodies": ", ".join(_lua_string(json.dumps(b, separators=(",", ":"))) for b in bodies),
        "headers": ", ".join(
            f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in all_headers.items()
        ),
        "budget": max(1, max_requests // threads),
        "path": parts.path or "/",
    }
    with tempfile.TemporaryDirectory() as folder:
        script_path = Path(folder) / "load.lua"
        script_path.write_text(script)
        completed = subprocess.run(
            [
                WRK,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(duration_s))}s",
                "--latency",
                "--timeout",
                "30s",
                "-s",
                str(script_path),
                f"{parts.scheme}://{parts.netloc}",
            ],
            capture_output=True,
            text=True,
            timeout=duration_s + 60,
            check=True,
        )
    line = next((x for x in completed.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:  # wrk exits 0 even when its script fails to load
        raise RuntimeError(f"wrk reported nothing: {completed.stderr.strip()[-500:]}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    seconds = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "errors": raw["bad"] + raw["socket_errors"],
        "throughput_rps": round(raw["requests"] / seconds, 1) if seconds else 0.0,
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p95_ms": round(raw["p95_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "mean_ms": round(raw["mean_us"] / 1000, 2),
    }
