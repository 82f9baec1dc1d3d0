// Single sign-on through a real CAS 3.0 server (django-cas-server, started
// on loopback by interop/cas/cas.sh) in headless Chromium: matrix-js-sdk's
// getCasLoginUrl (`/login/cas/redirect`), CAS's own login page, the ticket
// checked at /p3/serviceValidate, a new account named after the CAS user
// (with a numbered suffix: the name is taken here, and this provider is set
// to `suffix`), the loginToken exchanged with m.login.token; a ticket
// replayed is refused.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { launchChromium, watchCsp } from "../lib/browser.js";
import { freePort, rawJson, startServer } from "../lib/harness.js";
import * as sdk from "../lib/sdk.js";
import { startCallback, toml } from "../lib/sso.js";

const CAS_SH = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "cas", "cas.sh");

const cas = (...args) =>
  new Promise((resolve, reject) =>
    execFile("bash", [CAS_SH, ...args], { timeout: 120_000 }, (error, stdout, stderr) =>
      error ? reject(new Error(`cas.sh ${args.join(" ")}: ${stderr}`)) : resolve(stdout.trim()),
    ),
  );

async function casSignIn(page, username, password) {
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Login" }).click();
}

describe("single sign-on with a CAS server, in Chromium", () => {
  let browser;
  let server;
  let app;
  let casDir;
  let casUrl;

  before(async () => {
    casDir = await mkdtemp(path.join(os.tmpdir(), "gatehouse-cas-"));
    const port = await freePort();
    casUrl = (await cas("start", casDir, String(port))).replace(/^CAS_URL=/, "");
    browser = await launchChromium();
    app = await startCallback();
    server = await startServer({
      env: {
        GATEHOUSE_SSO__CAS: toml([
          {
            idp_id: "campus", idp_name: "Campus CAS", server_url: casUrl, email_is_verified: true,
            user_mapping: { on_localpart_taken: "suffix" },
          },
        ]),
        GATEHOUSE_SSO__CLIENT_ALLOWLIST: toml([new URL(app.url).origin]),
      },
    });
    // Someone here already has the CAS user's name.
    await server.createUser("alice", { password: "pw" });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    await app?.close();
    if (casDir) {
      await cas("stop", casDir).catch(() => {});
      await rm(casDir, { recursive: true, force: true });
    }
  });

  it("GET /login offers m.login.sso (and m.login.cas) with the CAS provider", async () => {
    const { flows } = await sdk.createClient({ baseUrl: server.baseUrl }).loginFlows();
    assert.deepEqual(flows.find((f) => f.type === "m.login.sso").identity_providers, [
      { id: "campus", name: "Campus CAS" },
    ]);
    assert.ok(flows.some((f) => f.type === "m.login.cas"));
  });

  it("getCasLoginUrl → CAS's page → ticket → loginToken → m.login.token → whoami", async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const violations = watchCsp(page);
    const client = sdk.createClient({ baseUrl: server.baseUrl });
    let callbackUrl;
    page.on("request", (r) => {
      if (r.url().includes("/_gatehouse/sso/callback/campus")) callbackUrl ??= r.url();
    });
    const arrived = app.next();
    await page.goto(client.getCasLoginUrl(app.url));
    assert.ok(page.url().startsWith(casUrl), page.url());
    await casSignIn(page, "alice", "alice-pw");
    const loginToken = await arrived;
    const login = await client.loginRequest({ type: "m.login.token", token: loginToken });
    assert.match(login.user_id, /^@alice1:/, "the taken name with a suffix");
    const me = await rawJson(server.baseUrl, "/_matrix/client/v3/account/whoami", {
      headers: { authorization: `Bearer ${login.access_token}` },
    });
    assert.equal(me.body.user_id, login.user_id);
    // CAS vouches for the address here (email_is_verified): it is the account's.
    const threepids = await rawJson(server.baseUrl, "/_matrix/client/v3/account/3pid", {
      headers: { authorization: `Bearer ${login.access_token}` },
    });
    assert.deepEqual(threepids.body.threepids.map((t) => t.address), ["alice@example.org"]);
    assert.deepEqual(violations, []);

    // The same ticket again (a new flow of an attacker's, or the old URL): refused.
    const replay = await page.goto(callbackUrl);
    assert.equal(replay.status(), 400);
    const start = await fetch(client.getCasLoginUrl(app.url), { redirect: "manual" });
    const service = new URL(start.headers.get("location")).searchParams.get("service");
    const ticket = new URL(callbackUrl).searchParams.get("ticket");
    const cookie = start.headers.get("set-cookie").split(";")[0];
    const reused = await fetch(`${service}&ticket=${ticket}`, { headers: { cookie } });
    assert.equal(reused.status, 403);
    assert.match(await reused.text(), /Campus CAS did not confirm who you are/);
    await context.close();
  });
});
