// OpenID providers that keep profile claims out of the ID token (the
// spec's default: oidc-provider with conformIdTokenClaims) are read through
// their userinfo endpoint when `userinfo = true`: the account is named
// after the person's preferred_username. The same provider without it
// leaves Gatehouse only `sub`, and the person is asked for a name.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";

import { launchChromium } from "../lib/browser.js";
import { freePort, rawJson, startServer } from "../lib/harness.js";
import { startOidcProvider } from "../lib/oidc.js";
import * as sdk from "../lib/sdk.js";
import { startCallback, toml } from "../lib/sso.js";

const ACCOUNTS = {
  zed: { sub: "zed-sub", password: "zed-pw", preferred_username: "zed", name: "Zed", email: "zed@example.org", email_verified: true },
};

describe("single sign-on reading the userinfo endpoint", () => {
  let browser;
  let server;
  let provider;
  let app;

  before(async () => {
    browser = await launchChromium();
    app = await startCallback();
    const port = await freePort();
    const issuer = `http://127.0.0.1:${port}`;
    const common = { issuer, client_id: "gatehouse", client_secret: "s3cret" };
    server = await startServer({
      env: {
        GATEHOUSE_SSO__OIDC: toml([
          { idp_id: "with-userinfo", idp_name: "With userinfo", userinfo: true, ...common },
          { idp_id: "id-token-only", idp_name: "ID token only", ...common },
        ]),
        GATEHOUSE_SSO__CLIENT_ALLOWLIST: toml([new URL(app.url).origin]),
      },
    });
    provider = await startOidcProvider({
      port,
      clients: [{
        client_id: "gatehouse",
        client_secret: "s3cret",
        redirect_uris: ["with-userinfo", "id-token-only"].map((id) => `${server.baseUrl}/_gatehouse/sso/callback/${id}`),
      }],
      accounts: ACCOUNTS,
      // The ID token carries `sub` alone when an access token is issued.
      extraConfig: { conformIdTokenClaims: true },
    });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    await provider?.close();
    await app?.close();
  });

  async function signIn(idp) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const client = sdk.createClient({ baseUrl: server.baseUrl });
    await page.goto(client.getSsoLoginUrl(app.url, "sso", idp));
    await page.getByLabel("Login").fill("zed");
    await page.getByLabel("Password").fill("zed-pw");
    await page.getByRole("button", { name: "Sign in" }).click();
    return { context, page };
  }

  it("without userinfo only sub is known: the person is asked for a name", async () => {
    const { context, page } = await signIn("id-token-only");
    await page.getByRole("heading", { name: "Choose a username" }).waitFor();
    assert.equal(await page.getByLabel("Username").inputValue(), "");
    await context.close();
  });

  it("with userinfo the account is named from it", async () => {
    const arrived = app.next();
    const { context } = await signIn("with-userinfo");
    const login = await rawJson(server.baseUrl, "/_matrix/client/v3/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ type: "m.login.token", token: await arrived }),
    });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    assert.match(login.body.user_id, /^@zed:/);
    await context.close();
  });
});
