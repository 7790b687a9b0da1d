"use strict";
// Switchboard's GraphiQL page: GraphiQL served by the gateway itself (no CDN), with the API key
// pasted into the Headers editor. The key stays in this page's memory: headers are not
// persisted (shouldPersistHeaders: false), and nothing is sent until a key is there.
(function () {
  const PLACEHOLDER = "sb_... (paste your API key here)";
  const DEFAULT_HEADERS = JSON.stringify(
    { "X-Api-Key": PLACEHOLDER, "X-Purpose": "service" },
    null,
    2,
  );
  const DEFAULT_QUERY = [
    "# Switchboard: one GraphQL graph over the operator's BOSS, billing and care systems.",
    "#",
    "# 1. Open Headers (below), paste your API key into X-Api-Key.",
    "# 2. Set X-Purpose to the purpose you ask for (service, ...), or remove that line:",
    "#    without one, personal fields come back masked.",
    "# 3. Run with Ctrl-Enter. The schema (Docs, autocompletion) loads once the key is set.",
    "",
    "{",
    "  offerings { id name }",
    "}",
    "",
  ].join("\n");
  const KEY_SETTLE_MS = 600; // one schema fetch per pasted key, not one per keystroke

  const url = window.location.href.split(/[?#]/)[0];
  const socket = new URL(url);
  socket.protocol = socket.protocol === "https:" ? "wss:" : "ws:";
  const base = GraphiQL.createFetcher({ url: url, subscriptionUrl: socket.toString() });

  function keyIn(headersText) {
    try {
      const headers = JSON.parse(headersText || "{}");
      const key = headers && (headers["X-Api-Key"] || headers["x-api-key"]);
      return typeof key === "string" && key && key !== PLACEHOLDER ? key : null;
    } catch (error) {
      return null; // half-typed JSON: wait for the rest
    }
  }

  function guarded(params, options) {
    if (!keyIn(JSON.stringify((options && options.headers) || {}))) {
      return Promise.resolve({
        errors: [
          {
            message: "Paste your API key into X-Api-Key in the Headers tab (below).",
            extensions: { code: "UNAUTHENTICATED" },
          },
        ],
      });
    }
    return base(params, options);
  }

  function SwitchboardGraphiQL() {
    const [key, setKey] = React.useState(keyIn(DEFAULT_HEADERS));
    const timer = React.useRef(null);
    // A new fetcher makes GraphiQL fetch the schema again, now with the pasted key.
    const fetcher = React.useMemo(() => (p, o) => guarded(p, o), [key]);
    function onEditHeaders(text) {
      window.clearTimeout(timer.current);
      timer.current = window.setTimeout(() => setKey(keyIn(text)), KEY_SETTLE_MS);
    }
    return React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: DEFAULT_QUERY,
      defaultHeaders: DEFAULT_HEADERS,
      onEditHeaders: onEditHeaders,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: false,
      defaultEditorToolsVisibility: "headers",
      inputValueDeprecation: true,
    });
  }

  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(SwitchboardGraphiQL),
  );
})();
