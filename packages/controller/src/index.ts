// The Kubernetes controller: renders and reconciles what the four kinds need on a cluster.
export { CONTROLLER_PACKAGE } from "./version.js";

export {
  BUS_DRIVER_ANNOTATION,
  BusDriver,
  Defaults,
  RenderMode,
  daprCanCarry,
  resolveOptions,
  workloadBusDriver,
} from "./options.js";
export type { ControllerOptions, ResolvedOptions } from "./options.js";

export { Reason, readyCondition } from "./conditions.js";
export type { ReadyCondition, Validation } from "./conditions.js";
export { IssueCode } from "./validation.js";
export type { BusCatalog } from "./validation.js";

export {
  CONFIG_HASH_ANNOTATION,
  MANAGED_BY,
  MANAGED_BY_LABEL,
  dnsLabel,
  kindLabel,
  labelValue,
  ownerLabels,
  ownerReference,
  workloadName,
} from "./labels.js";
export { SinkRefKind, resolveSink, sinkRefKind, sinkUrl } from "./sinks.js";
export type { SinkLookup } from "./sinks.js";

export { renderEventBus } from "./eventbus/render.js";
export type { RenderEventBusInput } from "./eventbus/render.js";
export { validateEventBus } from "./eventbus/validate.js";
export type { ValidateEventBusContext } from "./eventbus/validate.js";

export { renderEventSource } from "./eventsource/render.js";
export { OWNER_NAMESPACE_LABEL, guessResource, renderKubernetesAccess } from "./eventsource/rbac.js";
export type { KubernetesAccess } from "./eventsource/rbac.js";
export type { RenderEventSourceInput, RenderedWorkload } from "./eventsource/render.js";
export { validateEventSource } from "./eventsource/validate.js";
export {
  BINDING_ANNOTATION,
  BINDING_LABEL,
  bindingManager,
  ingestUrl,
  renderBindingPatch,
  renderUnbindPatch,
  sinkBindings,
} from "./eventsource/binding.js";
export type { DeploymentContainers, SinkBinding } from "./eventsource/binding.js";
export type { ValidateEventSourceContext } from "./eventsource/validate.js";

export { renderTrigger, triggerTopics } from "./trigger/render.js";
export type { RenderTriggerInput } from "./trigger/render.js";
export { validateTrigger } from "./trigger/validate.js";
export type { ValidateTriggerContext } from "./trigger/validate.js";

export {
  OperationPhase,
  RESULT_PATH,
  describeResult,
  operationArgs,
  operationJobName,
  parseResult,
  renderOperation,
  resolveHistoryTime,
} from "./operation.js";
export type { OperationStatus, RenderOperationInput } from "./operation.js";

export { FUNCTION_CONTAINER } from "./function.js";
export type { GenericScaleOption } from "./scaling.js";
export type {
  ConfigMap,
  DaprObject,
  Deployment,
  ObjectMeta,
  OpenFunctionFunction,
  OwnerReference,
  RenderedObject,
  ScaleTrigger,
  ScaledObject,
  Service,
  TriggerAuthentication,
} from "./k8s.js";

export { FIELD_MANAGER } from "./apply.js";
export { startController } from "./controller.js";
export type { ControllerHandle, StartControllerInput } from "./controller.js";
export { KubeApiError, loadKubeConfig, ownNamespace } from "./kube/api.js";
export { LEASE_NAME } from "./kube/lease.js";
export type { LeaderElectionOptions } from "./kube/lease.js";
export { CONTROLLER_METRICS } from "./metrics.js";
export type { ReconcileResult } from "./reconcile.js";
