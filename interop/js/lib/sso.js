// Helpers for the single sign-on tests: a client's loopback callback (what
// a native app or a web app's redirect page receives) and the provider
// configuration Gatehouse reads from its environment.

import http from "node:http";

/**
 * A loopback HTTP server standing for a client's `redirectUrl`: it
 * answers 200 and remembers each request's `loginToken`.
 * Returns { url, tokens, next(), close() }; `next()` resolves with the next
 * token to arrive.
 */
export async function startCallback() {
  const tokens = [];
  const waiting = [];
  const server = http.createServer((req, res) => {
    const token = new URL(req.url, "http://x").searchParams.get("loginToken");
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("back in the app");
    if (token) {
      tokens.push(token);
      waiting.shift()?.(token);
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${server.address().port}/app/callback`;
  return {
    url,
    tokens,
    next: () => new Promise((resolve) => waiting.push(resolve)),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(resolve);
      }),
  };
}

/** A TOML inline value from a JS one (strings, numbers, booleans, arrays, objects). */
export function toml(value) {
  if (Array.isArray(value)) return `[${value.map(toml).join(", ")}]`;
  if (value && typeof value === "object") {
    return `{ ${Object.entries(value)
      .map(([k, v]) => `${k} = ${toml(v)}`)
      .join(", ")} }`;
  }
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}
