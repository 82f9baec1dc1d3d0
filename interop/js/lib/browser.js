// Headless Chromium for the browser tests: Debian's package (or
// $CHROMIUM_PATH), driven with playwright-core, with the flags this machine's
// probe runs it with: no sandbox as root, no GPU, and none of the background
// networking that a closed network refuses.

import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** A headless Chromium; close it in `after`. */
export function launchChromium(options = {}) {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, ...options });
}

/** Collects the CSP violations a page reports, so a test can assert there were none. */
export function watchCsp(page) {
  const violations = [];
  page.on("console", (msg) => {
    if (/Content Security Policy/i.test(msg.text())) violations.push(msg.text());
  });
  return violations;
}
