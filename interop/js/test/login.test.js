// matrix-js-sdk (the real package) against a real Gatehouse server: the
// examples of the SDK's authentication guide (seed 000), one test each.
//
// Run with ./run.sh (or `node --test test/` once node_modules is installed).

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";

import { startServer } from "../lib/harness.js";
import {
  AutoDiscovery,
  ClientPrefix,
  HttpApiEvent,
  MatrixError,
  Method,
  createClient,
} from "../lib/sdk.js";
import {
  clientFromLogin,
  clientWithToken,
  expectMatrixError,
  login,
  passwordLogin,
  sleep,
  tempClient,
} from "../lib/util.js";

const ALICE = {
  localpart: "alice",
  userId: "@alice:localhost",
  password: "correct horse battery staple",
  email: "alice@example.org",
  // A GB mobile number: national 07400 123456, E.164 +447400123456.
  phone: "+447400123456",
  phoneNational: "07400123456",
};

describe("seed 000: authentication guide examples", () => {
  let server;

  before(async () => {
    server = await startServer();
    await server.createUser(ALICE.localpart, {
      password: ALICE.password,
      email: ALICE.email,
      phone: ALICE.phone,
    });
  });

  after(async () => {
    await server?.stop();
  });

  it("server discovery: AutoDiscovery.findClientConfig succeeds through setFetchFn", async () => {
    // findClientConfig fetches https://DOMAIN/.well-known/matrix/client and
    // then validates the advertised homeserver with /_matrix/client/versions.
    // The test maps the https://DOMAIN origin onto the loopback server.
    // (The SDK arms a 5 s abort timer per .well-known fetch and never clears
    // it, so this file's process lingers up to 5 s after its last test.)
    const domain = "gatehouse.example.org";
    const seen = [];
    AutoDiscovery.setFetchFn((resource, init) => {
      const url = String(resource);
      seen.push(url);
      const mapped = url.startsWith(`https://${domain}/`)
        ? server.baseUrl + url.slice(`https://${domain}`.length)
        : url;
      return fetch(mapped, init);
    });
    try {
      const config = await AutoDiscovery.findClientConfig(domain);
      const hsConfig = config["m.homeserver"];
      assert.equal(hsConfig.state, AutoDiscovery.SUCCESS, `state (error: ${hsConfig.error})`);
      assert.equal(hsConfig.error, null);
      assert.equal(hsConfig.base_url, server.baseUrl);
      assert.ok(seen.includes(`https://${domain}/.well-known/matrix/client`), JSON.stringify(seen));
      assert.ok(
        seen.some((u) => u.startsWith(`${server.baseUrl}/_matrix/client/versions`)),
        `the advertised homeserver was validated: ${JSON.stringify(seen)}`,
      );
      // No identity server is configured, so none is announced.
      assert.equal(config["m.identity_server"].state, AutoDiscovery.PROMPT);
    } finally {
      AutoDiscovery.setFetchFn(undefined);
    }
  });

  it("checking available login flows: loginFlows() offers m.login.password", async () => {
    const { flows } = await tempClient(server).loginFlows();
    assert.ok(Array.isArray(flows), "flows is an array");
    assert.ok(
      flows.some((flow) => flow.type === "m.login.password"),
      `flows: ${JSON.stringify(flows)}`,
    );
  });

  it("the server advertises a spec version with refresh tokens (v1.3+)", async () => {
    const versions = await tempClient(server).getVersions();
    assert.ok(versions.versions.includes("v1.3"), JSON.stringify(versions));
  });

  it("password login: loginRequest (m.id.user, full ID) then a fresh client from the response", async () => {
    const temp = tempClient(server);
    const response = await temp.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: ALICE.userId },
      password: ALICE.password,
      initial_device_display_name: "My App",
      refresh_token: true,
    });
    assert.equal(response.user_id, ALICE.userId);
    assert.equal(typeof response.access_token, "string");
    assert.ok(response.access_token.length > 0);
    assert.equal(typeof response.device_id, "string");
    assert.ok(response.device_id.length > 0);
    assert.equal(typeof response.refresh_token, "string", "refresh_token given when asked for");
    assert.equal(typeof response.expires_in_ms, "number", "expires_in_ms given with a refresh token");
    assert.ok(response.expires_in_ms > 0);
    // loginRequest does not touch the temporary client (unlike login()).
    assert.equal(temp.getAccessToken(), null);

    const client = createClient({
      baseUrl: server.baseUrl,
      accessToken: response.access_token,
      userId: response.user_id,
      deviceId: response.device_id,
      refreshToken: response.refresh_token,
    });
    assert.equal(client.getUserId(), ALICE.userId);
    assert.equal(client.getDeviceId(), response.device_id);
    assert.equal(client.getRefreshToken(), response.refresh_token);
    const me = await client.whoami();
    assert.equal(me.user_id, ALICE.userId);
    assert.equal(me.device_id, response.device_id);
    assert.equal(me.is_guest, false);
  });

  it("password login: m.id.user with the bare localpart", async () => {
    const [response, client] = await login(server, ALICE.localpart, ALICE.password);
    assert.equal(response.user_id, ALICE.userId);
    // Without refresh_token: true there is no refresh token.
    assert.equal(response.refresh_token, undefined);
    assert.equal((await client.whoami()).user_id, ALICE.userId);
  });

  it("login with an email address (m.id.thirdparty)", async () => {
    const temp = tempClient(server);
    const response = await temp.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.thirdparty", medium: "email", address: ALICE.email },
      password: ALICE.password,
    });
    assert.equal(response.user_id, ALICE.userId);
    assert.equal((await clientFromLogin(server, response).whoami()).device_id, response.device_id);

    // Email addresses are matched case-insensitively.
    const mixedCase = await temp.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.thirdparty", medium: "email", address: "Alice@Example.ORG" },
      password: ALICE.password,
    });
    assert.equal(mixedCase.user_id, ALICE.userId);
  });

  it("login with a phone number (m.id.phone: country + national number)", async () => {
    const response = await tempClient(server).loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.phone", country: "GB", phone: ALICE.phoneNational },
      password: ALICE.password,
    });
    assert.equal(response.user_id, ALICE.userId);
    assert.equal((await clientFromLogin(server, response).whoami()).user_id, ALICE.userId);
  });

  it("login with a phone number as a third-party ID (m.id.thirdparty, msisdn)", async () => {
    const response = await tempClient(server).loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.thirdparty", medium: "msisdn", address: ALICE.phone.slice(1) },
      password: ALICE.password,
    });
    assert.equal(response.user_id, ALICE.userId);
  });

  it("deprecated login(): the client is updated with the access token and user ID", async () => {
    const client = tempClient(server);
    const response = await client.login("m.login.password", {
      identifier: { type: "m.id.user", user: ALICE.localpart },
      password: ALICE.password,
    });
    assert.equal(response.user_id, ALICE.userId);
    assert.equal(client.getAccessToken(), response.access_token);
    assert.equal(client.getUserId(), ALICE.userId);
    assert.equal((await client.whoami()).device_id, response.device_id);
  });

  it("deprecated loginWithPassword(): the top-level `user` form", async () => {
    const client = tempClient(server);
    const response = await client.loginWithPassword(ALICE.localpart, ALICE.password);
    assert.equal(response.user_id, ALICE.userId);
    assert.equal((await client.whoami()).user_id, ALICE.userId);
  });

  it("using an existing access token: a client built from stored credentials works", async () => {
    const [stored] = await login(server, ALICE.userId, ALICE.password, { refresh_token: true });
    // ... later, e.g. after a restart of the app:
    const client = createClient({
      baseUrl: server.baseUrl,
      accessToken: stored.access_token,
      userId: stored.user_id,
      deviceId: stored.device_id,
      refreshToken: stored.refresh_token,
    });
    const me = await client.whoami();
    assert.deepEqual([me.user_id, me.device_id], [stored.user_id, stored.device_id]);
  });

  it("error handling: a wrong password is a MatrixError M_FORBIDDEN with status 403", async () => {
    const error = await expectMatrixError(
      tempClient(server).loginRequest(passwordLogin(ALICE.userId, "wrong-password")),
      { errcode: "M_FORBIDDEN", httpStatus: 403 },
    );
    assert.ok(error instanceof MatrixError);
    assert.equal(typeof error.data.error, "string");
  });

  it("error handling: an unknown user looks the same as a wrong password", async () => {
    await expectMatrixError(
      tempClient(server).loginRequest(passwordLogin("@nobody:localhost", "whatever")),
      { errcode: "M_FORBIDDEN", httpStatus: 403 },
    );
  });

  it("token refresh: refreshToken(rt) gives a working access token; the old refresh token dies once it is used", async () => {
    const [first, client] = await login(server, ALICE.userId, ALICE.password, { refresh_token: true });
    const rt0 = first.refresh_token;

    const refreshed = await client.refreshToken(rt0);
    assert.equal(typeof refreshed.access_token, "string");
    assert.equal(typeof refreshed.refresh_token, "string", "a new refresh token is issued");
    assert.equal(typeof refreshed.expires_in_ms, "number");
    assert.notEqual(refreshed.access_token, first.access_token);
    assert.notEqual(refreshed.refresh_token, rt0);

    // Spec: "The old refresh token remains valid until the new access token or
    // refresh token is used" -- a client that lost the answer can repeat it.
    const repeated = await client.refreshToken(rt0);
    assert.equal(typeof repeated.access_token, "string");

    // Use the newest pair, as a client that kept the answer would.
    client.setAccessToken(repeated.access_token);
    const me = await client.whoami();
    assert.deepEqual([me.user_id, me.device_id], [ALICE.userId, first.device_id]);

    // Now the old refresh token is revoked: 401 M_UNKNOWN_TOKEN (spec, /refresh).
    await expectMatrixError(client.refreshToken(rt0), { errcode: "M_UNKNOWN_TOKEN", httpStatus: 401 });

    // The current refresh token still works and keeps the same device.
    const next = await client.refreshToken(repeated.refresh_token);
    const again = clientWithToken(server, next.access_token);
    assert.equal((await again.whoami()).device_id, first.device_id);
  });

  it("re-login with the same device_id keeps the device and revokes its older tokens", async () => {
    const [first, oldClient] = await login(server, ALICE.userId, ALICE.password);
    const [second, newClient] = await login(server, ALICE.userId, ALICE.password, {
      device_id: first.device_id,
    });
    assert.equal(second.device_id, first.device_id);
    assert.equal((await newClient.whoami()).device_id, first.device_id);
    // Spec: "If the client sets the device_id, the server will invalidate any
    // access and refresh tokens previously assigned to that device."
    await expectMatrixError(oldClient.whoami(), { errcode: "M_UNKNOWN_TOKEN", httpStatus: 401 });
  });

  it("logout: logout(true) ends this session only", async () => {
    const [, other] = await login(server, ALICE.userId, ALICE.password);
    const [session, client] = await login(server, ALICE.userId, ALICE.password);
    const result = await client.logout(true /* stopClient */);
    assert.deepEqual(result, {});

    const error = await expectMatrixError(clientWithToken(server, session.access_token).whoami(), {
      errcode: "M_UNKNOWN_TOKEN",
      httpStatus: 401,
    });
    // A real logout is not a soft logout.
    assert.notEqual(error.data.soft_logout, true);
    // Another session of the same user is untouched.
    assert.equal((await other.whoami()).user_id, ALICE.userId);
  });

  it("logout everywhere: POST /logout/all revokes every session of the user", async () => {
    const [, a] = await login(server, ALICE.userId, ALICE.password);
    const [, b] = await login(server, ALICE.userId, ALICE.password, { refresh_token: true });
    // The SDK has no wrapper for /logout/all; its HTTP layer is used directly.
    assert.deepEqual(await a.http.authedRequest(Method.Post, "/logout/all", undefined, {}), {});
    await expectMatrixError(a.whoami(), { errcode: "M_UNKNOWN_TOKEN", httpStatus: 401 });
    await expectMatrixError(b.whoami(), { errcode: "M_UNKNOWN_TOKEN", httpStatus: 401 });
    await expectMatrixError(b.refreshToken(b.getRefreshToken()), { errcode: "M_UNKNOWN_TOKEN", httpStatus: 401 });
  });

  it("the v3 prefix is what the SDK uses by default", async () => {
    const [, client] = await login(server, ALICE.userId, ALICE.password);
    const me = await client.http.authedRequest(Method.Get, "/account/whoami", undefined, undefined, {
      prefix: ClientPrefix.V3,
    });
    assert.equal(me.user_id, ALICE.userId);
  });
});

describe("seed 000: expiring access tokens (lifetime 1000 ms)", () => {
  const LIFETIME_MS = 1000;
  let server;

  before(async () => {
    server = await startServer({ accessTokenLifetimeMs: LIFETIME_MS, publicBaseUrl: false });
    await server.createUser(ALICE.localpart, { password: ALICE.password });
  });

  after(async () => {
    await server?.stop();
  });

  it("an expired access token gives M_UNKNOWN_TOKEN with soft_logout, and refreshToken(rt) revives the session", async () => {
    const [response, client] = await login(server, ALICE.userId, ALICE.password, {
      refresh_token: true,
    });
    assert.equal(response.expires_in_ms, LIFETIME_MS);
    const loggedOut = [];
    client.on(HttpApiEvent.SessionLoggedOut, (error) => loggedOut.push(error));

    // Used once while valid (so a server-side token cache has seen it) ...
    assert.equal((await client.whoami()).user_id, ALICE.userId);
    await sleep(LIFETIME_MS + 600);

    // ... and refused once expired.
    const error = await expectMatrixError(client.whoami(), {
      errcode: "M_UNKNOWN_TOKEN",
      httpStatus: 401,
    });
    assert.equal(error.data.soft_logout, true, `body: ${JSON.stringify(error.data)}`);
    // matrix-js-sdk 43 does not refresh non-OAuth sessions by itself: it
    // reports the soft logout to the application.
    assert.equal(loggedOut.length, 1, "Session.logged_out emitted once");
    assert.equal(loggedOut[0].errcode, "M_UNKNOWN_TOKEN");

    // The application refreshes. The SDK sends the expired access token along
    // in the Authorization header; the refresh still works.
    const refreshed = await client.refreshToken(response.refresh_token);
    client.setAccessToken(refreshed.access_token);
    const me = await client.whoami();
    assert.deepEqual([me.user_id, me.device_id], [ALICE.userId, response.device_id]);
  });

  it("a token issued without refresh_token: true does not expire", async () => {
    const [response, client] = await login(server, ALICE.userId, ALICE.password);
    assert.equal(response.expires_in_ms, undefined);
    assert.equal(response.refresh_token, undefined);
    await sleep(LIFETIME_MS + 600);
    assert.equal((await client.whoami()).user_id, ALICE.userId);
  });

  it("server discovery without public_baseurl: no .well-known, so the SDK says PROMPT", async () => {
    const domain = "plain.example.org";
    AutoDiscovery.setFetchFn((resource, init) => {
      const url = String(resource);
      return fetch(url.replace(`https://${domain}`, server.baseUrl), init);
    });
    try {
      const config = await AutoDiscovery.findClientConfig(domain);
      assert.equal(config["m.homeserver"].state, AutoDiscovery.PROMPT);
    } finally {
      AutoDiscovery.setFetchFn(undefined);
    }
  });
});
