// Small helpers shared by the test files.

import assert from "node:assert/strict";
import { createClient, MatrixError } from "./sdk.js";

/** Await `promise`, expect it to reject with a MatrixError, check and return it. */
export async function expectMatrixError(promise, { errcode, httpStatus } = {}) {
  let error;
  try {
    await promise;
  } catch (e) {
    error = e;
  }
  assert.ok(error, `expected a MatrixError ${errcode ?? ""} ${httpStatus ?? ""}, but the call succeeded`);
  assert.ok(
    error instanceof MatrixError,
    `expected a MatrixError, got ${error?.constructor?.name}: ${error?.message}`,
  );
  if (errcode !== undefined) {
    assert.equal(error.errcode, errcode, `errcode (body ${JSON.stringify(error.data)})`);
  }
  if (httpStatus !== undefined) {
    assert.equal(error.httpStatus, httpStatus, `httpStatus (body ${JSON.stringify(error.data)})`);
  }
  return error;
}

/** An unauthenticated client, as the seed's `tempClient`. */
export function tempClient(server) {
  return createClient({ baseUrl: server.baseUrl });
}

/**
 * The pattern seed 000 recommends: a new, fully configured client built from a
 * login (or registration) response.
 */
export function clientFromLogin(server, response) {
  return createClient({
    baseUrl: server.baseUrl,
    accessToken: response.access_token,
    userId: response.user_id,
    deviceId: response.device_id,
    refreshToken: response.refresh_token,
  });
}

/** A client for an access token alone (to probe a token after the fact). */
export function clientWithToken(server, accessToken) {
  return createClient({ baseUrl: server.baseUrl, accessToken });
}

export function passwordLogin(user, password, extra = {}) {
  return {
    type: "m.login.password",
    identifier: { type: "m.id.user", user },
    password,
    ...extra,
  };
}

/** Log in with the recommended loginRequest() and return [response, client]. */
export async function login(server, user, password, extra = {}) {
  const response = await tempClient(server).loginRequest(passwordLogin(user, password, extra));
  return [response, clientFromLogin(server, response)];
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
