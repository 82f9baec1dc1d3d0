// A whole delegated stack for the interop tests: a real Synapse delegating
// authentication to a real Gatehouse, with nginx in front, started through
// scripts/stack (one stack per test file: `before` starts it, `after` stops it).
//
// Clients talk to `clientUrl` (nginx) only, as they would in production; the
// direct URLs of Gatehouse and Synapse are there for diagnostics.
//
// The stack gets harness.js's test configuration (cheap Argon2, lax rate
// limits) plus `env`. It is also torn down by scripts/stack's watchdog when
// this Node process dies without calling down().

import { execFile } from "node:child_process";
import { mkdtemp, rm, readFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { baseTestEnv, gatehouseBin } from "./harness.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const STACK = path.join(ROOT, "scripts", "stack");

// The environment of scripts/stack: ours minus any GATEHOUSE_* variable
// (scripts/stack forwards those to Gatehouse, which refuses unknown keys),
// then the binary and the stack's configuration.
function stackEnv(config) {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("GATEHOUSE_") && key !== "RUST_LOG") env[key] = value;
  }
  env.GATEHOUSE_BIN = gatehouseBin();
  for (const [key, value] of Object.entries(config)) {
    if (value !== undefined && value !== null) env[key] = String(value);
  }
  return env;
}

function run(args, env, { timeout = 120_000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(STACK, args, { env, timeout, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) {
        error.message += `\n$ scripts/stack ${args.join(" ")}\nstdout: ${stdout}\nstderr: ${stderr}`;
        error.stdout = stdout;
        error.stderr = stderr;
        reject(error);
      } else {
        resolve({ stdout, stderr });
      }
    });
  });
}

/** KEY=value lines of scripts/stack's output. */
function parseLines(stdout) {
  const out = {};
  for (const line of stdout.split("\n")) {
    const m = line.match(/^([A-Z_]+)=(.*)$/);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

/**
 * Start a stack.
 *
 * options.env   GATEHOUSE_* variables for Gatehouse (registration, email,
 *               token lifetimes, GATEHOUSE_HOMESERVER__RETRY_INTERVAL_MS…);
 *               null removes a default of baseTestEnv().
 *
 * Returns { clientUrl, gatehouseUrl, synapseUrl, dataDir, dir, admin(args),
 * createUser(name, opts), stopSynapse(), startSynapse(), logs(), down() }.
 */
export async function startStack(options = {}) {
  const dir = await mkdtemp(path.join(os.tmpdir(), "gatehouse-stack-"));
  const config = { ...baseTestEnv(), GATEHOUSE_STACK_OWNER_PID: process.pid };
  for (const [key, value] of Object.entries(options.env ?? {})) {
    if (value === null || value === undefined) delete config[key];
    else config[key] = value;
  }
  const env = stackEnv(config);
  let up;
  try {
    up = await run(["up", dir], env);
  } catch (error) {
    await run(["down", dir], env).catch(() => {});
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  const urls = parseLines(up.stdout);
  for (const key of ["CLIENT_URL", "GATEHOUSE_URL", "SYNAPSE_URL", "DATA_DIR"]) {
    if (!urls[key]) throw new Error(`scripts/stack up printed no ${key}=:\n${up.stdout}\n${up.stderr}`);
  }
  if (!up.stdout.includes(`Client URL: ${urls.CLIENT_URL}`)) {
    throw new Error(`scripts/stack up printed no "Client URL:" line:\n${up.stdout}`);
  }

  let downed = false;
  const stack = {
    dir,
    clientUrl: urls.CLIENT_URL,
    gatehouseUrl: urls.GATEHOUSE_URL,
    synapseUrl: urls.SYNAPSE_URL,
    dataDir: urls.DATA_DIR,
    /** `scripts/stack gatehouse DIR ARGS…`: an admin command on this stack's data. */
    admin(args) {
      return run(["gatehouse", dir, ...args], env, { timeout: 30_000 });
    },
    /** `gatehouse user create NAME --password PW [--email] [--phone] [--admin]`. */
    async createUser(name, { password = "pw", email, phone, admin = false } = {}) {
      const args = ["user", "create", name, "--password", password];
      if (email) args.push("--email", email);
      if (phone) args.push("--phone", phone);
      if (admin) args.push("--admin");
      await stack.admin(args);
      return { localpart: name, userId: `@${name}:localhost`, password, email, phone };
    },
    /** Stop only Synapse (its port and data are kept). */
    stopSynapse() {
      return run(["stop", "synapse", dir], env);
    },
    /** Start Synapse again on the same port and data. */
    startSynapse() {
      return run(["start", "synapse", dir], env);
    },
    /** The tails of the three logs (for failure messages). */
    async logs(lines = 40) {
      const tail = async (file) => {
        try {
          return (await readFile(path.join(dir, file), "utf8")).split("\n").slice(-lines).join("\n");
        } catch {
          return "(none)";
        }
      };
      return [
        `--- gatehouse.log\n${await tail("gatehouse.log")}`,
        `--- synapse/homeserver.log\n${await tail("synapse/homeserver.log")}`,
        `--- nginx/access.log\n${await tail("nginx/access.log")}`,
        `--- nginx/error.log\n${await tail("nginx/error.log")}`,
      ].join("\n");
    },
    async down({ keep = Boolean(process.env.INTEROP_KEEP_STACK) } = {}) {
      if (downed) return;
      downed = true;
      await run(["down", dir], env);
      if (keep) console.error(`stack kept in ${dir}`);
      else await rm(dir, { recursive: true, force: true });
    },
  };
  return stack;
}

/** fetch() + JSON body (or text), for the calls the SDK has no method for. */
export async function http(url, { method = "GET", token, body, headers = {} } = {}) {
  const init = { method, headers: { ...headers } };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, body: json ?? text };
}
