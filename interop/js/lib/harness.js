// Start and stop a real Gatehouse server for the interop tests.
//
// The binary is $GATEHOUSE_BIN, else
// ${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse-target}/debug/gatehouse.
// Nothing here builds it: run.sh expects it to exist.
//
// Each server gets its own temporary data directory, a loopback port picked
// here (so that public_baseurl can name it before the server starts), cheap
// Argon2 settings and rate limits high enough for a test suite. Any
// configuration can be added or overridden per server with `env`.

import { spawn, execFile } from "node:child_process";
import { mkdtemp, rm, access } from "node:fs/promises";
import { constants as fsConstants } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";

export function gatehouseBin() {
  if (process.env.GATEHOUSE_BIN) return process.env.GATEHOUSE_BIN;
  const target =
    process.env.CARGO_TARGET_DIR || path.join(os.homedir(), ".cache", "gatehouse-target");
  return path.join(target, "debug", "gatehouse");
}

/** A free TCP port on 127.0.0.1 (free when this returns; the server binds it next). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const LAX_LIMIT = { PER_SECOND: "1000", BURST_COUNT: "1000" };

// $0 is the binary; exits with the server's status. (sh gives background
// jobs /dev/null as stdin unless redirected: hence the copy on fd 3.)
const SERVE_WRAPPER = `
exec 3<&0
"$0" serve </dev/null 3<&- &
pid=$!
( while read -r _; do :; done; kill -TERM "$pid" 2>/dev/null ) <&3 &
exec 3<&-
wait "$pid"
`;

/** The configuration every test server gets unless `env` overrides it. */
export function baseTestEnv() {
  const env = {
    GATEHOUSE_PASSWORDS__ARGON2_MEMORY_KIB: "256",
    GATEHOUSE_PASSWORDS__ARGON2_ITERATIONS: "1",
    GATEHOUSE_SQLITE__DURABILITY: "normal",
    GATEHOUSE_LOG_FILTER: "warn",
  };
  for (const limit of [
    "LOGIN_PER_ADDRESS",
    "LOGIN_PER_ACCOUNT",
    "FAILED_LOGINS_PER_ACCOUNT",
    "REGISTRATION_PER_ADDRESS",
    "THREEPID_VALIDATION",
    "REGISTRATION_TOKEN_CHECKS",
    "LOGIN_TOKENS_PER_ACCOUNT",
    "UIA_SESSIONS_PER_ADDRESS",
    "USERNAME_CHECKS_PER_ADDRESS",
    "REFRESHES_PER_ADDRESS",
  ]) {
    for (const [key, value] of Object.entries(LAX_LIMIT)) {
      env[`GATEHOUSE_RATE_LIMITS__${limit}__${key}`] = value;
    }
  }
  return env;
}

// The server reads every GATEHOUSE_* variable as configuration and refuses
// unknown keys (exit 2), so the inherited environment must not leak any of
// ours (GATEHOUSE_BIN above all) or a developer's into it.
function childEnv(extra) {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("GATEHOUSE_") && key !== "RUST_LOG") env[key] = value;
  }
  for (const [key, value] of Object.entries(extra)) {
    if (value !== undefined && value !== null) env[key] = String(value);
  }
  return env;
}

function run(bin, args, env, { input } = {}) {
  return new Promise((resolve, reject) => {
    const child = execFile(bin, args, { env, timeout: 30_000 }, (error, stdout, stderr) => {
      if (error) {
        error.message += `\n$ gatehouse ${args.join(" ")}\nstdout: ${stdout}\nstderr: ${stderr}`;
        error.stdout = stdout;
        error.stderr = stderr;
        reject(error);
      } else {
        resolve({ stdout, stderr });
      }
    });
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
  });
}

/**
 * Start a server.
 *
 * options.env                  extra/overriding GATEHOUSE_* variables (e.g.
 *                              GATEHOUSE_REGISTRATION__ENABLED); a value of
 *                              null removes a default.
 * options.accessTokenLifetimeMs sets GATEHOUSE_TOKENS__ACCESS_TOKEN_LIFETIME_MS.
 * options.publicBaseUrl        false to leave public_baseurl unset.
 *
 * Returns { baseUrl, port, dataDir, env, bin, admin(args), createUser(...),
 * stop(), output() }.
 */
export async function startServer(options = {}) {
  const bin = gatehouseBin();
  try {
    await access(bin, fsConstants.X_OK);
  } catch {
    throw new Error(
      `gatehouse binary not found or not executable at ${bin}; build it or set GATEHOUSE_BIN`,
    );
  }
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "gatehouse-interop-"));
  let lastError;
  // The port is free when picked but another process could take it before the
  // server binds it: try a few times.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    try {
      return await launch(bin, dataDir, port, options);
    } catch (error) {
      lastError = error;
      if (!/address already in use|AddrInUse|os error 98/i.test(String(error.message))) break;
    }
  }
  await rm(dataDir, { recursive: true, force: true });
  throw lastError;
}

async function launch(bin, dataDir, port, options) {
  const baseUrl = `http://127.0.0.1:${port}`;
  const config = {
    ...baseTestEnv(),
    GATEHOUSE_DATA_DIR: dataDir,
    GATEHOUSE_LISTEN: `127.0.0.1:${port}`,
  };
  if (options.publicBaseUrl !== false) config.GATEHOUSE_PUBLIC_BASEURL = baseUrl;
  if (options.accessTokenLifetimeMs !== undefined) {
    config.GATEHOUSE_TOKENS__ACCESS_TOKEN_LIFETIME_MS = String(options.accessTokenLifetimeMs);
  }
  for (const [key, value] of Object.entries(options.env ?? {})) {
    if (value === null || value === undefined) delete config[key];
    else config[key] = String(value);
  }
  const env = childEnv(config);

  // The server runs under a small sh wrapper that stops it (SIGTERM) when
  // its stdin closes: when stop() closes it, or when this Node process dies
  // in any way (a killed test run must not leave servers behind).
  const child = spawn("/bin/sh", ["-c", SERVE_WRAPPER, bin], {
    env,
    stdio: ["pipe", "pipe", "pipe"],
  });
  child.stdin.on("error", () => {});
  let output = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => {
    output += chunk;
    if (output.length > 200_000) output = output.slice(-100_000);
  });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));

  const lines = readline.createInterface({ input: child.stdout });
  const listening = new Promise((resolve, reject) => {
    lines.once("line", resolve);
    child.once("error", reject);
  });
  const timeout = new Promise((_, reject) => {
    const t = setTimeout(() => reject(new Error("gatehouse did not start within 20 s")), 20_000);
    t.unref();
  });
  let first;
  try {
    first = await Promise.race([
      listening,
      exited.then(({ code, signal }) => {
        throw new Error(`gatehouse exited before listening (code ${code}, signal ${signal})`);
      }),
      timeout,
    ]);
  } catch (error) {
    child.stdin.end();
    child.kill("SIGKILL");
    await exited;
    error.message += `\nstderr:\n${output}`;
    throw error;
  }
  // Keep draining stdout so the child never blocks on a full pipe.
  lines.on("line", () => {});
  const expected = `Gatehouse listening on ${baseUrl}`;
  if (first.trim() !== expected) {
    child.stdin.end();
    await exited;
    throw new Error(`unexpected first line ${JSON.stringify(first)} (wanted ${JSON.stringify(expected)})`);
  }

  let stopped = false;
  const server = {
    baseUrl,
    port,
    dataDir,
    env,
    bin,
    /** Run an admin subcommand on this server's data directory. */
    admin(args, opts) {
      return run(bin, args, env, opts);
    },
    /** `gatehouse user create NAME --password PW [--email] [--phone] [--admin]`. */
    async createUser(name, { password = "pw", email, phone, admin = false } = {}) {
      const args = ["user", "create", name, "--password", password];
      if (email) args.push("--email", email);
      if (phone) args.push("--phone", phone);
      if (admin) args.push("--admin");
      await run(bin, args, env);
      return { localpart: name, userId: `@${name}:localhost`, password, email, phone };
    },
    /** Everything the server wrote on stderr so far (for failure messages). */
    output() {
      return output;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      child.stdin.end(); // the wrapper sends SIGTERM to the server
      if (child.exitCode === null && child.signalCode === null) {
        const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(killer);
      }
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}

/** Plain fetch to the server, for the few checks the SDK has no method for. */
export async function rawJson(baseUrl, pathAndQuery, init = {}) {
  const response = await fetch(baseUrl + pathAndQuery, init);
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: response.status, headers: response.headers, body };
}
