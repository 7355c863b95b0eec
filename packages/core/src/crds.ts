/**
 * CustomResourceDefinitions generated from the zod schemas (apiextensions.k8s.io/v1, structural
 * OpenAPI v3). `ofevents crds` writes them to crds/; a test fails when the checked-in files differ.
 */
import { z } from "zod";
import { stringify } from "yaml";
import {
  API_GROUP,
  Kind,
  OperationKind,
  eventBusSpecSchema,
  eventSourceSpecSchema,
  redriveSpecSchema,
  replaySpecSchema,
  triggerSpecSchema,
} from "./schemas.js";

type Json = Record<string, unknown>;

interface CrdDef {
  kind: Kind | OperationKind;
  plural: string;
  shortNames: string[];
  scope: "Namespaced" | "Cluster";
  spec: z.ZodType;
  columns: Array<{ name: string; type: string; jsonPath: string; priority?: number }>;
  /** The spec cannot change once created (an operation is run once, as asked). */
  immutable?: boolean;
}

const READY_STATUS = '.status.conditions[?(@.type=="Ready")].status';
const READY_REASON = '.status.conditions[?(@.type=="Ready")].reason';
const AGE = { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" };

const DEFS: CrdDef[] = [
  {
    kind: Kind.EventSource,
    plural: "eventsources",
    shortNames: ["es"],
    scope: "Namespaced",
    spec: eventSourceSpecSchema,
    columns: [
      { name: "EventBus", type: "string", jsonPath: ".spec.eventBus" },
      { name: "Sink", type: "string", jsonPath: ".spec.sink.uri" },
      { name: "Status", type: "string", jsonPath: READY_STATUS },
      { name: "Reason", type: "string", jsonPath: READY_REASON, priority: 1 },
      AGE,
    ],
  },
  {
    kind: Kind.EventBus,
    plural: "eventbuses",
    shortNames: ["eb"],
    scope: "Namespaced",
    spec: eventBusSpecSchema,
    columns: [{ name: "Status", type: "string", jsonPath: READY_STATUS }, AGE],
  },
  {
    kind: Kind.ClusterEventBus,
    plural: "clustereventbuses",
    shortNames: ["ceb"],
    scope: "Cluster",
    spec: eventBusSpecSchema,
    columns: [{ name: "Status", type: "string", jsonPath: READY_STATUS }, AGE],
  },
  {
    kind: Kind.Trigger,
    plural: "triggers",
    shortNames: ["trg"],
    scope: "Namespaced",
    spec: triggerSpecSchema,
    columns: [
      { name: "EventBus", type: "string", jsonPath: ".spec.eventBus" },
      { name: "Status", type: "string", jsonPath: READY_STATUS },
      { name: "Reason", type: "string", jsonPath: READY_REASON, priority: 1 },
      AGE,
    ],
  },
  {
    kind: OperationKind.Redrive,
    plural: "redrives",
    shortNames: ["rdr"],
    scope: "Namespaced",
    spec: redriveSpecSchema,
    immutable: true,
    columns: [
      { name: "Trigger", type: "string", jsonPath: ".spec.trigger" },
      { name: "Phase", type: "string", jsonPath: ".status.phase" },
      { name: "Delivered", type: "integer", jsonPath: ".status.result.delivered" },
      { name: "Dead-lettered", type: "integer", jsonPath: ".status.result.deadLettered" },
      { name: "Message", type: "string", jsonPath: ".status.message", priority: 1 },
      AGE,
    ],
  },
  {
    kind: OperationKind.Replay,
    plural: "replays",
    shortNames: ["rpl"],
    scope: "Namespaced",
    spec: replaySpecSchema,
    immutable: true,
    columns: [
      { name: "Trigger", type: "string", jsonPath: ".spec.trigger" },
      { name: "From", type: "string", jsonPath: ".spec.from" },
      { name: "Phase", type: "string", jsonPath: ".status.phase" },
      { name: "Replayed", type: "integer", jsonPath: ".status.result.replayed" },
      { name: "Message", type: "string", jsonPath: ".status.message", priority: 1 },
      AGE,
    ],
  },
];

const PRESERVE = "x-kubernetes-preserve-unknown-fields";

/** Rewrites zod's JSON schema into a Kubernetes structural schema. */
function structural(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(structural);
  if (typeof node !== "object" || node === null) return node;
  const n: Json = {};
  for (const [k, v] of Object.entries(node as Json)) {
    if (k === "$schema" || k === "id" || k === "$id") continue;
    n[k] = structural(v);
  }
  // string | integer → int-or-string
  const variants = (n["anyOf"] ?? n["oneOf"]) as Json[] | undefined;
  if (variants !== undefined) {
    const types = new Set(variants.map((v) => v["type"]));
    if (types.size === 2 && types.has("string") && types.has("integer")) {
      const out: Json = { "x-kubernetes-int-or-string": true };
      if (typeof n["description"] === "string") out["description"] = n["description"];
      return out;
    }
    throw new Error(`union of ${[...types].join("/")} cannot be expressed in a structural schema`);
  }
  if (n["properties"] !== undefined && n["additionalProperties"] === false) delete n["additionalProperties"];
  // z.unknown() / records of unknown values: keep whatever the user wrote.
  if (n["type"] === undefined && n["x-kubernetes-int-or-string"] === undefined) {
    const keys = Object.keys(n).filter((k) => k !== "description" && k !== "default");
    if (keys.length === 0) {
      n[PRESERVE] = true;
      return n;
    }
  }
  const ap = n["additionalProperties"];
  if (n["type"] === "object" && typeof ap === "object" && ap !== null && (ap as Json)[PRESERVE] === true) {
    delete n["additionalProperties"];
    n[PRESERVE] = true;
  }
  if (
    n["type"] === "object" &&
    n["properties"] === undefined &&
    n["additionalProperties"] === undefined &&
    n[PRESERVE] === undefined
  ) {
    n[PRESERVE] = true;
  }
  return n;
}

function crd(def: CrdDef): Json {
  const singular = def.kind.toLowerCase();
  const spec = structural(
    z.toJSONSchema(def.spec, { target: "openapi-3.0", io: "input", unrepresentable: "any" }),
  ) as Json;
  if (def.immutable === true)
    spec["x-kubernetes-validations"] = [
      { rule: "self == oldSelf", message: `the spec of a ${def.kind} cannot change: create another` },
    ];
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: `${def.plural}.${API_GROUP}` },
    spec: {
      group: API_GROUP,
      names: {
        kind: def.kind,
        listKind: `${def.kind}List`,
        plural: def.plural,
        singular,
        shortNames: def.shortNames,
        categories: ["ofevents"],
      },
      scope: def.scope,
      versions: [
        {
          name: "v1alpha1",
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: def.columns,
          schema: {
            openAPIV3Schema: {
              type: "object",
              description: `${def.kind} of ${API_GROUP}/v1alpha1 (generated from the zod schema; do not edit).`,
              properties: {
                apiVersion: { type: "string" },
                kind: { type: "string" },
                metadata: { type: "object" },
                spec: spec,
                status: { type: "object", [PRESERVE]: true },
              },
              required: ["spec"],
            },
          },
        },
      ],
    },
  };
}

/** The CRD files, keyed by file name (e.g. `events.openfunction.io_eventsources.yaml`). */
export function generateCrds(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const def of DEFS) {
    out[`${API_GROUP}_${def.plural}.yaml`] =
      `# Generated by \`ofevents crds\` from packages/core/src/schemas.ts. Do not edit.\n` +
      stringify(crd(def), { lineWidth: 0, aliasDuplicateObjects: false });
  }
  return out;
}
