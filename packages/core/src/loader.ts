/**
 * Loads manifests from files and folders: multi-document YAML (or JSON), every problem reported at
 * once with the file (as named), line, document index, resource and field path. Kinds we do not
 * own are skipped with a note, so a folder that also holds Deployments loads; so are files found
 * in a folder that are not manifests at all (package.json, tsconfig.json) and `node_modules`.
 */
import { readdir, readFile, realpath, stat } from "node:fs/promises";
import { extname, join } from "node:path";
import { isMap, isNode, isScalar, isSeq, Lexer, LineCounter, parseAllDocuments, type Document } from "yaml";
import type { z } from "zod";
import { ErrorCode, ManifestError, type ValidationIssue } from "./errors.js";
import { functionSchema, secretSchema, type FunctionResource, type SecretResource } from "./functions.js";
import {
  API_GROUP,
  Kind,
  OperationKind,
  redriveSchema,
  replaySchema,
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
  /** The path as it was named (relative when `-f` was relative). */
  file: string;
  /** 0-based index of the document in its file. */
  docIndex: number;
  /** 1-based line where the document's content starts. */
  line: number;
}

export interface SkippedDocument {
  file: string;
  docIndex: number;
  line: number;
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
  /**
   * Files found by walking a folder that hold no manifest (no document has `apiVersion` or
   * `kind`: package.json, tsconfig.json, other YAML): left alone, not an error.
   */
  ignoredFiles: IgnoredFile[];
  issues: ValidationIssue[];
  /**
   * Things that load and run but deserve a word: a field with no effect here, a default filled in
   * for a field OpenFunction made optional. `validate` prints them, `run` logs each once.
   */
  warnings: ValidationIssue[];
}

export interface IgnoredFile {
  file: string;
  reason: string;
}

const MANIFEST_EXTENSIONS = new Set([".yaml", ".yml", ".json"]);

/**
 * Expands files and folders (recursively, sorted) into manifest files, keeping each path as it was
 * named. Inside folders it skips dot entries and `node_modules`, enters each real folder once (a
 * symlink back to a parent is not followed again) and lists no file already listed.
 * `walked` holds the files found inside a folder, as opposed to named one by one.
 */
export async function listManifestFiles(
  paths: readonly string[],
): Promise<{ files: string[]; walked: Set<string>; issues: ValidationIssue[] }> {
  const files: string[] = [];
  const walked = new Set<string>();
  const issues: ValidationIssue[] = [];
  const seen = new Set<string>();
  const unreadable = (file: string, err: unknown): void => {
    issues.push({
      code: ErrorCode.ManifestUnreadable,
      path: "",
      file,
      message: `cannot read: ${(err as Error).message}`,
    });
  };
  async function walk(p: string, explicit: boolean): Promise<void> {
    let st;
    let real;
    try {
      st = await stat(p);
      real = await realpath(p);
    } catch (err) {
      unreadable(p, err);
      return;
    }
    // A file named twice loads twice (and its resources are duplicates); a folder never adds again
    // what was already listed, nor enters a folder it already walked (a symlink to a parent).
    if (seen.has(real) && !(explicit && !st.isDirectory())) return;
    if (st.isDirectory()) {
      seen.add(real);
      let entries;
      try {
        entries = (await readdir(p)).sort();
      } catch (err) {
        unreadable(p, err);
        return;
      }
      for (const e of entries) if (!e.startsWith(".") && e !== "node_modules") await walk(join(p, e), false);
    } else if (explicit || MANIFEST_EXTENSIONS.has(extname(p))) {
      seen.add(real);
      files.push(p);
      if (!explicit) walked.add(p);
    }
  }
  for (const p of paths) await walk(p, true);
  return { files, walked, issues };
}

/**
 * Where a field path leads in a parsed document: the offset of the deepest key (or sequence item)
 * of `path` that the document has, so a missing field points at its parent.
 */
function fieldOffset(doc: Document, path: readonly PropertyKey[]): number | undefined {
  let node: unknown = doc.contents;
  let offset: number | undefined;
  for (const seg of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === String(seg));
      if (pair === undefined) break;
      offset = isNode(pair.key) ? pair.key.range?.[0] : offset;
      node = pair.value;
    } else if (isSeq(node)) {
      const item: unknown = node.items[Number(seg)];
      if (!isNode(item)) break;
      offset = item.range?.[0] ?? offset;
      node = item;
    } else break;
  }
  return offset;
}

/** Turns offsets in one document into 1-based lines. */
interface Lines {
  doc: Document;
  counter: LineCounter;
  /** Line where the document's content starts. */
  start: number;
}

function lineOf(lines: Lines, path: readonly PropertyKey[]): number {
  const offset = path.length === 0 ? undefined : fieldOffset(lines.doc, path);
  return offset === undefined ? lines.start : lines.counter.linePos(offset).line;
}

function zodIssues(
  error: z.ZodError,
  where: { file: string; docIndex: number; kind: string; name: string | undefined },
  lines: Lines,
): ValidationIssue[] {
  return error.issues.map((i) => ({
    code: i.code,
    path: i.path.map(String).join("."),
    message: i.message,
    file: where.file,
    line: lineOf(lines, i.path),
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
    ignoredFiles: [],
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

function hasManifestKeys(doc: Document): boolean {
  const top = doc.contents;
  return (
    isMap(top) && top.items.some((p) => isScalar(p.key) && (p.key.value === "apiVersion" || p.key.value === "kind"))
  );
}

export interface ParseOptions {
  /**
   * The file was found by walking a folder, not named: when no document of it has `apiVersion` or
   * `kind`, it is not a manifest and goes to `ignoredFiles` instead of `issues`.
   */
  walked?: boolean;
}

/** Parses the text of one manifest file into `into`. */
export function parseManifestText(
  text: string,
  file: string,
  into: Manifests = emptyManifests(),
  options: ParseOptions = {},
): Manifests {
  const walked = options.walked ?? false;
  if (walked && !text.includes("apiVersion") && !text.includes("kind")) {
    into.ignoredFiles.push({ file, reason: "no apiVersion or kind: not a manifest" });
    return into;
  }
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
  const counter = new LineCounter();
  const docs = parseAllDocuments(text, { prettyErrors: true, lineCounter: counter });
  const list = Array.isArray(docs) ? docs : [docs];
  if (walked) {
    // A file of a folder is a manifest file when one of its documents looks like a manifest; a
    // JSON file with comments (tsconfig.json) that is not valid YAML is not one either.
    const looksLikeManifest = list.some((doc) =>
      doc.errors.length > 0 ? text.includes("apiVersion") : hasManifestKeys(doc),
    );
    if (!looksLikeManifest) {
      into.ignoredFiles.push({ file, reason: "no document has apiVersion or kind: not a manifest" });
      return into;
    }
  }
  list.forEach((doc, docIndex) => {
    const start = counter.linePos(doc.contents?.range?.[0] ?? doc.range[0]).line;
    const lines: Lines = { doc, counter, start };
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        into.issues.push({
          code: "yaml",
          path: "",
          file,
          line: e.linePos?.[0].line ?? start,
          docIndex,
          message: e.message.split("\n")[0] ?? e.message,
        });
      }
      return;
    }
    let value: unknown;
    try {
      // maxAliasCount bounds what aliases expand to ("billion laughs"); yaml throws past it.
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      into.issues.push({ code: "yaml", path: "", file, line: start, docIndex, message: (err as Error).message });
      return;
    }
    if (value === null || value === undefined) return;
    if (typeof value !== "object" || Array.isArray(value)) {
      into.issues.push({
        code: "invalid_type",
        path: "",
        file,
        line: start,
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
      const path = apiVersion === "" ? "apiVersion" : "kind";
      into.issues.push({
        code: "invalid_type",
        path,
        file,
        line: lineOf(lines, [path]),
        docIndex,
        ...(name === undefined ? {} : { name }),
        message: "every manifest needs apiVersion and kind",
      });
      return;
    }
    const group = apiVersion.includes("/") ? apiVersion.slice(0, apiVersion.indexOf("/")) : "";
    if (group === API_GROUP && (kind === OperationKind.Redrive || kind === OperationKind.Replay)) {
      // A cluster operation (the controller runs it as a Job): checked, then left to the cluster.
      const parsed = (kind === OperationKind.Redrive ? redriveSchema : replaySchema).safeParse(obj);
      if (parsed.success) into.skipped.push({ file, docIndex, line: start, apiVersion, kind, name });
      else into.issues.push(...zodIssues(parsed.error, where, lines));
      return;
    }
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
          line: lineOf(lines, ["kind"]),
          ...(name === undefined ? { name: undefined } : {}),
          message: `unknown kind "${kind}" in ${API_GROUP} (expected one of ${Object.values(Kind).join(", ")})`,
        } as ValidationIssue);
        return;
      }
      const parsed = schema.safeParse(obj);
      if (!parsed.success) {
        into.issues.push(...zodIssues(parsed.error, where, lines));
        return;
      }
      const r = parsed.data;
      for (const issue of validateSemantics(r))
        into.issues.push({
          ...issue,
          file,
          line: lineOf(lines, issue.path === "" ? [] : issue.path.split(".")),
          docIndex,
          kind,
          name: r.metadata.name,
        });
      const compat = compatibility(r);
      const locate = (i: ValidationIssue): ValidationIssue => ({
        ...i,
        file,
        line: lineOf(lines, i.path === "" ? [] : i.path.split(".")),
        docIndex,
        kind,
        name: r.metadata.name,
      });
      for (const issue of compat.issues) into.issues.push(locate(issue));
      for (const w of compat.warnings) into.warnings.push(locate(w));
      const at = { file, docIndex, line: start };
      switch (r.kind) {
        case Kind.EventSource:
          into.eventSources.push({ resource: r, ...at });
          break;
        case Kind.EventBus:
          into.eventBuses.push({ resource: r, ...at });
          break;
        case Kind.ClusterEventBus:
          into.clusterEventBuses.push({ resource: r, ...at });
          break;
        case Kind.Trigger:
          into.triggers.push({ resource: r, ...at });
          break;
      }
      return;
    }
    if (kind === "Function" && group === "core.openfunction.io") {
      const parsed = functionSchema.safeParse(obj);
      if (parsed.success) into.functions.push({ resource: parsed.data, file, docIndex, line: start });
      else into.issues.push(...zodIssues(parsed.error, where, lines));
      return;
    }
    if (kind === "Secret" && apiVersion === "v1") {
      const parsed = secretSchema.safeParse(obj);
      if (parsed.success) into.secrets.push({ resource: parsed.data, file, docIndex, line: start });
      else into.issues.push(...zodIssues(parsed.error, where, lines));
      return;
    }
    into.skipped.push({ file, docIndex, line: start, apiVersion, kind, name });
  });
  return into;
}

/**
 * Loads every manifest under `paths`. Never throws for bad content: every problem is in
 * `issues`. Duplicate names of one kind in one namespace are reported too.
 */
export async function loadManifests(paths: readonly string[]): Promise<Manifests> {
  const out = emptyManifests();
  const { files, walked, issues } = await listManifestFiles(paths);
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
    parseManifestText(text, file, out, { walked: walked.has(file) });
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
          line: item.line,
          docIndex: item.docIndex,
          kind: r.kind,
          name: r.metadata.name,
          message: `${r.kind} "${r.metadata.name}" is already defined in ${first.file}:${first.line}`,
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
