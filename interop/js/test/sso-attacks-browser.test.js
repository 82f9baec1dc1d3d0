// Single sign-on attacks, in headless Chromium against a real OpenID
// provider (oidc-provider) and a hostile one: forged, replayed and planted
// callbacks, a replayed code, ID tokens with the wrong nonce, issuer,
// audience or key or expired, a re-authentication answered from an old
// provider session, open redirects and bad parameters.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";

import { rawJson } from "../lib/harness.js";
import * as sdk from "../lib/sdk.js";
import { ACCOUNTS, providerSignIn, tokenLogin, useSsoWorld } from "../lib/sso-world.js";

describe("single sign-on attacks, in Chromium", () => {
  const world = useSsoWorld();
  let browser, server, provider, rogue, app, trustedApp; // app is not on the allow-list, trustedApp is
  before(() => ({ browser, server, provider, rogue, app, trustedApp } = world));
  const newPage = () => world.newPage();
  const ssoLogin = (...args) => world.ssoLogin(...args);

  it("m.login.sso needs a fresh sign-in at the provider: a reused session (old auth_time) is refused", async () => {
    const login = async () => {
      const { context, page } = await newPage();
      const response = await tokenLogin(server, await ssoLogin(page, "alice", { callback: trustedApp }));
      await context.close();
      return response.body;
    };
    const me = await login();
    const other = await login();
    await server.admin(["user", "link", "alice", "--provider", "rogue", "--subject", "rogue-sub-1"]);
    const del = (body) =>
      rawJson(server.baseUrl, `/_matrix/client/v3/devices/${encodeURIComponent(other.device_id)}`, {
        method: "DELETE",
        headers: { authorization: `Bearer ${me.access_token}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const { session } = (await del({})).body;
    const fallback = `${server.baseUrl}/_matrix/client/v3/auth/m.login.sso/fallback/web?session=${session}`;
    const { context, page } = await newPage();
    rogue.setMode("stale-auth");
    await page.goto(fallback);
    await page.getByRole("link", { name: "Continue with Rogue" }).click();
    await page.getByRole("alert").waitFor();
    assert.match(await page.getByRole("alert").textContent(), /Rogue did not confirm who you are/);
    assert.equal((await del({ auth: { session } })).status, 401, "the stage is not done");
    rogue.setMode("honest");
    await page.goto(fallback);
    await page.getByRole("link", { name: "Continue with Rogue" }).click();
    await page.getByText("Thank you").waitFor();
    assert.equal((await del({ auth: { session } })).status, 200);
    await context.close();
    await server.admin(["user", "unlink", "alice", "--provider", "rogue", "--subject", "rogue-sub-1"]);
  });

  it("a callback with a forged state, replayed, or from another browser is refused", async () => {
    const forged = await fetch(`${server.baseUrl}/_gatehouse/sso/callback/acme?state=forged&code=x`);
    assert.equal(forged.status, 400);
    assert.match(await forged.text(), /expired or was already used/);

    // Catch the provider's redirect back, and replay it.
    const { context, page } = await newPage();
    const client = sdk.createClient({ baseUrl: server.baseUrl });
    let callbackUrl;
    page.on("request", (r) => {
      if (r.url().includes("/_gatehouse/sso/callback/acme")) callbackUrl ??= r.url();
    });
    const arrived = trustedApp.next();
    await page.goto(client.getSsoLoginUrl(trustedApp.url, "sso", "acme"));
    await providerSignIn(page, "alice", ACCOUNTS.alice.password);
    await arrived;
    const replay = await page.goto(callbackUrl);
    assert.equal(replay.status(), 400);

    // The code again, under a new flow of the attacker's: the provider refuses it.
    const start = await fetch(client.getSsoLoginUrl(trustedApp.url, "sso", "acme"), { redirect: "manual" });
    const freshState = new URL(start.headers.get("location")).searchParams.get("state");
    const cookie = start.headers.get("set-cookie").split(";")[0];
    const code = new URL(callbackUrl).searchParams.get("code");
    const reused = await fetch(`${server.baseUrl}/_gatehouse/sso/callback/acme?state=${freshState}&code=${code}`, { headers: { cookie } });
    assert.equal(reused.status, 403);
    assert.match(await reused.text(), /did not confirm who you are/);
    await context.close();

    // A victim's browser given the attacker's callback URL: no binding cookie.
    const attacker = await fetch(client.getSsoLoginUrl(trustedApp.url, "sso", "rogue"), { redirect: "manual" });
    const atProvider = await fetch(attacker.headers.get("location"), { redirect: "manual" });
    const victim = await newPage();
    const planted = await victim.page.goto(atProvider.headers.get("location"));
    assert.equal(planted.status(), 403);
    assert.match(await victim.page.textContent("main"), /started in another browser/);
    await victim.context.close();
  });

  for (const [mode, what] of [
    ["nonce", "a nonce it was not given"],
    ["issuer", "another issuer"],
    ["audience", "another audience"],
    ["key", "a key the provider does not publish"],
    ["expired", "an expired ID token"],
  ]) {
    it(`an ID token with ${what} is refused`, async () => {
      const attempt = async () => {
        const { context, page } = await newPage();
        const before = trustedApp.tokens.length;
        const client = sdk.createClient({ baseUrl: server.baseUrl });
        const response = await page.goto(client.getSsoLoginUrl(trustedApp.url, "sso", "rogue"));
        const status = response.status();
        const text = await page.textContent("body");
        await context.close();
        return { status, text, delivered: trustedApp.tokens.length > before };
      };
      rogue.setMode("honest");
      const honest = await attempt();
      assert.equal(honest.delivered, true, `the honest path works: ${honest.status} ${honest.text}`);
      rogue.setMode(mode);
      const attacked = await attempt();
      assert.equal(attacked.status, 403, attacked.text);
      assert.match(attacked.text, /Rogue did not confirm who you are/);
      assert.equal(attacked.delivered, false);
    });
  }

  it("bad redirect URLs, actions and providers get Matrix errors", async () => {
    const get = (q, idp = "/acme") => rawJson(server.baseUrl, `/_matrix/client/v3/login/sso/redirect${idp}?${q}`, { redirect: "manual" });
    const cases = [
      ["", 400, "M_MISSING_PARAM"],
      ["redirectUrl=javascript%3Aalert(1)", 400, "M_INVALID_PARAM"],
      ["redirectUrl=%2Frelative", 400, "M_INVALID_PARAM"],
      [`redirectUrl=${encodeURIComponent(app.url)}&action=steal`, 400, "M_INVALID_PARAM"],
    ];
    for (const [q, status, errcode] of cases) {
      const r = await get(q);
      assert.equal(r.status, status, q);
      assert.equal(r.body.errcode, errcode, q);
    }
    const unknown = await get(`redirectUrl=${encodeURIComponent(app.url)}`, "/nope");
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.errcode, "M_NOT_FOUND");

    // A URL that starts like an allowed one but goes elsewhere is not trusted.
    const { context, page } = await newPage();
    const sneaky = `${new URL(trustedApp.url).origin}@evil.example/steal`;
    const client = sdk.createClient({ baseUrl: server.baseUrl });
    await page.goto(client.getSsoLoginUrl(sneaky, "sso", "acme"));
    await providerSignIn(page, "alice", ACCOUNTS.alice.password);
    await page.getByRole("heading", { name: "Continue to evil.example?" }).waitFor();
    await context.close();
  });
});
