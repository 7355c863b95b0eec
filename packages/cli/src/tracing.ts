/**
 * Sets up OpenTelemetry tracing for a command from the standard variables, and only when they ask
 * for it: `OTEL_TRACES_EXPORTER` (`otlp`, `console` or `none`), or an OTLP endpoint
 * (`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). The exporter reads its
 * own variables (endpoint, headers, timeout, `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` /
 * `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the default, or `http/json`); the batch span
 * processor takes `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_EXPORT_TIMEOUT`, `OTEL_BSP_MAX_QUEUE_SIZE`
 * and `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (read here: the SDK no longer reads them); the resource `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`;
 * `OTEL_SDK_DISABLED=true` turns it all off. The SDK is loaded only then, so a process that does
 * not trace loads none of it.
 */
import type { Logger } from "@ofevents/core";
import { tracing } from "@ofevents/core";

export interface Tracing {
  /** Exports what is buffered and stops (call once, at shutdown). */
  shutdown(): Promise<void>;
}

export async function startTracing(
  defaultService: string,
  log: Logger,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Tracing | undefined> {
  const v = (k: string): string | undefined => (env[k] === undefined || env[k] === "" ? undefined : env[k]);
  /** A whole-number OTEL_BSP_* variable as the batch span processor's option (the SDK reads none itself). */
  const num = (k: string, option: string): Record<string, number> => {
    const text = v(k);
    if (text === undefined) return {};
    const n = Number(text);
    if (!Number.isInteger(n) || n < 0) throw new Error(`${k} must be a whole number, got "${text}"`);
    return { [option]: n };
  };
  if (v("OTEL_SDK_DISABLED")?.toLowerCase() === "true") return undefined;
  const exporterName = v("OTEL_TRACES_EXPORTER")?.split(",")[0]?.trim().toLowerCase();
  const endpoint = v("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") ?? v("OTEL_EXPORTER_OTLP_ENDPOINT");
  if (exporterName === "none" || (exporterName === undefined && endpoint === undefined)) return undefined;
  if (exporterName !== undefined && exporterName !== "otlp" && exporterName !== "console")
    throw new Error(`OTEL_TRACES_EXPORTER=${exporterName}: ofevents exports traces with otlp or console (or none)`);
  const protocol = v("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") ?? v("OTEL_EXPORTER_OTLP_PROTOCOL") ?? "http/protobuf";
  if (exporterName !== "console" && protocol !== "http/protobuf" && protocol !== "http/json")
    throw new Error(`OTEL_EXPORTER_OTLP_PROTOCOL=${protocol}: ofevents exports OTLP over http/protobuf or http/json`);

  const [{ context, propagation, trace }, sdk, res, hooks, core] = await Promise.all([
    import("@opentelemetry/api"),
    import("@opentelemetry/sdk-trace"),
    import("@opentelemetry/resources"),
    import("@opentelemetry/context-async-hooks"),
    import("@opentelemetry/core"),
  ]);
  const exporter =
    exporterName === "console"
      ? new sdk.ConsoleSpanExporter()
      : protocol === "http/json"
        ? new (await import("@opentelemetry/exporter-trace-otlp-http")).OTLPTraceExporter()
        : new (await import("@opentelemetry/exporter-trace-otlp-proto")).OTLPTraceExporter();
  const detected = res.detectResources({ detectors: [res.envDetector] });
  const resource = res
    .resourceFromAttributes({ "service.name": defaultService })
    .merge(detected)
    .merge(
      v("OTEL_SERVICE_NAME") === undefined
        ? null
        : res.resourceFromAttributes({ "service.name": v("OTEL_SERVICE_NAME")! }),
    );
  const provider = new sdk.TracerProvider({
    resource,
    spanProcessors: [
      new sdk.BatchSpanProcessor({
        exporter,
        ...num("OTEL_BSP_SCHEDULE_DELAY", "scheduledDelayMillis"),
        ...num("OTEL_BSP_EXPORT_TIMEOUT", "exportTimeoutMillis"),
        ...num("OTEL_BSP_MAX_QUEUE_SIZE", "maxQueueSize"),
        ...num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "maxExportBatchSize"),
      }),
    ],
  });
  context.setGlobalContextManager(new hooks.AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new core.W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  tracing.enabled = true;
  log.info({ exporter: exporterName ?? "otlp", protocol, endpoint }, "tracing: spans exported with OpenTelemetry");
  return {
    async shutdown() {
      tracing.enabled = false;
      await provider
        .shutdown()
        .catch((err: unknown) => log.warn({ err: (err as Error).message }, "tracing: final export failed"));
    },
  };
}
