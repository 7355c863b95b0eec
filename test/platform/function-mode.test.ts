// Function mode against a structural Function CRD on a real kube-apiserver: the controller applies
// its rendered OpenFunction Functions with strict field validation, so a field the installed CRD
// does not know is refused instead of silently dropped; the refusal shows in the Trigger's Ready
// condition (RenderRejected, the server's words) and the reconcile is retried, so upgrading the CRD
// lets the same Trigger through.
//
// The CRD here is ours: a stand-in that knows only some of OpenFunction's v1beta1 Function fields.
// OpenFunction's own Function CRD is not served by any registry CI can reach; the closing note of
// the platform issue records the check made against it.
import type { ControllerHandle } from "@ofevents/controller";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlPlane } from "../helpers/kube.js";
import { installCrds, startLeadingController, waitServed } from "../helpers/platform.js";
import { randomSuffix, waitFor } from "../helpers/wait.js";

const EVENTS = "/apis/events.openfunction.io/v1alpha1";
const FUNCTIONS = "/apis/core.openfunction.io/v1beta1";
const CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}
interface Obj {
  metadata: { name: string; resourceVersion?: string };
  spec?: Record<string, unknown>;
  status?: { conditions?: Condition[] };
  items?: Obj[];
}

let cp: ControlPlane;
let controller: ControllerHandle | undefined;

async function req(method: string, path: string, body?: unknown): Promise<Obj> {
  const res = await cp.request(method, path, body === undefined ? {} : { body });
  if (res.status < 200 || res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${res.text}`);
  return res.json as Obj;
}

/**
 * Function (core.openfunction.io/v1beta1) with a structural schema: `serving` knows `runtime`,
 * `template` (kept whole) and, when `servingFields` says so, every other field.
 */
function functionCrd(servingFields: "some" | "all", resourceVersion?: string): unknown {
  const anything = { type: "object", "x-kubernetes-preserve-unknown-fields": true };
  const serving =
    servingFields === "all"
      ? anything
      : { type: "object", properties: { runtime: { type: "string" }, template: anything, labels: anything } };
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: "functions.core.openfunction.io", ...(resourceVersion ? { resourceVersion } : {}) },
    spec: {
      group: "core.openfunction.io",
      scope: "Namespaced",
      names: { kind: "Function", plural: "functions", singular: "function", listKind: "FunctionList" },
      versions: [
        {
          name: "v1beta1",
          served: true,
          storage: true,
          schema: {
            openAPIV3Schema: {
              type: "object",
              properties: {
                apiVersion: { type: "string" },
                kind: { type: "string" },
                metadata: { type: "object" },
                spec: {
                  type: "object",
                  properties: { version: { type: "string" }, image: { type: "string" }, serving },
                },
                status: anything,
              },
            },
          },
        },
      ],
    },
  };
}

beforeAll(async () => {
  cp = await ControlPlane.start();
  await installCrds(cp, [
    ["dapr.io", "v1alpha1", "Component", "components"],
    ["dapr.io", "v1alpha1", "Resiliency", "resiliencies"],
  ]);
  await req("POST", CRD_PATH, functionCrd("some"));
  await waitServed(cp, "core.openfunction.io", "v1beta1", "functions");
  controller = await startLeadingController(cp, { image: "ofevents/ofevents:test", mode: "function" }, 1_000);
}, 180_000);

afterAll(async () => {
  await controller?.stop();
  await cp?.stop();
}, 60_000);

describe("function mode", () => {
  it("function mode - a field the Function CRD lacks is refused (Ready False, RenderRejected); the upgraded CRD lets it through", async () => {
    const ns = `fn-${randomSuffix()}`;
    await req("POST", "/api/v1/namespaces", { metadata: { name: ns } });
    await req("POST", `${EVENTS}/namespaces/${ns}/eventbuses`, {
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "EventBus",
      metadata: { name: "default" },
      spec: {
        natsStreaming: {
          natsURL: "nats://nats.default:4222",
          natsStreamingClusterID: "stan",
          subscriptionType: "queue",
          durableSubscriptionName: "ImDurable",
        },
      },
    });
    await req("POST", `${EVENTS}/namespaces/${ns}/triggers`, {
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "Trigger",
      metadata: { name: "trigger-a" },
      spec: {
        eventBus: "default",
        inputs: { inputDemo: { eventSource: "my-eventsource", event: "sample-one" } },
        subscribers: [{ condition: "inputDemo", topic: "metrics" }],
      },
    });
    const ready = async (): Promise<Condition | undefined> =>
      (await req("GET", `${EVENTS}/namespaces/${ns}/triggers/trigger-a`)).status?.conditions?.find(
        (c) => c.type === "Ready",
      );

    let refused: Condition | undefined;
    await waitFor(async () => (refused = await ready())?.reason === "RenderRejected", {
      timeoutMs: 30_000,
      intervalMs: 200,
      message: "the Trigger shows the refusal",
    });
    expect(refused).toMatchObject({ status: "False", reason: "RenderRejected" });
    // The server's words name the unknown fields (strict validation), not a silent prune.
    expect(refused!.message).toMatch(/functions\/trigger-trigger-a/);
    expect(refused!.message).toMatch(
      /\.spec\.serving\.(?!runtime:|template:|labels:)\w+: field not declared in schema/,
    );
    expect((await req("GET", `${FUNCTIONS}/namespaces/${ns}/functions`)).items).toEqual([]);

    // The CRD upgraded (every serving field known): the retried reconcile applies the Function.
    const crd = await req("GET", `${CRD_PATH}/functions.core.openfunction.io`);
    await req("PUT", `${CRD_PATH}/functions.core.openfunction.io`, functionCrd("all", crd.metadata.resourceVersion));
    await waitFor(async () => (await ready())?.status === "True", {
      timeoutMs: 60_000,
      intervalMs: 200,
      message: "the Trigger Ready once the CRD knows every field",
    });
    const fn = await req("GET", `${FUNCTIONS}/namespaces/${ns}/functions/trigger-trigger-a`);
    const serving = fn.spec?.["serving"] as {
      runtime: string;
      pubsub: Record<string, unknown>;
      inputs: { topic: string }[];
    };
    expect(serving.runtime).toBe("async");
    expect(Object.keys(serving.pubsub)).toEqual(["default"]);
    expect(serving.inputs.map((i) => i.topic)).toEqual([expect.stringContaining("my-eventsource")]);
  }, 120_000);
});
