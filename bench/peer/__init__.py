"""Side by side with the closest peer: GraphQL Mesh compose 1.8 + Hive Gateway 2.15 (node 20)
over Switchboard's own simulators, answering the same customer 360 query.

The peer is composed from the BOSS simulator's live WSDL and OpenAPI 3 subsets of the billing
and care endpoints the query uses (`billing-openapi.json`, `care-openapi.json`; `mesh.config.ts`
joins them with `@resolveTo`) and served by Hive Gateway (`gateway.config.ts`; with the cache
on, a shared response cache whose in-memory store holds `--peer-cache-max` entries, 200,000 by
default: the gateway's own store keeps about 50 of these answers). `soap-compat.ts` stands in
for `loadSOAPSubgraph`, which the newest `@omnigraph/soap` on the registry lacks. Its npm
packages are locked by `package-lock.json` and installed with `npm ci` on the first run.

`python -m bench.peer` runs it alone; `python -m bench` (`make bench`) runs it as its last
scenario unless `--no-peer`. It needs node >= 20, npm and wrk; without them (or when `npm ci`
cannot reach a registry) the scenario is skipped with the reason printed. See
docs/benchmark.md, "Side by side with the peer".
"""
