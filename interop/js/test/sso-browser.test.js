// Single sign-on in a real headless Chromium, against a real OpenID
// provider (npm's certified oidc-provider, with its own login page) on
// loopback: matrix-js-sdk's getSsoLoginUrl, the provider's page, Gatehouse's
// pages (username choice, the confirmation before a login token leaves for
// a site not on the allow-list), the loginToken at the client's callback,
// m.login.token, whoami; the m.login.sso UIA stage through its fallback
// page; and the attacks: a forged or replayed callback, a replayed code,
// ID tokens with the wrong nonce, issuer, audience or key, expired and
// reused login tokens, open redirects, an unverified email address.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { launchChromium, watchCsp } from "../lib/browser.js";
import { freePort, gatehouseBin, rawJson, startServer } from "../lib/harness.js";
import { startOidcProvider } from "../lib/oidc.js";
import { startRogueProvider } from "../lib/rogue-oidc.js";
import * as sdk from "../lib/sdk.js";
import { startCallback, toml } from "../lib/sso.js";

const CLIENT_ID = "gatehouse";
const CLIENT_SECRET = "acme-client-secret";

/** The provider's people: login name → password and claims. */
const ACCOUNTS = {
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

const whoami = (server, token) =>
  rawJson(server.baseUrl, "/_matrix/client/v3/account/whoami", {
    headers: { authorization: `Bearer ${token}` },
  });

const tokenLogin = (server, token) =>
  rawJson(server.baseUrl, "/_matrix/client/v3/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ type: "m.login.token", token }),
  });

/** What a person does on the provider's own login page. */
async function providerSignIn(page, login, password) {
  await page.getByLabel("Login").fill(login);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

describe("single sign-on with an OpenID provider, in Chromium", () => {
  let browser;
  let server;
  let provider;
  let rogue;
  let app; // a client's callback, not on the allow-list
  let trustedApp; // on the allow-list
  let violations = [];

  before(async () => {
    browser = await launchChromium();
    app = await startCallback();
    trustedApp = await startCallback();
    rogue = await startRogueProvider({ clientId: CLIENT_ID });
    const providerPort = await freePort();
    const issuer = `http://127.0.0.1:${providerPort}`;
    server = await startServer({
      env: {
        GATEHOUSE_SSO__OIDC: toml([
          {
            idp_id: "acme", idp_name: "Acme ID", idp_brand: "acme", idp_icon: "mxc://example.org/acme",
            issuer, client_id: CLIENT_ID, client_secret: CLIENT_SECRET,
            user_mapping: { link_by_email: true },
          },
          { idp_id: "rogue", idp_name: "Rogue", issuer: rogue.issuer, client_id: CLIENT_ID, client_secret: "x" },
        ]),
        GATEHOUSE_SSO__CLIENT_ALLOWLIST: toml([new URL(trustedApp.url).origin]),
        GATEHOUSE_TOKENS__LOGIN_TOKEN_LIFETIME_MS: "4000",
      },
    });
    provider = await startOidcProvider({
      port: providerPort,
      clients: [{ client_id: CLIENT_ID, client_secret: CLIENT_SECRET, redirect_uris: [`${server.baseUrl}/_gatehouse/sso/callback/acme`] }],
      accounts: ACCOUNTS,
    });
    await server.createUser("robert", { password: "pw", email: "robert@example.org" });
    await server.createUser("dorothy", { password: "pw", email: "dorothy@example.org" });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    await provider?.close();
    await rogue?.close();
    await app?.close();
    await trustedApp?.close();
  });

  /** A fresh browser profile with its CSP violations collected. */
  async function newPage() {
    const context = await browser.newContext();
    const page = await context.newPage();
    violations = watchCsp(page);
    return { context, page };
  }

  /** Logs in with `person` through the provider, from the URL matrix-js-sdk builds. */
  async function ssoLogin(page, person, { callback = app, idp = "acme", action } = {}) {
    const client = sdk.createClient({ baseUrl: server.baseUrl });
    const arrived = callback.next();
    await page.goto(client.getSsoLoginUrl(callback.url, "sso", idp, action));
    await providerSignIn(page, person, ACCOUNTS[person].password);
    return arrived;
  }

  it("GET /login advertises m.login.sso with its providers, and m.login.token", async () => {
    const client = sdk.createClient({ baseUrl: server.baseUrl });
    const { flows } = await client.loginFlows();
    const sso = flows.find((f) => f.type === "m.login.sso");
    assert.deepEqual(sso.identity_providers, [
      { id: "acme", name: "Acme ID", icon: "mxc://example.org/acme", brand: "acme" },
      { id: "rogue", name: "Rogue" },
    ]);
    assert.ok(flows.some((f) => f.type === "m.login.token"));
  });

  it("a new person signs up through the provider: confirmation page, loginToken, m.login.token, whoami", async () => {
    const { context, page } = await newPage();
    const arrived = ssoLogin(page, "alice", { action: "register" });
    // Not on the allow-list: Gatehouse says where the token goes first.
    await page.getByRole("heading", { name: /Continue to 127\.0\.0\.1:\d+\?/ }).waitFor();
    assert.match(await page.textContent("main"), /@alice:/);
    assert.equal(app.tokens.length, 0, "nothing reaches the app before the person agrees");
    await page.getByRole("link", { name: /Continue to/ }).click();
    const loginToken = await arrived;

    const client = sdk.createClient({ baseUrl: server.baseUrl });
    const login = await client.loginRequest({ type: "m.login.token", token: loginToken });
    assert.match(login.user_id, /^@alice:/);
    const me = await whoami(server, login.access_token);
    assert.equal(me.status, 200);
    assert.equal(me.body.user_id, login.user_id);

    // Single use.
    const again = await tokenLogin(server, loginToken);
    assert.equal(again.status, 403);
    assert.equal(again.body.errcode, "M_FORBIDDEN");
    assert.deepEqual(violations, []);
    await context.close();
  });

  it("an allow-listed redirect gets the token straight away; the same identity signs in to the same account", async () => {
    const { context, page } = await newPage();
    const loginToken = await ssoLogin(page, "alice", { callback: trustedApp });
    const login = await tokenLogin(server, loginToken);
    assert.equal(login.status, 200);
    assert.match(login.body.user_id, /^@alice:/);
    await context.close();
  });

  it("several providers and none named: a picker page", async () => {
    const { context, page } = await newPage();
    const client = sdk.createClient({ baseUrl: server.baseUrl });
    await page.goto(client.getSsoLoginUrl(app.url, "sso"));
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await page.getByRole("link", { name: "Continue with Acme ID" }).click();
    await page.getByLabel("Login").waitFor();
    assert.ok(page.url().startsWith(provider.issuer), page.url());
    assert.deepEqual(violations, []);
    await context.close();
  });

  it("a taken username: the person chooses another, errors announced", async () => {
    const { context, page } = await newPage();
    const arrived = ssoLogin(page, "mallory");
    await page.getByRole("heading", { name: "Choose a username" }).waitFor();
    assert.match(await page.getByRole("alert").textContent(), /alice is taken/);
    const field = page.getByLabel("Username");
    assert.equal(await field.getAttribute("aria-invalid"), "true");
    // Another taken name, then a free one.
    await field.fill("robert");
    await page.getByRole("button", { name: "Create account" }).click();
    assert.match(await page.getByRole("alert").textContent(), /robert is taken/);
    await page.getByLabel("Username").fill("mallory");
    await page.getByRole("button", { name: "Create account" }).click();
    await page.getByRole("link", { name: /Continue to/ }).click();
    const login = await tokenLogin(server, await arrived);
    assert.match(login.body.user_id, /^@mallory:/);
    assert.deepEqual(violations, []);
    await context.close();
  });

  it("an email address the provider did not verify links to nothing; a verified one signs in to its account", async () => {
    const { context, page } = await newPage();
    let arrived = ssoLogin(page, "bob", { callback: trustedApp });
    let login = await tokenLogin(server, await arrived);
    assert.match(login.body.user_id, /^@bob:/, "a new account, not robert's");
    await context.close();

    const second = await newPage();
    arrived = ssoLogin(second.page, "dora", { callback: trustedApp });
    login = await tokenLogin(server, await arrived);
    assert.match(login.body.user_id, /^@dorothy:/, "linked by verified email");
    await second.context.close();
  });

  it("an expired login token is refused", async () => {
    const { context, page } = await newPage();
    const loginToken = await ssoLogin(page, "alice", { callback: trustedApp });
    await new Promise((r) => setTimeout(r, 4500));
    const late = await tokenLogin(server, loginToken);
    assert.equal(late.status, 403);
    assert.equal(late.body.errcode, "M_FORBIDDEN");
    await context.close();
  });

  it("m.login.sso re-authenticates an SSO-only user through the fallback page, only as the same person", async () => {
    const { context, page } = await newPage();
    const login = await tokenLogin(server, await ssoLogin(page, "alice", { callback: trustedApp }));
    const elsewhere = await newPage();
    const other = await tokenLogin(server, await ssoLogin(elsewhere.page, "alice", { callback: trustedApp }));
    await elsewhere.context.close();
    const auth = { authorization: `Bearer ${login.body.access_token}`, "content-type": "application/json" };
    const del = (body) =>
      rawJson(server.baseUrl, `/_matrix/client/v3/devices/${encodeURIComponent(other.body.device_id)}`, {
        method: "DELETE",
        headers: auth,
        body: JSON.stringify(body),
      });
    const challenge = await del({});
    assert.equal(challenge.status, 401);
    assert.deepEqual(challenge.body.flows, [{ stages: ["m.login.sso"] }], "no password flow for a user without one");
    const session = challenge.body.session;
    const fallback = `${server.baseUrl}/_matrix/client/v3/auth/m.login.sso/fallback/web?session=${session}`;

    // Someone else at the same provider cannot pass the stage.
    const intruder = await newPage();
    await intruder.page.goto(fallback);
    await intruder.page.getByRole("link", { name: "Continue with Acme ID" }).click();
    await providerSignIn(intruder.page, "mallory", ACCOUNTS.mallory.password);
    await intruder.page.getByRole("alert").waitFor();
    assert.match(await intruder.page.getByRole("alert").textContent(), /not linked to the account you are confirming/);
    await intruder.context.close();
    assert.equal((await del({ auth: { session } })).status, 401, "the stage is not done");

    // The person themself: the provider asks again (prompt=login).
    await page.goto(fallback);
    await page.getByRole("link", { name: "Continue with Acme ID" }).click();
    await providerSignIn(page, "alice", ACCOUNTS.alice.password);
    await page.getByText("Thank you").waitFor();
    const done = await del({ auth: { session } });
    assert.equal(done.status, 200, JSON.stringify(done.body));
    assert.equal((await whoami(server, other.body.access_token)).status, 401);
    assert.deepEqual(violations, []);
    await context.close();
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

  it("the account page lists, adds and removes sign-in providers, never the last way in; admin commands too", async () => {
    // Robert has a password; he links his Acme identity (Erin's login there).
    const { context, page } = await newPage();
    await page.goto(`${server.baseUrl}/_gatehouse/account`);
    await page.getByLabel("Username").fill("robert");
    await page.getByLabel("Password").fill("pw");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Sign-in providers" }).waitFor();
    await page.getByRole("link", { name: "Link Acme ID" }).click();
    await providerSignIn(page, "erin", ACCOUNTS.erin.password);
    await page.getByText("Your Acme ID account is now linked").waitFor();
    await page.getByRole("link", { name: "Back to your account" }).click();
    await page.getByText("(erin-sub)").waitFor();
    assert.match((await server.admin(["user", "links", "robert"])).stdout, /acme\terin-sub/);
    // Signing in through Acme now reaches Robert's account.
    const other = await newPage();
    const login = await tokenLogin(server, await ssoLogin(other.page, "erin", { callback: trustedApp }));
    assert.match(login.body.user_id, /^@robert:/);
    await other.context.close();
    // He has a password: the link may go.
    await page.getByRole("button", { name: "Unlink Acme ID" }).click();
    assert.match(await page.getByRole("status").textContent(), /no longer signs in/);
    assert.deepEqual(violations, []);
    await context.close();

    // Alice has only her Acme identity: she signs in to the page with it, and may not unlink it.
    const sso = await newPage();
    await sso.page.goto(`${server.baseUrl}/_gatehouse/account`);
    await sso.page.getByRole("link", { name: "Sign in with Acme ID" }).click();
    await providerSignIn(sso.page, "alice", ACCOUNTS.alice.password);
    await sso.page.getByText(/Signed in as @alice:/).waitFor();
    await sso.page.getByRole("button", { name: "Unlink Acme ID" }).click();
    assert.match(await sso.page.getByRole("alert").textContent(), /only way to sign in/);
    assert.deepEqual(violations, []);
    await sso.context.close();
    await assert.rejects(server.admin(["user", "unlink", "alice", "--provider", "acme", "--subject", "alice-sub"]), /only way to sign in/);
    await server.admin(["user", "link", "alice", "--provider", "rogue", "--subject", "alice-at-rogue"]);
    await server.admin(["user", "unlink", "alice", "--provider", "rogue", "--subject", "alice-at-rogue"]);
  });

  it("gatehouse client login --sso: the URL it prints, the provider, its loopback callback, a stored session", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "gatehouse-cli-sso-"));
    const env = { ...process.env, GATEHOUSE_CLIENT_DIR: dir };
    const cli = spawn(gatehouseBin(), ["client", "login", "--homeserver", server.baseUrl, "--sso", "--idp", "acme"], { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    cli.stdout.on("data", (d) => (stdout += d));
    const url = await new Promise((resolve, reject) => {
      cli.stderr.on("data", (d) => {
        stderr += d;
        const found = stderr.match(/^(http\S+login\/sso\/redirect\S+)$/m);
        if (found) resolve(found[1]);
      });
      cli.on("exit", () => reject(new Error(`the CLI exited: ${stderr}`)));
    });
    const exited = new Promise((resolve) => cli.on("exit", resolve));
    const { context, page } = await newPage();
    await page.goto(url);
    await providerSignIn(page, "alice", ACCOUNTS.alice.password);
    await page.getByRole("link", { name: /Continue to 127\.0\.0\.1/ }).click();
    assert.equal(await exited, 0, stderr);
    assert.match(stdout, /@alice:/);
    const whoamiOut = await new Promise((resolve, reject) =>
      execFile(gatehouseBin(), ["client", "whoami"], { env }, (e, out, err) => (e ? reject(new Error(err)) : resolve(out))),
    );
    assert.match(whoamiOut, /@alice:/);
    await context.close();
    await rm(dir, { recursive: true, force: true });
  });

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
