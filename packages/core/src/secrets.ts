/**
 * Resolves secret references ({ name, key }). Embedded mode looks in the Secret manifests that were
 * loaded, then in the environment variable `<NAME>_<KEY>` (upper-cased, non-alphanumerics as `_`).
 * Values are never logged.
 */
import { OfEventsError, ErrorCode } from "./errors.js";
import type { SecretResource } from "./functions.js";
import type { SecretKeySelector } from "./schemas.js";

export interface SecretResolver {
  /** The secret's value; throws a CONFIG error naming the reference (never the value) when absent. */
  resolve(ref: SecretKeySelector, namespace: string): string;
}

/**
 * A server URL (or comma-separated list) without the `user:password@` of each entry, for messages
 * and logs: `nats://u:p@host:4222` → `nats://host:4222`, `u:p@host:4222` → `host:4222`.
 */
export function withoutCredentials(urls: string): string {
  return urls
    .split(",")
    .map((u) => u.replace(/^(\s*[A-Za-z][A-Za-z0-9+.-]*:\/\/)?[^/@\s]*@/, "$1"))
    .join(",");
}

export function envNameFor(ref: SecretKeySelector): string {
  return `${ref.name}_${ref.key}`.toUpperCase().replace(/[^A-Z0-9]/g, "_");
}

export function createSecretResolver(
  secrets: readonly SecretResource[] = [],
  env: NodeJS.ProcessEnv = process.env,
): SecretResolver {
  return {
    resolve(ref, namespace) {
      const s = secrets.find((x) => x.metadata.name === ref.name && (x.metadata.namespace ?? "default") === namespace);
      const fromString = s?.stringData?.[ref.key];
      if (fromString !== undefined) return fromString;
      const fromData = s?.data?.[ref.key];
      if (fromData !== undefined) return Buffer.from(fromData, "base64").toString("utf8");
      const fromEnv = env[envNameFor(ref)];
      if (fromEnv !== undefined) return fromEnv;
      throw new OfEventsError(
        ErrorCode.Config,
        `secret ${namespace}/${ref.name} key "${ref.key}" not found (define a Secret manifest or set $${envNameFor(ref)})`,
      );
    },
  };
}
