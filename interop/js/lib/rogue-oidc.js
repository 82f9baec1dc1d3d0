// A hostile OpenID provider for the attack tests: it speaks just enough of
// the protocol (discovery, keys, an authorization endpoint that sends the
// browser straight back, a token endpoint) to hand Gatehouse ID tokens that
// a real provider would never sign: the wrong nonce, another issuer or
// audience, a key it does not publish, an expired token, a sign-in from an
// hour ago passed off as a fresh one. `mode = "honest"`
// makes every token right, so each attack test can show the same path works
// when nothing is wrong. Not a stand-in for a real provider: the real one
// is oidc-provider (oidc.js).

import { createSign, generateKeyPairSync, randomBytes } from "node:crypto";
import http from "node:http";

const b64url = (buf) => Buffer.from(buf).toString("base64url");

function sign(claims, privateKey, kid) {
  const header = b64url(JSON.stringify({ alg: "RS256", typ: "JWT", kid }));
  const payload = b64url(JSON.stringify(claims));
  const signer = createSign("RSA-SHA256");
  signer.update(`${header}.${payload}`);
  return `${header}.${payload}.${b64url(signer.sign(privateKey))}`;
}

/**
 * Starts the hostile provider on loopback.
 * Returns { issuer, setMode(mode), codesIssued(), close() }; modes:
 * honest, nonce, issuer, audience, key, expired, unverified-email,
 * stale-auth (a re-authentication answered from an hour-old session).
 */
export async function startRogueProvider({ clientId, sub = "rogue-sub-1", claims = {} }) {
  const published = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const unpublished = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = { ...published.publicKey.export({ format: "jwk" }), kid: "k1", use: "sig", alg: "RS256" };
  let mode = "honest";
  const codes = new Map();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, issuer);
    const json = (status, body) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (url.pathname === "/.well-known/openid-configuration") {
      return json(200, {
        issuer,
        authorization_endpoint: `${issuer}/authorize`,
        token_endpoint: `${issuer}/token`,
        jwks_uri: `${issuer}/jwks`,
        response_types_supported: ["code"],
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: ["RS256"],
      });
    }
    if (url.pathname === "/jwks") return json(200, { keys: [jwk] });
    if (url.pathname === "/authorize") {
      const code = b64url(randomBytes(16));
      codes.set(code, url.searchParams.get("nonce"));
      const back = new URL(url.searchParams.get("redirect_uri"));
      back.searchParams.set("code", code);
      back.searchParams.set("state", url.searchParams.get("state"));
      res.writeHead(302, { location: back.toString() });
      return res.end();
    }
    if (url.pathname === "/token" && req.method === "POST") {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        const code = new URLSearchParams(body).get("code");
        if (!codes.has(code)) return json(400, { error: "invalid_grant" });
        const nonce = codes.get(code);
        codes.delete(code);
        const now = Math.floor(Date.now() / 1000);
        const idClaims = {
          iss: mode === "issuer" ? "http://127.0.0.1:1/other-issuer" : issuer,
          aud: mode === "audience" ? "someone-else" : clientId,
          sub,
          nonce: mode === "nonce" ? "not-the-nonce" : nonce,
          iat: now,
          exp: mode === "expired" ? now - 600 : now + 300,
          // When the person last typed their password: an hour ago for a
          // provider that only reuses its session.
          auth_time: mode === "stale-auth" ? now - 3600 : now,
          preferred_username: "rogue",
          email: "victim@example.org",
          email_verified: mode === "unverified-email" ? false : true,
          ...claims,
        };
        const key = mode === "key" ? unpublished.privateKey : published.privateKey;
        json(200, {
          access_token: b64url(randomBytes(16)),
          token_type: "Bearer",
          expires_in: 300,
          id_token: sign(idClaims, key, "k1"),
        });
      });
      return undefined;
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const issuer = `http://127.0.0.1:${server.address().port}`;
  return {
    issuer,
    setMode(m) {
      mode = m;
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
