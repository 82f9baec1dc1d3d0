// A real OpenID Connect provider on loopback, for Gatehouse's SSO tests.
//
// Gatehouse signs users in through upstream identity providers; these tests
// need one that is not ours, speaks the protocol exactly, and runs offline.
// This is `oidc-provider` (npm, a certified OpenID Provider implementation)
// with an in-memory store, a fresh RS256 key per start, the clients and
// accounts a test passes in, and its own small login and consent pages: the
// package's development pages accept any login name without a password, and
// the tests must see a wrong password refused. The CAS counterpart is
// interop/cas/cas.sh (django-cas-server).
//
// Pages (all under /interaction/UID, the provider's interaction URL):
//   login    form POST to /interaction/UID/login, fields `login`, `password`,
//            button "Sign in"; a second form POSTs to /interaction/UID/abort,
//            button "Cancel" (the client gets error=access_denied). A wrong
//            password or unknown login re-renders the form with status 200
//            and the text "Invalid login or password." in a role=alert element.
//   consent  granted at once by default (a 303 back to the provider); with
//            `consentPage: true` a form POSTs to /interaction/UID/confirm,
//            button "Continue" (and the same "Cancel" form).

import { generateKeyPairSync, randomBytes, randomUUID } from "node:crypto";
import http from "node:http";
import Provider from "oidc-provider";

/**
 * The built-in test accounts (oidc-cli.js serves these): alice verified,
 * bob unverified, carol whose preferred_username collides with alice's.
 */
export const TEST_ACCOUNTS = {
  alice: {
    sub: "alice-sub-1",
    password: "alice-pw",
    preferred_username: "alice",
    name: "Alice Liddell",
    email: "alice@example.org",
    email_verified: true,
  },
  bob: {
    sub: "bob-sub-1",
    password: "bob-pw",
    preferred_username: "bob",
    name: "Bob Builder",
    email: "bob@example.org",
    email_verified: false,
  },
  carol: {
    sub: "carol-sub-1",
    password: "carol-pw",
    preferred_username: "alice",
    name: "Carol Danvers",
    email: "carol@example.org",
    email_verified: true,
  },
};

const escapeHtml = (value) =>
  String(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

/** A plain page; no scripts, styles or outside resources (the network is closed). */
function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
<main>
<h1>${escapeHtml(title)}</h1>
${body}
</main>
</body>
</html>
`;
}

function cancelForm(uid) {
  return `<form method="post" action="/interaction/${escapeHtml(uid)}/abort">
<button type="submit">Cancel</button>
</form>`;
}

function loginPage(uid, clientId, { login = "", error = "" } = {}) {
  const alert = error ? `<p role="alert">${escapeHtml(error)}</p>\n` : "";
  return page(
    "Sign in",
    `<p>to continue to ${escapeHtml(clientId)}</p>
${alert}<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<p><label for="login">Login</label>
<input id="login" name="login" type="text" autocomplete="username" autofocus required value="${escapeHtml(login)}"></p>
<p><label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required></p>
<p><button type="submit">Sign in</button></p>
</form>
${cancelForm(uid)}`,
  );
}

function consentPage(uid, clientId, scopes) {
  return page(
    "Authorize",
    `<p>${escapeHtml(clientId)} asks for: ${escapeHtml(scopes.join(" "))}</p>
<form method="post" action="/interaction/${escapeHtml(uid)}/confirm">
<button type="submit">Continue</button>
</form>
${cancelForm(uid)}`,
  );
}

function send(res, status, html) {
  res.writeHead(status, {
    "content-type": "text/html; charset=utf-8",
    "cache-control": "no-store",
    "content-length": Buffer.byteLength(html),
  });
  res.end(html);
}

/** The urlencoded body of a form POST (small: a login form). */
async function formBody(req) {
  let raw = "";
  req.setEncoding("utf8");
  for await (const chunk of req) {
    raw += chunk;
    if (raw.length > 64 * 1024) throw new Error("form body too large");
  }
  return new URLSearchParams(raw);
}

/** An RS256 signing key made now, as the private JWK the provider's `jwks` takes. */
function signingJwk() {
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  return { ...privateKey.export({ format: "jwk" }), kid: randomUUID(), alg: "RS256", use: "sig" };
}

/**
 * Grants every scope and claim the consent prompt says is missing, the way the
 * provider's documentation does for first-party clients, and finishes the
 * interaction.
 */
async function grantConsent(provider, req, res, details) {
  const { prompt, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(" "));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(" "));
  }
  const saved = await grant.save();
  const result = grantId ? {} : { consent: { grantId: saved } };
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

/**
 * Starts the provider on 127.0.0.1 (`port`, or a free one when 0/absent).
 *
 * clients:  [{ client_id, client_secret, redirect_uris, token_endpoint_auth_method?, ...metadata }]
 *           (client_secret_basic unless the entry says otherwise).
 * accounts: { loginName: { sub?, password, ...claims } }; `sub` defaults to the
 *           login name. Claims served: sub; profile: name, preferred_username;
 *           email: email, email_verified; in the ID token too.
 * consentPage: show a "Continue" page instead of granting consent at once.
 * pkceRequired: make every authorization request carry a PKCE challenge.
 * extraConfig: merged over the configuration (`features` one level deep).
 *
 * Returns { issuer, port, provider, close() }.
 */
export async function startOidcProvider({
  clients = [],
  accounts = {},
  port = 0,
  consentPage: showConsent = false,
  pkceRequired = false,
  extraConfig = {},
} = {}) {
  // The provider knows accounts by `sub`; the login page by login name.
  const bySub = new Map();
  for (const [login, { password, ...claims }] of Object.entries(accounts)) {
    const sub = claims.sub ?? login;
    if (bySub.has(sub)) throw new Error(`two accounts with sub ${sub}`);
    bySub.set(sub, { login, password, claims: { ...claims, sub } });
  }

  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });
  const actualPort = server.address().port;
  const issuer = `http://127.0.0.1:${actualPort}`;

  const { features: extraFeatures = {}, ...extraRest } = extraConfig;
  const configuration = {
    clients: clients.map((c) => ({
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
      ...c,
    })),
    async findAccount(_ctx, sub) {
      const account = bySub.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        // The provider keeps only the claims the granted scopes allow.
        async claims() {
          return { ...account.claims };
        },
      };
    },
    claims: {
      openid: ["sub"],
      profile: ["name", "preferred_username"],
      email: ["email", "email_verified"],
    },
    // Profile and email claims in the ID token as well as at userinfo.
    conformIdTokenClaims: false,
    jwks: { keys: [signingJwk()] },
    cookies: { keys: [randomBytes(32).toString("hex")] },
    pkce: { required: () => pkceRequired },
    // Seconds. Set, so the provider does not print a notice for each default.
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      ClientCredentials: 600,
      DeviceCode: 600,
      BackchannelAuthenticationRequest: 600,
      PreAuthorizedCode: 600,
      Grant: 86400,
      IdToken: 3600,
      Interaction: 3600,
      RefreshToken: 86400,
      Session: 86400,
    },
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      ...extraFeatures,
    },
    // Without these the defaults load fonts from the internet.
    async renderError(ctx, out) {
      ctx.type = "html";
      ctx.body = page(
        "Error",
        Object.entries(out)
          .map(([k, v]) => `<p><strong>${escapeHtml(k)}</strong>: <span>${escapeHtml(v)}</span></p>`)
          .join("\n"),
      );
    },
    ...extraRest,
  };
  if (!extraFeatures.rpInitiatedLogout) {
    configuration.features.rpInitiatedLogout = {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = page("Sign out", `${form}<button type="submit" form="op.logoutForm" value="yes" name="logout">Sign out</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page("Signed out", "<p>You are signed out.</p>");
      },
    };
  }

  const provider = new Provider(issuer, configuration);
  const callback = provider.callback();

  async function interaction(req, res, uid, action) {
    let details;
    try {
      details = await provider.interactionDetails(req, res);
    } catch {
      // Expired, finished already, or the cookie is missing.
      return send(res, 400, page("Error", "<p>This sign-in request has expired or is unknown. Start again.</p>"));
    }
    if (details.uid !== uid) return send(res, 400, page("Error", "<p>Sign-in request mismatch.</p>"));
    const clientId = details.params.client_id;
    const prompt = details.prompt.name;

    if (req.method === "GET" && !action) {
      if (prompt === "login") return send(res, 200, loginPage(uid, clientId));
      if (prompt === "consent") {
        if (!showConsent) return grantConsent(provider, req, res, details);
        return send(res, 200, consentPage(uid, clientId, String(details.params.scope ?? "").split(" ")));
      }
      return send(res, 501, page("Error", `<p>Unsupported prompt ${escapeHtml(prompt)}.</p>`));
    }
    if (req.method !== "POST") return send(res, 405, page("Error", "<p>Method not allowed.</p>"));

    const form = await formBody(req);
    if (action === "abort") {
      return provider.interactionFinished(
        req,
        res,
        { error: "access_denied", error_description: "End-User aborted interaction" },
        { mergeWithLastSubmission: false },
      );
    }
    if (action === "login" && prompt === "login") {
      const login = form.get("login") ?? "";
      const account = [...bySub.values()].find((a) => a.login === login);
      if (!account || account.password !== (form.get("password") ?? "")) {
        return send(res, 200, loginPage(uid, clientId, { login, error: "Invalid login or password." }));
      }
      return provider.interactionFinished(
        req,
        res,
        { login: { accountId: account.claims.sub } },
        { mergeWithLastSubmission: false },
      );
    }
    if (action === "confirm" && prompt === "consent") return grantConsent(provider, req, res, details);
    return send(res, 400, page("Error", "<p>This form does not match the sign-in step.</p>"));
  }

  server.on("request", (req, res) => {
    const m = new URL(req.url, issuer).pathname.match(/^\/interaction\/([^/]+)(?:\/(login|abort|confirm))?\/?$/);
    if (!m) return callback(req, res);
    interaction(req, res, m[1], m[2]).catch((error) => {
      if (!res.headersSent) send(res, 500, page("Error", `<p>${escapeHtml(error.message)}</p>`));
      else res.destroy();
    });
  });

  return {
    issuer,
    port: actualPort,
    provider,
    close() {
      return new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
