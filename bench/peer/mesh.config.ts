// GraphQL Mesh (compose v1) over Switchboard's OWN simulators:
//   BOSS SOAP 1.1 (WSDL served by the simulator, 127.0.0.1:8401), billing REST (8402), care REST (8403).
// Billing and care are described by hand-written OpenAPI 3 subsets (billing-openapi.json, care-openapi.json).
// Cross-source: a BOSS customer (profile) + its lines (BOSS QuerySubscribers) + billing accounts found by the
// customer's certificate number (+ each account's balance) + care party found by the same ID-card number
// (+ its newest 5 tickets), all with @resolveTo.
// PEER_BOSS_URL / PEER_BILLING_URL / PEER_CARE_URL: the simulators (bench/peer passes the run's ports).
import { defineConfig } from '@graphql-mesh/compose-cli';
import { loadOpenAPISubgraph } from '@omnigraph/openapi';
import { loadSOAPSubgraphCompat } from './soap-compat.ts';

const BOSS = process.env.PEER_BOSS_URL || 'http://127.0.0.1:8401';
const BILLING = process.env.PEER_BILLING_URL || 'http://127.0.0.1:8402';
const CARE = process.env.PEER_CARE_URL || 'http://127.0.0.1:8403';
const ops = ['QueryCustomer', 'QuerySubscribers', 'QuerySubscriberByMsisdn', 'QueryCustomerList', 'QueryOfferings', 'QueryOrder'];
// RequestHeader the BOSS requires in every request (docs/wire-contract.md); static here.
const header = (op: string) =>
  `RequestHeader: { Version: "1.0", BusinessCode: "${op}", MessageSeq: "MESH-PEER", LoginSystemCode: "MESHPEER" }`;

export const composeConfig = defineConfig({
  subgraphs: [
    { sourceHandler: loadSOAPSubgraphCompat('BOSS', {
        source: `${BOSS}/boss/services/BossService?wsdl`,
        endpoint: `${BOSS}/boss/services/BossService`,
        soapActions: Object.fromEntries(ops.map(o => [`${o}ResultMsg`, o])),
      }) },
    { sourceHandler: loadOpenAPISubgraph('Billing', { source: './billing-openapi.json', endpoint: BILLING }) },
    { sourceHandler: loadOpenAPISubgraph('Care', { source: './care-openapi.json', endpoint: CARE }) },
  ],
  additionalTypeDefs: /* GraphQL */ `
    extend type BossService_CustomerType {
      lines: [BossService_SubscriberType]
        @resolveTo(
          sourceName: "BOSS"
          sourceTypeName: "Query"
          sourceFieldName: "BossService_BossService_BossServicePort_QuerySubscribers"
          requiredSelectionSet: "{ CustomerNo }"
          sourceArgs: { QuerySubscribersRequestMsg: { ${header('QuerySubscribers')},
            QuerySubscribersRequest: { CustomerNo: "{root.CustomerNo}" } } }
          result: "QuerySubscribersResult.Subscriber"
        )
      billingAccounts: [BillingAccount]
        @resolveTo(
          sourceName: "Billing"
          sourceTypeName: "Query"
          sourceFieldName: "listBillingAccounts"
          requiredSelectionSet: "{ CertificateNo }"
          sourceArgs: { certificateNumber: "{root.CertificateNo}" }
        )
      parties: [Individual]
        @resolveTo(
          sourceName: "Care"
          sourceTypeName: "Query"
          sourceFieldName: "listIndividuals"
          requiredSelectionSet: "{ CertificateNo }"
          sourceArgs: { identificationId: "{root.CertificateNo}" }
        )
    }
    extend type BillingAccount {
      balance: [AccountBalance]
        @resolveTo(
          sourceName: "Billing"
          sourceTypeName: "Query"
          sourceFieldName: "listAccountBalances"
          requiredSelectionSet: "{ id }"
          sourceArgs: { billingAccount_id: "{root.id}" }
        )
    }
    extend type Individual {
      tickets: [TroubleTicket]
        @resolveTo(
          sourceName: "Care"
          sourceTypeName: "Query"
          sourceFieldName: "listTroubleTickets"
          requiredSelectionSet: "{ id }"
          sourceArgs: { relatedParty_id: "{root.id}", limit: "5" }
        )
    }
  `,
});
