/**
 * A headless Chromium for the live page's tests: Debian's `chromium` (installed by the test
 * setup), driven by puppeteer-core; nothing is downloaded at run time.
 */
import puppeteer, { type Browser } from "puppeteer-core";
import { findExecutable, MissingBinaryError } from "./server.js";

export function chromiumPath(): string {
  const path = process.env["CHROMIUM_PATH"] || findExecutable("chromium") || findExecutable("chromium-browser");
  if (path === undefined) throw new MissingBinaryError("chromium", "not on PATH and CHROMIUM_PATH is not set");
  return path;
}

export async function launchBrowser(): Promise<Browser> {
  return puppeteer.launch({
    executablePath: chromiumPath(),
    headless: true,
    // Root in CI has no user namespace sandbox; the page is our own, served on 127.0.0.1.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
  });
}
