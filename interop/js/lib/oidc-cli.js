// The OpenID Connect provider of lib/oidc.js as a process, for tests in other
// languages (the Rust SSO tests spawn it):
//
//   node interop/js/lib/oidc-cli.js [--port P] --client-id ID --client-secret S
//       --redirect-uri URI [--redirect-uri URI2 ...]
//       [--token-endpoint-auth-method client_secret_basic|client_secret_post]
//       [--consent-page] [--pkce-required] [--ignore-stdin]
//
// Prints exactly one line to stdout when it answers, OIDC_ISSUER=http://127.0.0.1:P
// (P is a free port when --port is 0 or absent); everything else goes to
// stderr. Runs until SIGTERM/SIGINT, or until its stdin ends, so a parent that
// dies without killing it still ends it (--ignore-stdin: run detached).
//
// Accounts (login name / password):
//   alice / alice-pw  sub alice-sub-1, alice@example.org, verified
//   bob   / bob-pw    sub bob-sub-1, bob@example.org, NOT verified
//   carol / carol-pw  sub carol-sub-1, preferred_username "alice" (collides
//                     with alice's), carol@example.org, verified

import { parseArgs } from "node:util";

// The provider logs notices with console.info; stdout carries only the result.
console.info = console.log = (...args) => console.error(...args);

const { startOidcProvider, TEST_ACCOUNTS } = await import("./oidc.js");

function usage(message) {
  process.stderr.write(
    `oidc-cli: ${message}\nusage: node oidc-cli.js [--port P] --client-id ID --client-secret S --redirect-uri URI [--redirect-uri URI2] [--token-endpoint-auth-method M] [--consent-page] [--pkce-required] [--ignore-stdin]\n`,
  );
  process.exit(2);
}

let values;
try {
  ({ values } = parseArgs({
    options: {
      port: { type: "string", default: "0" },
      "client-id": { type: "string" },
      "client-secret": { type: "string" },
      "redirect-uri": { type: "string", multiple: true },
      "token-endpoint-auth-method": { type: "string", default: "client_secret_basic" },
      "consent-page": { type: "boolean", default: false },
      "pkce-required": { type: "boolean", default: false },
      "ignore-stdin": { type: "boolean", default: false },
    },
  }));
} catch (error) {
  usage(error.message);
}
if (!/^\d+$/.test(values.port)) usage(`--port must be a number, got ${values.port}`);
if (!values["client-id"] || !values["client-secret"] || !values["redirect-uri"]?.length) {
  usage("--client-id, --client-secret and at least one --redirect-uri are needed");
}

const op = await startOidcProvider({
  port: Number(values.port),
  clients: [
    {
      client_id: values["client-id"],
      client_secret: values["client-secret"],
      redirect_uris: values["redirect-uri"],
      token_endpoint_auth_method: values["token-endpoint-auth-method"],
    },
  ],
  accounts: TEST_ACCOUNTS,
  consentPage: values["consent-page"],
  pkceRequired: values["pkce-required"],
});

let closing = false;
async function shutdown(why) {
  if (closing) return;
  closing = true;
  process.stderr.write(`oidc-cli: ${why}, stopping\n`);
  await op.close();
  process.exit(0);
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
if (!values["ignore-stdin"]) {
  process.stdin.on("end", () => shutdown("stdin closed"));
  process.stdin.on("error", () => shutdown("stdin error"));
  process.stdin.resume();
}

process.stdout.write(`OIDC_ISSUER=${op.issuer}\n`);
process.stderr.write(`oidc-cli: client ${values["client-id"]}, accounts alice bob carol\n`);
