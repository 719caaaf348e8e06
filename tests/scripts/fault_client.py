"""One user's mail client for tests/faults.rs: Python's imaplib working through the proxy (flag
changes, moves, deletes, appends), reconnecting after every error, and keeping a model of what the
server told it was done.

argv: host port user password seed model.json first_new_id
  model.json: {"folders": [NEW folder names to work in],
               "messages": {"<id>": {"folder": NAME, "flags": [FLAG, ...]}}} (what OLD was seeded
  with; every message's Subject is "Message <id>").
stdin, one command a line: GO (work until STOP), STOP (answer with the model), QUIT.
stdout, one line each:
  READY                      started, waiting for GO
  OP <kind> <ok|no|drop>     after each operation (ok: tagged OK; no: NO/BAD; drop: the
                             connection ended before the tagged answer, e.g. BYE)
  CUT <id> ...               after a drop: the messages of the write it cut off
  LOGIN                      a new session, fully resynchronised
  ERR <text>                 a failed attempt (connect, login, resync)
  MODEL <json>               on STOP: {"messages": {id: {"f": [folders], "g": 0|1|2,
                             "fl": {flag: true|false|null}}}, "anomalies": [...],
                             "tainted": [ids], "stats": {...}}
                             g: 0 present, 1 maybe gone, 2 gone; several folders or a null flag:
                             an action without OK left it open.
  FATAL <text>               gave up (no session within RECONNECT_WITHIN seconds)

An action the server answered OK is certain in the model; one without OK (NO, BAD, BYE, a dropped
connection) may or may not have happened, and is settled by what the next full resynchronisation
(after every new login, and at every GO) sees. The messages of a write whose connection dropped
before its tagged answer are "tainted": NEW may have done it without the proxy journaling it.
"""
import imaplib
import json
import os
import random
import re
import select
import sys
import time

FLAGS = ["\\Seen", "\\Flagged", "\\Answered", "\\Draft", "$Fault"]
UNIVERSE = FLAGS + ["\\Deleted"]
RECONNECT_WITHIN = 240  # a server restarted after a SIGKILL may not answer for ~2 min
SOCKET_TIMEOUT = 30

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rng = random.Random(int(sys.argv[5]))
with open(sys.argv[6]) as f:
    seed = json.load(f)
next_id = int(sys.argv[7])
work_folders = seed["folders"]

# id -> {"f": [folders], "g": 0|1|2, "fl": {flag: True|False|None}}
model = {}
for key, m in seed["messages"].items():
    model[int(key)] = {
        "f": [m["folder"]],
        "g": 0,
        "fl": {fl: fl in m["flags"] for fl in UNIVERSE},
    }
# folder -> {uid: id}: messages known present there (from the last fetch of that folder)
view = {f: {} for f in work_folders}
dirty = set(work_folders)
anomalies = []
stats = {"ops": 0, "ok": 0, "no": 0, "drop": 0, "logins": 0, "resyncs": 0}

conn = None
selected = None
buf = b""
current = "resync"  # what the session is doing, for the OP line of a dropped connection
# Messages a write was sent for and is still unanswered: if the connection drops now, NEW may
# have done it without the proxy having journaled it (see `tainted`).
touching = []
# Messages written by a command whose connection dropped before the tagged answer.
tainted = set()


class Dropped(Exception):
    """The session cannot go on (reconnect)."""


def trace(text):
    """What the client did, for a failing run's diagnosis (stderr goes to a file)."""
    sys.stderr.write(f"{time.time():.3f} {text}\n")
    sys.stderr.flush()


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def commands(timeout):
    """Complete lines from the driver within `timeout` seconds (None: wait for one)."""
    global buf
    lines = []
    while b"\n" not in buf:
        ready, _, _ = select.select([0], [], [], timeout)
        if not ready:
            break
        chunk = os.read(0, 4096)
        if not chunk:
            return ["QUIT"]
        buf += chunk
        timeout = 0
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        lines.append(line.decode().strip())
    return lines


def certain(m):
    return m["g"] != 1 and len(m["f"]) == 1 and None not in m["fl"].values()


def drop_session():
    global conn, selected
    if conn is not None:
        try:
            conn.shutdown()
        except Exception:
            pass
    conn = None
    selected = None


def connect(stop_requested):
    """A logged-in session, retrying (bounded) while the proxy or NEW is down. Returns False when
    the driver asked to stop meanwhile."""
    global conn, selected
    deadline = time.time() + RECONNECT_WITHIN
    delay = 0.02
    while True:
        m = None
        try:
            m = imaplib.IMAP4(host, port, timeout=SOCKET_TIMEOUT)
            m.login(user, password)
            conn, selected = m, None
            trace("logged in")
            stats["logins"] += 1
            return True
        except (OSError, imaplib.IMAP4.error) as e:
            say(f"ERR connect: {e!r}"[:300])
            if m is not None:
                try:
                    m.shutdown()
                except Exception:
                    pass
        if time.time() > deadline:
            say(f"FATAL no session within {RECONNECT_WITHIN} s")
            sys.exit(2)
        for line in commands(delay):
            if line in ("STOP", "QUIT"):
                stop_requested.append(line)
                return False
        delay = min(delay * 2, 0.5)


def select_folder(folder):
    global selected
    if selected == folder:
        return
    typ, data = conn.select(folder)
    if typ != "OK":
        raise Dropped(f"SELECT {folder}: {typ} {data}")
    selected = folder


SUBJECT = re.compile(rb"Subject: Message (\d+)", re.I)
UID = re.compile(rb"UID (\d+)")
FLAGS_ITEM = re.compile(rb"FLAGS \(([^)]*)\)")


def fetch_folder(folder):
    """[(uid, id or None, flags)] of every message in `folder` as NEW shows it now."""
    select_folder(folder)
    typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    if typ != "OK":
        raise Dropped(f"UID FETCH in {folder}: {typ} {data}")
    out = []
    for item in data:
        if not isinstance(item, tuple):
            continue  # ")" closing a message, or an unsolicited FETCH without the header
        head, literal = item
        uid = UID.search(head)
        fl = FLAGS_ITEM.search(head)
        if uid is None or fl is None:
            continue
        subject = SUBJECT.search(literal)
        flags = set(fl.group(1).decode().split()) - {"\\Recent"}
        out.append((int(uid.group(1)), int(subject.group(1)) if subject else None, flags))
    return out


def refresh(folder):
    """Re-reads one folder's UIDs for the messages the model knows to be there."""
    items = fetch_folder(folder)
    view[folder] = {
        uid: mid
        for uid, mid, _ in items
        if mid in model and model[mid]["g"] == 0 and model[mid]["f"] == [folder]
    }
    dirty.discard(folder)


def full_resync():
    """Every folder read again; what actions without OK left open is settled by what NEW has."""
    typ, listing = conn.list()
    if typ != "OK":
        raise Dropped(f"LIST: {typ} {listing}")
    names = []
    for line in listing:
        if isinstance(line, tuple):
            line = line[0]
        m = re.match(rb'\((.*?)\) (?:"[^"]*"|NIL) "?([^"]*)"?$', line)
        if m and b"\\noselect" not in m.group(1).lower():
            names.append(m.group(2).decode())
    seen = {}
    for folder in names:
        for uid, mid, flags in fetch_folder(folder):
            seen.setdefault(mid, []).append((folder, uid, flags))
    for folder in work_folders:
        if folder not in names:
            anomalies.append(f"folder {folder} missing from LIST")
    for mid, occ in seen.items():
        if mid is None:
            anomalies.append(f"{len(occ)} messages without an id in {sorted({o[0] for o in occ})}")
        elif mid not in model:
            anomalies.append(f"message {mid} unknown, in {occ}")
    for mid, m in model.items():
        occ = seen.get(mid, [])
        if len(occ) > 1:
            anomalies.append(f"message {mid} seen {len(occ)} times: {occ}")
            continue
        if certain(m):
            if m["g"] == 2 and occ:
                anomalies.append(f"message {mid} deleted with OK, back in {occ}")
            elif m["g"] == 0 and occ and not consistent(m, occ[0]):
                anomalies.append(f"message {mid}: model {m}, seen {occ}")
            continue
        if not occ:
            if m["g"] == 1:
                m["g"] = 2
                m["fl"] = {fl: False for fl in UNIVERSE}
            else:
                anomalies.append(f"message {mid} lost: model {m}")
            continue
        if not consistent(m, occ[0]):
            anomalies.append(f"message {mid}: model {m}, seen {occ}")
        folder, _, flags = occ[0]
        m["f"], m["g"] = [folder], 0
        m["fl"] = {fl: fl in flags for fl in UNIVERSE}
    for folder in work_folders:
        view[folder] = {}
    for mid, occ in seen.items():
        if mid in model and len(occ) == 1 and model[mid]["g"] == 0:
            folder, uid, _ = occ[0]
            if folder in view and model[mid]["f"] == [folder]:
                view[folder][uid] = mid
    dirty.clear()
    stats["resyncs"] += 1
    trace(f"resynced: {sum(len(v) for v in view.values())} messages in view")


def consistent(m, occurrence):
    folder, _, flags = occurrence
    if folder not in m["f"]:
        return False
    extra = flags - set(UNIVERSE)
    if extra:
        return False
    return all(v is None or v == (fl in flags) for fl, v in m["fl"].items())


def pick(n_max):
    """A folder with known messages and 1..n_max of them (ids and UIDs)."""
    folders = [f for f in work_folders if view[f]]
    if not folders:
        return None, []
    folder = rng.choice(folders)
    if folder in dirty:
        select_folder(folder)
        refresh(folder)
        if not view[folder]:
            return None, []
    uids = sorted(view[folder])
    chosen = rng.sample(uids, min(len(uids), rng.randint(1, n_max)))
    return folder, [(uid, view[folder][uid]) for uid in sorted(chosen)]


def touch(ids):
    global touching
    touching = list(ids)


def uidset(chosen):
    return ",".join(str(uid) for uid, _ in chosen)


def op_flags():
    global current
    current = "flags"
    folder, chosen = pick(3)
    if not chosen:
        return op_append()
    select_folder(folder)
    flag = rng.choice(FLAGS)
    add = rng.random() < 0.5
    for _, mid in chosen:
        model[mid]["fl"][flag] = None
    ids = [mid for _, mid in chosen]
    trace(f"STORE {folder} {uidset(chosen)} {ids} {'+' if add else '-'}{flag}")
    touch(ids)
    typ, data = conn.uid("STORE", uidset(chosen), ("+" if add else "-") + "FLAGS.SILENT", f"({flag})")
    touch([])
    trace(f"  -> {typ} {data}")
    if typ == "OK":
        for _, mid in chosen:
            model[mid]["fl"][flag] = add
    return "flags", typ


def op_move():
    global current
    current = "move"
    folder, chosen = pick(3)
    if not chosen:
        return op_append()
    select_folder(folder)
    target = rng.choice([f for f in work_folders if f != folder])
    for uid, mid in chosen:
        model[mid]["f"] = [folder, target]
        view[folder].pop(uid, None)
    dirty.add(target)
    trace(f"MOVE {folder} {uidset(chosen)} {[mid for _, mid in chosen]} -> {target}")
    touch([mid for _, mid in chosen])
    typ, data = conn.uid("MOVE", uidset(chosen), target)
    touch([])
    trace(f"  -> {typ} {data}")
    if typ == "OK":
        for _, mid in chosen:
            model[mid]["f"] = [target]
    else:
        dirty.add(folder)
    return "move", typ


def op_delete():
    global current
    current = "delete"
    folder, chosen = pick(2)
    if not chosen:
        return op_append()
    select_folder(folder)
    for uid, mid in chosen:
        model[mid]["g"] = 1
        model[mid]["fl"]["\\Deleted"] = None
        view[folder].pop(uid, None)
    trace(f"DELETE {folder} {uidset(chosen)} {[mid for _, mid in chosen]}")
    touch([mid for _, mid in chosen])
    typ, data = conn.uid("STORE", uidset(chosen), "+FLAGS.SILENT", "(\\Deleted)")
    touch([])
    trace(f"  -> {typ} {data}")
    if typ != "OK":
        dirty.add(folder)
        return "delete", typ
    for _, mid in chosen:
        model[mid]["fl"]["\\Deleted"] = True
    touch([mid for _, mid in chosen])
    typ, data = conn.uid("EXPUNGE", uidset(chosen))
    touch([])
    trace(f"  EXPUNGE -> {typ} {data}")
    if typ == "OK":
        for _, mid in chosen:
            model[mid]["g"] = 2
            model[mid]["fl"] = {fl: False for fl in UNIVERSE}
    else:
        dirty.add(folder)
    return "delete", typ


def op_append():
    global current, next_id
    current = "append"
    mid = next_id
    next_id += 1
    target = rng.choice(work_folders)
    flags = rng.sample(FLAGS, rng.randint(0, 2))
    model[mid] = {"f": [target], "g": 1, "fl": {fl: fl in flags for fl in UNIVERSE}}
    dirty.add(target)
    when = 1_700_000_000 + mid * 37
    body = message(mid, when)
    trace(f"APPEND {target} {mid} {flags}")
    touch([mid])
    typ, data = conn.append(target, "(" + " ".join(flags) + ")" if flags else None,
                            imaplib.Time2Internaldate(when), body)
    touch([])
    trace(f"  -> {typ} {data}")
    if typ == "OK":
        model[mid]["g"] = 0
    return "append", typ


def message(mid, when):
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(when))
    lines = [
        f"Date: {date}",
        f"From: {user}@example.org",
        f"To: {user}@example.org",
        f"Subject: Message {mid}",
        f"Message-Id: <fault-{mid}@example.org>",
        "",
    ]
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    for _ in range(rng.randint(3, 40)):
        lines.append(" ".join(rng.choice(words) for _ in range(10)))
    return ("\r\n".join(lines) + "\r\n").encode()


def one_op():
    r = rng.random()
    if r < 0.40:
        return op_flags()
    if r < 0.65:
        return op_move()
    if r < 0.75:
        return op_delete()
    return op_append()


def report():
    out = {
        "messages": {str(k): v for k, v in model.items()},
        "anomalies": anomalies,
        "tainted": sorted(tainted),
        "stats": stats,
    }
    say("MODEL " + json.dumps(out))
    anomalies.clear()


def main():
    global current
    say("READY")
    running = False
    resync = True
    while True:
        for line in commands(None if not running else 0):
            if line == "QUIT":
                drop_session()
                return
            if line == "GO":
                running, resync = True, True
            elif line == "STOP":
                trace("STOP")
                running = False
                report()
        if not running:
            continue
        try:
            if conn is None:
                stop = []
                if not connect(stop):
                    if "QUIT" in stop:
                        return
                    running = False
                    report()
                    continue
                resync = True
            if resync:
                current = "resync"
                full_resync()
                resync = False
                say("LOGIN")
            kind, typ = one_op()
            stats["ops"] += 1
            if typ == "OK":
                stats["ok"] += 1
                say(f"OP {kind} ok")
            else:
                stats["no"] += 1
                say(f"OP {kind} no")
        except (OSError, imaplib.IMAP4.error, Dropped) as e:
            # imaplib.IMAP4.abort (BYE, EOF) is an IMAP4.error; so is a tagged BAD.
            stats["drop"] += 1
            say(f"OP {current} drop {e!r}"[:300])
            trace(f"  dropped: {e!r}; tainted {touching}")
            say("CUT " + " ".join(str(mid) for mid in touching))
            tainted.update(touching)
            touch([])
            drop_session()
            resync = True


main()
