// The login fallback page (spec: Login Fallback, `GET /_matrix/static/client/login/`)
// in a real headless Chromium (Debian's package, driven with playwright-core).
// A person types a username and password; the page calls
// `window.matrixLogin.onLogin(response)` with the `/login` response, and the
// client that embeds or opened the page receives it — whether it sets that
// function once each page has loaded (as Element Android and iOS did in
// their web views), before the page runs (a script injected at document
// start), or, as a web page, on the popup it opened. The access token it
// gets then works.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { launchChromium, watchCsp } from "../lib/browser.js";
import { rawJson, startServer } from "../lib/harness.js";

const LOGIN_PAGE = "/_matrix/static/client/login/";

const whoami = (server, token) =>
  rawJson(server.baseUrl, "/_matrix/client/v3/account/whoami", {
    headers: { authorization: `Bearer ${token}` },
  });

/** Resolves with what `promise` gives, or fails after `ms`. */
function within(promise, ms, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms)),
  ]);
}

/** What a person does: type the username and password, press Sign in. */
async function signIn(page, user, password) {
  await page.getByLabel("Username, Matrix ID or email address").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

describe("the login fallback page in Chromium", () => {
  let browser;
  let server;
  let shots;

  before(async () => {
    browser = await launchChromium();
    server = await startServer();
    await server.createUser("alice", { password: "pw", email: "alice@example.org" });
    shots = process.env.INTEROP_SCREENSHOTS ?? (await mkdtemp(path.join(os.tmpdir(), "gatehouse-login-fallback-")));
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it("an embedding client that sets onLogin once each page has loaded gets the login response", async () => {
    const context = await browser.newContext();
    // The client's side of the bridge, like a web view's JavaScript interface.
    let deliver;
    const received = new Promise((resolve) => {
      deliver = resolve;
    });
    const calls = [];
    await context.exposeBinding("clientBridge", (_source, response) => {
      calls.push(response);
      deliver(response);
    });
    const page = await context.newPage();
    const violations = watchCsp(page);
    // After every load, as Element Android's onPageFinished and iOS's
    // webViewDidFinishLoad did.
    page.on("load", () => {
      page
        .evaluate(() => {
          window.matrixLogin.onLogin = (response) => window.clientBridge(response);
        })
        .catch(() => {});
    });
    await page.goto(`${server.baseUrl}${LOGIN_PAGE}?device_id=FALLBACKDEV&initial_device_display_name=Web%20view`);
    assert.equal(await page.evaluate(() => typeof window.matrixLogin?.onLogin), "function", "the spec's hook is there to replace");
    await page.screenshot({ path: path.join(shots, "login-form.png") });

    await signIn(page, "alice", "wrong");
    await page.waitForLoadState();
    // Announced at once (role=alert), pointed at by the fields, the username kept.
    assert.match(await page.textContent("[role=alert]"), /Wrong username or password/);
    assert.equal(await page.getAttribute("#password", "aria-describedby"), "message");
    assert.equal(await page.getAttribute("#password", "aria-invalid"), "true");
    assert.equal(await page.inputValue("#user"), "alice");
    await page.screenshot({ path: path.join(shots, "login-wrong-password.png") });
    assert.equal(calls.length, 0, "no login, no call");

    await signIn(page, "alice", "pw");
    const response = await within(received, 10_000, "no onLogin call");
    assert.equal(response.user_id, "@alice:localhost");
    assert.equal(response.device_id, "FALLBACKDEV", "the query's device_id went with the login");
    assert.equal(typeof response.access_token, "string");
    assert.match(await page.textContent("[role=status]"), /signed in as @alice:localhost/);
    await page.screenshot({ path: path.join(shots, "login-signed-in.png") });
    const me = await whoami(server, response.access_token);
    assert.equal(me.status, 200, JSON.stringify(me.body));
    assert.equal(me.body.user_id, "@alice:localhost");
    assert.equal(me.body.device_id, "FALLBACKDEV");
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(calls.length, 1, "called once");
    assert.deepEqual(violations, [], "the page's own nonce'd script and style run under its CSP");
    await context.close();
  });

  it("an embedding client that defines matrixLogin before the page runs is called, not overwritten", async () => {
    const context = await browser.newContext();
    let deliver;
    const received = new Promise((resolve) => {
      deliver = resolve;
    });
    await context.exposeBinding("clientBridge", (_source, response) => deliver(response));
    // A user script injected at document start, on every page.
    await context.addInitScript(() => {
      window.matrixLogin = { onLogin: (response) => window.clientBridge(response) };
    });
    const page = await context.newPage();
    const violations = watchCsp(page);
    await page.goto(`${server.baseUrl}${LOGIN_PAGE}`);
    // By email address this time, typed as a person would, sent with Enter.
    await page.getByLabel("Username, Matrix ID or email address").pressSequentially("Alice@Example.org");
    await page.getByLabel("Password").pressSequentially("pw");
    await page.keyboard.press("Enter");
    const response = await within(received, 10_000, "no onLogin call");
    assert.equal(response.user_id, "@alice:localhost");
    const me = await whoami(server, response.access_token);
    assert.equal(me.status, 200);
    assert.equal(me.body.device_id, response.device_id);
    assert.deepEqual(violations, []);
    await context.close();
  });

  it("a parent page that opens the fallback in a popup receives the login response", async () => {
    const context = await browser.newContext();
    const parent = await context.newPage();
    await parent.goto(`${server.baseUrl}/_matrix/client/versions`);
    // The parent opens the page and, being of its origin, hooks the popup's
    // window.matrixLogin.onLogin whenever a page there has set it up.
    await parent.evaluate((url) => {
      window.loginResponse = new Promise((resolve) => {
        const popup = window.open(url, "gatehouse-login");
        const hook = setInterval(() => {
          try {
            const login = popup.matrixLogin;
            if (login && !login.onLogin.fromParent) {
              const onLogin = (response) => {
                clearInterval(hook);
                popup.close();
                resolve(response);
              };
              onLogin.fromParent = true;
              login.onLogin = onLogin;
            }
          } catch {
            // Between pages.
          }
        }, 20);
      });
    }, `${server.baseUrl}${LOGIN_PAGE}`);
    const popup = await context.waitForEvent("page");
    const violations = watchCsp(popup);
    await popup.waitForLoadState();
    await signIn(popup, "alice", "pw");
    const response = await within(parent.evaluate(() => window.loginResponse), 10_000, "no login response in the parent");
    assert.equal(response.user_id, "@alice:localhost");
    const me = await whoami(server, response.access_token);
    assert.equal(me.status, 200, JSON.stringify(me.body));
    assert.equal(me.body.user_id, "@alice:localhost");
    assert.deepEqual(violations, []);
    await context.close();
  });
});
