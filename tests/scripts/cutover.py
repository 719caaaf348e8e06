"""The cutover story through the proxy, as a mail client does it (Python's imaplib).

argv: host port user password sub_folder fresh_folder renamed_folder
Prints READY when the user's actions are done, then waits (NOOP polling, same connection) until
the 5 messages the test delivers to OLD show up, and prints one JSON line with what it saw.
"""
import imaplib
import json
import re
import sys
import time

host, port, user, password, sub, fresh, renamed = sys.argv[1:8]
m = imaplib.IMAP4(host, int(port))
m.login(user, password)
typ, listing = m.list()
assert typ == "OK", listing
names = []
for line in listing:
    name = re.match(rb'\(.*?\) (?:"[^"]*"|NIL) (.*)$', line).group(1).decode()
    names.append(name.strip('"'))
typ, data = m.select("INBOX")
assert typ == "OK", data
first = int(data[0])
typ, data = m.uid("SEARCH", None, "ALL")
uids = data[0].split()
assert len(uids) == first, (uids, first)

# Ten messages into a sub-folder, flags changed, two deleted, a folder created and renamed.
typ, data = m.uid("MOVE", b",".join(uids[:10]).decode(), sub)
assert typ == "OK", data
for uid in uids[10:12]:
    assert m.uid("STORE", uid.decode(), "+FLAGS", "(\\Flagged)")[0] == "OK"
assert m.uid("STORE", uids[12].decode(), "-FLAGS", "(\\Seen)")[0] == "OK"
assert m.uid("STORE", b",".join(uids[13:15]).decode(), "+FLAGS", "(\\Deleted)")[0] == "OK"
typ, data = m.expunge()
assert typ == "OK", data
assert m.create(fresh)[0] == "OK"
assert m.rename(fresh, renamed)[0] == "OK"
expected = first - 12 + 5
m.untagged_responses.pop("EXISTS", None)  # the SELECT's; only new ones count below
print("READY", flush=True)

started = time.time()
exists = first - 12
while time.time() - started < 60:
    typ, _ = m.noop()
    assert typ == "OK"
    for value in m.untagged_responses.pop("EXISTS", []) or []:
        exists = int(value)
    if exists >= expected:
        break
    time.sleep(0.5)
waited = time.time() - started
m.logout()
print(json.dumps({"names": names, "first": first, "exists": exists, "waited": waited}))
