// Helpers for the User-Interactive Authentication tests (seeds 001 and 002).

import crypto from "node:crypto";
import { AuthType, ClientPrefix, InteractiveAuth, Method } from "./sdk.js";

/** The auth dict of seed 001's password stage. */
export function passwordAuthDict(ia, userId, password) {
  return {
    type: AuthType.Password,
    identifier: { type: "m.id.user", user: userId },
    password,
    session: ia.getSessionId(),
  };
}

/**
 * Drive an InteractiveAuth the way seed 001 does: `answer(stage, status, ia,
 * log)` is called from stateUpdated and returns the auth dict to submit (or
 * nothing to leave the stage waiting). Every auth dict handed to doRequest is
 * recorded in log.requests, every stateUpdated call in log.updates.
 *
 * A stage error (stateUpdated with an errcode) that answer() leaves
 * unanswered rejects `done` at once, instead of leaving InteractiveAuth
 * waiting for ever.
 *
 * Returns { ia, log, done } where done is attemptAuth()'s promise.
 */
export function runInteractiveAuth({
  client,
  doRequest,
  answer = () => undefined,
  inputs = {},
  supportedStages,
  sessionId,
  clientSecret,
  requestEmailToken = async () => {
    throw new Error("no email stage is expected in this test");
  },
}) {
  const log = { requests: [], updates: [] };
  let ia;
  let stageFailed;
  const stageFailure = new Promise((_, reject) => (stageFailed = reject));
  stageFailure.catch(() => {});
  const options = {
    matrixClient: client,
    inputs,
    doRequest: async (authData, background) => {
      log.requests.push(authData === null || authData === undefined ? null : { ...authData });
      return doRequest(authData, background);
    },
    stateUpdated: (stage, status) => {
      log.updates.push({ stage, status: { ...status }, session: ia.getSessionId() });
      let dict;
      try {
        dict = answer(stage, status, ia, log);
      } catch (error) {
        stageFailed(error);
        return;
      }
      if (dict) {
        // Errors of the request itself reach attemptAuth()'s promise.
        ia.submitAuthDict(dict).catch(() => {});
      } else if (status.errcode) {
        stageFailed(
          new Error(`stage ${stage} failed with ${status.errcode}: ${status.error} (updates: ${JSON.stringify(log.updates)})`),
        );
      }
    },
    requestEmailToken,
  };
  if (supportedStages !== undefined) options.supportedStages = supportedStages;
  if (sessionId !== undefined) options.sessionId = sessionId;
  if (clientSecret !== undefined) options.clientSecret = clientSecret;
  ia = new InteractiveAuth(options);
  const done = Promise.race([ia.attemptAuth(), stageFailure]);
  return { ia, log, done };
}

/** An answer() that completes every password stage with the given credentials. */
export function answerPassword(userId, password) {
  return (stage, status, ia) => {
    if (stage === AuthType.Password && !status.errcode) {
      return passwordAuthDict(ia, userId, password);
    }
    return undefined;
  };
}

// ---------------------------------------------------------------------------
// Cross-signing keys, made and signed as the spec's "Signing JSON" appendix
// says, with Node's own Ed25519 (no SDK crypto needed).

const unpaddedBase64 = (buffer) => Buffer.from(buffer).toString("base64").replace(/=+$/, "");

function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

function ed25519Key() {
  const { publicKey, privateKey } = crypto.generateKeyPairSync("ed25519");
  const raw = Buffer.from(publicKey.export({ format: "jwk" }).x, "base64url");
  return { privateKey, publicBase64: unpaddedBase64(raw) };
}

function signJson(object, userId, signer) {
  const { signatures = {}, unsigned, ...rest } = object;
  const signature = crypto.sign(null, Buffer.from(canonicalJson(rest), "utf8"), signer.privateKey);
  return {
    ...object,
    signatures: {
      ...signatures,
      [userId]: {
        ...(signatures[userId] ?? {}),
        [`ed25519:${signer.publicBase64}`]: unpaddedBase64(signature),
      },
    },
  };
}

function crossSigningKey(userId, usage, key) {
  return { user_id: userId, usage: [usage], keys: { [`ed25519:${key.publicBase64}`]: key.publicBase64 } };
}

/** A fresh master, self-signing and user-signing key set for userId. */
export function makeCrossSigningKeys(userId) {
  const master = ed25519Key();
  const selfSigning = ed25519Key();
  const userSigning = ed25519Key();
  return {
    master_key: signJson(crossSigningKey(userId, "master", master), userId, master),
    self_signing_key: signJson(crossSigningKey(userId, "self_signing", selfSigning), userId, master),
    user_signing_key: signJson(crossSigningKey(userId, "user_signing", userSigning), userId, master),
  };
}

/**
 * POST /_matrix/client/v3/keys/device_signing/upload through the SDK's HTTP
 * layer -- the request the SDK's Rust crypto makes in bootstrapCrossSigning
 * (OutgoingRequestProcessor uses the v3 path; the older
 * MatrixClient.uploadDeviceSigningKeys uses the /unstable prefix instead).
 */
export function uploadSigningKeys(client, keys, auth) {
  const body = { ...keys };
  if (auth) body.auth = auth;
  return client.http.authedRequest(Method.Post, "/keys/device_signing/upload", undefined, body, {
    prefix: ClientPrefix.V3,
  });
}

// ---------------------------------------------------------------------------
// Fallback pages.

function attributes(tag) {
  const attrs = {};
  for (const m of tag.matchAll(/([a-zA-Z_:-]+)\s*=\s*("([^"]*)"|'([^']*)'|([^\s>]+))/g)) {
    attrs[m[1].toLowerCase()] = m[3] ?? m[4] ?? m[5] ?? "";
  }
  return attrs;
}

const NAMED_ENTITIES = { quot: '"', apos: "'", lt: "<", gt: ">", amp: "&" };
const decodeEntities = (s) =>
  s.replace(/&(#[xX][0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);/g, (whole, name) => {
    if (name[0] === "#") {
      const code = name[1] === "x" || name[1] === "X" ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
      return String.fromCodePoint(code);
    }
    return NAMED_ENTITIES[name] ?? whole;
  });

/**
 * Fill in and submit the first HTML form of a fallback page as a person would:
 * hidden fields keep their values, a password field gets `password`, a text
 * field whose name mentions "token" gets `token`. Returns { status, text, form }.
 */
export async function submitFallbackForm(pageUrl, html, { password, token } = {}) {
  const formMatch = html.match(/<form\b[^>]*>([\s\S]*?)<\/form>/i);
  if (!formMatch) {
    throw new Error(`the fallback page has no <form> to complete the stage with:\n${html.slice(0, 2000)}`);
  }
  const formAttrs = attributes(formMatch[0].match(/<form\b[^>]*>/i)[0]);
  const action = new URL(decodeEntities(formAttrs.action || pageUrl), pageUrl);
  const method = (formAttrs.method || "GET").toUpperCase();
  const fields = new URLSearchParams();
  for (const [tag] of formMatch[1].matchAll(/<input\b[^>]*>/gi)) {
    const attrs = attributes(tag);
    if (!attrs.name) continue;
    const type = (attrs.type || "text").toLowerCase();
    const value = decodeEntities(attrs.value ?? "");
    if (type === "password") fields.append(attrs.name, password ?? "");
    else if (type === "hidden" || type === "submit") fields.append(attrs.name, value);
    else if (/token/i.test(attrs.name) && token !== undefined) fields.append(attrs.name, token);
    else fields.append(attrs.name, value);
  }
  let response;
  if (method === "GET") {
    for (const [k, v] of fields) action.searchParams.append(k, v);
    response = await fetch(action);
  } else {
    response = await fetch(action, {
      method,
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: fields.toString(),
    });
  }
  return { status: response.status, text: await response.text(), form: { action: action.href, method } };
}
