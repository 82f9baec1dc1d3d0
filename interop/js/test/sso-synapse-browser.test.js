// Single sign-on in front of a real Synapse: Synapse delegates
// authentication to Gatehouse, nginx routes the client API, and a person
// signs up at a real OpenID provider (oidc-provider) in Chromium, starting
// from the URL matrix-js-sdk builds against the public (nginx) address.
// The new account is provisioned on Synapse with the provider's display
// name, the token from m.login.token works on Synapse, and an SSO-only
// user deletes a device through the m.login.sso fallback page — which
// Synapse then refuses at once.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";

import { launchChromium, watchCsp } from "../lib/browser.js";
import { freePort } from "../lib/harness.js";
import { startOidcProvider } from "../lib/oidc.js";
import * as sdk from "../lib/sdk.js";
import { startStack, http } from "../lib/stack.js";
import { startCallback, toml } from "../lib/sso.js";

const ACCOUNTS = {
  alice: { sub: "alice-sub", password: "alice-pw", preferred_username: "alice", name: "Alice Liddell", email: "alice@example.org", email_verified: true },
};

async function providerSignIn(page) {
  await page.getByLabel("Login").fill("alice");
  await page.getByLabel("Password").fill("alice-pw");
  await page.getByRole("button", { name: "Sign in" }).click();
}

describe("single sign-on in front of Synapse, through nginx", () => {
  let browser;
  let stack;
  let provider;
  let app;

  before(async () => {
    browser = await launchChromium();
    app = await startCallback();
    const providerPort = await freePort();
    stack = await startStack({
      env: {
        GATEHOUSE_SSO__OIDC: toml([
          { idp_id: "acme", idp_name: "Acme ID", issuer: `http://127.0.0.1:${providerPort}`, client_id: "gatehouse", client_secret: "s3cret" },
        ]),
        GATEHOUSE_SSO__CLIENT_ALLOWLIST: toml([new URL(app.url).origin]),
      },
    });
    provider = await startOidcProvider({
      port: providerPort,
      clients: [{ client_id: "gatehouse", client_secret: "s3cret", redirect_uris: [`${stack.clientUrl}/_gatehouse/sso/callback/acme`] }],
      accounts: ACCOUNTS,
    });
  });
  after(async () => {
    if (stack && process.env.INTEROP_STACK_LOGS) console.error(await stack.logs());
    await browser?.close();
    await stack?.down();
    await provider?.close();
    await app?.close();
  });

  async function login() {
    const context = await browser.newContext();
    const page = await context.newPage();
    const violations = watchCsp(page);
    const client = sdk.createClient({ baseUrl: stack.clientUrl });
    const arrived = app.next();
    await page.goto(client.getSsoLoginUrl(app.url, "sso", "acme", "register"));
    await providerSignIn(page);
    const response = await client.loginRequest({ type: "m.login.token", token: await arrived });
    return { context, page, response, violations };
  }

  it("a person signs up through the provider and uses the account on Synapse", async () => {
    const { context, response, violations } = await login();
    assert.equal(response.user_id, "@alice:localhost");
    const me = await http(`${stack.clientUrl}/_matrix/client/v3/account/whoami`, { token: response.access_token });
    assert.equal(me.status, 200);
    assert.equal(me.body.device_id, response.device_id);
    // Provisioned on Synapse with the provider's name.
    const profile = await http(`${stack.synapseUrl}/_matrix/client/v3/profile/${encodeURIComponent(response.user_id)}/displayname`, { token: response.access_token });
    assert.equal(profile.body.displayname, "Alice Liddell");
    const room = await http(`${stack.clientUrl}/_matrix/client/v3/createRoom`, { method: "POST", token: response.access_token, body: { name: "sso" } });
    assert.equal(room.status, 200, JSON.stringify(room.body));
    assert.deepEqual(violations, []);
    await context.close();
  });

  it("an SSO-only user deletes a device through the m.login.sso fallback; Synapse refuses it at once", async () => {
    const first = await login();
    const second = await login();
    await second.context.close();
    const path = `${stack.clientUrl}/_matrix/client/v3/devices/${encodeURIComponent(second.response.device_id)}`;
    const challenge = await http(path, { method: "DELETE", token: first.response.access_token, body: {} });
    assert.equal(challenge.status, 401);
    assert.deepEqual(challenge.body.flows, [{ stages: ["m.login.sso"] }]);
    const { session } = challenge.body;
    await first.page.goto(`${stack.clientUrl}/_matrix/client/v3/auth/m.login.sso/fallback/web?session=${session}`);
    await first.page.getByRole("link", { name: "Continue with Acme ID" }).click();
    await providerSignIn(first.page);
    await first.page.getByText("Thank you").waitFor();
    const deleted = await http(path, { method: "DELETE", token: first.response.access_token, body: { auth: { session } } });
    assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
    const gone = await http(`${stack.synapseUrl}/_matrix/client/v3/account/whoami`, { token: second.response.access_token });
    assert.equal(gone.status, 401);
    assert.deepEqual(first.violations, []);
    await first.context.close();
  });
});
