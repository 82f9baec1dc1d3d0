#!/usr/bin/env python3
"""Fills a copy of an empty Synapse database with synthetic accounts, for
benchmarking `gatehouse import synapse`.

    synthetic_synapse_db.py --schema EMPTY.db --out OUT.db [--users N] [--seed S]

EMPTY.db is the homeserver.db of a Synapse that was started once and never
used (bench/import.sh makes it), so the tables, columns and indexes are
Synapse's own. Rows look like a real deployment's: one real bcrypt hash
(cost 12, password "benchmark-password") shared by every account, ~30 % of
accounts with an email address, 1-2 devices each with one `syt_` access
token, a few admins, guests and deactivated accounts (which, as on Synapse,
have no password, devices, tokens or 3PIDs). Names do not sort in creation
order, so reading users by name jumps around the table as it does on a real
server. Deterministic for a given seed.
"""

import argparse
import base64
import os
import random
import shutil
import sqlite3
import string
import sys
import time

SERVER_NAME = "localhost"
# One real hash, made once: hashing a million passwords would take days and
# the importer never looks inside the hash anyway.
PASSWORD = "benchmark-password"

FIRST = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan",
    "judy", "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent",
    "victor", "walter", "yusuf", "zoe", "amara", "bilal", "chen", "dmitri",
]
CLIENTS = [
    ("Element on Linux", "Mozilla/5.0 (X11; Linux x86_64) Element/1.11.85"),
    ("Element Android", "Element/1.6.20 (Linux; U; Android 14; Pixel 8)"),
    ("Element iOS", "Element/1.11.18 (iPhone; iOS 17.5; Scale/3.00)"),
    ("FluffyChat", "FluffyChat/1.20.0"),
    (None, "curl/8.5.0"),
]
B62 = string.ascii_letters + string.digits


def bcrypt_hash():
    try:
        import bcrypt
    except ImportError:
        sys.exit("synthetic_synapse_db.py: needs the bcrypt module (run it with Synapse's venv python)")
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=12)).decode()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schema", required=True, help="an empty Synapse homeserver.db")
    ap.add_argument("--out", required=True, help="the database to write (replaced)")
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    t0 = time.monotonic()
    tmp = args.out + ".tmp"
    shutil.copyfile(args.schema, tmp)
    db = sqlite3.connect(tmp)
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -262144")
    # Rows the one Synapse start left (its admin user and that admin's session).
    for table in ("users", "user_threepids", "devices", "access_tokens", "refresh_tokens", "profiles"):
        db.execute(f"DELETE FROM {table}")

    pw_hash = bcrypt_hash()
    n = args.users
    # Creation order is a shuffle of name order.
    order = list(range(n))
    rng.shuffle(order)
    start_s = int(time.time()) - 3 * 365 * 86400
    now_ms = int(time.time() * 1000)

    users, threepids, devices, tokens = [], [], [], []
    token_id = 0
    counts = {"users": 0, "threepids": 0, "devices": 0, "tokens": 0}

    def flush():
        db.executemany(
            "INSERT INTO users (name, password_hash, creation_ts, admin, is_guest, deactivated,"
            " shadow_banned, approved, locked, suspended) VALUES (?,?,?,?,?,?,0,1,0,0)",
            users,
        )
        db.executemany(
            "INSERT INTO user_threepids (user_id, medium, address, validated_at, added_at)"
            " VALUES (?,?,?,?,?)",
            threepids,
        )
        db.executemany(
            "INSERT INTO devices (user_id, device_id, display_name, last_seen, ip, user_agent, hidden)"
            " VALUES (?,?,?,?,?,?,0)",
            devices,
        )
        db.executemany(
            "INSERT INTO access_tokens (id, user_id, device_id, token, valid_until_ms,"
            " puppets_user_id, last_validated, refresh_token_id, used)"
            " VALUES (?,?,?,?,NULL,NULL,?,NULL,?)",
            tokens,
        )
        counts["users"] += len(users)
        counts["threepids"] += len(threepids)
        counts["devices"] += len(devices)
        counts["tokens"] += len(tokens)
        users.clear(); threepids.clear(); devices.clear(); tokens.clear()

    for created, i in enumerate(order):
        local = f"{FIRST[i % len(FIRST)]}.{i:07d}"
        user_id = f"@{local}:{SERVER_NAME}"
        creation_s = start_s + created * 90 // max(n // 1000, 1)
        r = rng.random()
        guest = r < 0.01
        deactivated = 0.01 <= r < 0.03
        admin = 1 if i % 10_000 == 0 else 0
        has_password = not guest and not deactivated
        users.append((
            user_id,
            pw_hash if has_password else None,
            creation_s,
            admin,
            1 if guest else 0,
            1 if deactivated else 0,
        ))
        if deactivated:
            continue
        if not guest and rng.random() < 0.30:
            at = creation_s * 1000
            threepids.append((user_id, "email", f"{local}@example.org", at, at))
        for _ in range(1 if rng.random() < 0.5 else 2):
            device_id = "".join(rng.choices(string.ascii_uppercase, k=10))
            name, agent = rng.choice(CLIENTS)
            seen = now_ms - rng.randrange(0, 90 * 86400 * 1000)
            ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            devices.append((user_id, device_id, name, seen, ip, agent))
            token_id += 1
            b64 = base64.b64encode(local.encode()).decode().rstrip("=")
            token = f"syt_{b64}_{''.join(rng.choices(string.ascii_letters, k=20))}_{''.join(rng.choices(B62, k=6))}"
            tokens.append((token_id, user_id, device_id, token, seen, 1))
        if len(users) >= 50_000:
            flush()
    flush()
    db.commit()
    db.close()
    os.replace(tmp, args.out)
    print(
        f"synthetic_synapse_db.py: {counts['users']} users, {counts['threepids']} threepids, "
        f"{counts['devices']} devices, {counts['tokens']} access tokens in {time.monotonic() - t0:.1f} s "
        f"-> {args.out} ({os.path.getsize(args.out) / 2**20:.0f} MiB)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
