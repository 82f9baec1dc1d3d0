// Delegation mode end to end: a real Synapse 1.163.2 delegating all
// authentication to Gatehouse (matrix_authentication_service), nginx in
// front routing each request (deploy/nginx/gatehouse.conf), all started by
// scripts/stack, and the real matrix-js-sdk 43 talking to the nginx URL only.
//
// What is checked each time is what a user of the whole stack sees: a session
// Gatehouse creates works on Synapse (whoami, rooms, sync, admin API), and a
// session Gatehouse ends is refused by Synapse at once, although Synapse
// caches every token's introspection for 120 s.
//
// One stack for the whole file (about 6 s to start).

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";

import { startStack, http } from "../lib/stack.js";
import { findLink, startSmtpServer } from "../lib/smtp.js";
import { AuthType, HttpApiEvent, Method, createClient } from "../lib/sdk.js";
import { expectMatrixError, sleep } from "../lib/util.js";
import { launchChromium, watchCsp } from "../lib/browser.js";
import { answerPassword, makeCrossSigningKeys, runInteractiveAuth, uploadSigningKeys } from "../lib/uia.js";

const ACCESS_TOKEN_LIFETIME_MS = 3000;
const ADMIN = { localpart: "admin", userId: "@admin:localhost", password: "admin password" };

let stack;
let smtp;
let adminToken;

const tempClient = () => createClient({ baseUrl: stack.clientUrl });

function clientFor(response) {
  return createClient({
    baseUrl: stack.clientUrl,
    accessToken: response.access_token,
    userId: response.user_id,
    deviceId: response.device_id,
    refreshToken: response.refresh_token,
  });
}

async function loginAs(user, password, extra = {}) {
  const response = await tempClient().loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user },
    password,
    ...extra,
  });
  return [response, clientFor(response)];
}

/** GET/POST on the nginx URL (so: routed as any client's request). */
const viaProxy = (path, init) => http(stack.clientUrl + path, init);

/** Synapse's admin API, with the Gatehouse admin's token, through nginx. */
async function synapseAdmin(path) {
  const result = await viaProxy(path, { token: adminToken });
  assert.equal(result.status, 200, `GET ${path}: ${JSON.stringify(result.body)}`);
  return result.body;
}

const synapseDevices = async (userId) =>
  (await synapseAdmin(`/_synapse/admin/v2/users/${encodeURIComponent(userId)}/devices`)).devices.map((d) => d.device_id);

/** whoami goes to Synapse: it answers from Gatehouse's introspection. */
async function whoamiOnSynapse(token) {
  return viaProxy("/_matrix/client/v3/account/whoami", { token });
}

async function assertRefusedBySynapse(token, what) {
  const result = await whoamiOnSynapse(token);
  assert.equal(result.status, 401, `${what}: whoami answered ${result.status} ${JSON.stringify(result.body)}`);
  assert.equal(result.body.errcode, "M_UNKNOWN_TOKEN", `${what}: ${JSON.stringify(result.body)}`);
}

async function assertAcceptedBySynapse(token, userId, deviceId, what) {
  const result = await whoamiOnSynapse(token);
  assert.equal(result.status, 200, `${what}: whoami answered ${result.status} ${JSON.stringify(result.body)}`);
  assert.equal(result.body.user_id, userId, what);
  if (deviceId !== undefined) assert.equal(result.body.device_id, deviceId, what);
}

/** Wait until check() is true (polling), or fail with message(). */
async function eventually(check, message, { timeoutMs = 10_000, intervalMs = 200 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) assert.fail(await message());
    await sleep(intervalMs);
  }
}

/** Synapse's current master cross-signing key of userId (POST /keys/query, through nginx). */
async function masterKeyOnSynapse(token, userId) {
  const result = await viaProxy("/_matrix/client/v3/keys/query", {
    method: "POST",
    token,
    body: { device_keys: { [userId]: [] } },
  });
  assert.equal(result.status, 200, JSON.stringify(result.body));
  const master = result.body.master_keys?.[userId];
  return master ? Object.values(master.keys)[0] : undefined;
}

/**
 * Run fn() with every 60-second timer made unref'd. matrix-js-sdk 43's
 * timeoutSignal() (http-api/utils.js) never clears its setTimeout, and the
 * Rust crypto's OutgoingRequestProcessor gives each request localTimeoutMs
 * 60000: without this, the test process would stay alive for a minute after
 * the suite has finished.
 */
async function withUnrefSdkTimeouts(fn) {
  const original = globalThis.setTimeout;
  globalThis.setTimeout = function patchedSetTimeout(callback, ms, ...args) {
    const timer = original(callback, ms, ...args);
    if (ms >= 60_000) timer.unref?.();
    return timer;
  };
  try {
    return await fn();
  } finally {
    globalThis.setTimeout = original;
  }
}

/** The SDK's logger, silent (the Rust crypto logs through the client's own). */
const quietLogger = {
  trace() {},
  debug() {},
  info() {},
  warn() {},
  error() {},
  getChild() {
    return quietLogger;
  },
};

let counter = 0;
const uniqueName = (prefix) => `${prefix}${++counter}`;

// ---------------------------------------------------------------------------
// The account page, in headless Chromium, as a person approves a reset:
// open the URL of the m.oauth stage, sign in, press the approval button.

async function approveCrossSigningReset(url, localpart, password) {
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    const csp = watchCsp(page);
    await page.goto(url);
    await page.getByLabel("Username").fill(localpart);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Sign in" }).click();
    // Signed in, the page is back on the action the client asked for.
    await page.waitForURL(/action=org\.matrix\.cross_signing_reset/);
    await page.getByRole("button", { name: "Approve the reset" }).click();
    const status = page.getByRole("status");
    await status.waitFor();
    assert.match(await status.innerText(), /Approved/);
    assert.deepEqual(csp, [], "no Content-Security-Policy violation");
  } finally {
    await browser.close();
  }
}

// ---------------------------------------------------------------------------

describe("delegation: Synapse delegating authentication to Gatehouse, behind nginx", () => {
  before(async () => {
    smtp = await startSmtpServer();
    stack = await startStack({
      env: {
        GATEHOUSE_REGISTRATION__ENABLED: "true",
        GATEHOUSE_REGISTRATION__FLOWS:
          '[["m.login.dummy"], ["m.login.registration_token"], ["m.login.email.identity"]]',
        GATEHOUSE_EMAIL__ENABLED: "true",
        GATEHOUSE_EMAIL__TLS: "none",
        GATEHOUSE_EMAIL__SMTP_HOST: "127.0.0.1",
        GATEHOUSE_EMAIL__SMTP_PORT: String(smtp.port),
        GATEHOUSE_TOKENS__ACCESS_TOKEN_LIFETIME_MS: String(ACCESS_TOKEN_LIFETIME_MS),
        GATEHOUSE_HOMESERVER__RETRY_INTERVAL_MS: "500",
        GATEHOUSE_LOG_FILTER: "info",
      },
    });
    await stack.createUser(ADMIN.localpart, { password: ADMIN.password, admin: true });
    const [response] = await loginAs(ADMIN.localpart, ADMIN.password);
    adminToken = response.access_token;
  });

  after(async () => {
    if (stack && process.env.INTEROP_STACK_LOGS) console.error(await stack.logs());
    await stack?.down();
    await smtp?.close();
  });

  // 1 -----------------------------------------------------------------------
  describe("registration through InteractiveAuth, then the account works on Synapse", () => {
    const body = (username, auth) => {
      const b = { username, password: "registration pw", initial_device_display_name: "delegation registration" };
      if (auth) b.auth = auth;
      return b;
    };

    async function checkOnSynapse(response, username) {
      assert.equal(response.user_id, `@${username}:localhost`);
      assert.equal(typeof response.access_token, "string");
      assert.equal(typeof response.device_id, "string");
      await assertAcceptedBySynapse(response.access_token, response.user_id, response.device_id, "new account");
      assert.ok((await synapseDevices(response.user_id)).includes(response.device_id), "the device is on Synapse");
    }

    it("m.login.dummy (the SDK completes it by itself)", async () => {
      const temp = tempClient();
      const username = uniqueName("regdummy");
      const { log, done } = runInteractiveAuth({
        client: temp,
        supportedStages: [AuthType.Dummy],
        doRequest: (auth) => temp.registerRequest(body(username, auth)),
      });
      const response = await done;
      assert.equal(log.requests[log.requests.length - 1].type, AuthType.Dummy);
      await checkOnSynapse(response, username);
    });

    it("m.login.registration_token (a token from `gatehouse registration-token create`)", async () => {
      const token = `tok${Date.now()}`;
      await stack.admin(["registration-token", "create", "--token", token, "--uses", "1"]);
      const validity = await viaProxy(
        `/_matrix/client/v1/register/m.login.registration_token/validity?token=${token}`,
      );
      assert.deepEqual([validity.status, validity.body], [200, { valid: true }]);

      const temp = tempClient();
      const username = uniqueName("regtoken");
      const { log, done } = runInteractiveAuth({
        client: temp,
        supportedStages: [AuthType.RegistrationToken],
        doRequest: (auth) => temp.registerRequest(body(username, auth)),
        answer: (stage, status, ia) =>
          stage === AuthType.RegistrationToken && !status.errcode
            ? { type: AuthType.RegistrationToken, token, session: ia.getSessionId() }
            : undefined,
      });
      const response = await done;
      assert.equal(log.requests[log.requests.length - 1].type, AuthType.RegistrationToken);
      await checkOnSynapse(response, username);
    });

    it("m.login.email.identity (real email, link opened through nginx)", async () => {
      const temp = tempClient();
      const username = uniqueName("regmail");
      const emailAddress = `${username}@example.org`;
      const { ia, done } = runInteractiveAuth({
        client: temp,
        inputs: { emailAddress },
        supportedStages: [AuthType.Email],
        doRequest: (auth) => temp.registerRequest(body(username, auth)),
        requestEmailToken: (email, secret, attempt) => temp.requestRegisterEmailToken(email, secret, attempt),
      });
      const mail = await smtp.waitFor(emailAddress);
      const link = findLink(mail.data, stack.clientUrl);
      assert.ok(link, `a link to ${stack.clientUrl} in the mail:\n${mail.data}`);
      const opened = await fetch(link);
      assert.equal(opened.status, 200, await opened.text());
      for (let i = 0; i < 100 && !ia.getEmailSid(); i++) await sleep(20);
      await ia.poll();
      const response = await done;
      await checkOnSynapse(response, username);
    });
  });

  // 2 -----------------------------------------------------------------------
  it("login with every identifier; then a room, a message, and the message in /sync, all on Synapse", async () => {
    const localpart = uniqueName("carol");
    const password = "carol pw";
    const email = `${localpart}@example.org`;
    const phone = "+447400123456";
    await stack.createUser(localpart, { password, email, phone });
    const userId = `@${localpart}:localhost`;

    const identifiers = [
      { type: "m.id.user", user: localpart },
      { type: "m.id.user", user: userId },
      { type: "m.id.thirdparty", medium: "email", address: email.toUpperCase() },
      { type: "m.id.phone", country: "GB", phone: "7400123456" },
    ];
    let client;
    for (const identifier of identifiers) {
      const response = await tempClient().loginRequest({ type: "m.login.password", identifier, password });
      assert.equal(response.user_id, userId, JSON.stringify(identifier));
      client = clientFor(response);
      const me = await client.whoami(); // Synapse, through nginx
      assert.deepEqual([me.user_id, me.device_id], [userId, response.device_id], JSON.stringify(identifier));
    }

    const { room_id: roomId } = await client.createRoom({ name: "delegation", preset: "private_chat" });
    assert.match(roomId, /^!/);
    const text = `hello through nginx ${Date.now()}`;
    const { event_id: eventId } = await client.http.authedRequest(
      Method.Put,
      `/rooms/${encodeURIComponent(roomId)}/send/m.room.message/txn${Date.now()}`,
      undefined,
      { msgtype: "m.text", body: text },
    );
    const sync = await client.http.authedRequest(Method.Get, "/sync", { timeout: "0" });
    const events = sync.rooms?.join?.[roomId]?.timeline?.events ?? [];
    const mine = events.find((e) => e.event_id === eventId);
    assert.ok(mine, `the message in /sync: ${JSON.stringify(events.map((e) => e.type))}`);
    assert.equal(mine.content.body, text);
    assert.equal(mine.sender, userId);
  });

  // 3 -----------------------------------------------------------------------
  it("refresh: the access token expires on Synapse too; refreshToken(rt) gives one Synapse accepts", async () => {
    const localpart = uniqueName("rita");
    await stack.createUser(localpart, { password: "pw" });
    const [response, client] = await loginAs(localpart, "pw", { refresh_token: true });
    assert.equal(typeof response.refresh_token, "string");
    assert.ok(response.expires_in_ms <= ACCESS_TOKEN_LIFETIME_MS, JSON.stringify(response));
    const loggedOut = [];
    client.on(HttpApiEvent.SessionLoggedOut, (error) => loggedOut.push(error));

    assert.equal((await client.whoami()).user_id, response.user_id); // cached by Synapse now
    await sleep(ACCESS_TOKEN_LIFETIME_MS + 1500);
    // Synapse checks the introspected expires_in on every request, cached or not.
    await expectMatrixError(client.whoami(), { errcode: "M_UNKNOWN_TOKEN", httpStatus: 401 });
    // matrix-js-sdk 43 does not refresh a non-OAuth session by itself: it
    // reports the logout and leaves the refresh to the application.
    assert.equal(loggedOut.length, 1, "Session.logged_out emitted");

    // POST /refresh goes to Gatehouse; the SDK sends the expired token along.
    const refreshed = await client.refreshToken(response.refresh_token);
    assert.notEqual(refreshed.access_token, response.access_token);
    client.setAccessToken(refreshed.access_token);
    const me = await client.whoami();
    assert.deepEqual([me.user_id, me.device_id], [response.user_id, response.device_id]);
  });

  // 4 -----------------------------------------------------------------------
  it("logout: Synapse refuses the token at once, although it had cached it", async () => {
    const localpart = uniqueName("leo");
    await stack.createUser(localpart, { password: "pw" });
    const [response, client] = await loginAs(localpart, "pw");
    await assertAcceptedBySynapse(response.access_token, response.user_id, response.device_id, "before logout");
    await client.logout(); // Gatehouse, through nginx
    await assertRefusedBySynapse(response.access_token, "after logout");
    assert.ok(!(await synapseDevices(response.user_id)).includes(response.device_id), "the device is gone from Synapse");
  });

  // 5 -----------------------------------------------------------------------
  it("deleting another device under UIA (password): gone from Synapse, its token refused at once", async () => {
    const localpart = uniqueName("dora");
    const password = "dora pw";
    const user = await stack.createUser(localpart, { password });
    const [a, clientA] = await loginAs(localpart, password, { initial_device_display_name: "A" });
    const [b] = await loginAs(localpart, password, { initial_device_display_name: "B" });
    await assertAcceptedBySynapse(b.access_token, user.userId, b.device_id, "B before");
    assert.deepEqual((await synapseDevices(user.userId)).sort(), [a.device_id, b.device_id].sort());

    const { log, done } = runInteractiveAuth({
      client: clientA,
      supportedStages: [AuthType.Password],
      doRequest: (auth) => clientA.deleteDevice(b.device_id, auth ?? undefined),
      answer: answerPassword(user.userId, password),
    });
    await done;
    assert.equal(log.requests[log.requests.length - 1].type, AuthType.Password);

    assert.deepEqual(await synapseDevices(user.userId), [a.device_id]);
    await assertRefusedBySynapse(b.access_token, "B after deletion");
    await assertAcceptedBySynapse(a.access_token, user.userId, a.device_id, "A after deleting B");
    const listed = (await clientA.getDevices()).devices.map((d) => d.device_id);
    assert.deepEqual(listed, [a.device_id], "Gatehouse's own list");
  });

  // 6 -----------------------------------------------------------------------
  it("password change with logout_devices: the other sessions are refused by Synapse at once, this one works", async () => {
    const localpart = uniqueName("paul");
    const password = "paul pw";
    const user = await stack.createUser(localpart, { password });
    const [a, clientA] = await loginAs(localpart, password);
    const others = [(await loginAs(localpart, password))[0], (await loginAs(localpart, password))[0]];
    for (const o of others) await assertAcceptedBySynapse(o.access_token, user.userId, o.device_id, "before");

    const { done } = runInteractiveAuth({
      client: clientA,
      supportedStages: [AuthType.Password],
      doRequest: (auth) => clientA.setPassword(auth, "paul new pw", true),
      answer: answerPassword(user.userId, password),
    });
    await done;

    for (const o of others) await assertRefusedBySynapse(o.access_token, `other session ${o.device_id}`);
    await assertAcceptedBySynapse(a.access_token, user.userId, a.device_id, "the session that changed it");
    assert.deepEqual(await synapseDevices(user.userId), [a.device_id]);
    await expectMatrixError(loginAs(localpart, password), { errcode: "M_FORBIDDEN", httpStatus: 403 });
    const [again] = await loginAs(localpart, "paul new pw");
    await assertAcceptedBySynapse(again.access_token, user.userId, again.device_id, "the new password");
  });

  // 7 -----------------------------------------------------------------------
  it("deactivation with erase: Synapse refuses the token and shows the user deactivated", async () => {
    const localpart = uniqueName("dave");
    const password = "dave pw";
    const user = await stack.createUser(localpart, { password });
    const [a, client] = await loginAs(localpart, password);
    await assertAcceptedBySynapse(a.access_token, user.userId, a.device_id, "before");

    const { done } = runInteractiveAuth({
      client,
      supportedStages: [AuthType.Password],
      doRequest: (auth) => client.deactivateAccount(auth ?? undefined, true),
      answer: answerPassword(user.userId, password),
    });
    await done;

    await assertRefusedBySynapse(a.access_token, "after deactivation");
    const info = await synapseAdmin(`/_synapse/admin/v2/users/${encodeURIComponent(user.userId)}`);
    assert.equal(info.deactivated, true, JSON.stringify(info));
    assert.equal(info.erased, true, JSON.stringify(info));
    await expectMatrixError(loginAs(localpart, password), { httpStatus: 403 });
  });

  // 8 -----------------------------------------------------------------------
  describe("cross-signing", () => {
    it("(a) Rust crypto: bootstrapCrossSigning, then a replacement (setupNewCrossSigning) through UIA with the password", async () => {
      const localpart = uniqueName("xena");
      const password = "xena pw";
      const user = await stack.createUser(localpart, { password });
      const response = (await loginAs(localpart, password))[0];
      const client = createClient({
        baseUrl: stack.clientUrl,
        accessToken: response.access_token,
        userId: response.user_id,
        deviceId: response.device_id,
        ...(process.env.INTEROP_SDK_LOG ? {} : { logger: quietLogger }),
      });
      await withUnrefSdkTimeouts(async () => {
        await client.initRustCrypto({ useIndexedDB: false });
        try {
          const crypto = client.getCrypto();
          const uiaRounds = [];
          const authUploadDeviceSigningKeys = async (makeRequest) => {
            try {
              await makeRequest(null);
              uiaRounds.push("none");
            } catch (error) {
              if (error?.httpStatus !== 401) throw error;
              uiaRounds.push(error.data?.flows?.map((f) => f.stages.join("+")).join(", "));
              const { done } = runInteractiveAuth({
                client,
                supportedStages: [AuthType.Password],
                doRequest: (auth) => makeRequest(auth),
                answer: answerPassword(user.userId, password),
              });
              await done;
            }
          };

          await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys });
          const first = await crypto.getCrossSigningKeyId();
          assert.ok(first, "a master key after the first bootstrap");
          assert.equal(await masterKeyOnSynapse(response.access_token, user.userId), first, "Synapse has it");

          await crypto.bootstrapCrossSigning({ setupNewCrossSigning: true, authUploadDeviceSigningKeys });
          const second = await crypto.getCrossSigningKeyId();
          assert.notEqual(second, first, "a new master key");
          assert.equal(await masterKeyOnSynapse(response.access_token, user.userId), second, "Synapse has the new one");
          assert.equal(uiaRounds.length, 2, JSON.stringify(uiaRounds));
          assert.notEqual(uiaRounds[1], "none", "the replacement needed UIA");
          assert.match(uiaRounds[1], /m\.login\.password/);
        } finally {
          // Let the crypto's background checks (key backup) finish before
          // stopping it (stopping in the middle throws inside its WASM).
          await sleep(300);
          client.stopClient();
        }
      });
    });

    it("(b) a replacement approved on the account page (the m.oauth stage)", async () => {
      const localpart = uniqueName("olga");
      const password = "olga pw";
      const user = await stack.createUser(localpart, { password });
      const [response, client] = await loginAs(localpart, password);

      const keys = makeCrossSigningKeys(user.userId);
      assert.deepEqual(await uploadSigningKeys(client, keys, null), {}, "the first upload needs no UIA");
      const replacement = makeCrossSigningKeys(user.userId);
      const challenge = await expectMatrixError(uploadSigningKeys(client, replacement, null), { httpStatus: 401 });
      const { flows, params, session } = challenge.data;
      assert.ok(flows.some((f) => f.stages.length === 1 && f.stages[0] === "m.oauth"), JSON.stringify(challenge.data));
      const url = params?.["m.oauth"]?.url;
      assert.equal(
        url,
        `${stack.clientUrl}/_gatehouse/account?action=org.matrix.cross_signing_reset`,
        JSON.stringify(challenge.data),
      );
      assert.equal(typeof session, "string");

      // Not approved yet: the m.oauth stage is not complete.
      await expectMatrixError(uploadSigningKeys(client, replacement, { type: "m.oauth", session }), {
        httpStatus: 401,
      });

      await approveCrossSigningReset(url, localpart, password);

      assert.deepEqual(await uploadSigningKeys(client, replacement, { type: "m.oauth", session }), {});
      const masterId = Object.values(replacement.master_key.keys)[0];
      assert.equal(await masterKeyOnSynapse(response.access_token, user.userId), masterId);
    });
  });

  // 9 -----------------------------------------------------------------------
  it("a Gatehouse admin reaches Synapse's admin API; a non-admin gets 403 until `gatehouse user admin`", async () => {
    const own = await viaProxy(`/_synapse/admin/v2/users/${encodeURIComponent(ADMIN.userId)}`, { token: adminToken });
    assert.equal(own.status, 200, JSON.stringify(own.body));
    assert.equal(own.body.name, ADMIN.userId);

    const localpart = uniqueName("nina");
    const user = await stack.createUser(localpart, { password: "pw" });
    const [plain] = await loginAs(localpart, "pw");
    const refused = await viaProxy(`/_synapse/admin/v2/users/${encodeURIComponent(ADMIN.userId)}`, {
      token: plain.access_token,
    });
    assert.equal(refused.status, 403, JSON.stringify(refused.body));
    assert.equal(refused.body.errcode, "M_FORBIDDEN");

    // Promoted: a new session carries the admin scope (Synapse caches the
    // older token's answer for 120 s).
    await stack.admin(["user", "admin", localpart]);
    const [promoted] = await loginAs(localpart, "pw");
    const allowed = await viaProxy(`/_synapse/admin/v2/users/${encodeURIComponent(user.userId)}`, {
      token: promoted.access_token,
    });
    assert.equal(allowed.status, 200, JSON.stringify(allowed.body));
  });

  // 11 ----------------------------------------------------------------------
  it("auth_metadata (Synapse) and the proxy's own answers", async () => {
    const metadata = await viaProxy("/_matrix/client/v1/auth_metadata");
    assert.equal(metadata.status, 200, JSON.stringify(metadata.body));
    assert.equal(metadata.body.issuer, `${stack.clientUrl}/`);
    assert.equal(metadata.body.account_management_uri, `${stack.clientUrl}/_gatehouse/account`);
    const discovery = await viaProxy("/.well-known/openid-configuration");
    assert.equal(discovery.status, 200);
    assert.equal(discovery.body.issuer, metadata.body.issuer);

    // nginx replaces X-Forwarded-For: a client cannot pass for another address.
    const forged = { "X-Forwarded-For": "203.0.113.9" };
    const localpart = uniqueName("xff");
    await stack.createUser(localpart, { password: "pw" });
    const login = await viaProxy("/_matrix/client/v3/login", {
      method: "POST",
      headers: forged,
      body: { type: "m.login.password", identifier: { type: "m.id.user", user: localpart }, password: "pw" },
    });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    const me = await viaProxy("/_matrix/client/v3/account/whoami", { token: login.body.access_token, headers: forged });
    assert.equal(me.status, 200, JSON.stringify(me.body));
    const onSynapse = await synapseAdmin(`/_synapse/admin/v2/users/${encodeURIComponent(login.body.user_id)}/devices`);
    const seenFrom = onSynapse.devices.find((d) => d.device_id === login.body.device_id)?.last_seen_ip;
    assert.equal(seenFrom, "127.0.0.1", JSON.stringify(onSynapse));

    // A body over the proxy's limit for Gatehouse's endpoints: nginx's 413, as Matrix JSON.
    const huge = await fetch(`${stack.clientUrl}/_matrix/client/v3/login`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ type: "m.login.password", padding: "x".repeat(2 * 1024 * 1024) }),
    });
    assert.equal(huge.status, 413);
    assert.equal((await huge.json()).errcode, "M_TOO_LARGE");

    // Synapse's service API and Gatehouse's introspection are not reachable.
    for (const [method, path] of [
      ["GET", "/_synapse/mas/query_user?localpart=admin"],
      ["POST", "/_synapse/mas/delete_user"],
      ["POST", "/oauth2/introspect"],
    ]) {
      const result = await viaProxy(path, { method, token: adminToken, body: method === "POST" ? {} : undefined });
      assert.deepEqual([result.status, result.body.errcode], [404, "M_UNRECOGNIZED"], `${method} ${path}`);
    }
  });

  // 10 (last: it stops and restarts Synapse) ---------------------------------
  it("Synapse down: login fails cleanly and leaves no device; a logout meanwhile reaches Synapse once it is back", async () => {
    const localpart = uniqueName("sam");
    const password = "sam pw";
    const user = await stack.createUser(localpart, { password });
    const [a, clientA] = await loginAs(localpart, password);
    const [b, clientB] = await loginAs(localpart, password);
    await assertAcceptedBySynapse(a.access_token, user.userId, a.device_id, "A before");
    await assertAcceptedBySynapse(b.access_token, user.userId, b.device_id, "B before");

    await stack.stopSynapse();
    try {
      // Requests nginx sends to Synapse now get nginx's Matrix JSON 502.
      const down = await viaProxy("/_matrix/client/versions");
      assert.deepEqual([down.status, down.body.errcode], [502, "M_UNKNOWN"], JSON.stringify(down.body));

      const failedDevice = "DOWNDEVICE";
      const error = await expectMatrixError(
        tempClient().loginRequest({
          type: "m.login.password",
          identifier: { type: "m.id.user", user: localpart },
          password,
          device_id: failedDevice,
        }),
      );
      assert.ok(error.httpStatus >= 500 && error.httpStatus < 600, `5xx, got ${error.httpStatus} ${JSON.stringify(error.data)}`);
      assert.equal(typeof error.errcode, "string", JSON.stringify(error.data));
      assert.equal(typeof error.data.error, "string", JSON.stringify(error.data));
      const listed = (await clientA.getDevices()).devices.map((d) => d.device_id); // Gatehouse
      assert.ok(!listed.includes(failedDevice), `no device for the failed login in Gatehouse: ${listed}`);

      // A logout while Synapse is away succeeds, and is pushed later.
      await clientB.logout();
    } finally {
      await stack.startSynapse();
    }

    await eventually(
      async () => {
        const devices = await synapseDevices(user.userId);
        return !devices.includes(b.device_id);
      },
      async () => `B (${b.device_id}) still on Synapse: ${await synapseDevices(user.userId)}\n${await stack.logs()}`,
      // Gatehouse retries a failed push after retry_interval_ms, doubling the
      // wait each time (500, 1000, 2000, 4000… ms): with Synapse away ~5 s,
      // the push lands 7.5 s or 15.5 s after the logout.
      { timeoutMs: 25_000 },
    );
    const devices = await synapseDevices(user.userId);
    assert.deepEqual(devices, [a.device_id], "only A; nothing for the failed login");
    await assertRefusedBySynapse(b.access_token, "B after the restart");
    await assertAcceptedBySynapse(a.access_token, user.userId, a.device_id, "A after the restart");
  });
});
