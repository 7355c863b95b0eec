/**
 * The shapes of the Kubernetes objects the controller renders: plain data, exactly what is sent
 * to the API server. Only the fields we set are typed.
 */
import type { DaprComponent } from "@ofevents/core";

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller: true;
  blockOwnerDeletion: true;
}

export interface ObjectMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: OwnerReference[];
}

export interface ConfigMap {
  apiVersion: "v1";
  kind: "ConfigMap";
  metadata: ObjectMeta;
  data: Record<string, string>;
}

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef: { name: string; key: string } };
}

export interface ContainerPort {
  name: string;
  containerPort: number;
  protocol: "TCP";
}

export interface Probe {
  httpGet: { path: string; port: string };
  initialDelaySeconds?: number;
  periodSeconds: number;
  timeoutSeconds: number;
  failureThreshold: number;
}

export interface ResourceRequirements {
  requests?: Record<string, string>;
  limits?: Record<string, string>;
}

export interface Container {
  name: string;
  image: string;
  imagePullPolicy?: string;
  args: string[];
  ports?: ContainerPort[];
  env?: EnvVar[];
  volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  terminationMessagePolicy?: "File" | "FallbackToLogsOnError";
  resources: ResourceRequirements;
  securityContext: {
    runAsNonRoot: true;
    runAsUser: number;
    runAsGroup: number;
    allowPrivilegeEscalation: false;
    readOnlyRootFilesystem: true;
    capabilities: { drop: ["ALL"] };
  };
}

export interface PodSpec {
  restartPolicy?: "Always" | "OnFailure" | "Never";
  serviceAccountName?: string;
  securityContext: { runAsNonRoot: true; seccompProfile: { type: "RuntimeDefault" } };
  containers: Container[];
  volumes: ({ name: string; configMap: { name: string } } | { name: string; emptyDir: Record<string, never> })[];
}

export interface Deployment {
  apiVersion: "apps/v1";
  kind: "Deployment";
  metadata: ObjectMeta;
  spec: {
    /** Absent when a ScaledObject owns the replica count. */
    replicas?: number;
    selector: { matchLabels: Record<string, string> };
    template: { metadata: { labels: Record<string, string>; annotations: Record<string, string> }; spec: PodSpec };
  };
}

export interface Job {
  apiVersion: "batch/v1";
  kind: "Job";
  metadata: ObjectMeta;
  spec: {
    backoffLimit: number;
    template: { metadata: { labels: Record<string, string> }; spec: PodSpec };
  };
}

export interface Service {
  apiVersion: "v1";
  kind: "Service";
  metadata: ObjectMeta;
  spec: {
    type: "ClusterIP";
    selector: Record<string, string>;
    ports: { name: string; port: number; targetPort: string; protocol: "TCP" }[];
  };
}

/** One KEDA trigger (`spec.triggers[]` of a ScaledObject); metadata values are strings. */
export interface ScaleTrigger {
  type: string;
  metadata: Record<string, string>;
  metricType?: "AverageValue" | "Value" | "Utilization";
  authenticationRef?: { name: string; kind?: string };
}

export interface ScaledObject {
  apiVersion: "keda.sh/v1alpha1";
  kind: "ScaledObject";
  metadata: ObjectMeta;
  spec: {
    scaleTargetRef: { apiVersion: "apps/v1"; kind: "Deployment"; name: string; envSourceContainerName: string };
    minReplicaCount: number;
    maxReplicaCount?: number;
    pollingInterval?: number;
    cooldownPeriod?: number;
    initialCooldownPeriod?: number;
    advanced?: Record<string, unknown>;
    triggers: ScaleTrigger[];
  };
}

export interface TriggerAuthentication {
  apiVersion: "keda.sh/v1alpha1";
  kind: "TriggerAuthentication";
  metadata: ObjectMeta;
  spec: { secretTargetRef: { parameter: string; name: string; key: string }[] };
}

/** An OpenFunction Function (core.openfunction.io/v1beta1), the alternative workload. */
export interface OpenFunctionFunction {
  apiVersion: "core.openfunction.io/v1beta1";
  kind: "Function";
  metadata: ObjectMeta;
  spec: Record<string, unknown>;
}

/** A Dapr object as applied: core's shape plus owner references. */
export type DaprObject = DaprComponent & { metadata: ObjectMeta };

export interface ServiceAccount {
  apiVersion: "v1";
  kind: "ServiceAccount";
  metadata: ObjectMeta;
}

export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

export interface Role {
  apiVersion: "rbac.authorization.k8s.io/v1";
  kind: "Role" | "ClusterRole";
  metadata: ObjectMeta;
  rules: PolicyRule[];
}

export interface RoleBinding {
  apiVersion: "rbac.authorization.k8s.io/v1";
  kind: "RoleBinding" | "ClusterRoleBinding";
  metadata: ObjectMeta;
  roleRef: { apiGroup: "rbac.authorization.k8s.io"; kind: "Role" | "ClusterRole"; name: string };
  subjects: Array<{ kind: "ServiceAccount"; name: string; namespace: string }>;
}

export type RenderedObject =
  | ConfigMap
  | Deployment
  | Service
  | ScaledObject
  | TriggerAuthentication
  | OpenFunctionFunction
  | DaprObject
  | ServiceAccount
  | Role
  | RoleBinding;
