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

import { gatehouseBin, rawJson } from "../lib/harness.js";
import * as sdk from "../lib/sdk.js";
import { ACCOUNTS, providerSignIn, tokenLogin, useSsoWorld, whoami } from "../lib/sso-world.js";

describe("single sign-on with an OpenID provider, in Chromium", () => {
  const world = useSsoWorld();
  let browser, server, provider, rogue, app, trustedApp; // app is not on the allow-list, trustedApp is
  before(() => ({ browser, server, provider, rogue, app, trustedApp } = world));
  const newPage = () => world.newPage();
  const ssoLogin = (...args) => world.ssoLogin(...args);

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
    assert.deepEqual(world.violations, []);
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
    assert.deepEqual(world.violations, []);
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
    assert.deepEqual(world.violations, []);
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

    const shown = await newPage();
    await shown.page.goto(fallback);
    assert.match(await shown.page.textContent("main"), /sign out one of your devices/, "the page says what is approved");
    await shown.context.close();

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
    assert.deepEqual(world.violations, []);
    await context.close();
  });

  it("two sign-ins under way in one browser both finish", async () => {
    const { context } = await newPage();
    const client = sdk.createClient({ baseUrl: server.baseUrl });
    const first = await context.newPage();
    const second = await context.newPage();
    await first.goto(client.getSsoLoginUrl(trustedApp.url, "sso", "acme"));
    await second.goto(client.getSsoLoginUrl(trustedApp.url, "sso", "acme"));
    let arrived = trustedApp.next();
    await providerSignIn(first, "alice", ACCOUNTS.alice.password);
    assert.match((await tokenLogin(server, await arrived)).body.user_id, /^@alice:/);
    arrived = trustedApp.next();
    await providerSignIn(second, "alice", ACCOUNTS.alice.password);
    assert.match((await tokenLogin(server, await arrived)).body.user_id, /^@alice:/);
    await context.close();
  });

  it("a locked account signs in through SSO neither to clients nor to the account page", async () => {
    await server.admin(["user", "lock", "dorothy"]);
    try {
      const { context, page } = await newPage();
      const client = sdk.createClient({ baseUrl: server.baseUrl });
      await page.goto(client.getSsoLoginUrl(trustedApp.url, "sso", "acme"));
      await providerSignIn(page, "dora", ACCOUNTS.dora.password);
      assert.match(await page.getByRole("alert").textContent(), /locked/);
      await page.goto(`${server.baseUrl}/_gatehouse/account`);
      await page.getByRole("link", { name: "Sign in with Acme ID" }).click();
      assert.match(await page.getByRole("alert").textContent(), /locked/);
      await context.close();
    } finally {
      await server.admin(["user", "lock", "dorothy", "--unlock"]);
    }
  });

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
    assert.deepEqual(world.violations, []);
    await context.close();

    // Alice has only her Acme identity: she signs in to the page with it, and may not unlink it.
    const sso = await newPage();
    await sso.page.goto(`${server.baseUrl}/_gatehouse/account`);
    await sso.page.getByRole("link", { name: "Sign in with Acme ID" }).click();
    await providerSignIn(sso.page, "alice", ACCOUNTS.alice.password);
    await sso.page.getByText(/Signed in as @alice:/).waitFor();
    await sso.page.getByRole("button", { name: "Unlink Acme ID" }).click();
    assert.match(await sso.page.getByRole("alert").textContent(), /only way to sign in/);
    assert.deepEqual(world.violations, []);
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
});
