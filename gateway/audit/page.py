"""The auditors' web page: static HTML and a little JS, served by the gateway, no CDN.

The page holds nothing: it asks for the auditor's key and sends it with every call it makes
to /graphql (auditLog, auditVerification), where the key is authenticated and the role
checked like any other caller's; a non-auditor key gets FORBIDDEN, and the call is recorded.
The key stays in the page's memory (not in storage, not in the URL).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

HEADERS = {
    # Only this origin's script and fetches; the page may not be framed; no key in referrers.
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Switchboard access log</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
 fieldset { border: 1px solid #ccc; margin-bottom: 1em; }
 table { border-collapse: collapse; width: 100%; }
 th, td { border-bottom: 1px solid #ddd; padding: 3px 6px; text-align: left; font-size: 12px; }
 #chain-status[data-ok="true"] { color: #176117; }
 #chain-status[data-ok="false"] { color: #a11; font-weight: bold; }
 #error { color: #a11; }
 code { font-size: 11px; }
</style>
</head>
<body>
<h1>Access log</h1>
<fieldset>
 <legend>Auditor key</legend>
 <input id="api-key" type="password" size="60" autocomplete="off" placeholder="sb_...">
 <button id="connect">Open the log</button>
</fieldset>
<fieldset>
 <legend>Search</legend>
 <select id="search-kind">
  <option value="customerId">customer id (cus_...)</option>
  <option value="principal">principal (subject)</option>
 </select>
 <input id="search-value" size="40">
 <label><input id="clear-only" type="checkbox"> clear disclosures only</label>
 <button id="search">Search</button>
 <button id="more" hidden>More</button>
</fieldset>
<p id="chain-status">Chain not checked yet.</p>
<p id="error" role="alert"></p>
<table id="records">
 <thead><tr><th>seq</th><th>time</th><th>principal</th><th>role</th><th>channel</th>
 <th>purpose</th><th>operation</th><th>outcome</th><th>clear fields</th><th>backends</th>
 </tr></thead>
 <tbody></tbody>
</table>
<script src="/audit/app.js"></script>
</body>
</html>
"""

SCRIPT = r"""
"use strict";
(function () {
  let key = "";
  let filter = {};
  let after = null;
  const $ = (id) => document.getElementById(id);

  async function call(query, variables) {
    const response = await fetch("/graphql", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Api-Key": key },
      body: JSON.stringify({ query: query, variables: variables || {} }),
    });
    const body = await response.json();
    if (body.errors && body.errors.length) {
      const e = body.errors[0];
      throw new Error(((e.extensions && e.extensions.code) || "ERROR") + ": " + e.message);
    }
    return body.data;
  }

  function showError(error) { $("error").textContent = error ? String(error.message) : ""; }

  async function verify() {
    // From the latest trustworthy signed checkpoint to the head (not the whole chain).
    const data = await call("query { auditVerification { ok checked lastSeq headHash anchor "
      + "signatures keyId startedFrom { kind seq time } findings { kind seq detail } } }");
    const v = data.auditVerification;
    const status = $("chain-status");
    status.dataset.ok = String(v.ok);
    const from = v.startedFrom
      ? "the " + v.startedFrom.kind + " checkpoint at seq " + v.startedFrom.seq
        + " (signed " + v.startedFrom.time + ")"
      : "the start of the log";
    status.dataset.fromSeq = v.startedFrom ? String(v.startedFrom.seq) : "0";
    status.dataset.signatures = v.signatures;
    // Without a pinned key the hub checked its checkpoints with its own key file: say so.
    const trust = v.signatures === "TRUSTED"
      ? " Signatures checked with the pinned key " + v.keyId + "."
      : " Signatures UNTRUSTED: checked only with the hub's own key file (pin "
        + "audit.trusted_public_key_file, or run `switchboard audit verify --public-key`).";
    if (v.ok) {
      status.textContent = "Chain verified: " + v.checked + " records walked since " + from
        + "; head " + (v.headHash || "-").slice(0, 16) + "…." + trust;
    } else {
      status.textContent = "Chain NOT verified: " + v.findings.map(
        (f) => f.kind + " at seq " + f.seq + " (" + f.detail + ")").join("; ") + trust;
    }
  }

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    row.appendChild(td);
  }

  async function load(reset) {
    if (reset) { after = null; $("records").tBodies[0].replaceChildren(); }
    const data = await call("query($f: AuditFilter, $after: String) { auditLog(filter: $f, "
      + "first: 50, after: $after) { nodes { seq time subject role channel purpose "
      + "operationType operationName outcome code refusedCount windowEnd backends "
      + "disclosed { path level } } "
      + "pageInfo { hasNextPage endCursor } } }", { f: filter, after: after });
    const body = $("records").tBodies[0];
    for (const r of data.auditLog.nodes) {
      const row = document.createElement("tr");
      row.dataset.seq = r.seq;
      cell(row, r.seq); cell(row, r.time); cell(row, r.subject); cell(row, r.role);
      cell(row, r.channel); cell(row, r.purpose);
      cell(row, [r.operationType, r.operationName].filter(Boolean).join(" "));
      cell(row, r.outcome + (r.code ? " (" + r.code + ")" : "")
        + (r.refusedCount != null ? " x" + r.refusedCount + " until " + r.windowEnd : ""));
      cell(row, r.disclosed.filter((d) => d.level === "CLEAR").map((d) => d.path).join(", "));
      cell(row, r.backends.join(", "));
      body.appendChild(row);
    }
    after = data.auditLog.pageInfo.endCursor;
    $("more").hidden = !data.auditLog.pageInfo.hasNextPage;
  }

  async function run(action) {
    showError(null);
    try { await action(); } catch (error) { showError(error); }
  }

  $("connect").addEventListener("click", () => run(async () => {
    key = $("api-key").value.trim();
    filter = {};
    await verify();
    await load(true);
  }));
  $("search").addEventListener("click", () => run(async () => {
    filter = { clearOnly: $("clear-only").checked };
    const value = $("search-value").value.trim();
    if (value) { filter[$("search-kind").value] = value; }
    await load(true);
  }));
  $("more").addEventListener("click", () => run(() => load(false)));
})();
"""


async def audit_page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE, headers=HEADERS)


async def audit_script(request: Request) -> Response:
    return Response(SCRIPT, media_type="text/javascript", headers=HEADERS)
