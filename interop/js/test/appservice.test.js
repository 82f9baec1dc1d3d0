// An application service (a bridge) through matrix-js-sdk 43 against a real
// Gatehouse: its users registered with m.login.application_service, a login
// as one of them, device creation, and masquerading with ?user_id= (and
// ?device_id=).

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, writeFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { startServer } from "../lib/harness.js";
import { Method, createClient } from "../lib/sdk.js";
import { clientFromLogin, expectMatrixError } from "../lib/util.js";

const AS_TOKEN = "as_token_of_the_interop_bridge_42";

const REGISTRATION = `id: interop-bridge
url: "http://127.0.0.1:9"
as_token: "${AS_TOKEN}"
hs_token: "hs_token_of_the_interop_bridge_42"
sender_localpart: interopbot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: '@ib_.*:localhost'
  aliases: []
  rooms: []
`;

describe("an appservice bridge through matrix-js-sdk", () => {
  let server;
  let dir;
  let bridge;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "gatehouse-appservice-"));
    const file = path.join(dir, "registration.yaml");
    await writeFile(file, REGISTRATION);
    server = await startServer({
      env: {
        GATEHOUSE_REGISTRATION__ENABLED: "true",
        GATEHOUSE_APPSERVICES__REGISTRATION_FILES: JSON.stringify([file]),
      },
    });
    // The bridge's own client: its as_token as the access token.
    bridge = createClient({ baseUrl: server.baseUrl, accessToken: AS_TOKEN });
  });
  after(async () => {
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("registers its users, logs in as one, creates a device and masquerades", async () => {
    // The sender itself.
    const me = await bridge.whoami();
    assert.equal(me.user_id, "@interopbot:localhost");

    // Registration of a bridged user: no UIA, the as_token authenticates.
    const registered = await bridge.http.authedRequest(Method.Post, "/register", undefined, {
      type: "m.login.application_service",
      username: "ib_alice",
    });
    assert.equal(registered.user_id, "@ib_alice:localhost");

    // A normal client may not take a name in the exclusive namespace.
    const anon = createClient({ baseUrl: server.baseUrl });
    await expectMatrixError(
      anon.registerRequest({ username: "ib_mallory", password: "pw", auth: { type: "m.login.dummy" } }),
      { errcode: "M_EXCLUSIVE", httpStatus: 400 },
    );

    // The SDK's login() with the appservice login type, sent with the
    // as_token: a session for the bridged user. (login() adopts the new
    // session's token, so it runs on a client of its own.)
    const loginClient = createClient({ baseUrl: server.baseUrl, accessToken: AS_TOKEN });
    const login = await loginClient.login("m.login.application_service", {
      identifier: { type: "m.id.user", user: "ib_alice" },
    });
    assert.equal(login.user_id, "@ib_alice:localhost");
    const alice = clientFromLogin(server, login);
    const alicesView = await alice.whoami();
    assert.equal(alicesView.device_id, login.device_id);

    // Masquerading: the bridge acts as its user with ?user_id=.
    const masked = await bridge.http.authedRequest(Method.Get, "/account/whoami", {
      user_id: "@ib_alice:localhost",
    });
    assert.equal(masked.user_id, "@ib_alice:localhost");
    await expectMatrixError(
      bridge.http.authedRequest(Method.Get, "/account/whoami", { user_id: "@someone:localhost" }),
      { httpStatus: 403 },
    );

    // Device creation for its user, then deletion without UIA.
    await bridge.http.authedRequest(
      Method.Put,
      "/devices/BRIDGEDEV",
      { user_id: "@ib_alice:localhost" },
      { display_name: "bridge device" },
    );
    const { devices } = await alice.getDevices();
    assert.ok(
      devices.some((d) => d.device_id === "BRIDGEDEV" && d.display_name === "bridge device"),
      JSON.stringify(devices),
    );
    // Device masquerading (spec v1.17): ?device_id= beside ?user_id= acts
    // as that device, which must be the user's.
    const onDevice = await bridge.http.authedRequest(Method.Get, "/account/whoami", {
      user_id: "@ib_alice:localhost",
      device_id: "BRIDGEDEV",
    });
    assert.equal(onDevice.device_id, "BRIDGEDEV");
    await expectMatrixError(
      bridge.http.authedRequest(Method.Get, "/account/whoami", {
        user_id: "@ib_alice:localhost",
        device_id: "NOSUCHDEV",
      }),
      { errcode: "M_UNKNOWN_DEVICE", httpStatus: 400 },
    );
    await bridge.http.authedRequest(Method.Delete, "/devices/BRIDGEDEV", {
      user_id: "@ib_alice:localhost",
    });
    const after = await alice.getDevices();
    assert.ok(!after.devices.some((d) => d.device_id === "BRIDGEDEV"), JSON.stringify(after));
  });
});
