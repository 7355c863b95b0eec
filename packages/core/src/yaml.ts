import { stringify } from "yaml";

/** A document as YAML, the way the loader reads it back (no line folding, no aliases). */
export function toYaml(doc: unknown): string {
  return stringify(doc, { lineWidth: 0, aliasDuplicateObjects: false });
}
