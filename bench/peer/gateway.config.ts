import { defineConfig } from '@graphql-hive/gateway';
import InMemoryLRUCache from '@graphql-mesh/cache-inmemory-lru';
// Peer gateway over Switchboard's simulators. PEER_PORT overrides 4400; PEER_SUPERGRAPH the composed
// supergraph's path (bench/peer composes one per run, into its state folder).
// PEER_CACHE=1 turns the response cache on: shared (session null), ttl PEER_CACHE_TTL_MS (bench: 30000 ms,
// the shortest TTL Switchboard gives any record in this query: balance and tickets).
// PEER_CACHE_MAX: entries of the in-memory store. Unset = the gateway's default store (localforage falls back to
// an in-memory LRU of tiny-lru's default 1000 entries; the response cache writes 1 + 2 x entities keys per
// response, so about 50 of these 360 answers fit). The bench sets 200000 for the main cache-on rows.
const cache = process.env.PEER_CACHE === '1';
const max = process.env.PEER_CACHE_MAX ? Number(process.env.PEER_CACHE_MAX) : undefined;
export const gatewayConfig = defineConfig({
  supergraph: process.env.PEER_SUPERGRAPH || './supergraph.graphql',
  host: '127.0.0.1',
  port: Number(process.env.PEER_PORT || 4400),
  logging: 'warn',
  graphiql: false,
  landingPage: false,
  pollingInterval: 0,
  ...(cache && max ? { cache: new InMemoryLRUCache({ max }) as any } : {}),
  ...(cache ? { responseCaching: { session: () => null, ttl: Number(process.env.PEER_CACHE_TTL_MS || 30000) } } : {}),
});
