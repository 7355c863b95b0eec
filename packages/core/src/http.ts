/**
 * Answers of the framework's own HTTP servers (webhook ports, the local function host, the page,
 * metrics and health). Each answer carries its length: headers written before a body without one
 * make node frame the body chunked, which costs more bytes and writes on every answer and more
 * parsing for the caller.
 */
import type { ServerResponse } from "node:http";

/** No body may follow these statuses, so no length is sent either (RFC 9110 8.6). */
function bodiless(status: number): boolean {
  return status < 200 || status === 204 || status === 304;
}

/** Answers `status` with `body` (none when undefined) and its length. */
export function sendBody(
  res: ServerResponse,
  status: number,
  body?: string | Uint8Array,
  headers?: Record<string, string>,
): void {
  if (bodiless(status)) {
    res.writeHead(status, headers).end();
    return;
  }
  const length = body === undefined ? 0 : typeof body === "string" ? Buffer.byteLength(body) : body.byteLength;
  res.writeHead(status, { ...headers, "content-length": String(length) });
  res.end(body);
}

/** Answers `status` with `body` as JSON (`application/json`) and its length; undefined is an empty body. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void {
  const text = body === undefined ? undefined : (JSON.stringify(body) as string | undefined);
  sendBody(res, status, text, { "content-type": "application/json", ...headers });
}
