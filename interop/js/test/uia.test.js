// matrix-js-sdk's InteractiveAuth (seeds 001 and 002) against a real Gatehouse
// server: registration (dummy, registration token, email through a real SMTP
// server, aiosmtpd), password change, devices, deactivation, cross-signing keys, fallback
// pages, NoAuthFlowFoundError, session resume. Written against the Matrix spec.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";

import { rawJson, startServer } from "../lib/harness.js";
import { findLink, startSmtpServer } from "../lib/smtp.js";
import {
  AuthType,
  ClientPrefix,
  Method,
  NoAuthFlowFoundError,
} from "../lib/sdk.js";
import {
  clientFromLogin,
  expectMatrixError,
  login,
  passwordLogin,
  tempClient,
} from "../lib/util.js";
import {
  answerPassword,
  makeCrossSigningKeys,
  passwordAuthDict,
  runInteractiveAuth,
  submitFallbackForm,
  uploadSigningKeys,
} from "../lib/uia.js";

// ---------------------------------------------------------------------------
// Server configuration for registration. Adjust here, or with the
// INTEROP_REGISTRATION_{DUMMY,TOKEN,EMAIL}_ENV variables, each a JSON object
// of GATEHOUSE_* variables.

function envFrom(variable, fallback) {
  const value = process.env[variable];
  return value ? JSON.parse(value) : fallback;
}

/** Open registration: one flow, m.login.dummy. */
const REGISTRATION_DUMMY_ENV = envFrom("INTEROP_REGISTRATION_DUMMY_ENV", {
  GATEHOUSE_REGISTRATION__ENABLED: "true",
  GATEHOUSE_REGISTRATION__FLOWS: '[["m.login.dummy"]]',
});

/**
 * Token-gated registration. The flow must have a stage after the token stage
 * (the session-resume test stops between the two), as Synapse's does.
 */
const REGISTRATION_TOKEN_ENV = envFrom("INTEROP_REGISTRATION_TOKEN_ENV", {
  GATEHOUSE_REGISTRATION__ENABLED: "true",
  GATEHOUSE_REGISTRATION__FLOWS: '[["m.login.registration_token", "m.login.dummy"]]',
});

/**
 * Registration offering a dummy flow and an email flow; the SMTP settings
 * (aiosmtpd on loopback, no TLS) are added by the test.
 */
const REGISTRATION_EMAIL_ENV = envFrom("INTEROP_REGISTRATION_EMAIL_ENV", {
  GATEHOUSE_REGISTRATION__ENABLED: "true",
  GATEHOUSE_REGISTRATION__FLOWS: '[["m.login.dummy"], ["m.login.email.identity"]]',
  GATEHOUSE_EMAIL__ENABLED: "true",
  GATEHOUSE_EMAIL__TLS: "none",
});

/** Makes a registration token on `server` with the admin command. */
async function createRegistrationToken(server) {
  const { stdout } = await server.admin(["registration-token", "create"]);
  const words = stdout.trim().split(/\s+/);
  const token = words[words.length - 1];
  assert.match(token ?? "", /^[A-Za-z0-9._~-]{1,64}$/, `a registration token in: ${stdout}`);
  return token;
}

const uiaTest = (name, fn) => it(name, { timeout: 20_000 }, fn);
let userCounter = 0;
const uniqueName = (prefix) => `${prefix}${process.pid}x${++userCounter}`;

/** The body of the registration request of these tests. */
function registrationBody(username, password, auth) {
  const body = {
    username,
    password,
    initial_device_display_name: "interop registration",
    refresh_token: true,
  };
  if (auth) body.auth = auth;
  return body;
}

// ---------------------------------------------------------------------------

describe("seed 001/002: registration with InteractiveAuth (m.login.dummy)", () => {
  let server;

  before(async () => {
    server = await startServer({ env: REGISTRATION_DUMMY_ENV });
    await server.createUser("taken", { password: "pw" });
  });
  after(async () => {
    await server?.stop();
  });

  uiaTest("isUsernameAvailable, then register through InteractiveAuth; the dummy stage is done by the SDK", async () => {
    const temp = tempClient(server);
    const username = uniqueName("reg");
    const password = "registration password";
    assert.equal(await temp.isUsernameAvailable(username), true);

    const { ia, log, done } = runInteractiveAuth({
      client: temp,
      doRequest: (auth) => temp.registerRequest(registrationBody(username, password, auth)),
    });
    const response = await done;

    // Request 1 had no auth; the server answered 401 with a session; the SDK
    // then submitted m.login.dummy with that session by itself.
    assert.equal(log.requests[0], null);
    assert.equal(typeof ia.getSessionId(), "string", "the 401 carried a session");
    assert.deepEqual(log.requests[1], { type: AuthType.Dummy, session: ia.getSessionId() });
    assert.equal(log.requests.length, 2);
    assert.deepEqual(log.updates, [], "no stage needed the application");

    assert.equal(response.user_id, `@${username}:localhost`);
    assert.equal(typeof response.access_token, "string");
    assert.equal(typeof response.device_id, "string");

    // Seed 000's pattern: a fresh client from the response.
    const client = clientFromLogin(server, response);
    const me = await client.whoami();
    assert.deepEqual([me.user_id, me.device_id], [response.user_id, response.device_id]);
    const device = await client.getDevice(response.device_id);
    assert.equal(device.display_name, "interop registration");

    assert.equal(await temp.isUsernameAvailable(username), false);
    const [again] = await login(server, username, password);
    assert.equal(again.user_id, response.user_id);
  });

  uiaTest("spec: no auth means 401 with flows and a session, even when the only stage is m.login.dummy", async () => {
    const temp = tempClient(server);
    const error = await expectMatrixError(
      temp.registerRequest(registrationBody(uniqueName("noauth"), "pw")),
      { httpStatus: 401 },
    );
    const { flows, session } = error.data;
    assert.ok(Array.isArray(flows) && flows.length > 0, JSON.stringify(error.data));
    for (const flow of flows) assert.ok(Array.isArray(flow.stages), JSON.stringify(flow));
    assert.ok(
      flows.some((flow) => flow.stages.length === 1 && flow.stages[0] === AuthType.Dummy),
      JSON.stringify(flows),
    );
    assert.equal(typeof session, "string");
    assert.ok(session.length > 0);
  });

  uiaTest("Element Web's way: flows asked with an empty body, then the form with the stage; or resumed with only the session", async () => {
    const temp = tempClient(server);
    // Element Web asks for the flows before it has a name or a password.
    for (const body of [{}, { initial_device_display_name: "Element Web" }]) {
      const error = await expectMatrixError(temp.registerRequest(body), { httpStatus: 401 });
      assert.ok(Array.isArray(error.data.flows), JSON.stringify(error.data));
      assert.equal(typeof error.data.session, "string");
    }
    // Then InteractiveAuth with the whole form: the session was started by
    // a request without it.
    const username = uniqueName("element");
    const first = await expectMatrixError(temp.registerRequest({}), { httpStatus: 401 });
    const response = await temp.registerRequest({
      ...registrationBody(username, "element password"),
      auth: { type: AuthType.Dummy, session: first.data.session },
    });
    assert.equal(response.user_id, `@${username}:localhost`);
    // A session started with the form completes with only `auth`.
    const resumed = uniqueName("resumed");
    const started = await expectMatrixError(
      temp.registerRequest(registrationBody(resumed, "resumed password")),
      { httpStatus: 401 },
    );
    const done = await temp.registerRequest({ auth: { type: AuthType.Dummy, session: started.data.session } });
    assert.equal(done.user_id, `@${resumed}:localhost`);
    const [again] = await login(server, resumed, "resumed password");
    assert.equal(again.user_id, done.user_id);
  });

  uiaTest("a taken username: M_USER_IN_USE (400) before any UIA, and isUsernameAvailable is false", async () => {
    const temp = tempClient(server);
    assert.equal(await temp.isUsernameAvailable("taken"), false);
    await expectMatrixError(temp.registerRequest(registrationBody("taken", "pw")), {
      errcode: "M_USER_IN_USE",
      httpStatus: 400,
    });
  });

  uiaTest("an invalid username: M_INVALID_USERNAME (400) from /register/available", async () => {
    await expectMatrixError(tempClient(server).isUsernameAvailable("not a valid localpart!"), {
      errcode: "M_INVALID_USERNAME",
      httpStatus: 400,
    });
  });

  uiaTest("NoAuthFlowFoundError: an email address as input but no flow with m.login.email.identity", async () => {
    const temp = tempClient(server);
    const { log, done } = runInteractiveAuth({
      client: temp,
      inputs: { emailAddress: "someone@example.org" },
      doRequest: (auth) => temp.registerRequest(registrationBody(uniqueName("noflow"), "pw", auth)),
    });
    const error = await done.then(
      () => assert.fail("attemptAuth resolved"),
      (e) => e,
    );
    assert.ok(error instanceof NoAuthFlowFoundError, `got ${error?.name}: ${error?.message}`);
    assert.deepEqual(error.required_stages, ["m.login.email.identity"]);
    assert.ok(Array.isArray(error.flows) && error.flows.length > 0);
    assert.ok(error.flows.every((flow) => !flow.stages.includes("m.login.email.identity")));
    assert.equal(log.requests.length, 1, "only the request without auth was made");
  });

  uiaTest("spec: inhibit_login: true registers without returning access_token or device_id",
    async () => {
      const temp = tempClient(server);
      const username = uniqueName("inhibit");
      const { done } = runInteractiveAuth({
        client: temp,
        doRequest: (auth) =>
          temp.registerRequest({ ...registrationBody(username, "pw", auth), inhibit_login: true }),
      });
      const response = await done;
      assert.equal(response.user_id, `@${username}:localhost`);
      // Spec: "If true, an access_token and device_id should not be returned".
      assert.equal("access_token" in response, false, JSON.stringify(response));
      assert.equal("device_id" in response, false, JSON.stringify(response));
      assert.equal("refresh_token" in response, false, JSON.stringify(response));
    },
  );
});

describe("seed 001/002: registration tokens (m.login.registration_token)", () => {
  let server;

  before(async () => {
    server = await startServer({ env: REGISTRATION_TOKEN_ENV });
  });
  after(async () => {
    await server?.stop();
  });

  const validity = (client, token) =>
    client.http.request(Method.Get, "/register/m.login.registration_token/validity", { token }, undefined, {
      prefix: ClientPrefix.V1,
    });

  uiaTest("GET /v1/register/m.login.registration_token/validity tells a real token from a made-up one", async () => {
    const token = await createRegistrationToken(server);
    const temp = tempClient(server);
    assert.deepEqual(await validity(temp, token), { valid: true });
    assert.deepEqual(await validity(temp, "madeUpToken123"), { valid: false });
  });

  uiaTest("register with a token (seed 001's submitAuthDict); a wrong token is reported to stateUpdated first", async () => {
    const token = await createRegistrationToken(server);
    const temp = tempClient(server);
    const username = uniqueName("tok");
    const { ia, log, done } = runInteractiveAuth({
      client: temp,
      inputs: { registrationToken: token },
      supportedStages: [AuthType.RegistrationToken, AuthType.Dummy],
      doRequest: (auth) => temp.registerRequest(registrationBody(username, "pw", auth)),
      answer: (stage, status, ia, log) => {
        if (stage !== AuthType.RegistrationToken) return undefined;
        const attempts = log.updates.filter((u) => u.stage === AuthType.RegistrationToken).length;
        if (attempts === 1) return { type: AuthType.RegistrationToken, token: "wrongToken123", session: ia.getSessionId() };
        if (attempts === 2 && status.errcode) {
          return { type: AuthType.RegistrationToken, token, session: ia.getSessionId() };
        }
        return undefined;
      },
    });
    const response = await done;
    assert.equal(response.user_id, `@${username}:localhost`);

    const tokenUpdates = log.updates.filter((u) => u.stage === AuthType.RegistrationToken);
    assert.equal(tokenUpdates.length, 2, JSON.stringify(log.updates));
    assert.equal(tokenUpdates[0].status.errcode, undefined);
    assert.equal(typeof tokenUpdates[1].status.errcode, "string", "the wrong token is an error of the stage");
    assert.ok(tokenUpdates[1].status.errcode.length > 0);
    // Every auth dict carried the same session.
    const sessions = new Set(log.requests.filter(Boolean).map((a) => a.session));
    assert.deepEqual([...sessions], [ia.getSessionId()]);
    assert.equal((await clientFromLogin(server, response).whoami()).user_id, response.user_id);
  });

  uiaTest("session resume: a new InteractiveAuth with sessionId continues after the completed token stage", async () => {
    const token = await createRegistrationToken(server);
    const temp = tempClient(server);
    const username = uniqueName("resume");
    const reload = new Error("simulated page reload");

    // First attempt: the token stage is completed, then the "page reloads"
    // before the next stage is sent.
    // (After a failed request InteractiveAuth moves on to the next stage
    // again, so after the "reload" its requests are left pending for ever,
    // as they would be in a page that is gone.)
    let reloaded = false;
    const first = runInteractiveAuth({
      client: temp,
      doRequest: (auth) => {
        if (reloaded) return new Promise(() => {});
        if (auth && auth.type && auth.type !== AuthType.RegistrationToken) {
          reloaded = true;
          throw reload;
        }
        return temp.registerRequest(registrationBody(username, "pw", auth));
      },
      answer: (stage, status, ia) =>
        stage === AuthType.RegistrationToken && !status.errcode
          ? { type: AuthType.RegistrationToken, token, session: ia.getSessionId() }
          : undefined,
    });
    await assert.rejects(first.done, (e) => e === reload);
    const storedSessionId = first.ia.getSessionId();
    const storedClientSecret = first.ia.getClientSecret();
    assert.equal(typeof storedSessionId, "string");
    assert.ok(
      first.log.requests.some((a) => a?.type === AuthType.RegistrationToken),
      "the token stage was submitted before the reload",
    );
    assert.ok(
      first.log.requests.some((a) => a?.type && a.type !== AuthType.RegistrationToken),
      `the flow has a stage after the token stage (configure one): ${JSON.stringify(first.log.requests)}`,
    );

    // Second attempt, resumed.
    const second = runInteractiveAuth({
      client: temp,
      sessionId: storedSessionId,
      clientSecret: storedClientSecret,
      doRequest: (auth) => temp.registerRequest(registrationBody(username, "pw", auth)),
      answer: (stage) => {
        throw new Error(`no stage should need the application after resuming, got ${stage}`);
      },
    });
    const response = await second.done;
    assert.equal(response.user_id, `@${username}:localhost`);
    assert.deepEqual(second.log.requests[0], { session: storedSessionId }, "resumed with only the session");
    assert.equal(second.ia.getSessionId(), storedSessionId);
    assert.ok(
      second.log.requests.every((a) => a?.type !== AuthType.RegistrationToken),
      "the token stage was not asked for again",
    );
  });
});

describe("seed 001/002: registration with email verification (m.login.email.identity)", () => {
  let server;
  let smtp;

  before(async () => {
    smtp = await startSmtpServer();
    server = await startServer({
      env: {
        ...REGISTRATION_EMAIL_ENV,
        GATEHOUSE_EMAIL__SMTP_HOST: "127.0.0.1",
        GATEHOUSE_EMAIL__SMTP_PORT: String(smtp.port),
      },
    });
  });
  after(async () => {
    await server?.stop();
    await smtp?.close();
  });

  uiaTest("seed 001's email example: emailAddress selects the email flow; the link is opened, poll() completes", async () => {
    const temp = tempClient(server);
    const username = uniqueName("mail");
    const emailAddress = `${username}@example.org`;
    const tokenRequests = [];
    const { ia, log, done } = runInteractiveAuth({
      client: temp,
      inputs: { emailAddress },
      supportedStages: [AuthType.Email],
      doRequest: (auth) => temp.registerRequest(registrationBody(username, "pw", auth)),
      requestEmailToken: async (email, secret, attempt, session) => {
        tokenRequests.push({ email, secret, attempt, session });
        return temp.requestRegisterEmailToken(email, secret, attempt);
      },
    });

    // The SDK asked for the email by itself, with its client secret.
    const mail = await smtp.waitFor(emailAddress);
    assert.equal(tokenRequests.length, 1);
    assert.equal(tokenRequests[0].email, emailAddress);
    assert.equal(tokenRequests[0].secret, ia.getClientSecret());
    assert.equal(log.updates[0].stage, AuthType.Email);

    // The user clicks the link in the mail.
    const link = findLink(mail.data, server.baseUrl);
    assert.ok(link, `a link to ${server.baseUrl} in the mail:\n${mail.data}`);
    const opened = await fetch(link);
    assert.equal(opened.status, 200, await opened.text());

    // The application polls (seed 001: "Polling for out-of-band completion").
    for (let i = 0; i < 100 && !ia.getEmailSid(); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(typeof ia.getEmailSid(), "string", "the SDK kept the sid of the validation session");
    await ia.poll();
    const response = await done;
    assert.equal(response.user_id, `@${username}:localhost`);
    const last = log.requests[log.requests.length - 1];
    assert.equal(last.type, AuthType.Email);
    assert.deepEqual(last.threepid_creds, { sid: ia.getEmailSid(), client_secret: ia.getClientSecret() });
    assert.equal(last.session, ia.getSessionId());
  });

  uiaTest("requestRegisterEmailToken for an address already in use: M_THREEPID_IN_USE", async () => {
    const username = uniqueName("mailused");
    await server.createUser(username, { password: "pw", email: `${username}@example.org` });
    await expectMatrixError(
      tempClient(server).requestRegisterEmailToken(`${username}@example.org`, "someSecret123", 1),
      { errcode: "M_THREEPID_IN_USE", httpStatus: 400 },
    );
  });

  uiaTest("seed 001's email example on deactivateAccount (the token asked for with requestPasswordEmailToken)", async () => {
    // Seed 001 asks for the token with requestRegisterEmailToken here, but the
    // spec has /register/email/requestToken refuse an address that already
    // belongs to an account (previous test): a bound address is confirmed
    // through /account/password/email/requestToken instead.
    const username = uniqueName("maildeact");
    const emailAddress = `${username}@example.org`;
    const user = await server.createUser(username, { password: "pw", email: emailAddress });
    const [, client] = await login(server, user.userId, "pw");
    const { ia, log, done } = runInteractiveAuth({
      client,
      inputs: { emailAddress },
      supportedStages: [AuthType.Email],
      doRequest: (authData) => client.deactivateAccount(authData ?? undefined),
      requestEmailToken: (email, secret, attempt) => client.requestPasswordEmailToken(email, secret, attempt),
    });
    const mail = await smtp.waitFor(emailAddress);
    const link = findLink(mail.data, server.baseUrl);
    assert.ok(link, mail.data);
    assert.equal((await fetch(link)).status, 200);
    for (let i = 0; i < 100 && !ia.getEmailSid(); i++) await new Promise((r) => setTimeout(r, 20));
    await ia.poll();
    const result = await done;
    assert.ok(["success", "no-support"].includes(result.id_server_unbind_result), JSON.stringify(result));
    assert.equal(log.requests[log.requests.length - 1].type, AuthType.Email);
    await expectMatrixError(client.whoami(), { errcode: "M_UNKNOWN_TOKEN", httpStatus: 401 });
  });

  uiaTest("without an emailAddress input the SDK picks the dummy flow of the same server", async () => {
    const temp = tempClient(server);
    const username = uniqueName("nomail");
    const { log, done } = runInteractiveAuth({
      client: temp,
      doRequest: (auth) => temp.registerRequest(registrationBody(username, "pw", auth)),
    });
    const response = await done;
    assert.equal(response.user_id, `@${username}:localhost`);
    assert.equal(log.requests[log.requests.length - 1].type, AuthType.Dummy);
  });
});

describe("seed 001/002: account management behind UIA (m.login.password)", () => {
  let server;
  const PASSWORD = "old password";

  before(async () => {
    server = await startServer({ env: REGISTRATION_DUMMY_ENV });
  });
  after(async () => {
    await server?.stop();
  });

  /** A fresh user (with an email address when withEmail) and a logged-in client of theirs. */
  async function freshUser(prefix, { withEmail = false } = {}) {
    const localpart = uniqueName(prefix);
    const email = withEmail ? `${localpart}@example.org` : undefined;
    const user = await server.createUser(localpart, { password: PASSWORD, email });
    const [response, client] = await login(server, user.userId, PASSWORD, {
      initial_device_display_name: "interop main",
    });
    return { user, response, client };
  }

  uiaTest("setPassword through InteractiveAuth (seed 001's basic example, logoutDevices false)", async () => {
    // With an email bound the server may also offer an email flow; without
    // an emailAddress input the SDK must pick the password flow.
    const { user, client } = await freshUser("pwd", { withEmail: true });
    const [, otherClient] = await login(server, user.userId, PASSWORD);
    const newPassword = "new password";

    const { ia, log, done } = runInteractiveAuth({
      client,
      supportedStages: [AuthType.Password],
      doRequest: (authData) => client.setPassword(authData, newPassword, false),
      answer: answerPassword(client.getUserId(), PASSWORD),
    });
    assert.deepEqual(await done, {});
    assert.deepEqual(log.updates.map((u) => u.stage), [AuthType.Password]);
    const submitted = log.requests[log.requests.length - 1];
    assert.deepEqual(submitted, passwordAuthDict(ia, user.userId, PASSWORD));

    await expectMatrixError(tempClient(server).loginRequest(passwordLogin(user.userId, PASSWORD)), {
      errcode: "M_FORBIDDEN",
      httpStatus: 403,
    });
    const [relogin] = await login(server, user.userId, newPassword);
    assert.equal(relogin.user_id, user.userId);
    // logout_devices: false keeps every session.
    assert.equal((await client.whoami()).user_id, user.userId);
    assert.equal((await otherClient.whoami()).user_id, user.userId);
  });

  uiaTest("setPassword with logout_devices left to its default (true): other sessions end, this one stays", async () => {
    const { user, client } = await freshUser("pwdout");
    const [, otherClient] = await login(server, user.userId, PASSWORD);
    const { done } = runInteractiveAuth({
      client,
      doRequest: (authData) => client.setPassword(authData, "another password"),
      answer: answerPassword(user.userId, PASSWORD),
    });
    await done;
    await expectMatrixError(otherClient.whoami(), { errcode: "M_UNKNOWN_TOKEN", httpStatus: 401 });
    // Spec: "The homeserver SHOULD NOT revoke the access token provided in the request."
    assert.equal((await client.whoami()).user_id, user.userId);
  });

  uiaTest("a wrong password at the stage reaches stateUpdated as M_FORBIDDEN; the right one then succeeds", async () => {
    const { user, client } = await freshUser("wrongpw");
    const { log, done } = runInteractiveAuth({
      client,
      supportedStages: [AuthType.Password],
      doRequest: (authData) => client.setPassword(authData, "changed", false),
      answer: (stage, status, ia, log) => {
        if (stage !== AuthType.Password) return undefined;
        if (log.updates.length === 1) return passwordAuthDict(ia, user.userId, "not my password");
        if (log.updates.length === 2 && status.errcode) return passwordAuthDict(ia, user.userId, PASSWORD);
        return undefined;
      },
    });
    assert.deepEqual(await done, {});
    assert.equal(log.updates.length, 2, JSON.stringify(log.updates));
    assert.equal(log.updates[1].status.errcode, "M_FORBIDDEN");
    assert.equal(typeof log.updates[1].status.error, "string");
    assert.equal(log.updates[1].session, log.updates[0].session, "same session after a failed attempt");
  });

  uiaTest("session resume: a new InteractiveAuth with the stored sessionId and clientSecret", async () => {
    const { user, client } = await freshUser("resumepw");
    let reachedStage;
    const stageReached = new Promise((resolve) => (reachedStage = resolve));
    const first = runInteractiveAuth({
      client,
      doRequest: (authData) => client.setPassword(authData, "resumed password", false),
      answer: (stage) => {
        reachedStage(stage);
        return undefined; // the user navigates away here
      },
    });
    first.done.catch(() => {});
    assert.equal(await stageReached, AuthType.Password);
    const storedSessionId = first.ia.getSessionId();
    const storedClientSecret = first.ia.getClientSecret();
    assert.equal(typeof storedSessionId, "string");

    const second = runInteractiveAuth({
      client,
      sessionId: storedSessionId,
      clientSecret: storedClientSecret,
      doRequest: (authData) => client.setPassword(authData, "resumed password", false),
      answer: answerPassword(user.userId, PASSWORD),
    });
    assert.deepEqual(await second.done, {});
    assert.deepEqual(second.log.requests[0], { session: storedSessionId });
    const last = second.log.requests[second.log.requests.length - 1];
    assert.equal(last.session, storedSessionId);
    assert.equal(last.type, AuthType.Password);
    const [relogin] = await login(server, user.userId, "resumed password");
    assert.equal(relogin.user_id, user.userId);
  });

  uiaTest("devices: getDevices, getDevice, setDeviceDetails; unknown devices are 404", async () => {
    const { user, response, client } = await freshUser("dev");
    const [other] = await login(server, user.userId, PASSWORD, { initial_device_display_name: "interop other" });

    const { devices } = await client.getDevices();
    const ids = devices.map((d) => d.device_id).sort();
    assert.deepEqual(ids, [response.device_id, other.device_id].sort());
    const mine = await client.getDevice(response.device_id);
    assert.equal(mine.device_id, response.device_id);
    assert.equal(mine.display_name, "interop main");

    assert.deepEqual(await client.setDeviceDetails(other.device_id, { display_name: "renamed" }), {});
    assert.equal((await client.getDevice(other.device_id)).display_name, "renamed");

    await expectMatrixError(client.getDevice("NOSUCHDEVICE"), { errcode: "M_NOT_FOUND", httpStatus: 404 });
    await expectMatrixError(client.setDeviceDetails("NOSUCHDEVICE", { display_name: "x" }), {
      httpStatus: 404,
    });
  });

  uiaTest("deleteDevice through InteractiveAuth: the device and its token are gone", async () => {
    const { user, client } = await freshUser("deldev");
    const [other, otherClient] = await login(server, user.userId, PASSWORD);

    await expectMatrixError(client.deleteDevice(other.device_id), { httpStatus: 401 });

    const { done } = runInteractiveAuth({
      client,
      supportedStages: [AuthType.Password],
      doRequest: (authData) => client.deleteDevice(other.device_id, authData ?? undefined),
      answer: answerPassword(user.userId, PASSWORD),
    });
    assert.deepEqual(await done, {});
    await expectMatrixError(otherClient.whoami(), { errcode: "M_UNKNOWN_TOKEN", httpStatus: 401 });
    await expectMatrixError(client.getDevice(other.device_id), { httpStatus: 404 });
    assert.equal((await client.whoami()).user_id, user.userId);
  });

  uiaTest("deleteMultipleDevices through InteractiveAuth", async () => {
    const { user, response, client } = await freshUser("deldevs");
    const [a, aClient] = await login(server, user.userId, PASSWORD);
    const [b, bClient] = await login(server, user.userId, PASSWORD, { refresh_token: true });

    const { done } = runInteractiveAuth({
      client,
      supportedStages: [AuthType.Password],
      doRequest: (authData) => client.deleteMultipleDevices([a.device_id, b.device_id], authData ?? undefined),
      answer: answerPassword(user.userId, PASSWORD),
    });
    assert.deepEqual(await done, {});
    await expectMatrixError(aClient.whoami(), { errcode: "M_UNKNOWN_TOKEN", httpStatus: 401 });
    await expectMatrixError(bClient.whoami(), { errcode: "M_UNKNOWN_TOKEN", httpStatus: 401 });
    await expectMatrixError(bClient.refreshToken(b.refresh_token), { errcode: "M_UNKNOWN_TOKEN", httpStatus: 401 });
    const { devices } = await client.getDevices();
    assert.deepEqual(devices.map((d) => d.device_id), [response.device_id]);
  });

  uiaTest("deactivateAccount(auth, true) through InteractiveAuth (seed 000's auth dict)", async () => {
    const { user, client } = await freshUser("deact");
    await expectMatrixError(client.deactivateAccount(undefined, true), { httpStatus: 401 });

    const { done } = runInteractiveAuth({
      client,
      supportedStages: [AuthType.Password],
      doRequest: (authData) => client.deactivateAccount(authData ?? undefined, true),
      answer: (stage, status, ia) =>
        stage === AuthType.Password && !status.errcode
          ? {
              type: "m.login.password",
              identifier: { type: "m.id.user", user: user.userId },
              password: PASSWORD,
              session: ia.getSessionId(),
            }
          : undefined,
    });
    const result = await done;
    assert.ok(["success", "no-support"].includes(result.id_server_unbind_result), JSON.stringify(result));

    await expectMatrixError(client.whoami(), { errcode: "M_UNKNOWN_TOKEN", httpStatus: 401 });
    const error = await expectMatrixError(
      tempClient(server).loginRequest(passwordLogin(user.userId, PASSWORD)),
      { httpStatus: 403 },
    );
    assert.ok(["M_USER_DEACTIVATED", "M_FORBIDDEN"].includes(error.errcode), error.errcode);
  });

  uiaTest(
    "spec: deactivation reports id_server_unbind_result \"success\" when there is nothing to unbind",
    async () => {
      // Spec (account_deactivation): "This must be `success` if the homeserver
      // has no identifiers to unbind for the user." Gatehouse never binds
      // anything at an identity server.
      const { user, client } = await freshUser("deactok");
      const { done } = runInteractiveAuth({
        client,
        doRequest: (authData) => client.deactivateAccount(authData ?? undefined, false),
        answer: answerPassword(user.userId, PASSWORD),
      });
      assert.deepEqual(await done, { id_server_unbind_result: "success" });
    },
  );

  uiaTest("spec: a self-signing key not signed by the master key is refused with M_INVALID_SIGNATURE",
    async () => {
      const { user, client } = await freshUser("xsignbad");
      const keys = makeCrossSigningKeys(user.userId);
      // Signed by some other master key.
      keys.self_signing_key = makeCrossSigningKeys(user.userId).self_signing_key;
      await expectMatrixError(uploadSigningKeys(client, keys, null), {
        errcode: "M_INVALID_SIGNATURE",
        httpStatus: 400,
      });
    },
  );

  uiaTest("getFallbackAuthUrl: the page for m.login.password is HTML at the spec's URL", async () => {
    const { client } = await freshUser("fallback");
    const first = await expectMatrixError(client.setPassword(undefined, "x", false), { httpStatus: 401 });
    const session = first.data.session;
    const url = client.getFallbackAuthUrl(AuthType.Password, session);
    assert.equal(
      url,
      `${server.baseUrl}/_matrix/client/v3/auth/m.login.password/fallback/web?session=${encodeURIComponent(session)}`,
    );
    const page = await fetch(url);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
    assert.match(await page.text(), /<html|<!doctype/i);
  });

  uiaTest("fallback: the stage done in the page, then auth.poll() completes the request", async () => {
    const { user, client } = await freshUser("fallbackdone");
    let atStage;
    const stageReached = new Promise((resolve) => (atStage = resolve));
    const { ia, log, done } = runInteractiveAuth({
      client,
      // A client that handles no stage natively.
      supportedStages: [],
      doRequest: (authData) => client.setPassword(authData, "set in the fallback", false),
      answer: (stage) => {
        atStage(stage);
        return undefined;
      },
    });
    assert.equal(await stageReached, AuthType.Password);

    const url = client.getFallbackAuthUrl(AuthType.Password, ia.getSessionId());
    const html = await (await fetch(url)).text();
    const submitted = await submitFallbackForm(url, html, { password: PASSWORD });
    assert.equal(submitted.status, 200, `form ${JSON.stringify(submitted.form)}: ${submitted.text.slice(0, 500)}`);
    // Spec: on completion the page calls window.onAuthDone() or posts "authDone".
    assert.match(submitted.text, /onAuthDone|authDone/);

    await ia.poll();
    assert.deepEqual(await done, {});
    assert.deepEqual(log.requests[log.requests.length - 1], { session: ia.getSessionId() });
    const [relogin] = await login(server, user.userId, "set in the fallback");
    assert.equal(relogin.user_id, user.userId);
  });

  uiaTest("cross-signing keys: first upload without UIA, same keys again without UIA, new keys through InteractiveAuth", async () => {
    const { user, client } = await freshUser("xsign");
    const keys = makeCrossSigningKeys(user.userId);

    // Seed 001: "First, attempt with no auth" -- for a first upload that is enough.
    assert.deepEqual(await uploadSigningKeys(client, keys, null), {});
    // Spec: uploading the same keys again needs no UIA either.
    assert.deepEqual(await uploadSigningKeys(client, keys, null), {});

    // Replacing them does.
    const replacement = makeCrossSigningKeys(user.userId);
    const challenge = await expectMatrixError(uploadSigningKeys(client, replacement, null), { httpStatus: 401 });
    assert.ok(
      challenge.data.flows.some((flow) => flow.stages.includes(AuthType.Password)),
      JSON.stringify(challenge.data),
    );

    // Seed 001's authUploadDeviceSigningKeys callback, with makeRequest as
    // the SDK would pass it.
    const makeRequest = (authData) => uploadSigningKeys(client, replacement, authData);
    let usedInteractiveAuth = false;
    const authUploadDeviceSigningKeys = async (makeRequest) => {
      try {
        await makeRequest(null);
      } catch {
        usedInteractiveAuth = true;
        const { done } = runInteractiveAuth({
          client,
          supportedStages: [AuthType.Password],
          doRequest: (authData) => makeRequest(authData),
          answer: answerPassword(user.userId, PASSWORD),
        });
        await done;
      }
    };
    await authUploadDeviceSigningKeys(makeRequest);
    assert.equal(usedInteractiveAuth, true);
    // Now the replacement is current: uploading it again is idempotent.
    assert.deepEqual(await uploadSigningKeys(client, replacement, null), {});
  });
});
