/**
 * Loads manifests from files and folders: multi-document YAML (or JSON), every problem reported at
 * once with the file, document index, resource and field path. Kinds we do not own are skipped
 * with a note, so a folder that also holds Deployments loads.
 */
import { readdir, readFile, stat } from "node:fs/promises";
import { extname, join, resolve } from "node:path";
import { Lexer, parseAllDocuments } from "yaml";
import type { z } from "zod";
import { ErrorCode, ManifestError, type ValidationIssue } from "./errors.js";
import { functionSchema, secretSchema, type FunctionResource, type SecretResource } from "./functions.js";
import {
  API_GROUP,
  Kind,
  schemas,
  type ClusterEventBus,
  type EventBus,
  type EventSource,
  type Resource,
  type Trigger,
} from "./schemas.js";
import { validateSemantics } from "./validate.js";
import { compatibility } from "./compat.js";

/** A resource and where it came from. */
export interface Located<T> {
  resource: T;
  file: string;
  docIndex: number;
}

export interface SkippedDocument {
  file: string;
  docIndex: number;
  apiVersion: string;
  kind: string;
  name: string | undefined;
}

export interface Manifests {
  eventSources: Located<EventSource>[];
  eventBuses: Located<EventBus>[];
  clusterEventBuses: Located<ClusterEventBus>[];
  triggers: Located<Trigger>[];
  functions: Located<FunctionResource>[];
  secrets: Located<SecretResource>[];
  skipped: SkippedDocument[];
  issues: ValidationIssue[];
  /**
   * Things that load and run but deserve a word: a field with no effect here, a default filled in
   * for a field OpenFunction made optional. `validate` prints them, `run` logs each once.
   */
  warnings: ValidationIssue[];
}

const MANIFEST_EXTENSIONS = new Set([".yaml", ".yml", ".json"]);

/** Expands files and folders (recursively, sorted) into manifest files. */
export async function listManifestFiles(
  paths: readonly string[],
): Promise<{ files: string[]; issues: ValidationIssue[] }> {
  const files: string[] = [];
  const issues: ValidationIssue[] = [];
  async function walk(p: string, explicit: boolean): Promise<void> {
    let st;
    try {
      st = await stat(p);
    } catch (err) {
      issues.push({
        code: ErrorCode.ManifestUnreadable,
        path: "",
        file: p,
        message: `cannot read: ${(err as Error).message}`,
      });
      return;
    }
    if (st.isDirectory()) {
      const entries = (await readdir(p)).sort();
      for (const e of entries) if (!e.startsWith(".")) await walk(join(p, e), false);
    } else if (explicit || MANIFEST_EXTENSIONS.has(extname(p))) {
      files.push(resolve(p));
    }
  }
  for (const p of paths) await walk(p, true);
  return { files, issues };
}

function zodIssues(
  error: z.ZodError,
  where: { file: string; docIndex: number; kind: string; name: string | undefined },
): ValidationIssue[] {
  return error.issues.map((i) => ({
    code: i.code,
    path: i.path.map(String).join("."),
    message: i.message,
    file: where.file,
    docIndex: where.docIndex,
    kind: where.kind,
    ...(where.name === undefined ? {} : { name: where.name }),
  }));
}

function emptyManifests(): Manifests {
  return {
    eventSources: [],
    eventBuses: [],
    clusterEventBuses: [],
    triggers: [],
    functions: [],
    secrets: [],
    skipped: [],
    issues: [],
    warnings: [],
  };
}

/**
 * Deepest nesting of YAML collections a manifest may have (an upper bound, counted on tokens). The
 * yaml library composes documents recursively: a few thousand levels overflow the stack, and
 * near the stack's end V8 can abort the whole process instead of throwing.
 */
export const MAX_MANIFEST_DEPTH = 256;

/**
 * The first document whose nesting may exceed `max`, by a linear scan of the lexer's tokens, or
 * undefined. The estimate never undercounts: a flow level is a bracket; a block level needs
 * either more indentation (at least one column per two levels, for a sequence under a key at the
 * same indentation) or an indicator on the same line (`- - x`, `? a`).
 */
function tooDeep(text: string, max: number): number | undefined {
  let docIndex = 0;
  let content = false;
  let flow = 0;
  let indent = 0;
  let indicators = 0;
  let lineStart = true;
  for (const token of new Lexer().lex(text)) {
    if (token === "---") {
      if (content) docIndex++;
      content = false;
      flow = 0;
    } else if (token === "\n" || token === "\r\n") {
      lineStart = true;
      indent = 0;
      indicators = 0;
      continue;
    } else if (lineStart && /^[ \t]+$/.test(token)) {
      indent = token.length;
    } else {
      content ||= token.trim() !== "" && token !== "\u0002";
      if (token === "[" || token === "{") flow++;
      else if (token === "]" || token === "}") flow = Math.max(0, flow - 1);
      else if (token === "-" || token === "?" || token === ":") indicators++;
      if (flow + 2 * indent + indicators > max) return docIndex;
    }
    lineStart = false;
  }
  return undefined;
}

/** Parses the text of one manifest file into `into`. */
export function parseManifestText(text: string, file: string, into: Manifests = emptyManifests()): Manifests {
  const deep = tooDeep(text, MAX_MANIFEST_DEPTH);
  if (deep !== undefined) {
    into.issues.push({
      code: "yaml",
      path: "",
      file,
      docIndex: deep,
      message: `the document nests collections more than ${MAX_MANIFEST_DEPTH} levels deep`,
    });
    return into;
  }
  const docs = parseAllDocuments(text, { prettyErrors: true });
  const list = Array.isArray(docs) ? docs : [docs];
  list.forEach((doc, docIndex) => {
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        into.issues.push({ code: "yaml", path: "", file, docIndex, message: e.message.split("\n")[0] ?? e.message });
      }
      return;
    }
    let value: unknown;
    try {
      // maxAliasCount bounds what aliases expand to ("billion laughs"); yaml throws past it.
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      into.issues.push({ code: "yaml", path: "", file, docIndex, message: (err as Error).message });
      return;
    }
    if (value === null || value === undefined) return;
    if (typeof value !== "object" || Array.isArray(value)) {
      into.issues.push({
        code: "invalid_type",
        path: "",
        file,
        docIndex,
        message: "a manifest must be a YAML mapping",
      });
      return;
    }
    const obj = value as Record<string, unknown>;
    const apiVersion = typeof obj["apiVersion"] === "string" ? obj["apiVersion"] : "";
    const kind = typeof obj["kind"] === "string" ? obj["kind"] : "";
    const meta = obj["metadata"];
    const name =
      typeof meta === "object" && meta !== null && typeof (meta as Record<string, unknown>)["name"] === "string"
        ? ((meta as Record<string, unknown>)["name"] as string)
        : undefined;
    const where = { file, docIndex, kind, name };
    if (apiVersion === "" || kind === "") {
      into.issues.push({
        code: "invalid_type",
        path: apiVersion === "" ? "apiVersion" : "kind",
        file,
        docIndex,
        ...(name === undefined ? {} : { name }),
        message: "every manifest needs apiVersion and kind",
      });
      return;
    }
    const group = apiVersion.includes("/") ? apiVersion.slice(0, apiVersion.indexOf("/")) : "";
    if (group === API_GROUP) {
      // Own keys only: a kind such as "constructor" must not find Object.prototype's members.
      const schema = Object.hasOwn(schemas, kind)
        ? (schemas as Record<string, z.ZodType<Resource> | undefined>)[kind]
        : undefined;
      if (schema === undefined) {
        into.issues.push({
          code: "invalid_value",
          path: "kind",
          ...where,
          ...(name === undefined ? { name: undefined } : {}),
          message: `unknown kind "${kind}" in ${API_GROUP} (expected one of ${Object.values(Kind).join(", ")})`,
        } as ValidationIssue);
        return;
      }
      const parsed = schema.safeParse(obj);
      if (!parsed.success) {
        into.issues.push(...zodIssues(parsed.error, where));
        return;
      }
      const r = parsed.data;
      for (const issue of validateSemantics(r))
        into.issues.push({ ...issue, file, docIndex, kind, name: r.metadata.name });
      const compat = compatibility(r);
      for (const issue of compat.issues) into.issues.push({ ...issue, file, docIndex, kind, name: r.metadata.name });
      for (const w of compat.warnings) into.warnings.push({ ...w, file, docIndex, kind, name: r.metadata.name });
      switch (r.kind) {
        case Kind.EventSource:
          into.eventSources.push({ resource: r, file, docIndex });
          break;
        case Kind.EventBus:
          into.eventBuses.push({ resource: r, file, docIndex });
          break;
        case Kind.ClusterEventBus:
          into.clusterEventBuses.push({ resource: r, file, docIndex });
          break;
        case Kind.Trigger:
          into.triggers.push({ resource: r, file, docIndex });
          break;
      }
      return;
    }
    if (kind === "Function" && group === "core.openfunction.io") {
      const parsed = functionSchema.safeParse(obj);
      if (parsed.success) into.functions.push({ resource: parsed.data, file, docIndex });
      else into.issues.push(...zodIssues(parsed.error, where));
      return;
    }
    if (kind === "Secret" && apiVersion === "v1") {
      const parsed = secretSchema.safeParse(obj);
      if (parsed.success) into.secrets.push({ resource: parsed.data, file, docIndex });
      else into.issues.push(...zodIssues(parsed.error, where));
      return;
    }
    into.skipped.push({ file, docIndex, apiVersion, kind, name });
  });
  return into;
}

/**
 * Loads every manifest under `paths`. Never throws for bad content: every problem is in
 * `issues`. Duplicate names of one kind in one namespace are reported too.
 */
export async function loadManifests(paths: readonly string[]): Promise<Manifests> {
  const out = emptyManifests();
  const { files, issues } = await listManifestFiles(paths);
  out.issues.push(...issues);
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      out.issues.push({
        code: ErrorCode.ManifestUnreadable,
        path: "",
        file,
        message: `cannot read: ${(err as Error).message}`,
      });
      continue;
    }
    parseManifestText(text, file, out);
  }
  const lists: Located<Resource | FunctionResource>[][] = [
    out.eventSources,
    out.eventBuses,
    out.clusterEventBuses,
    out.triggers,
    out.functions,
  ];
  for (const list of lists) {
    const seen = new Map<string, Located<unknown>>();
    for (const item of list) {
      const r = item.resource;
      const key = `${r.kind}/${r.kind === Kind.ClusterEventBus ? "" : (r.metadata.namespace ?? "default")}/${r.metadata.name}`;
      const first = seen.get(key);
      if (first !== undefined) {
        out.issues.push({
          code: "duplicate",
          path: "metadata.name",
          file: item.file,
          docIndex: item.docIndex,
          kind: r.kind,
          name: r.metadata.name,
          message: `${r.kind} "${r.metadata.name}" is already defined in ${first.file}#${first.docIndex}`,
        });
      } else seen.set(key, item);
    }
  }
  return out;
}

/** Loads manifests and throws a ManifestError listing every problem when there is one. */
export async function loadManifestsOrThrow(paths: readonly string[]): Promise<Manifests> {
  const m = await loadManifests(paths);
  if (m.issues.length > 0) throw new ManifestError(m.issues);
  return m;
}
