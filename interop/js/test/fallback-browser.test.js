// The fallback pages (spec: User-Interactive Authentication › Fallback) in a
// real headless Chromium (Debian's package, driven with playwright-core):
// fill the form, submit, and observe the page telling its client that the
// stage is done — by `postMessage("authDone")` to the window that opened it,
// or by calling `window.onAuthDone()` — then finish the original request
// with just the session.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { launchChromium } from "../lib/browser.js";
import { rawJson, startServer } from "../lib/harness.js";

const post = (server, route, body, token) =>
  rawJson(server.baseUrl, route, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });

const fallbackUrl = (server, stage, session) =>
  `${server.baseUrl}/_matrix/client/v3/auth/${stage}/fallback/web?session=${encodeURIComponent(session)}`;

/** Collects CSP violations a page reports, so a test can assert there were none. */
function watchCsp(page) {
  const violations = [];
  page.on("console", (msg) => {
    if (/Content Security Policy/i.test(msg.text())) violations.push(msg.text());
  });
  return violations;
}

describe("fallback pages in Chromium", () => {
  let browser;
  let server;
  let shots;

  before(async () => {
    browser = await launchChromium();
    server = await startServer({
      env: {
        GATEHOUSE_REGISTRATION__ENABLED: "true",
        GATEHOUSE_REGISTRATION__FLOWS: '[["m.login.registration_token", "m.login.terms"]]',
        GATEHOUSE_UIA__TERMS__PRIVACY__VERSION: '"1.0"',
        GATEHOUSE_UIA__TERMS__PRIVACY__LANGUAGES: '{en = {name = "Privacy policy", url = "https://example.org/privacy"}}',
      },
    });
    await server.createUser("alice", { password: "pw" });
    shots = process.env.INTEROP_SCREENSHOTS ?? (await mkdtemp(path.join(os.tmpdir(), "gatehouse-fallback-")));
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it("m.login.password in a popup: a wrong password is shown, the right one posts authDone to the opener", async () => {
    const login = await post(server, "/_matrix/client/v3/login", {
      type: "m.login.password",
      identifier: { type: "m.id.user", user: "alice" },
      password: "pw",
    });
    assert.equal(login.status, 200);
    const token = login.body.access_token;
    const challenge = await post(server, "/_matrix/client/v3/account/password", { new_password: "new-pw" }, token);
    assert.equal(challenge.status, 401);
    const session = challenge.body.session;

    const opener = await browser.newPage();
    await opener.goto(`${server.baseUrl}/_matrix/client/versions`);
    await opener.evaluate(() => {
      window.authDone = new Promise((resolve) => {
        window.addEventListener("message", (e) => {
          if (e.data === "authDone") resolve(true);
        });
      });
    });
    const [popup] = await Promise.all([
      opener.waitForEvent("popup"),
      opener.evaluate((url) => {
        window.open(url, "gatehouse-fallback");
      }, fallbackUrl(server, "m.login.password", session)),
    ]);
    const violations = watchCsp(popup);
    await popup.waitForLoadState();
    assert.match(await popup.textContent("main"), /@alice:localhost/);
    await popup.getByLabel("Password").fill("wrong");
    await popup.getByRole("button", { name: "Continue" }).click();
    await popup.waitForLoadState();
    // Errors are announced at once (role=alert), and the field points at them.
    assert.equal(await popup.getAttribute("#password", "aria-describedby"), "message");
    assert.match(await popup.textContent("[role=alert]"), /Invalid username or password/);

    await popup.getByLabel("Password").fill("pw");
    await popup.getByRole("button", { name: "Continue" }).click();
    const done = await Promise.race([
      opener.evaluate(() => window.authDone),
      new Promise((_, reject) => setTimeout(() => reject(new Error("no authDone message within 5 s")), 5000)),
    ]);
    assert.equal(done, true);
    await popup.screenshot({ path: path.join(shots, "password-done.png") });
    assert.deepEqual(violations, [], "the page's own nonce'd script and style run under its CSP");

    // The client finishes its request with only the session.
    const finished = await post(server, "/_matrix/client/v3/account/password", { new_password: "new-pw", auth: { session } }, token);
    assert.equal(finished.status, 200, JSON.stringify(finished.body));
    const relogin = await post(server, "/_matrix/client/v3/login", { type: "m.login.password", user: "alice", password: "new-pw" });
    assert.equal(relogin.status, 200);
  });

  it("m.login.registration_token and m.login.terms call window.onAuthDone; registration then completes", async () => {
    const { stdout } = await server.admin(["registration-token", "create", "--token", "browser-token"]);
    assert.match(stdout, /browser-token/);
    const body = { username: `browser${process.pid}`, password: "pw" };
    const challenge = await post(server, "/_matrix/client/v3/register", body);
    assert.equal(challenge.status, 401);
    const session = challenge.body.session;

    const context = await browser.newContext();
    await context.addInitScript(() => {
      window.onAuthDone = () => {
        document.title = "AUTH-DONE";
      };
    });
    const page = await context.newPage();
    const violations = watchCsp(page);
    await page.goto(fallbackUrl(server, "m.login.registration_token", session));
    await page.screenshot({ path: path.join(shots, "registration-token.png") });
    await page.getByLabel("Registration token").fill("browser-token");
    await page.getByRole("button", { name: "Continue" }).click();
    await page.waitForFunction(() => document.title === "AUTH-DONE", null, { timeout: 5000 });

    await page.goto(fallbackUrl(server, "m.login.terms", session));
    assert.match(await page.textContent("main"), /Privacy policy/);
    await page.getByLabel("I accept these policies").check();
    await page.screenshot({ path: path.join(shots, "terms.png") });
    await page.getByRole("button", { name: "Continue" }).click();
    await page.waitForFunction(() => document.title === "AUTH-DONE", null, { timeout: 5000 });
    assert.deepEqual(violations, []);
    await context.close();

    const finished = await post(server, "/_matrix/client/v3/register", { ...body, auth: { session } });
    assert.equal(finished.status, 200, JSON.stringify(finished.body));
    assert.equal(finished.body.user_id, `@${body.username}:localhost`);
  });
});
