// A real SMTP server for the email stages: aiosmtpd (PyPI), started through
// scripts/smtp-server.py, which binds a port itself, prints it, and delivers
// every message into a maildir that the tests read.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

const SCRIPT = fileURLToPath(new URL("../../../scripts/smtp-server.py", import.meta.url));

/** The Python with aiosmtpd that scripts/test installs (or $GATEHOUSE_TEST_PYTHON). */
function python() {
  if (process.env.GATEHOUSE_TEST_PYTHON) return process.env.GATEHOUSE_TEST_PYTHON;
  const venv = path.join(os.homedir(), ".cache", "gatehouse-venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

/** The value of a header in a raw message (folded lines joined). */
function header(raw, name) {
  const split = raw.search(/\r?\n\r?\n/);
  const head = (split === -1 ? raw : raw.slice(0, split)).replace(/\r?\n[ \t]+/g, " ");
  const m = head.match(new RegExp(`^${name}:\\s*(.*)$`, "im"));
  return m ? m[1].trim() : "";
}

export async function startSmtpServer() {
  const dir = mkdtempSync(path.join(os.tmpdir(), "gatehouse-smtp-"));
  const maildir = path.join(dir, "mail");
  const child = spawn(python(), [SCRIPT, maildir], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => (stderr += chunk));
  const exited = new Promise((resolve) => child.once("exit", resolve));
  // Settling twice is a no-op: a later exit (at close) rejects nothing.
  const first = await new Promise((resolve, reject) => {
    readline.createInterface({ input: child.stdout }).once("line", resolve);
    child.once("error", reject);
    child.once("exit", (code) =>
      reject(new Error(`aiosmtpd exited (code ${code}); run ./scripts/test, which installs it\n${stderr}`)),
    );
  });
  const port = Number(first.trim());

  /** Every delivered message, oldest first: { to, data }. */
  const messages = () => {
    const fresh = path.join(maildir, "new");
    if (!existsSync(fresh)) return [];
    return readdirSync(fresh, { withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => readFileSync(path.join(fresh, e.name), "utf8"))
      .map((data) => ({ to: [header(data, "X-RcptTo") || header(data, "To")], data }));
  };

  return {
    port,
    messages,
    /** The first message to `address` (waits up to timeoutMs for it). */
    async waitFor(address, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const all = messages();
        const found = all.find((m) => m.to.some((to) => to.toLowerCase().includes(address.toLowerCase())));
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`no mail to ${address} within ${timeoutMs} ms (got ${all.length})`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    async close() {
      child.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const decodeQuotedPrintable = (text) =>
  text.replace(/=\r?\n/g, "").replace(/=([0-9A-Fa-f]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)));

/** The text of a MIME message (or part), its parts and transfer encodings decoded. */
export function decodedText(raw) {
  const split = raw.search(/\r?\n\r?\n/);
  const head = split === -1 ? raw : raw.slice(0, split);
  const body = split === -1 ? "" : raw.slice(split).replace(/^\r?\n\r?\n/, "");
  const header = (name) => {
    const m = head.replace(/\r?\n[ \t]+/g, " ").match(new RegExp(`^${name}:\\s*(.*)$`, "im"));
    return m ? m[1].trim() : "";
  };
  const boundary = header("Content-Type").match(/boundary="?([^";]+)"?/i)?.[1];
  if (boundary) {
    return body
      .split(`--${boundary}`)
      .slice(1)
      .filter((part) => !part.startsWith("--"))
      .map((part) => decodedText(part.replace(/^\r?\n/, "")))
      .join("\n");
  }
  const encoding = header("Content-Transfer-Encoding").toLowerCase();
  if (encoding === "quoted-printable") return decodeQuotedPrintable(body);
  if (encoding === "base64") return Buffer.from(body.replace(/\s+/g, ""), "base64").toString("utf8");
  return body;
}

/** The first link in a message that starts with `prefix`. */
export function findLink(raw, prefix) {
  const text = decodedText(raw);
  const escaped = prefix.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const match = text.match(new RegExp(`${escaped}[^\\s"'<>]*`));
  return match ? match[0].replace(/&amp;/g, "&") : null;
}
