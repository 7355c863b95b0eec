// The pure part of a generic event's sink binding: which Deployment gets which K_SINK and
// K_CE_OVERRIDES, the server-side apply configuration that binds and the one that unbinds, and
// the checks and rendered ports of an EventSource with generic events.
import { describe, expect, it } from "vitest";
import {
  BINDING_ANNOTATION,
  BINDING_LABEL,
  Reason,
  bindingManager,
  ingestUrl,
  renderBindingPatch,
  renderEventSource,
  renderUnbindPatch,
  sinkBindings,
  validateEventSource,
  type ControllerOptions,
} from "../src/index.js";

const options: ControllerOptions = { image: "ghcr.io/ofevents/ofevents:0.1.0" };
const buses = {
  eventBuses: [
    {
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "EventBus",
      metadata: { name: "default", namespace: "shop" },
      spec: { kafka: { brokers: "kafka:9092" } },
    },
  ],
  clusterEventBuses: [],
} as never;

const source = (generic: Record<string, unknown>, name = "apps") => ({
  apiVersion: "events.openfunction.io/v1alpha1",
  kind: "EventSource",
  metadata: { name, namespace: "shop", uid: "00000000-0000-4000-8000-000000000001", generation: 1 },
  spec: { eventBus: "default", generic },
});

function valid(raw: unknown) {
  const v = validateEventSource(raw, { buses, options });
  if (!v.ok) throw new Error(v.condition.message);
  return v.resource;
}

describe("generic-source binding - what each Deployment gets", () => {
  it.each([
    {
      name: "defaults: port 8080, path /{event}, no overrides",
      generic: { app: { subject: { deployment: "my-app" } } },
      expected: [
        {
          event: "app",
          namespace: "shop",
          deployment: "my-app",
          sink: "http://eventsource-apps.shop.svc.cluster.local:8080/app",
          ceOverrides: undefined,
        },
      ],
    },
    {
      name: "port, path and overrides as given; an event without subject binds nothing",
      generic: {
        b: {
          port: 9000,
          path: "/in",
          subject: { deployment: "billing", namespace: "shop" },
          ceOverrides: { extensions: { team: "pay" } },
        },
        a: { port: "9001" },
      },
      expected: [
        {
          event: "b",
          namespace: "shop",
          deployment: "billing",
          sink: "http://eventsource-apps.shop.svc.cluster.local:9000/in",
          ceOverrides: '{"extensions":{"team":"pay"}}',
        },
      ],
    },
  ])("generic-source binding - $name", ({ generic, expected }) => {
    expect(sinkBindings(valid(source(generic)))).toEqual(expected);
  });

  it("generic-source binding - the ingest URL uses the workload's Service name (a dotted name made a DNS label)", () => {
    const es = valid(source({ app: { port: 8088 } }, "my.apps"));
    expect(ingestUrl(es, "app")).toMatch(
      /^http:\/\/eventsource-my-apps-[0-9a-f]{8}\.shop\.svc\.cluster\.local:8088\/app$/,
    );
  });

  it("generic-source binding - the apply configuration sets the env on every container, with label and annotation", () => {
    const [b] = sinkBindings(
      valid(source({ app: { subject: { deployment: "my-app" }, ceOverrides: { extensions: { x: "1" } } } })),
    );
    const patch = renderBindingPatch("apps", b!, {
      spec: { template: { spec: { containers: [{ name: "main" }, { name: "sidecar" }] } } },
    });
    const env = [
      { name: "K_SINK", value: "http://eventsource-apps.shop.svc.cluster.local:8080/app" },
      { name: "K_CE_OVERRIDES", value: '{"extensions":{"x":"1"}}' },
    ];
    expect(patch).toEqual({
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: {
        name: "my-app",
        namespace: "shop",
        labels: { [BINDING_LABEL]: "apps" },
        annotations: { [BINDING_ANNOTATION]: "shop/apps/app" },
      },
      spec: {
        template: {
          spec: {
            containers: [
              { name: "main", env },
              { name: "sidecar", env },
            ],
          },
        },
      },
    });
  });

  it("generic-source binding - without overrides only K_SINK; unbinding applies an empty configuration", () => {
    const [b] = sinkBindings(valid(source({ app: { subject: { deployment: "my-app" } } })));
    const patch = renderBindingPatch("apps", b!, { spec: { template: { spec: { containers: [{ name: "c" }] } } } }) as {
      spec: { template: { spec: { containers: Array<{ env: unknown[] }> } } };
    };
    expect(patch.spec.template.spec.containers[0]!.env).toEqual([
      { name: "K_SINK", value: "http://eventsource-apps.shop.svc.cluster.local:8080/app" },
    ]);
    expect(renderUnbindPatch("shop", "my-app")).toEqual({
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "my-app", namespace: "shop" },
    });
  });

  it("generic-source binding - one field manager per EventSource", () => {
    expect(bindingManager("apps")).toBe("ofevents-binding-apps");
    expect(bindingManager("other")).not.toBe(bindingManager("apps"));
  });
});

describe("generic-source binding - validation and rendering", () => {
  it.each([
    {
      name: "a subject in another namespace",
      generic: { app: { subject: { deployment: "x", namespace: "elsewhere" } } },
      expectedError: "spec.generic.app.subject.namespace",
    },
    {
      name: "two events naming one Deployment",
      generic: { a: { subject: { deployment: "x" } }, b: { path: "/b", subject: { deployment: "x" } } },
      expectedError: "spec.generic.b.subject.deployment",
    },
    { name: "the health port", generic: { app: { port: 8081 } }, expectedError: "spec.generic.app.port" },
    {
      name: "port 0 (no Service can point at it)",
      generic: { app: { port: 0 } },
      expectedError: "spec.generic.app.port",
    },
  ])("generic-source binding - refused: $name", ({ generic, expectedError }) => {
    const v = validateEventSource(source(generic), { buses, options });
    expect(v.ok).toBe(false);
    expect(v.condition.reason).toBe(Reason.InvalidSpec);
    expect(v.condition.message).toContain(expectedError);
  });

  it("generic-source binding - the workload's Service and container expose the generic ports next to the webhook's", () => {
    const es = valid({
      ...source({ a: { port: 9000 }, b: {} }),
      spec: {
        eventBus: "default",
        generic: { a: { port: 9000 }, b: {} },
        webhook: { hook: { port: "12000", endpoint: "/hook" } },
      },
    });
    const r = renderEventSource({ eventSource: es, bus: undefined, options });
    expect(r.service?.spec.ports.map((p) => p.port)).toEqual([8080, 9000, 12000]);
    const ports = r.deployment!.spec.template.spec.containers[0]!.ports?.map((p) => p.containerPort);
    // The health port first, then the HTTP ports.
    expect(ports).toEqual([8081, 8080, 9000, 12000]);
  });
});
