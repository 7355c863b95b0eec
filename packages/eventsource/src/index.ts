export type { Dispatch, DispatchInit, RejectReason, RunningSource, SourceAdapter, SourceContext } from "./types.js";
export { adapters, loadAdapter } from "./registry.js";
export { startEventSource, validateEventSource } from "./runtime.js";
export type { EventSourceRuntime, EventSourceRuntimeOptions, SourceEvents } from "./runtime.js";
export { createWebhookServers } from "./webhook-server.js";
export type { WebhookRoute, WebhookServers } from "./webhook-server.js";
