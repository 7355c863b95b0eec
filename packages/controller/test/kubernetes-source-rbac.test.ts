// Rendering of an EventSource with `kubernetes` events: a ServiceAccount the pods run as, Roles or
// a ClusterRole with exactly get/list/watch on what is watched (plus the state ConfigMap), their
// bindings, and one replica. The objects pass the Kubernetes models' validation.
import { ClusterRole } from "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole";
import { ClusterRoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding";
import { Role } from "kubernetes-models/rbac.authorization.k8s.io/v1/Role";
import { RoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding";
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import { describe, expect, it } from "vitest";
import {
  OWNER_NAMESPACE_LABEL,
  guessResource,
  renderEventSource,
  validateEventSource,
  type ControllerOptions,
  type RenderedWorkload,
} from "../src/index.js";

const options: ControllerOptions = { image: "ghcr.io/ofevents/ofevents:0.1.0" };

const source = (kubernetes: Record<string, unknown>, extra: Record<string, unknown> = {}): RenderedWorkload => {
  const v = validateEventSource(
    {
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "EventSource",
      metadata: { name: "watcher", namespace: "shop", uid: "00000000-0000-4000-8000-000000000001", generation: 1 },
      spec: { sink: { uri: "http://fn.shop.svc/" }, kubernetes, ...extra },
    },
    { buses: { eventBuses: [], clusterEventBuses: [] }, options },
  );
  if (!v.ok) throw new Error(v.condition.message);
  return renderEventSource({ eventSource: v.resource, bus: v.bus, options });
};

/** What the tests read of a rendered object. */
interface Rendered {
  metadata: { name: string; namespace?: string; labels: Record<string, string>; ownerReferences?: object[] };
  rules: unknown[];
  roleRef: { name: string };
}

const ofKind = (r: RenderedWorkload, kind: string) => r.objects.filter((o) => o.kind === kind) as unknown as Rendered[];

describe("controller render - kubernetes source access", () => {
  it("controller render - a namespaced watch gets a Role with exactly get/list/watch, bound to the pods' ServiceAccount", () => {
    const r = source({
      configs: { version: "v1", resource: "configmaps", namespace: "shop", filter: { labels: "app=shop" } },
      deploys: { group: "apps", version: "v1", kind: "Deployment", namespace: "shop" },
    });
    const [sa] = ofKind(r, "ServiceAccount");
    expect(sa!.metadata).toMatchObject({ name: r.name, namespace: "shop" });
    expect(sa!.metadata.ownerReferences?.[0]).toMatchObject({ kind: "EventSource", name: "watcher" });
    expect(r.deployment!.spec.template.spec.serviceAccountName).toBe(r.name);
    expect(r.deployment!.spec.replicas).toBe(1);
    const roles = ofKind(r, "Role");
    expect(roles).toHaveLength(1);
    expect(roles[0]!.metadata).toMatchObject({ name: r.name, namespace: "shop" });
    expect(roles[0]!.rules).toEqual([
      { apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list", "watch"] },
      { apiGroups: ["apps"], resources: ["deployments"], verbs: ["get", "list", "watch"] },
    ]);
    const [binding] = ofKind(r, "RoleBinding");
    expect(binding).toMatchObject({
      metadata: { name: r.name, namespace: "shop" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: r.name },
      subjects: [{ kind: "ServiceAccount", name: r.name, namespace: "shop" }],
    });
    expect(ofKind(r, "ClusterRole")).toEqual([]);
    // Applied before the Deployment that uses them.
    const order = r.objects.map((o) => o.kind);
    expect(order.indexOf("ServiceAccount")).toBeLessThan(order.indexOf("Deployment"));
    expect(order.indexOf("RoleBinding")).toBeLessThan(order.indexOf("Deployment"));
    new ServiceAccount(sa as never).validate();
    new Role(roles[0] as never).validate();
    new RoleBinding(binding as never).validate();
  });

  it("controller render - all namespaces: a ClusterRole and ClusterRoleBinding, labelled with the owner's namespace", () => {
    const r = source({ anywhere: { version: "v1", resource: "secrets", eventTypes: ["DELETED"] } });
    const [cr] = ofKind(r, "ClusterRole");
    const [crb] = ofKind(r, "ClusterRoleBinding");
    expect(cr!.metadata.name).toBe(`ofevents:shop:${r.name}`);
    expect(cr!.metadata.namespace).toBeUndefined();
    expect(cr!.metadata.ownerReferences).toBeUndefined();
    expect(cr!.metadata.labels[OWNER_NAMESPACE_LABEL]).toBe("shop");
    expect(cr!.rules).toEqual([{ apiGroups: [""], resources: ["secrets"], verbs: ["get", "list", "watch"] }]);
    expect(crb).toMatchObject({
      roleRef: { kind: "ClusterRole", name: `ofevents:shop:${r.name}` },
      subjects: [{ kind: "ServiceAccount", name: r.name, namespace: "shop" }],
    });
    expect(ofKind(r, "Role")).toEqual([]);
    new ClusterRole(cr as never).validate();
    new ClusterRoleBinding(crb as never).validate();
  });

  it("controller render - another namespace gets its own Role; the state ConfigMap is granted by name in the source's", () => {
    const r = source({
      pods: { version: "v1", resource: "pods", namespace: "team-a", state: { configMap: "k8s-state" } },
    });
    const roles = ofKind(r, "Role");
    expect(roles.map((x) => [x.metadata.namespace, x.metadata.name])).toEqual([
      ["team-a", `ofevents:shop:${r.name}`],
      ["shop", r.name],
    ]);
    expect(roles[0]!.rules).toEqual([{ apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch"] }]);
    expect(roles[0]!.metadata.ownerReferences).toBeUndefined();
    expect(roles[1]!.rules).toEqual([
      { apiGroups: [""], resources: ["configmaps"], verbs: ["get", "patch"], resourceNames: ["k8s-state"] },
      { apiGroups: [""], resources: ["configmaps"], verbs: ["create"] },
    ]);
    expect(ofKind(r, "RoleBinding").map((b) => [b.metadata.namespace, b.roleRef.name])).toEqual([
      ["team-a", `ofevents:shop:${r.name}`],
      ["shop", r.name],
    ]);
  });

  it("controller render - an EventSource without kubernetes events gets no ServiceAccount", () => {
    const v = validateEventSource(
      {
        apiVersion: "events.openfunction.io/v1alpha1",
        kind: "EventSource",
        metadata: { name: "cron", namespace: "shop", uid: "00000000-0000-4000-8000-000000000002" },
        spec: { sink: { uri: "http://fn.shop.svc/" }, cron: { tick: { schedule: "@every 1m" } } },
      },
      { buses: { eventBuses: [], clusterEventBuses: [] }, options },
    );
    if (!v.ok) throw new Error(v.condition.message);
    const r = renderEventSource({ eventSource: v.resource, bus: v.bus, options });
    expect(r.objects.map((o) => o.kind)).not.toContain("ServiceAccount");
    expect(r.deployment!.spec.template.spec.serviceAccountName).toBeUndefined();
  });

  it.each([
    { kind: "Deployment", expected: "deployments" },
    { kind: "Ingress", expected: "ingresses" },
    { kind: "NetworkPolicy", expected: "networkpolicies" },
    { kind: "ConfigMap", expected: "configmaps" },
  ])("controller render - the plural of kind $kind is guessed as $expected", ({ kind, expected }) => {
    expect(guessResource(kind)).toBe(expected);
  });
});
