/**
 * The parts of OpenFunction's `Function` (core.openfunction.io/v1beta1) and of `Secret` (v1) that
 * the embedded runner uses. We do not own these kinds: only the fields we read are checked, the
 * rest passes through.
 */
import { z } from "zod";
import { metadataSchema } from "./schemas.js";

export const FUNCTION_API_GROUP = "core.openfunction.io";
/** Annotation naming the local JS/TS module that implements a Function in embedded mode. */
export const MODULE_ANNOTATION = "ofevents.io/module";

export const functionSchema = z.object({
  apiVersion: z.string().startsWith(`${FUNCTION_API_GROUP}/`),
  kind: z.literal("Function"),
  metadata: metadataSchema,
  spec: z
    .object({
      port: z.number().int().optional(),
      serving: z
        .object({
          runtime: z.enum(["knative", "async"]).optional(),
          inputs: z
            .array(
              z.object({ name: z.string(), component: z.string().optional(), topic: z.string().optional() }).loose(),
            )
            .optional(),
        })
        .loose()
        .optional(),
    })
    .loose(),
});
export type FunctionResource = z.infer<typeof functionSchema>;

export const secretSchema = z.object({
  apiVersion: z.literal("v1"),
  kind: z.literal("Secret"),
  metadata: metadataSchema,
  data: z.record(z.string(), z.string()).optional(),
  stringData: z.record(z.string(), z.string()).optional(),
});
export type SecretResource = z.infer<typeof secretSchema>;

/** True for a sync Function (Knative runtime, the default), false for an async one. */
export function isSyncFunction(fn: FunctionResource): boolean {
  return (fn.spec.serving?.runtime ?? "knative") === "knative";
}
