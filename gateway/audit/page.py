"""The auditors' web page: static HTML and a little JS, served by the gateway, no CDN.

The page holds nothing: it asks for the auditor's key and sends it with every call it makes
(auditLog and auditVerification on /graphql, the export on /audit/export), where the key is
authenticated and the role checked like any other caller's; a non-auditor key gets FORBIDDEN,
and the call is recorded. The key stays in the page's memory (not in storage, not in the URL).

What it offers (docs/audit.md, "The web page"): every filter the API has, pages of a chosen
size with next and previous (cursors), times in the browser's own time zone with the date,
one record's every field on a click, the current filter exported as CSV or JSON lines, and
the chain's verification with the checkpoint it started from. Records hold no personal data
(customers are keyed hashes) and the page shows them as the log holds them.
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

#: Up to audit.max_search_page at its default (200); with a smaller setting the API refuses
#: the larger sizes (BAD_USER_INPUT, shown on the page).
PAGE_SIZES = (10, 25, 50, 100, 200)

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Switchboard access log</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
 fieldset { border: 1px solid #ccc; margin-bottom: 1em; }
 #filters label { display: inline-block; margin: 2px 10px 2px 0; }
 #filters input[type=text] { width: 12em; }
 table { border-collapse: collapse; width: 100%; }
 th, td { border-bottom: 1px solid #ddd; padding: 3px 6px; text-align: left; font-size: 12px;
          vertical-align: top; }
 #records tbody tr { cursor: pointer; }
 #records tbody tr:hover { background: #f3f6fa; }
 #records tbody tr.selected { background: #e3ecf7; }
 td.time { white-space: nowrap; font-variant-numeric: tabular-nums; }
 #chain-status[data-ok="true"] { color: #176117; }
 #chain-status[data-ok="false"] { color: #a11; font-weight: bold; }
 #error { color: #a11; }
 #detail { margin-top: 1em; }
 #detail th { width: 12em; }
 code { font-size: 11px; word-break: break-all; }
</style>
</head>
<body>
<h1>Access log</h1>
<fieldset>
 <legend>Auditor key</legend>
 <input id="api-key" type="password" size="60" autocomplete="off" placeholder="sb_...">
 <button id="connect">Open the log</button>
 <button id="reverify" hidden>Verify the chain again</button>
</fieldset>
<p id="chain-status">Chain not checked yet.</p>
<fieldset id="filters">
 <legend>Filter</legend>
 <label>from <input id="f-from" type="datetime-local" step="1"></label>
 <label>to <input id="f-to" type="datetime-local" step="1"></label>
 <span id="tz-note"></span><br>
 <label>customer id <input id="f-customerId" type="text" placeholder="cus_..."></label>
 <label>principal <input id="f-principal" type="text"></label>
 <label>role <input id="f-role" type="text"></label>
 <label>channel <input id="f-channel" type="text"></label><br>
 <label>operation <input id="f-operation" type="text" placeholder="customerByMsisdn"></label>
 <label>code <input id="f-code" type="text" placeholder="FORBIDDEN"></label>
 <label>purpose <input id="f-purpose" type="text"></label>
 <label>request id <input id="f-requestId" type="text"></label><br>
 <label>outcome <select id="f-decision">
  <option value="">any</option><option value="OK">ok</option>
  <option value="PARTIAL">partial</option><option value="REFUSED">refused</option>
  <option value="ERROR">error</option></select></label>
 <label><input id="f-clearOnly" type="checkbox"> clear disclosures only</label>
 <label>per page <select id="page-size">{{SIZES}}</select></label>
 <button id="search">Search</button>
 <button id="reset">Clear the filter</button>
</fieldset>
<fieldset>
 <legend>Export the current filter</legend>
 <button id="export-csv">CSV</button>
 <button id="export-jsonl">JSON lines</button>
 <span id="export-status"></span>
</fieldset>
<p id="error" role="alert"></p>
<p><button id="prev" disabled>Previous</button> <span id="page-label"></span>
 <button id="next" disabled>Next</button></p>
<table id="records">
 <thead><tr><th>seq</th><th>time</th><th>principal</th><th>role</th><th>channel</th>
 <th>purpose</th><th>operation</th><th>outcome</th><th>clear fields</th><th>backends</th>
 </tr></thead>
 <tbody></tbody>
</table>
<section id="detail" hidden>
 <h2>Record <span id="detail-seq"></span></h2>
 <table id="detail-fields"><tbody></tbody></table>
 <h3>Fields disclosed</h3>
 <table id="detail-disclosed"><thead><tr><th>field path</th><th>level</th></tr></thead>
 <tbody></tbody></table>
</section>
<script src="/audit/app.js"></script>
</body>
</html>
""".replace(
    "{{SIZES}}",
    "".join(f'<option value="{n}"{" selected" * (n == 50)}>{n}</option>' for n in PAGE_SIZES),
)

SCRIPT = r"""
"use strict";
(function () {
  let key = "";
  let filter = {};
  let cursors = [null];  // the cursor of each page seen so far: [page 1 (null), page 2, ...]
  let page = 0;
  let nextCursor = null;
  let shown = [];
  const $ = (id) => document.getElementById(id);
  const TEXT_FILTERS = ["customerId", "principal", "role", "channel", "operation", "code",
    "purpose", "requestId"];
  const RECORD = "seq time requestId outcome code subject role channel partner credentialId "
    + "purpose operationType operationName documentSha256 customers policyVersion backends "
    + "latencyMs hash source refusedCount windowEnd disclosed { path level }";

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

  const two = (n) => String(n).padStart(2, "0");
  function offsetText(d) {
    const minutes = -d.getTimezoneOffset();
    const sign = minutes < 0 ? "-" : "+";
    const m = Math.abs(minutes);
    return "UTC" + sign + two(Math.floor(m / 60)) + ":" + two(m % 60);
  }
  // An RFC 3339 time from the API in the browser's time zone, with the date, to the second.
  function localTime(text) {
    if (!text) { return ""; }
    const d = new Date(text);
    return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + " "
      + two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds()) + " "
      + offsetText(d);
  }
  // A datetime-local field (the auditor's wall clock) as RFC 3339 with the offset.
  function fieldTime(id) {
    const value = $(id).value;
    return value ? new Date(value).toISOString() : null;
  }

  async function verify() {
    // From the latest trustworthy signed checkpoint to the head (not the whole chain).
    const data = await call("query { auditVerification { ok checked lastSeq headHash anchor "
      + "signatures keyId startedFrom { kind seq time } findings { kind seq detail } } }");
    const v = data.auditVerification;
    const status = $("chain-status");
    status.dataset.ok = String(v.ok);
    const from = v.startedFrom
      ? "the " + v.startedFrom.kind + " checkpoint at seq " + v.startedFrom.seq
        + " (signed " + localTime(v.startedFrom.time) + ")"
      : "the start of the log";
    status.dataset.fromSeq = v.startedFrom ? String(v.startedFrom.seq) : "0";
    status.dataset.lastSeq = v.lastSeq == null ? "" : String(v.lastSeq);
    status.dataset.signatures = v.signatures;
    // Without a pinned key the hub checked its checkpoints with its own key file: say so.
    const trust = v.signatures === "TRUSTED"
      ? " Signatures checked with the pinned key " + v.keyId + "."
      : " Signatures UNTRUSTED: checked only with the hub's own key file (pin "
        + "audit.trusted_public_key_file, or run `switchboard audit verify --public-key`).";
    const checked = " Last checkpoint: " + (v.startedFrom
      ? v.startedFrom.kind + " at seq " + v.startedFrom.seq : "none") + "; checked "
      + localTime(new Date().toISOString()) + ".";
    if (v.ok) {
      status.textContent = "Chain verified: " + v.checked + " records walked since " + from
        + " up to seq " + (v.lastSeq == null ? "-" : v.lastSeq) + "; head "
        + (v.headHash || "-").slice(0, 16) + "…." + trust + checked;
    } else {
      status.textContent = "Chain NOT verified: " + v.findings.map(
        (f) => f.kind + " at seq " + f.seq + " (" + f.detail + ")").join("; ") + trust + checked;
    }
    $("reverify").hidden = false;
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (className) { td.className = className; }
    row.appendChild(td);
    return td;
  }

  function outcomeText(r) {
    return r.outcome.toLowerCase() + (r.code ? " (" + r.code + ")" : "")
      + (r.refusedCount != null ? " x" + r.refusedCount + " until " + localTime(r.windowEnd) : "");
  }

  async function load() {
    const size = Number($("page-size").value);
    const data = await call("query($f: AuditFilter, $first: Int!, $after: String) { "
      + "auditLog(filter: $f, first: $first, after: $after) { nodes { " + RECORD + " } "
      + "pageInfo { hasNextPage endCursor } } }",
      { f: filter, first: size, after: cursors[page] });
    const body = $("records").tBodies[0];
    body.replaceChildren();
    $("detail").hidden = true;
    shown = data.auditLog.nodes;
    shown.forEach((r, index) => {
      const row = document.createElement("tr");
      row.dataset.seq = r.seq;
      cell(row, r.seq);
      cell(row, localTime(r.time), "time").title = r.time;  // the UTC value on hover
      cell(row, r.subject); cell(row, r.role);
      cell(row, r.channel); cell(row, r.purpose);
      cell(row, [r.operationType, r.operationName].filter(Boolean).join(" "));
      cell(row, outcomeText(r));
      cell(row, r.disclosed.filter((d) => d.level === "CLEAR").map((d) => d.path).join(", "));
      cell(row, r.backends.join(", "));
      row.addEventListener("click", () => openRecord(index));
      body.appendChild(row);
    });
    nextCursor = data.auditLog.pageInfo.hasNextPage ? data.auditLog.pageInfo.endCursor : null;
    $("next").disabled = nextCursor == null;
    $("prev").disabled = page === 0;
    const table = $("records");
    table.dataset.loads = String(Number(table.dataset.loads || 0) + 1);  // tests wait on it
    $("page-label").textContent = shown.length
      ? "page " + (page + 1) + ": seq " + shown[0].seq + " to " + shown[shown.length - 1].seq
      : "no records";
  }

  function detailRow(body, name, value) {
    const row = document.createElement("tr");
    row.dataset.field = name;
    const th = document.createElement("th");
    th.textContent = name;
    row.appendChild(th);
    const td = document.createElement("td");
    const code = document.createElement("code");
    code.textContent = value == null || value === "" ? "-" : String(value);
    td.appendChild(code);
    row.appendChild(td);
    body.appendChild(row);
  }

  function openRecord(index) {
    const r = shown[index];
    for (const row of $("records").tBodies[0].rows) {
      row.classList.toggle("selected", row.dataset.seq === String(r.seq));
    }
    $("detail-seq").textContent = r.seq;
    const fields = $("detail-fields").tBodies[0];
    fields.replaceChildren();
    detailRow(fields, "seq", r.seq);
    detailRow(fields, "time", localTime(r.time) + "  (" + r.time + ")");
    detailRow(fields, "request id", r.requestId);
    detailRow(fields, "outcome", r.outcome.toLowerCase());
    detailRow(fields, "code", r.code);
    detailRow(fields, "principal", r.subject);
    detailRow(fields, "role", r.role);
    detailRow(fields, "channel", r.channel);
    detailRow(fields, "partner", r.partner);
    detailRow(fields, "credential id", r.credentialId);
    detailRow(fields, "purpose", r.purpose);
    detailRow(fields, "operation type", r.operationType);
    detailRow(fields, "operation name", r.operationName);
    detailRow(fields, "document sha256", r.documentSha256);
    detailRow(fields, "customers (keyed hashes)", r.customers.join(" "));
    detailRow(fields, "policy version", r.policyVersion);
    detailRow(fields, "backends", r.backends.join(", "));
    detailRow(fields, "latency (ms)", r.latencyMs);
    detailRow(fields, "source (keyed hash)", r.source);
    detailRow(fields, "refused count", r.refusedCount);
    detailRow(fields, "window end", r.windowEnd ? localTime(r.windowEnd) + "  (" + r.windowEnd
      + ")" : null);
    detailRow(fields, "hash", r.hash);
    const disclosed = $("detail-disclosed").tBodies[0];
    disclosed.replaceChildren();
    for (const d of r.disclosed) {
      const row = document.createElement("tr");
      row.dataset.path = d.path;
      cell(row, d.path);
      cell(row, d.level.toLowerCase());
      disclosed.appendChild(row);
    }
    $("detail").hidden = false;
  }

  function readFilter() {
    const f = { clearOnly: $("f-clearOnly").checked };
    for (const name of TEXT_FILTERS) {
      const value = $("f-" + name).value.trim();
      if (value) { f[name] = value; }
    }
    const from = fieldTime("f-from");
    const to = fieldTime("f-to");
    if (from) { f.from = from; }
    if (to) { f.to = to; }
    if ($("f-decision").value) { f.decision = $("f-decision").value; }
    return f;
  }

  async function search() {
    filter = readFilter();
    cursors = [null];
    page = 0;
    await load();
  }

  async function exportAs(format) {
    // The same filter as the table, streamed by the gateway; the key goes in a header, so
    // the download is fetched here and handed to the browser as a file.
    const params = new URLSearchParams({ format: format });
    for (const [name, value] of Object.entries(filter)) {
      if (name === "clearOnly") { if (value) { params.set(name, "true"); } }
      else if (name === "decision") { params.set(name, value.toLowerCase()); }
      else { params.set(name, value); }
    }
    $("export-status").textContent = "exporting…";
    const response = await fetch("/audit/export?" + params.toString(),
      { headers: { "X-Api-Key": key } });
    if (!response.ok) {
      $("export-status").textContent = "";
      let message = response.status + "";
      try {
        const e = (await response.json()).errors[0];
        message = e.extensions.code + ": " + e.message;
      } catch (ignored) { /* not JSON */ }
      throw new Error(message);
    }
    const blob = await response.blob();
    const name = (/filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "")
      || [null, "audit." + format])[1];
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
    const status = $("export-status");
    status.dataset.records = response.headers.get("X-Export-Records") || "";
    status.dataset.file = name;
    status.dataset.exports = String(Number(status.dataset.exports || 0) + 1);
    status.textContent = "exported " + status.dataset.records + " record(s) as " + name;
  }

  async function run(action) {
    showError(null);
    try { await action(); } catch (error) { showError(error); }
  }

  $("tz-note").textContent = "(your time zone: " + offsetText(new Date()) + ")";
  $("connect").addEventListener("click", () => run(async () => {
    key = $("api-key").value.trim();
    filter = readFilter();
    cursors = [null];
    page = 0;
    await verify();
    await load();
  }));
  $("reverify").addEventListener("click", () => run(verify));
  $("search").addEventListener("click", () => run(search));
  $("reset").addEventListener("click", () => run(async () => {
    for (const name of [...TEXT_FILTERS, "from", "to"]) { $("f-" + name).value = ""; }
    $("f-decision").value = "";
    $("f-clearOnly").checked = false;
    await search();
  }));
  $("page-size").addEventListener("change", () => run(search));
  $("next").addEventListener("click", () => run(async () => {
    if (nextCursor == null) { return; }
    cursors = cursors.slice(0, page + 1).concat([nextCursor]);
    page += 1;
    await load();
  }));
  $("prev").addEventListener("click", () => run(async () => {
    if (page === 0) { return; }
    page -= 1;
    await load();
  }));
  $("export-csv").addEventListener("click", () => run(() => exportAs("csv")));
  $("export-jsonl").addEventListener("click", () => run(() => exportAs("jsonl")));
})();
"""


async def audit_page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE, headers=HEADERS)


async def audit_script(request: Request) -> Response:
    return Response(SCRIPT, media_type="text/javascript", headers=HEADERS)
