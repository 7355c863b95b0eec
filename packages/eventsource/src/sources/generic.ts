/**
 * The generic source (Knative's SinkBinding idea): an HTTP endpoint that takes CloudEvents from
 * any process, in binary, structured or batch mode, with the webhook's guarantee (2xx only after
 * the bus or sync sink took every event of the request, 5xx otherwise). On a cluster the
 * controller gives the `subject` Deployment its address as `K_SINK` and the overrides as
 * `K_CE_OVERRIDES`; the source also applies `ceOverrides.extensions` to every event itself, so a
 * sender that ignores `K_CE_OVERRIDES` gets them too. A request that is not a CloudEvent is 415.
 */
import {
  CORE_ATTRIBUTES,
  DEFAULT_GENERIC_PORT,
  ceOverridesEnv,
  genericEndpoint,
  EXTENSION_NAME,
  SourceKind,
  type CloudEvent,
  type GenericSourceSpec,
  type ValidationIssue,
} from "@ofevents/core";
import { httpMode, toEvent } from "@ofevents/delivery";
import { DEFAULT_MAX_PAYLOAD, serveIngest } from "../http-ingest.js";
import type { Dispatch, RunningSource, SourceAdapter, SourceContext } from "../types.js";

function withOverrides(ev: CloudEvent, ext: Record<string, string> | undefined): CloudEvent {
  if (ext === undefined) return ev;
  const out: Record<string, unknown> = { ...ev };
  for (const [k, v] of Object.entries(ext)) out[k] = v;
  return out as CloudEvent;
}

export const genericAdapter: SourceAdapter<GenericSourceSpec> = {
  kind: SourceKind.Generic,

  validate(spec) {
    const issues: ValidationIssue[] = [];
    const port = Number(spec.port ?? DEFAULT_GENERIC_PORT);
    if (!Number.isInteger(port) || port < 0 || port > 65535)
      issues.push({ code: "invalid_value", path: "port", message: `port ${String(spec.port)} is out of range` });
    // Overrides are extension attributes of every event: a bad name would fail every request.
    for (const key of Object.keys(spec.ceOverrides?.extensions ?? {})) {
      if (!EXTENSION_NAME.test(key) || CORE_ATTRIBUTES.has(key))
        issues.push({
          code: "invalid_value",
          path: `ceOverrides.extensions.${key}`,
          message: `"${key}" is not a valid CloudEvents extension name (a-z, 0-9, at most 20, not a core attribute such as id)`,
        });
    }
    return issues;
  },

  async start(ctx: SourceContext, spec: GenericSourceSpec, dispatch: Dispatch): Promise<RunningSource> {
    const { port, path } = genericEndpoint(ctx.eventName, spec);
    const overrides = spec.ceOverrides?.extensions;
    const env = ceOverridesEnv(spec);
    return serveIngest(
      ctx,
      {
        port,
        endpoint: path,
        method: "POST",
        limit: spec.maxPayloadSize ?? DEFAULT_MAX_PAYLOAD,
        what: "generic source",
        logFields: env === undefined ? {} : { K_CE_OVERRIDES: env },
        decode(req, body) {
          if (httpMode(req.headers) === undefined)
            return {
              status: 415,
              body: {
                error:
                  "expected a CloudEvent: binary mode (ce-specversion and the other ce-* headers), application/cloudevents+json or application/cloudevents-batch+json",
              },
            };
          const decoded = toEvent(req.headers, body);
          return (Array.isArray(decoded) ? decoded : [decoded]).map((e) => ({ event: withOverrides(e, overrides) }));
        },
      },
      dispatch,
    );
  },
};
