// The account page (`/_gatehouse/account`, the server's account_management_uri)
// in a real headless Chromium: sign-in, the spec's account-management
// `action` parameter, sessions, password change, email addresses (a real
// email through aiosmtpd), deactivation, the cross-signing reset approval,
// keyboard use, and its defences (CSP, CSRF token, cookie attributes).
//
// One standalone Gatehouse (email on) and one browser for the file; each test
// has its own user and browser context. Every test also checks, at its end,
// that no CSP violation was reported and that every page the server sent had
// the strict Content-Security-Policy.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";

import { launchChromium, watchCsp } from "../lib/browser.js";
import { freePort, rawJson, startServer } from "../lib/harness.js";
import { findLink, startSmtpServer } from "../lib/smtp.js";

const ACCOUNT_PATH = "/_gatehouse/account";

let browser;
let server;
let smtp;

const accountUrl = (query) => `${server.baseUrl}${ACCOUNT_PATH}${query ? `?${query}` : ""}`;

let userCounter = 0;
/** A fresh user (and its password) for one test. */
async function newUser(prefix, { password = "correct horse", email } = {}) {
  return server.createUser(`${prefix}${++userCounter}`, { password, email });
}

/** `POST /login` with a password, as a client would. */
function apiLogin(identifier, password, extra = {}) {
  const id = typeof identifier === "string" ? { type: "m.id.user", user: identifier } : identifier;
  return rawJson(server.baseUrl, "/_matrix/client/v3/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ type: "m.login.password", identifier: id, password, ...extra }),
  });
}

/** A client session (device) for `user`; returns its access token. */
async function apiDevice(user, deviceId, displayName, password = user.password) {
  const login = await apiLogin(user.localpart, password, {
    device_id: deviceId,
    initial_device_display_name: displayName,
  });
  assert.equal(login.status, 200, JSON.stringify(login.body));
  assert.equal(login.body.device_id, deviceId);
  return login.body.access_token;
}

const whoami = (token) =>
  rawJson(server.baseUrl, "/_matrix/client/v3/account/whoami", {
    headers: { authorization: `Bearer ${token}` },
  });

const STRICT_CSP = [/default-src 'none'/, /form-action 'self'/, /frame-ancestors 'none'/];

/**
 * A fresh browser context and page. Records every document the server sends
 * and every CSP violation; `done(p)` checks both at the end of a test.
 */
async function openPage() {
  const context = await browser.newContext();
  const page = await context.newPage();
  const p = { context, page, violations: watchCsp(page), documents: [] };
  page.on("response", (response) => {
    if (response.request().resourceType() === "document" && response.url().startsWith(server.baseUrl)) {
      p.documents.push(response);
    }
  });
  return p;
}

async function done(p) {
  assert.deepEqual(p.violations, [], "no Content-Security-Policy violation on the page");
  assert.ok(p.documents.length > 0);
  for (const response of p.documents) {
    // A redirect has no body to protect; every page that is shown has the CSP.
    if (response.status() >= 300 && response.status() < 400) continue;
    const csp = await response.headerValue("content-security-policy");
    const what = `${response.request().method()} ${response.url()} (${response.status()})`;
    assert.ok(csp, `${what} has a Content-Security-Policy`);
    for (const directive of STRICT_CSP) assert.match(csp, directive, what);
  }
  await p.context.close();
}

/**
 * Runs `trigger` (a click or a key press that submits a form or follows a
 * link) and waits for the new page; returns the final document response.
 */
async function navigate(p, trigger) {
  const before = p.documents.length;
  const navigated = p.page.waitForEvent("framenavigated", {
    predicate: (frame) => frame === p.page.mainFrame(),
  });
  await trigger();
  await navigated;
  await p.page.waitForLoadState();
  const shown = p.documents.slice(before).filter((r) => r.status() < 300 || r.status() >= 400);
  return shown.at(-1);
}

/** Presses the button with this accessible name and waits for the page it leads to. */
const press = (p, name) => navigate(p, () => p.page.getByRole("button", { name, exact: true }).click());

/** The page's message: { role, text }, or null when there is none. */
async function message(page) {
  const el = page.locator("#message");
  if ((await el.count()) === 0) return null;
  return { role: await el.getAttribute("role"), text: (await el.textContent()).trim() };
}

const text = async (page, selector) => ((await page.textContent(selector)) ?? "").trim();

/** Opens the page at `?query` signed out and signs in with the form. */
async function signIn(p, user, query, password = user.password) {
  await p.page.goto(accountUrl(query));
  assert.equal(await text(p.page, "h1"), "Sign in");
  await p.page.getByLabel("Username").fill(user.localpart);
  await p.page.getByLabel("Password", { exact: true }).fill(password);
  await press(p, "Sign in");
  assert.equal(await text(p.page, "h1"), "Your account", `signed in:\n${await text(p.page, "main")}`);
  assert.match(await text(p.page, "main"), new RegExp(`Signed in as ${user.userId}`));
}

/** The device IDs listed on a sessions view. */
async function listedDevices(page) {
  const items = await page.locator("ul.devices > li").allTextContents();
  return items.map((t) => t.match(/\(([^)]+)\)/)?.[1]).filter(Boolean);
}

/** The accessibility-tree node Chromium exposes for `selector` (CDP). */
async function axNode(page, selector) {
  const cdp = await page.context().newCDPSession(page);
  try {
    const { root } = await cdp.send("DOM.getDocument", { depth: -1 });
    const { nodeId } = await cdp.send("DOM.querySelector", { nodeId: root.nodeId, selector });
    assert.ok(nodeId, `no element ${selector}`);
    const { nodes } = await cdp.send("Accessibility.getPartialAXTree", { nodeId, fetchRelatives: false });
    const node = nodes[0];
    const property = (name) => node.properties?.find((x) => x.name === name)?.value?.value;
    return {
      role: node.role?.value,
      name: node.name?.value,
      description: node.description?.value,
      invalid: property("invalid"),
      live: property("live"),
    };
  } finally {
    await cdp.detach();
  }
}

/** The focused element and how it is drawn. */
const focused = (page) =>
  page.evaluate(() => {
    const el = document.activeElement;
    const style = getComputedStyle(el);
    return {
      tag: el.tagName.toLowerCase(),
      id: el.id,
      label: el.getAttribute("aria-label") ?? el.textContent.trim(),
      outlineStyle: style.outlineStyle,
      outlineWidth: parseFloat(style.outlineWidth),
    };
  });

function assertFocusVisible(state) {
  assert.notEqual(state.outlineStyle, "none", `focus is visible on <${state.tag}> ${state.label}`);
  assert.ok(state.outlineWidth >= 2, `a focus outline of at least 2px on <${state.tag}> ${state.label}`);
}

describe("the account page in Chromium", () => {
  before(async () => {
    smtp = await startSmtpServer();
    [browser, server] = await Promise.all([
      launchChromium(),
      startServer({
        env: {
          GATEHOUSE_EMAIL__ENABLED: "true",
          GATEHOUSE_EMAIL__TLS: "none",
          GATEHOUSE_EMAIL__SMTP_HOST: "127.0.0.1",
          GATEHOUSE_EMAIL__SMTP_PORT: String(smtp.port),
        },
      }),
    ]);
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    await smtp?.close();
  });

  it("sign-in form: labelled fields, an announced error, then the view the page was opened for", async () => {
    const user = await newUser("signin");
    const p = await openPage();
    const { page } = p;
    await page.goto(accountUrl("action=org.matrix.sessions_list"));
    assert.equal(await text(page, "h1"), "Sign in");
    assert.equal(await page.getByLabel("Username").getAttribute("autocomplete"), "username");
    assert.equal(await page.getByLabel("Password", { exact: true }).getAttribute("type"), "password");
    assert.equal(await message(page), null, "no error before the first attempt");

    await page.getByLabel("Username").fill(user.localpart);
    await page.getByLabel("Password", { exact: true }).fill("not the password");
    const refused = await press(p, "Sign in");
    assert.equal(refused.status(), 403);
    assert.equal(await text(page, "h1"), "Sign in");
    assert.deepEqual(await message(page), { role: "alert", text: "Wrong username or password." });
    // Announced: an assertive live region, and both fields are marked invalid
    // and described by it (the username field has the focus on load).
    const alert = await axNode(page, "#message");
    assert.equal(alert.role, "alert");
    assert.equal(alert.live, "assertive");
    for (const field of ["#username", "#password"]) {
      assert.equal(await page.getAttribute(field, "aria-invalid"), "true", field);
      assert.equal(await page.getAttribute(field, "aria-describedby"), "message", field);
      const node = await axNode(page, field);
      assert.equal(node.invalid, "true", `${field} is invalid in the accessibility tree`);
      assert.equal(node.description, "Wrong username or password.", `${field}'s accessible description`);
    }
    assert.equal(await page.evaluate(() => document.activeElement?.id), "username");

    await page.getByLabel("Username").fill(user.localpart);
    await page.getByLabel("Password", { exact: true }).fill(user.password);
    await press(p, "Sign in");
    // After the failed attempt, the form still knows where the client sent its user.
    const landed = new URL(page.url());
    assert.equal(landed.pathname, ACCOUNT_PATH);
    assert.deepEqual(
      { action: landed.searchParams.get("action"), view: await text(page, "nav [aria-current=page]") },
      { action: "org.matrix.sessions_list", view: "Sessions" },
      `landed on ${page.url()}`,
    );
    assert.equal(await text(page, "h2"), "Sessions");
    await done(p);
  });

  it("sign-in opened without a device_id lands on the action's view with no device_id", async () => {
    const user = await newUser("nodevice");
    const p = await openPage();
    await p.page.goto(accountUrl("action=org.matrix.sessions_list"));
    const hidden = await p.page.locator("input[type=hidden][name=device_id]").inputValue();
    await signIn(p, user, "action=org.matrix.sessions_list");
    const landed = new URL(p.page.url());
    assert.equal(landed.searchParams.get("action"), "org.matrix.sessions_list");
    assert.equal(await text(p.page, "h2"), "Sessions");
    assert.deepEqual(
      { hiddenDeviceId: hidden, urlDeviceId: landed.searchParams.get("device_id") },
      { hiddenDeviceId: "", urlDeviceId: null },
      `landed on ${p.page.url()}`,
    );
    await done(p);
  });

  it("keyboard only: sign in and end a session with Tab and Enter; focus is always visible", async () => {
    const user = await newUser("keys");
    const token = await apiDevice(user, "KEYBOARD", "Keyboard phone");
    const p = await openPage();
    const { page } = p;
    await page.goto(accountUrl("action=org.matrix.sessions_list"));
    let state = await focused(page);
    assert.equal(state.id, "username", "the username field has the focus on load");
    assertFocusVisible(state);
    await page.keyboard.type(user.localpart);
    await page.keyboard.press("Tab");
    state = await focused(page);
    assert.equal(state.id, "password");
    assertFocusVisible(state);
    await page.keyboard.type(user.password);
    await page.keyboard.press("Tab");
    state = await focused(page);
    assert.equal(state.label, "Sign in");
    assertFocusVisible(state);
    await navigate(p, () => page.keyboard.press("Enter"));
    assert.equal(await text(page, "h2"), "Sessions");

    // Tab through the page to the session's button; every stop shows its focus.
    const target = "End session Keyboard phone (KEYBOARD)";
    const stops = [];
    for (let i = 0; i < 20 && state.label !== target; i++) {
      await page.keyboard.press("Tab");
      state = await focused(page);
      stops.push(state.label);
      assertFocusVisible(state);
    }
    assert.equal(state.label, target, `reached by Tab; stops: ${stops.join(" | ")}`);
    await navigate(p, () => page.keyboard.press("Enter"));
    assert.deepEqual(await message(page), { role: "status", text: "Session KEYBOARD ended." });
    assert.deepEqual(await listedDevices(page), []);
    assert.equal((await whoami(token)).status, 401);
    await done(p);
  });

  it("sessions: both client sessions listed; ending B kills B's token only; session_view shows one", async () => {
    const user = await newUser("sessions");
    const tokenA = await apiDevice(user, "DEVICEA", "Phone A");
    const tokenB = await apiDevice(user, "DEVICEB", "Laptop B");
    assert.equal((await whoami(tokenB)).status, 200);

    const p = await openPage();
    const { page } = p;
    await signIn(p, user, "action=org.matrix.sessions_list");
    assert.deepEqual((await listedDevices(page)).sort(), ["DEVICEA", "DEVICEB"]);
    assert.match(await text(page, "ul.devices"), /Phone A[\s\S]*Laptop B|Laptop B[\s\S]*Phone A/);

    await press(p, "End session Laptop B (DEVICEB)");
    assert.deepEqual(await message(page), { role: "status", text: "Session DEVICEB ended." });
    assert.deepEqual(await listedDevices(page), ["DEVICEA"]);
    const refused = await whoami(tokenB);
    assert.equal(refused.status, 401, JSON.stringify(refused.body));
    assert.equal(refused.body.errcode, "M_UNKNOWN_TOKEN");
    const still = await whoami(tokenA);
    assert.equal(still.status, 200);
    assert.equal(still.body.device_id, "DEVICEA");

    await page.goto(accountUrl("action=org.matrix.session_view&device_id=DEVICEA"));
    assert.equal(await text(page, "h2"), "Session");
    assert.deepEqual(await listedDevices(page), ["DEVICEA"]);
    await page.goto(accountUrl("action=org.matrix.session_view&device_id=DEVICEB"));
    assert.deepEqual(await listedDevices(page), []);
    assert.match(await text(page, "section"), /There is no such session\./);

    // Opened signed out, the view keeps its device_id through the sign-in.
    const q = await openPage();
    await signIn(q, user, "action=org.matrix.session_view&device_id=DEVICEA");
    const landed = new URL(q.page.url());
    assert.equal(landed.searchParams.get("action"), "org.matrix.session_view");
    assert.equal(landed.searchParams.get("device_id"), "DEVICEA");
    assert.deepEqual(await listedDevices(q.page), ["DEVICEA"]);
    await done(q);
    await done(p);
  });

  it("action=org.matrix.session_end&device_id=X offers to end that session (not the whole list)", async () => {
    const user = await newUser("sessend");
    await apiDevice(user, "KEEPME", "Keep me");
    await apiDevice(user, "ENDME", "End me");
    const p = await openPage();
    await signIn(p, user, "action=org.matrix.session_end&device_id=ENDME");
    assert.deepEqual(
      await listedDevices(p.page),
      ["ENDME"],
      `only the session the client asked to end (landed on ${p.page.url()})`,
    );
    assert.equal(await p.page.getByRole("button", { name: "End session End me (ENDME)" }).count(), 1);
    await done(p);
  });

  it("password change: wrong current password, mismatch, then a change that keeps or ends sessions", async () => {
    const user = await newUser("passwd", { password: "old-pw" });
    const tokenA = await apiDevice(user, "PWA", "Client A");
    const p = await openPage();
    const { page } = p;
    await signIn(p, user, "action=org.matrix.profile");
    await navigate(p, () => page.getByRole("link", { name: "Password" }).click());
    assert.equal(await text(page, "h2"), "Change your password");
    assert.equal(await text(page, "nav [aria-current=page]"), "Password");

    const fill = async (current, next, again) => {
      await page.getByLabel("Current password").fill(current);
      await page.getByLabel("New password", { exact: true }).fill(next);
      await page.getByLabel("New password, again").fill(again);
    };
    await fill("not-it", "new-pw", "new-pw");
    const wrong = await press(p, "Change password");
    assert.equal(wrong.status(), 403);
    assert.deepEqual(await message(page), { role: "alert", text: "That password is not right." });

    await fill("old-pw", "new-pw", "other-pw");
    const mismatch = await press(p, "Change password");
    assert.equal(mismatch.status(), 400);
    assert.deepEqual(await message(page), { role: "alert", text: "The two new passwords differ." });
    assert.equal((await apiLogin(user.localpart, "old-pw")).status, 200, "nothing changed yet");

    // Keep the sessions.
    await fill("old-pw", "new-pw", "new-pw");
    await page.getByLabel("Sign out all my sessions").uncheck();
    await press(p, "Change password");
    assert.deepEqual(await message(page), { role: "status", text: "Password changed." });
    const old = await apiLogin(user.localpart, "old-pw");
    assert.equal(old.status, 403);
    assert.equal(old.body.errcode, "M_FORBIDDEN");
    const fresh = await apiLogin(user.localpart, "new-pw");
    assert.equal(fresh.status, 200);
    assert.equal((await whoami(tokenA)).status, 200, "sessions kept");

    // End them (the box is checked by default).
    assert.equal(await page.getByLabel("Sign out all my sessions").isChecked(), true);
    await fill("new-pw", "newer-pw", "newer-pw");
    await press(p, "Change password");
    assert.deepEqual(await message(page), {
      role: "status",
      text: "Password changed. Your sessions were signed out.",
    });
    assert.equal((await whoami(tokenA)).status, 401);
    assert.equal((await whoami(fresh.body.access_token)).status, 401);
    assert.equal((await apiLogin(user.localpart, "new-pw")).status, 403);
    assert.equal((await apiLogin(user.localpart, "newer-pw")).status, 200);
    await done(p);
  });

  it("a wrong password in the signed-in forms marks its field (aria-invalid, aria-describedby), as sign-in does", async () => {
    const user = await newUser("fielderr");
    const p = await openPage();
    const { page } = p;
    await signIn(p, user, "action=change_password");
    await page.getByLabel("Current password").fill("not-it");
    await page.getByLabel("New password", { exact: true }).fill("x-pw");
    await page.getByLabel("New password, again").fill("x-pw");
    await press(p, "Change password");
    assert.equal((await message(page))?.role, "alert");
    const problems = [];
    const check = async (selector) => {
      const invalid = await page.getAttribute(selector, "aria-invalid");
      const describedBy = await page.getAttribute(selector, "aria-describedby");
      if (invalid !== "true" || describedBy !== "message") {
        problems.push(`${selector}: aria-invalid=${invalid} aria-describedby=${describedBy}`);
      }
    };
    await check("#current_password");
    await page.goto(accountUrl("action=org.matrix.account_deactivate"));
    await page.getByLabel("Your password").fill("not-it");
    await press(p, "Deactivate my account");
    assert.equal((await message(page))?.role, "alert");
    await check("#deactivate_password");
    assert.deepEqual(problems, [], "wanted aria-invalid=true aria-describedby=message on the field in error");
    await done(p);
  });

  it("email: add by emailed link, confirm, log in with it, remove", async () => {
    const user = await newUser("mail");
    const address = `${user.localpart}@example.org`;
    const p = await openPage();
    const { page } = p;
    await signIn(p, user, "action=org.matrix.profile");
    assert.equal(await text(page, "h2"), "Email addresses");
    assert.match(await text(page, "section"), /No email address is linked/);

    await page.getByLabel("Add an email address").fill(address.toUpperCase());
    await press(p, "Send a confirmation link");
    assert.deepEqual(await message(page), { role: "status", text: `We sent a confirmation link to ${address}.` });
    const confirm = "I opened the link: add the address";

    // Pressing too early says so and keeps the button.
    await press(p, confirm);
    assert.match((await message(page)).text, /has not been opened yet/);

    const mail = await smtp.waitFor(address);
    const link = findLink(mail.data, server.baseUrl);
    assert.ok(link, `a link to ${server.baseUrl} in the mail:\n${mail.data}`);
    // The user opens it from their mail, in another tab of the same browser:
    // it confirms the address and leads back to the account page.
    const tab = await p.context.newPage();
    const tabViolations = watchCsp(tab);
    await tab.goto(link);
    const back = new URL(tab.url());
    assert.equal(back.origin + back.pathname, accountUrl());
    assert.equal(back.searchParams.get("action"), "org.matrix.profile");
    assert.equal(await text(tab, "h2"), "Email addresses");
    assert.deepEqual(tabViolations, []);
    await tab.close();

    await press(p, confirm);
    assert.deepEqual(await message(page), { role: "status", text: `${address} added.` });
    assert.match(await text(page, "section ul"), new RegExp(address.replace(/\./g, "\\.")));
    const byEmail = await apiLogin({ type: "m.id.thirdparty", medium: "email", address }, user.password);
    assert.equal(byEmail.status, 200, JSON.stringify(byEmail.body));
    assert.equal(byEmail.body.user_id, user.userId);

    await press(p, `Remove ${address}`);
    assert.deepEqual(await message(page), { role: "status", text: `${address} removed.` });
    assert.match(await text(page, "section"), /No email address is linked/);
    const gone = await apiLogin({ type: "m.id.thirdparty", medium: "email", address }, user.password);
    assert.equal(gone.status, 403);
    await done(p);
  });

  it("email: the emailed link, opened in the page's own tab, lets the user finish adding the address", async () => {
    const user = await newUser("mailtab");
    const address = `${user.localpart}@example.org`;
    const p = await openPage();
    const { page } = p;
    await signIn(p, user, "action=org.matrix.profile");
    await page.getByLabel("Add an email address").fill(address);
    await press(p, "Send a confirmation link");
    const link = findLink((await smtp.waitFor(address)).data, server.baseUrl);
    assert.ok(link);
    await page.goto(link);
    assert.equal(new URL(page.url()).pathname, ACCOUNT_PATH);
    // Where the link leads, the address is either added already or one press away.
    const listed = (await page.locator("section ul").count()) > 0 && (await text(page, "section ul")).includes(address);
    const button = await page.getByRole("button", { name: "I opened the link: add the address" }).count();
    assert.ok(
      listed || button === 1,
      `after the link, neither the address nor the confirm button is on the page: ${(await text(page, "main")).replace(/\s+/g, " ")}`,
    );
    await done(p);
  });

  it("deactivate: a wrong password is refused, the right one deactivates; login then says M_USER_DEACTIVATED", async () => {
    const user = await newUser("deact");
    const token = await apiDevice(user, "DEACT", "Deactivated phone");
    const p = await openPage();
    const { page } = p;
    await signIn(p, user, "action=org.matrix.account_deactivate");
    assert.equal(await text(page, "h2"), "Deactivate your account");
    await page.getByLabel("Your password").fill("not-it");
    const wrong = await press(p, "Deactivate my account");
    assert.equal(wrong.status(), 403);
    assert.deepEqual(await message(page), { role: "alert", text: "That password is not right." });
    assert.equal((await whoami(token)).status, 200, "nothing happened");

    await page.getByLabel("Your password").fill(user.password);
    const deactivated = await press(p, "Deactivate my account");
    assert.equal(deactivated.status(), 200);
    assert.equal(await text(page, "h1"), "Account deactivated");
    assert.equal((await message(page)).role, "status");
    assert.equal((await whoami(token)).status, 401);
    const login = await apiLogin(user.localpart, user.password);
    assert.equal(login.status, 403, JSON.stringify(login.body));
    assert.equal(login.body.errcode, "M_USER_DEACTIVATED");

    // The page is signed out, and signing in again says why not.
    await page.goto(accountUrl());
    assert.equal(await text(page, "h1"), "Sign in");
    await page.getByLabel("Username").fill(user.localpart);
    await page.getByLabel("Password", { exact: true }).fill(user.password);
    await press(p, "Sign in");
    assert.deepEqual(await message(page), { role: "alert", text: "This account has been deactivated." });
    await done(p);
  });

  it("security: CSP, CSRF token on every form, HttpOnly SameSite=Lax cookie, sign-out", async () => {
    const user = await newUser("secure");
    const tokenA = await apiDevice(user, "TARGET", "Target");
    const tokenC = await apiDevice(user, "CONTROL", "Control");

    // A page of another origin that posts to the account page: same site
    // (127.0.0.1, another port: the Lax cookie goes along) and cross site
    // (localhost: it does not).
    const attacker = http.createServer((req, res) => {
      const url = new URL(req.url, "http://attacker");
      const fields = { action: "org.matrix.session_end", device_id: "TARGET" };
      if (url.searchParams.has("csrf")) fields.csrf = url.searchParams.get("csrf");
      const inputs = Object.entries(fields)
        .map(([k, v]) => `<input type="hidden" name="${k}" value="${v}">`)
        .join("");
      res.writeHead(200, { "content-type": "text/html" });
      res.end(`<!doctype html><form method="post" action="${accountUrl()}">${inputs}<button>Win</button></form>`);
    });
    const attackerPort = await freePort();
    await new Promise((resolve) => attacker.listen(attackerPort, "127.0.0.1", resolve));
    try {
      const p = await openPage();
      const { page, context } = p;
      await page.goto(accountUrl("action=org.matrix.sessions_list"));
      const preCookie = (await context.cookies(accountUrl())).find((c) => c.name === "gatehouse_account_csrf");
      assert.ok(preCookie, "the sign-in form sets its double-submit cookie");
      assert.equal(preCookie.httpOnly, true);
      assert.equal(preCookie.sameSite, "Lax");

      // Sign-in itself needs the token that matches the cookie.
      const forgedSignIn = await context.request.post(accountUrl(), {
        form: { action: "sign_in", csrf: "guessed", username: user.localpart, password: user.password },
        maxRedirects: 0,
      });
      assert.equal(forgedSignIn.status(), 403);
      assert.equal((await context.cookies(accountUrl())).some((c) => c.name === "gatehouse_account"), false);

      await page.getByLabel("Username").fill(user.localpart);
      await page.getByLabel("Password", { exact: true }).fill(user.password);
      await press(p, "Sign in");
      const cookie = (await context.cookies(accountUrl())).find((c) => c.name === "gatehouse_account");
      assert.ok(cookie, "a session cookie after sign-in");
      assert.equal(cookie.httpOnly, true);
      assert.equal(cookie.sameSite, "Lax");
      assert.equal(cookie.path, ACCOUNT_PATH);
      assert.equal(await page.evaluate(() => document.cookie), "", "no script can read the cookies");
      const csrf = await page.locator("input[name=csrf]").first().inputValue();
      assert.ok(csrf.length >= 20);

      // Forged forms: nothing happens.
      const attackerPage = await context.newPage();
      const attackerViolations = watchCsp(attackerPage);
      for (const query of ["", "?csrf=wrong", "?csrf="]) {
        await attackerPage.goto(`http://127.0.0.1:${attackerPort}/${query}`);
        const [response] = await Promise.all([
          attackerPage.waitForResponse((r) => r.url() === accountUrl() && r.request().method() === "POST"),
          attackerPage.getByRole("button", { name: "Win" }).click(),
        ]);
        assert.equal(response.status(), 403, `forged form ${query || "(no csrf field)"}`);
        await attackerPage.waitForLoadState();
        assert.equal(await text(attackerPage, "h1"), "Cannot continue");
        for (const d of STRICT_CSP) assert.match(await response.headerValue("content-security-policy"), d);
      }
      await attackerPage.goto(`http://localhost:${attackerPort}/?csrf=${csrf}`);
      const [crossSite] = await Promise.all([
        attackerPage.waitForResponse((r) => r.url() === accountUrl() && r.request().method() === "POST"),
        attackerPage.getByRole("button", { name: "Win" }).click(),
      ]);
      assert.equal(crossSite.status(), 401, "a cross-site POST carries no session cookie, even with the token");
      assert.deepEqual(attackerViolations, []);
      await attackerPage.close();
      assert.equal((await whoami(tokenA)).status, 200, "no forged request ended the session");

      // The same with the cookie from outside any page: wrong token 403, the right one works.
      const post = (fields) => context.request.post(accountUrl(), { form: fields, maxRedirects: 0 });
      const end = { action: "org.matrix.session_end", device_id: "TARGET" };
      assert.equal((await post({ ...end, csrf: "x".repeat(csrf.length) })).status(), 403);
      assert.equal((await post(end)).status(), 403);
      assert.equal((await whoami(tokenA)).status, 200);
      assert.equal((await post({ action: "org.matrix.session_end", device_id: "CONTROL", csrf })).status(), 200);
      assert.equal((await whoami(tokenC)).status, 401, "the right token does work");

      // Sign out: the form again, after a reload too, and the old cookie is dead.
      await page.goto(accountUrl("action=org.matrix.sessions_list"));
      assert.deepEqual(await listedDevices(page), ["TARGET"]);
      await press(p, "Sign out of this page");
      assert.equal(await text(page, "h1"), "Sign in");
      assert.deepEqual(await message(page), { role: "status", text: "You are signed out of this page." });
      assert.equal((await context.cookies(accountUrl())).some((c) => c.name === "gatehouse_account"), false);
      await page.reload();
      assert.equal(await text(page, "h1"), "Sign in");
      await page.goto(accountUrl("action=org.matrix.sessions_list"));
      assert.equal(await text(page, "h1"), "Sign in");
      const replay = await fetch(accountUrl("action=org.matrix.sessions_list"), {
        headers: { cookie: `gatehouse_account=${cookie.value}` },
      });
      assert.match(await replay.text(), /<h1>Sign in<\/h1>/, "the old session is gone on the server too");
      assert.equal((await whoami(tokenA)).status, 200, "signing out of the page ends no client session");
      await done(p);
    } finally {
      await new Promise((resolve) => attacker.close(resolve));
    }
  });

  it("cross-signing reset in standalone mode: approving explains there is nothing to approve", async () => {
    const user = await newUser("xsign");
    const p = await openPage();
    const { page } = p;
    await signIn(p, user, "action=org.matrix.cross_signing_reset");
    assert.equal(await text(page, "h2"), "Reset your encryption identity");
    assert.equal(await text(page, "nav [aria-current=page]"), "Encryption reset");
    await press(p, "Approve the reset");
    assert.equal(await text(page, "h2"), "Reset your encryption identity");
    const shown = await message(page);
    assert.equal(shown.role, "status");
    assert.match(shown.text, /^Nothing to approve here: your application will ask for your password/);
    await done(p);
  });
});
