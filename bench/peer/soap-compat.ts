// Compatibility shim for the Switchboard BOSS WSDL.
// Why: the npm registry reachable here only carries @omnigraph/soap@0.96.0, which predates
// `loadSOAPSubgraph` (the Mesh v1 compose helper). It loads the WSDL with
// SOAPLoader, adds subgraph/soapNamespace/soapAction to every @soap annotation and marks the
// schema with @transport(kind: "soap"). Three more things were needed for the BOSS simulator's WSDL:
//  1. the WSDL imports its XSD by a RELATIVE schemaLocation ("BossService.xsd"); SOAPLoader 0.96.0
//     passes that string to fetch() as is, which fails. The fetch handed to SOAPLoader resolves
//     relative locations against the WSDL's URL.
//  2. the WSDL's soap:address is the simulator's default port (8101); `endpoint` overrides the
//     @soap endpoint (what a deployment does when the WSDL names another host).
//  3. SOAPLoader 0.96.0's table of XSD built-in types lacks xs:nonNegativeInteger (used by the BOSS
//     XSD for QueryCustomerList/BeginRowNum): compose fails with "Type: nonNegativeInteger couldn't
//     be found in http://www.w3.org/2001/XMLSchema". The shim registers it (and its integer
//     siblings) as GraphQL Int before loading.
import { SOAPLoader } from '@omnigraph/soap';
import { buildASTSchema, GraphQLInt, Kind, parse, visit } from 'graphql';
import { printSchemaWithDirectives } from '@graphql-tools/utils';

export interface SOAPCompatOptions {
  source: string; // WSDL URL
  endpoint?: string; // overrides the WSDL's soap:address
  soapNamespace?: string; // SOAP envelope namespace, default SOAP 1.1
  soapActions?: Record<string, string>; // output elementName -> SOAPAction
}

export function loadSOAPSubgraphCompat(subgraphName: string, opts: SOAPCompatOptions) {
  return ({ fetch, logger }: { cwd: string; fetch: typeof globalThis.fetch; logger: any }) => ({
    name: subgraphName,
    schema$: (async () => {
      const relFetch = ((url: string, init?: any) => fetch(new URL(url, opts.source).href, init)) as any;
      const loader: any = new SOAPLoader({ fetch: relFetch, logger } as any);
      const xsdTypes = loader.getNamespaceSimpleTypeMap('http://www.w3.org/2001/XMLSchema');
      for (const name of ['integer', 'nonNegativeInteger', 'positiveInteger', 'nonPositiveInteger', 'negativeInteger']) {
        if (xsdTypes.has(name)) continue;
        const t = { attributes: { name } };
        xsdTypes.set(name, t);
        loader.simpleTypeTCMap.set(t, loader.schemaComposer.createScalarTC(GraphQLInt));
      }
      const wsdl = await (await fetch(opts.source)).text();
      const obj = await loader.loadWSDL(wsdl);
      loader.loadedLocations.set(opts.source, obj);
      const raw = loader.buildSchema();
      const str = (v: string) => ({ kind: Kind.STRING, value: v });
      const arg = (name: string, v: string) => ({ kind: Kind.ARGUMENT, name: { kind: Kind.NAME, value: name }, value: str(v) });
      let doc = parse(printSchemaWithDirectives(raw));
      doc = visit(doc, {
        DirectiveDefinition(node) {
          if (node.name.value !== 'soap') return undefined;
          const extra = ['subgraph', 'soapNamespace', 'soapAction', 'bodyAlias'].map(n => ({
            kind: Kind.INPUT_VALUE_DEFINITION,
            name: { kind: Kind.NAME, value: n },
            type: { kind: Kind.NAMED_TYPE, name: { kind: Kind.NAME, value: 'String' } },
          }));
          return { ...node, arguments: [...(node.arguments || []), ...extra] };
        },
        Directive(node) {
          if (node.name.value !== 'soap') return undefined;
          const elementName = (node.arguments!.find(a => a.name.value === 'elementName')!.value as any).value;
          let args = [...(node.arguments || [])];
          if (opts.endpoint) args = args.map(a => (a.name.value === 'endpoint' ? arg('endpoint', opts.endpoint!) : a)) as any;
          args.push(arg('subgraph', subgraphName),
            arg('soapNamespace', opts.soapNamespace || 'http://schemas.xmlsoap.org/soap/envelope/'));
          const action = opts.soapActions?.[elementName];
          if (action) args.push(arg('soapAction', action));
          return { ...node, arguments: args };
        },
      });
      const schema = buildASTSchema(doc, { assumeValidSDL: true });
      const exts: any = ((schema as any).extensions ||= {});
      exts.directives ||= {};
      exts.directives.transport = { kind: 'soap', subgraph: subgraphName };
      return schema;
    })(),
  });
}
