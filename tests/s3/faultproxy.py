#!/usr/bin/env python3
"""A fault-injecting HTTP/1.1 proxy for the S3 tests (stdlib only).

It sits between sluice and an S3 server (s3rver) and forwards each request
unchanged, except where a rule of the schedule says otherwise:

  reset_request   forward the headers and part of the body, then reset both
                  connections (TCP RST): the server saw a partial request
  reset_response  forward the whole request, send part of the answer, then reset
  truncate        forward, answer with the full Content-Length but only part of
                  the body, then close (FIN)
  status          answer CODE with an S3 XML error body (500 InternalError,
                  503 SlowDown, 403 AccessDenied, ...) without forwarding
  delay           wait MS milliseconds, then forward
  pass            forward unchanged (the request is only logged)

Rules live in a JSON file that is read again on every request, so a test can
change the schedule while sluice runs:

  {"seed": 1, "rules": [
    {"action": "reset_request", "method": "PUT", "path": "\\.seg$", "query": "",
     "prob": 0.2, "after": 0, "count": 5, "fraction": 0.5,
     "code": 503, "s3code": "SlowDown", "ms": 200}]}

method, path (a regex searched in the URL path) and query (a regex searched in
the query string; "" matches anything, "^$" only an empty query) select
requests; prob is the chance a selected request is hit (default 1); after
skips the first N selected requests; count caps how many are hit (default:
no cap). The first rule that fires wins. Every fault is logged, one line per
fault: "FAULT action method path?query". Counters live as long as the proxy
and belong to a rule's exact text (add a field such as "round": N to start
a rule's counts afresh).

Usage: faultproxy.py --listen PORT --upstream HOST:PORT --rules FILE --log FILE
Prints "listening on PORT" when ready (PORT 0: a free one is chosen).
"""
import argparse
import json
import random
import re
import socket
import socketserver
import struct
import sys
import threading
import time

LOCK = threading.Lock()
COUNTERS = {}  # rule index -> [selected, fired]
RNG = random.Random()
SEEDED = [None]


def load_rules(path):
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return []
    seed = doc.get("seed")
    with LOCK:
        if seed is not None and SEEDED[0] != seed:
            RNG.seed(seed)
            SEEDED[0] = seed
    return doc.get("rules", [])


def choose(rules, method, path, query):
    """The first rule that fires for this request, or None."""
    with LOCK:
        for i, r in enumerate(rules):
            if r.get("method") and r["method"] != method:
                continue
            if r.get("path") and not re.search(r["path"], path):
                continue
            if "query" in r and r["query"] and not re.search(r["query"], query):
                continue
            key = (i, json.dumps(r, sort_keys=True))
            c = COUNTERS.setdefault(key, [0, 0])
            c[0] += 1
            if c[0] <= r.get("after", 0):
                continue
            if "count" in r and c[1] >= r["count"]:
                continue
            if RNG.random() >= r.get("prob", 1.0):
                continue
            c[1] += 1
            return r
    return None


def recv_until(sock, buf, marker):
    while marker not in buf:
        data = sock.recv(65536)
        if not data:
            return buf, False
        buf += data
    return buf, True


def read_exact(sock, buf, n):
    while len(buf) < n:
        data = sock.recv(max(65536, n - len(buf)))
        if not data:
            break
        buf += data
    return buf


def parse_headers(head):
    lines = head.split(b"\r\n")
    start = lines[0].decode("latin-1")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        k, _, v = line.partition(b":")
        headers.append((k.decode("latin-1").strip(), v.decode("latin-1").strip()))
    return start, headers


def header(headers, name):
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def reset(sock):
    """Close with RST: SO_LINGER on, timeout 0."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def read_response(up, method):
    """The upstream answer: (status line, headers, body), read to its end."""
    buf, ok = recv_until(up, b"", b"\r\n\r\n")
    if not ok:
        raise ConnectionError("upstream closed before answering")
    head, _, rest = buf.partition(b"\r\n\r\n")
    start, headers = parse_headers(head)
    status = int(start.split()[1])
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return start, headers, b""
    cl = header(headers, "content-length")
    te = header(headers, "transfer-encoding")
    if te and "chunked" in te.lower():
        body = b""
        data = rest
        while True:
            data, _ = recv_until(up, data, b"\r\n")
            line, _, data = data.partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            data = read_exact(up, data, size + 2)
            body += data[:size]
            data = data[size + 2:]
            if size == 0:
                break
        headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        headers.append(("Content-Length", str(len(body))))
        return start, headers, body
    if cl is not None:
        return start, headers, read_exact(up, rest, int(cl))[: int(cl)]
    while True:
        data = up.recv(65536)
        if not data:
            break
        rest += data
    headers.append(("Content-Length", str(len(rest))))
    return start, headers, rest


S3_MESSAGES = {
    "SlowDown": "Please reduce your request rate.",
    "InternalError": "We encountered an internal error. Please try again.",
    "AccessDenied": "Access Denied",
    "ServiceUnavailable": "Service is unable to handle request.",
}


class Handler(socketserver.BaseRequestHandler):
    def log(self, what):
        with LOCK:
            with open(self.server.logpath, "a") as f:
                f.write(what + "\n")

    def handle(self):
        client = self.request
        buf = b""
        while True:
            buf, ok = recv_until(client, buf, b"\r\n\r\n")
            if not ok:
                client.close()
                return
            head, _, buf = buf.partition(b"\r\n\r\n")
            start, headers = parse_headers(head)
            method, target, _ = start.split(" ", 2)
            path, _, query = target.partition("?")
            length = int(header(headers, "content-length") or 0)
            if (header(headers, "expect") or "").lower() == "100-continue":
                client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            headers = [(k, v) for k, v in headers if k.lower() not in ("expect", "connection")]
            rule = choose(load_rules(self.server.rulespath), method, path, query)
            action = rule["action"] if rule else None
            if action:
                self.log("FAULT %s %s %s%s%s" % (action, method, path, "?" if query else "", query))
            if action == "status":
                buf = read_exact(client, buf, length)
                buf = buf[length:]
                code = rule.get("code", 503)
                s3code = rule.get("s3code", "SlowDown")
                key = path.split("/", 2)[2] if path.count("/") >= 2 else ""
                body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code><Message>%s"
                        "</Message><Key>%s</Key><RequestId>faultproxy</RequestId></Error>"
                        % (s3code, S3_MESSAGES.get(s3code, s3code), key)).encode()
                if method == "HEAD":
                    body = b""
                client.sendall(("HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\n"
                                "Content-Length: %d\r\nConnection: keep-alive\r\n\r\n"
                                % (code, s3code, len(body))).encode() + body)
                continue
            if action == "delay":
                time.sleep(rule.get("ms", 200) / 1000.0)
            up = socket.create_connection(self.server.upstream)
            try:
                out = "%s %s HTTP/1.1\r\n" % (method, target)
                out += "".join("%s: %s\r\n" % (k, v) for k, v in headers)
                out += "Connection: close\r\n\r\n"
                up.sendall(out.encode("latin-1"))
                if action == "reset_request":
                    part = int(length * rule.get("fraction", 0.5))
                    buf = read_exact(client, buf, part)
                    up.sendall(buf[:part])
                    time.sleep(0.05)
                    reset(up)
                    reset(client)
                    return
                buf = read_exact(client, buf, length)
                up.sendall(buf[:length])
                buf = buf[length:]
                start_line, rheaders, body = read_response(up, method)
            except (OSError, ConnectionError, ValueError) as e:
                self.log("upstream error: %s" % e)
                reset(up)
                reset(client)
                return
            up.close()
            rheaders = [(k, v) for k, v in rheaders if k.lower() != "connection"]
            rhead = (start_line + "\r\n" + "".join("%s: %s\r\n" % (k, v) for k, v in rheaders)
                     + "Connection: keep-alive\r\n\r\n").encode("latin-1")
            whole = rhead + body
            if action == "reset_response":
                client.sendall(whole[: max(1, int(len(whole) * rule.get("fraction", 0.5)))])
                time.sleep(0.05)
                reset(client)
                return
            if action == "truncate" and body:
                client.sendall(rhead + body[: int(len(body) * rule.get("fraction", 0.5))])
                client.shutdown(socket.SHUT_WR)
                client.close()
                return
            client.sendall(whole)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, default=0)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--log", required=True)
    a = ap.parse_args()
    host, _, port = a.upstream.rpartition(":")
    srv = Server(("127.0.0.1", a.listen), Handler)
    srv.upstream = (host, int(port))
    srv.rulespath = a.rules
    srv.logpath = a.log
    print("listening on %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
