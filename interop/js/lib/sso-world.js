// The world the single sign-on browser tests share: a real OpenID provider
// (oidc-provider, its own login page) and a hostile one, a Gatehouse
// configured for both, two client callbacks (one on the allow-list), and
// headless Chromium with every page's CSP violations collected.

import { after, before } from "node:test";

import { launchChromium, watchCsp } from "./browser.js";
import { freePort, rawJson, startServer } from "./harness.js";
import { startOidcProvider } from "./oidc.js";
import { startRogueProvider } from "./rogue-oidc.js";
import * as sdk from "./sdk.js";
import { startCallback, toml } from "./sso.js";

export const CLIENT_ID = "gatehouse";
export const CLIENT_SECRET = "acme-client-secret";

/** The provider's people: login name → password and claims. */
export const ACCOUNTS = {
  alice: { sub: "alice-sub", password: "alice-pw", preferred_username: "alice", name: "Alice Liddell", email: "alice@example.org", email_verified: true },
  // Wants a name someone already has.
  mallory: { sub: "mallory-sub", password: "mallory-pw", preferred_username: "alice", name: "Mallory", email: "mallory@example.org", email_verified: true },
  // Claims an address the provider did not verify, which an account here has.
  bob: { sub: "bob-sub", password: "bob-pw", preferred_username: "bob", name: "Bob", email: "robert@example.org", email_verified: false },
  // A verified address an existing account has: signs in to it.
  dora: { sub: "dora-sub", password: "dora-pw", preferred_username: "dora", name: "Dora", email: "dorothy@example.org", email_verified: true },
  // Linked to an existing account from its account page.
  erin: { sub: "erin-sub", password: "erin-pw", preferred_username: "erin", name: "Erin", email: "erin@example.org", email_verified: true },
};

export const whoami = (server, token) =>
  rawJson(server.baseUrl, "/_matrix/client/v3/account/whoami", {
    headers: { authorization: `Bearer ${token}` },
  });

export const tokenLogin = (server, token) =>
  rawJson(server.baseUrl, "/_matrix/client/v3/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ type: "m.login.token", token }),
  });

/** What a person does on the provider's own login page. */
export async function providerSignIn(page, login, password) {
  await page.getByLabel("Login").fill(login);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/**
 * Starts everything, in `world` (a new object by default). Returns it: { browser, server, provider, rogue, app,
 * trustedApp, violations, newPage(), ssoLogin(page, person, opts), close() }.
 */
export async function startSsoWorld(world = {}) {
  world.violations = [];
  world.browser = await launchChromium();
  world.app = await startCallback();
  world.trustedApp = await startCallback();
  world.rogue = await startRogueProvider({ clientId: CLIENT_ID });
  const providerPort = await freePort();
  const issuer = `http://127.0.0.1:${providerPort}`;
  world.server = await startServer({
    env: {
      GATEHOUSE_SSO__OIDC: toml([
        {
          idp_id: "acme", idp_name: "Acme ID", idp_brand: "acme", idp_icon: "mxc://example.org/acme",
          issuer, client_id: CLIENT_ID, client_secret: CLIENT_SECRET,
          user_mapping: { link_by_email: true },
        },
        { idp_id: "rogue", idp_name: "Rogue", issuer: world.rogue.issuer, client_id: CLIENT_ID, client_secret: "x" },
      ]),
      GATEHOUSE_SSO__CLIENT_ALLOWLIST: toml([new URL(world.trustedApp.url).origin]),
      GATEHOUSE_TOKENS__LOGIN_TOKEN_LIFETIME_MS: "4000",
    },
  });
  world.provider = await startOidcProvider({
    port: providerPort,
    clients: [{ client_id: CLIENT_ID, client_secret: CLIENT_SECRET, redirect_uris: [`${world.server.baseUrl}/_gatehouse/sso/callback/acme`] }],
    accounts: ACCOUNTS,
  });
  await world.server.createUser("robert", { password: "pw", email: "robert@example.org" });
  await world.server.createUser("dorothy", { password: "pw", email: "dorothy@example.org" });

  /** A fresh browser profile with its CSP violations collected. */
  world.newPage = async () => {
    const context = await world.browser.newContext();
    const page = await context.newPage();
    world.violations = watchCsp(page);
    return { context, page };
  };
  /** Logs in with `person` through the provider, from the URL matrix-js-sdk builds. */
  world.ssoLogin = async (page, person, { callback = world.app, idp = "acme", action } = {}) => {
    const client = sdk.createClient({ baseUrl: world.server.baseUrl });
    const arrived = callback.next();
    await page.goto(client.getSsoLoginUrl(callback.url, "sso", idp, action));
    await providerSignIn(page, person, ACCOUNTS[person].password);
    return arrived;
  };
  world.close = async () => {
    await world.browser?.close();
    await world.server?.stop();
    await world.provider?.close();
    await world.rogue?.close();
    await world.app?.close();
    await world.trustedApp?.close();
  };
  return world;
}

/** The world for one `describe`: started before its tests, closed after. */
export function useSsoWorld() {
  const world = {};
  // Filled in place: newPage() keeps replacing `world.violations`.
  before(() => startSsoWorld(world));
  after(async () => world.close?.());
  return world;
}
