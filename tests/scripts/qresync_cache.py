"""A mail client with a cache and QRESYNC (RFC 7162), on raw sockets (socket and ssl only), for
tests/client_caches.rs.

argv: record HOST PORT USER PASSWORD MAILBOX
    Fills the cache from a server (OLD): ENABLE QRESYNC, SELECT, UID FETCH 1:* (FLAGS). Prints one
    JSON line {"uidvalidity", "highestmodseq", "uids", "flags"} (flags keyed by UID as a string).
argv: resync HOST PORT USER PASSWORD MAILBOX CACHE_JSON
    Brings that cache up to date the way a QRESYNC client does (another server, e.g. the proxy):
    ENABLE QRESYNC, SELECT MAILBOX (QRESYNC (uidvalidity modseq)) with the cached values. Same
    UIDVALIDITY: drops the VANISHED UIDs, applies the FETCH flags, and downloads only messages above
    the highest cached UID. Other UIDVALIDITY: the cache is void, every message is downloaded again.
    Prints one JSON line:
      uidvalidity, highestmodseq  what the SELECT reported
      cache_valid                 the UIDVALIDITY was the cached one
      select                      the SELECT's untagged lines (literals as <n literal bytes>)
      vanished                    UIDs from VANISHED (EARLIER) lines of the SELECT
      fetches                     the SELECT's FETCH lines, each {"uid", "flags", "body"}
      body_uids                   UIDs whose message data (BODY[]/RFC822/BINARY) came, anywhere
      body_bytes                  bytes of that data
      received_bytes              every byte read from the server, greeting and LOGIN included
      uids, flags                 the cache afterwards
Add "tls" as a last argument for implicit TLS (certificates are not checked).
"""
import json
import re
import socket
import ssl
import sys


class Conn:
    def __init__(self, host, port, tls):
        sock = socket.create_connection((host, int(port)), timeout=60)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.buf = b""
        self.tag = 0
        self.received = 0
        greeting = self.response()
        if not greeting[0].startswith(b"* OK"):
            sys.exit("bad greeting: %r" % (greeting,))

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.received += len(data)
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _bytes(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self):
        """One response as [text, literal, text, literal, ..., text] (CRLF removed)."""
        parts = []
        while True:
            line = self._line()
            m = re.search(rb"~?\{(\d+)\+?\}$", line)
            if not m:
                parts.append(line)
                return parts
            parts.append(line)
            parts.append(self._bytes(int(m.group(1))))

    def command(self, cmd):
        """Sends CMD; returns (untagged responses, tagged line); exits unless OK."""
        self.tag += 1
        tag = b"q%d" % self.tag
        self.sock.sendall(tag + b" " + cmd.encode() + b"\r\n")
        untagged = []
        while True:
            resp = self.response()
            if resp[0].startswith(tag + b" "):
                status = resp[0][len(tag) + 1:]
                if not status.startswith(b"OK"):
                    sys.exit("%s failed: %s" % (cmd, status.decode(errors="replace")))
                return untagged, status
            untagged.append(resp)


def quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def text_of(resp):
    """The response's text with each literal shown as <n literal bytes>."""
    out = b""
    for i, part in enumerate(resp):
        if i % 2 == 0:
            out += part
        else:
            out += b"<%d literal bytes>" % len(part)
    return out.decode(errors="replace")


def uid_set(text):
    uids = []
    for piece in text.split(","):
        if ":" in piece:
            a, b = (int(x) for x in piece.split(":"))
            uids.extend(range(min(a, b), max(a, b) + 1))
        elif piece:
            uids.append(int(piece))
    return uids


def parse_fetch(resp):
    """(uid, flags or None, body bytes or None) of an untagged FETCH response."""
    text = text_of(resp)
    uid = re.search(r"\bUID (\d+)", text)
    flags = re.search(r"\bFLAGS \(([^)]*)\)", text)
    body = None
    for i in range(1, len(resp), 2):
        before = resp[i - 1].upper()
        item = rb"(BODY\[[^\]]*\]|RFC822(\.TEXT|\.HEADER)?|BINARY\[[^\]]*\])(<\d+>)?"
        if re.search(item + rb" ~?\{\d+\+?\}$", before):
            body = (body or b"") + resp[i]
    return (
        int(uid.group(1)) if uid else None,
        sorted(f for f in flags.group(1).split() if f.lower() != "\\recent") if flags else None,
        body,
    )


def code(untagged, name):
    for resp in untagged:
        m = re.search(rb"\[" + name.encode() + rb" (\d+)\]", resp[0])
        if m:
            return int(m.group(1))
    return None


def main():
    args = sys.argv[1:]
    tls = args[-1] == "tls"
    if tls:
        args = args[:-1]
    mode, host, port, user, password, mailbox = args[:6]
    c = Conn(host, port, tls)
    c.command("LOGIN %s %s" % (quote(user), quote(password)))
    untagged, _ = c.command("ENABLE QRESYNC")
    enabled = [r[0].upper() for r in untagged if r[0].upper().startswith(b"* ENABLED")]
    if not any(b"QRESYNC" in line for line in enabled):
        sys.exit("QRESYNC not enabled: %r" % (untagged,))

    if mode == "record":
        untagged, _ = c.command("SELECT %s" % quote(mailbox))
        uidvalidity, modseq = code(untagged, "UIDVALIDITY"), code(untagged, "HIGHESTMODSEQ")
        flags = {}
        exists = [int(r[0].split()[1]) for r in untagged if r[0].upper().endswith(b" EXISTS")]
        if exists and exists[-1] > 0:
            fetched, _ = c.command("UID FETCH 1:* (FLAGS)")
            for resp in fetched:
                if b" FETCH " in resp[0].upper():
                    uid, f, _ = parse_fetch(resp)
                    flags[uid] = f
        c.command("LOGOUT")
        print(json.dumps({
            "uidvalidity": uidvalidity,
            "highestmodseq": modseq,
            "uids": sorted(flags),
            "flags": {str(u): f for u, f in sorted(flags.items())},
        }))
        return

    if mode != "resync":
        sys.exit("unknown mode %s" % mode)
    with open(args[6]) as f:
        cache = json.load(f)
    flags = {int(u): f for u, f in cache["flags"].items()}
    untagged, _ = c.command("SELECT %s (QRESYNC (%d %d))" % (
        quote(mailbox), cache["uidvalidity"], cache["highestmodseq"]))
    uidvalidity, modseq = code(untagged, "UIDVALIDITY"), code(untagged, "HIGHESTMODSEQ")
    valid = uidvalidity == cache["uidvalidity"]
    vanished, fetches, body_uids, body_bytes = [], [], [], 0
    for resp in untagged:
        head = resp[0].upper()
        m = re.match(rb"\* VANISHED (\(EARLIER\) )?([0-9:,]+)$", head)
        if m:
            vanished.extend(uid_set(m.group(2).decode()))
        elif re.match(rb"\* \d+ FETCH ", head):
            uid, f, body = parse_fetch(resp)
            fetches.append({"uid": uid, "flags": f, "body": body is not None})
            if body is not None:
                body_uids.append(uid)
                body_bytes += len(body)
    if valid:
        for uid in vanished:
            flags.pop(uid, None)
        for fetch in fetches:
            if fetch["uid"] is not None and fetch["flags"] is not None:
                flags[fetch["uid"]] = fetch["flags"]
        top = max(cache["uids"], default=0)
        found, _ = c.command("UID SEARCH UID %d:*" % (top + 1))
        new = [int(x) for r in found if r[0].upper().startswith(b"* SEARCH")
               for x in r[0].split()[2:]]
        new = [u for u in new if u > top]
        wanted = ",".join(str(u) for u in new)
    else:
        flags = {}
        wanted = "1:*"
    exists = [int(r[0].split()[1]) for r in untagged if r[0].upper().endswith(b" EXISTS")]
    if wanted and (valid or (exists and exists[-1] > 0)):
        fetched, _ = c.command("UID FETCH %s (UID FLAGS BODY.PEEK[])" % wanted)
        for resp in fetched:
            if b" FETCH " not in resp[0].upper():
                continue
            uid, f, body = parse_fetch(resp)
            if f is not None:
                flags[uid] = f
            if body is not None:
                body_uids.append(uid)
                body_bytes += len(body)
    c.command("LOGOUT")
    print(json.dumps({
        "uidvalidity": uidvalidity,
        "highestmodseq": modseq,
        "cache_valid": valid,
        "select": [text_of(r) for r in untagged],
        "vanished": sorted(vanished),
        "fetches": fetches,
        "body_uids": sorted(body_uids),
        "body_bytes": body_bytes,
        "received_bytes": c.received,
        "uids": sorted(flags),
        "flags": {str(u): f for u, f in sorted(flags.items())},
    }))


if __name__ == "__main__":
    main()
