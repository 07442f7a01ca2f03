"""The web server of a drover test node: plays Apache + PHP-FPM + the app.

Usage: python3 -I -S webserver.py --node NAME --addr ADDR --port PORT --root NODE_ROOT
                                  [--memcached HOST:PORT]

It serves the ACTIVE release and PHP version of the node root:
  <root>/srv/app/current -> releases/<id>   (the release)
  <root>/opt/php/current -> <version>       (the PHP version, a tree in /opt/php/<version>)
Both symlinks are resolved at start and on SIGHUP (a reload), never per
request: like PHP's opcode and realpath caches, a symlink flip is invisible
until PHP-FPM reloads (`rc-service php-fpm reload`, SIGHUP here) or the
server restarts; an Apache reload changes nothing (the node's init sends no
signal for it), as on a real node.

  GET /healthz   200 "ok node=N release=R php=P" (the release marker), or 500/503
  GET /health.php  drover's health endpoint (the node contract): 200
                 "ok release=R php=P pid=<this process>", or 500/503
  GET /fpm-status  php-fpm's pool status as `?json&full` gives it: one
                 process (this one) whose "start time" is the last (re)load
  GET /slow?s=N  like / after sleeping N seconds (for in-flight request tests)
  GET /static    a cacheable page (Cache-Control: public), no session
  GET /warm      warms the node for the release it serves (the marker
                 <root>/run/warm/<release>), 200 "warm node=N release=R"
  GET /...       200 "node=N release=R php=P session=S hits=H"

Session pages carry X-Warm: 1 when the marker of the serving release is
newer than the `current` link (the node was warmed since its last switch,
by /warm or the release's bin/warm hook), else X-Warm: 0 (a cold answer).
/health.php and /healthz never warm a node.

Every response carries X-Node, X-Release, X-Php and X-Generation (reload
count); session responses also X-Cookie-Names (the cookies the node got).
Sessions: the PHPSESSID cookie keys a record in the farm's memcached
(or in this process when no memcached is given): who wrote it (release), the
newest release the session has seen, and a hit count. A record written by an
older release than the one serving (memcached not flushed at the farm switch)
adds `X-Session-Stale: <writer>`; a session that saw a newer release than the
serving one adds `X-Session-Regressed: <newest seen>`.

Failures: a release tree containing BROKEN answers 500 everywhere (a bad
release fails its health check); <root>/faults/http-fail makes every request
503 (an unhealthy node); a missing release or PHP tree answers 500.
"""

import argparse
import http.server
import json
import os
import re
import secrets
import signal
import socket
import socketserver
import threading
import time
import urllib.parse


def natural(s):
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.findall(r"\d+|\D+", s)]


class Active:
    """The release and PHP version this process serves, re-read on SIGHUP."""

    def __init__(self, root):
        self.root = root
        self.generation = 0
        self.load()

    def load(self):
        app = os.path.join(self.root, "srv/app/current")
        php = os.path.join(self.root, "opt/php/current")
        try:
            release_dir = os.path.realpath(app)
            self.release = os.path.basename(os.readlink(app).rstrip("/"))
        except OSError:
            release_dir, self.release = None, None
        try:
            php_dir = os.path.realpath(php)
            self.php = os.path.basename(os.readlink(php).rstrip("/"))
        except OSError:
            php_dir, self.php = None, None
        # Like a php-fpm pool after a reload: every "worker" started now.
        self.loaded_at = int(time.time())
        self.problem = None
        if self.release is None or not os.path.isdir(release_dir):
            self.problem = "no active release tree"
        elif os.path.exists(os.path.join(release_dir, "BROKEN")):
            self.problem = "release %s is broken" % self.release
        elif self.php is None or not os.path.isdir(php_dir):
            self.problem = "no active PHP tree"
        self.generation += 1


class Memcached:
    """Minimal memcached text-protocol client, one connection per thread."""

    def __init__(self, endpoint):
        host, port = endpoint.rsplit(":", 1)
        self.addr = (host.strip("[]"), int(port))
        self.local = threading.local()

    def _conn(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = socket.create_connection(self.addr, timeout=2)
            self.local.conn = c
            self.local.buf = b""
        return c

    def _line(self):
        while b"\r\n" not in self.local.buf:
            chunk = self.local.conn.recv(65536)
            if not chunk:
                raise OSError("memcached closed the connection")
            self.local.buf += chunk
        line, self.local.buf = self.local.buf.split(b"\r\n", 1)
        return line

    def _call(self, fn):
        try:
            return fn()
        except OSError:
            self.local.conn = None
            return fn()

    def get(self, key):
        def go():
            c = self._conn()
            c.sendall(b"get " + key.encode() + b"\r\n")
            line = self._line()
            if line == b"END":
                return None
            _, _, _, length = line.split()
            while len(self.local.buf) < int(length) + 2:
                chunk = c.recv(65536)
                if not chunk:
                    raise OSError("memcached closed the connection")
                self.local.buf += chunk
            value = self.local.buf[: int(length)]
            self.local.buf = self.local.buf[int(length) + 2 :]
            if self._line() != b"END":
                raise OSError("bad memcached reply")
            return value.decode()

        return self._call(go)

    def set(self, key, value):
        def go():
            c = self._conn()
            data = value.encode()
            c.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(data), data))
            if self._line() != b"STORED":
                raise OSError("memcached did not store")

        return self._call(go)


class LocalStore:
    def __init__(self):
        self.data = {}
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            return self.data.get(key)

    def set(self, key, value):
        with self.lock:
            self.data[key] = value


def warm_marker(root, release):
    return os.path.join(root, "run/warm", release)


def is_warm(root, release):
    """The node was warmed for `release` since `current` last changed."""
    try:
        marker = os.stat(warm_marker(root, release)).st_mtime_ns
        link = os.lstat(os.path.join(root, "srv/app/current")).st_mtime_ns
    except OSError:
        return False
    return marker >= link


def make_handler(node, active, store, root):
    fail_file = os.path.join(root, "faults/http-fail")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "drover-test-node"

        def log_message(self, *args):
            pass

        def reply(self, status, body, headers=()):
            data = (body + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Node", node)
            self.send_header("X-Release", active.release or "-")
            self.send_header("X-Php", active.php or "-")
            self.send_header("X-Generation", str(active.generation))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if os.path.exists(fail_file):
                return self.reply(503, "node %s is failing (faults/http-fail)" % node)
            if url.path == "/fpm-status":
                return self.fpm_status()
            if active.problem:
                return self.reply(500, "node %s: %s" % (node, active.problem))
            if url.path == "/health.php":
                return self.reply(
                    200,
                    "ok release=%s php=%s pid=%d" % (active.release, active.php, os.getpid()),
                    [("Cache-Control", "no-store")],
                )
            ident = "node=%s release=%s php=%s" % (node, active.release, active.php)
            if url.path == "/healthz":
                return self.reply(200, "ok " + ident)
            if url.path == "/static":
                return self.reply(200, "static " + ident, [("Cache-Control", "public, max-age=60")])
            if url.path == "/warm":
                os.makedirs(os.path.join(root, "run/warm"), exist_ok=True)
                with open(warm_marker(root, active.release), "w"):
                    pass
                os.utime(warm_marker(root, active.release))
                return self.reply(200, "warm node=%s release=%s" % (node, active.release))
            if url.path == "/slow":
                q = urllib.parse.parse_qs(url.query)
                time.sleep(float(q.get("s", ["1"])[0]))
            self.session(ident)

        do_POST = do_GET

        def fpm_status(self):
            started = active.loaded_at
            since = max(0, int(time.time()) - started)
            proc = {"pid": os.getpid(), "state": "Idle", "start time": started, "start since": since}
            status = {
                "pool": "app",
                "process manager": "static",
                "start time": started,
                "start since": since,
                "idle processes": 1,
                "active processes": 0,
                "total processes": 1,
            }
            if "full" in urllib.parse.parse_qs(self.path.partition("?")[2], keep_blank_values=True):
                status["processes"] = [proc]
            data = json.dumps(status)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Node", node)
            self.end_headers()
            self.wfile.write(data.encode())

        def session(self, ident):
            release = active.release
            sid, names = None, []
            for part in self.headers.get("Cookie", "").split(";"):
                k, _, v = part.strip().partition("=")
                if k:
                    names.append(k)
                if k == "PHPSESSID" and re.fullmatch(r"[0-9a-f]{1,64}", v):
                    sid = v
            # Which cookies reached the node (the LB's farm cookie must not).
            headers = [("X-Cookie-Names", ",".join(names) or "-")]
            headers.append(("X-Warm", "1" if is_warm(root, release) else "0"))
            if sid is None:
                sid = secrets.token_hex(12)
                headers.append(("Set-Cookie", "PHPSESSID=%s; path=/" % sid))
            try:
                record = store.get("sess:" + sid)
            except OSError as e:
                return self.reply(500, "session store unavailable: %s" % e)
            writer, newest, hits = release, release, 0
            if record:
                writer, newest, hits = record.split()
                hits = int(hits)
                if natural(writer) < natural(release):
                    headers.append(("X-Session-Stale", writer))
                if natural(newest) > natural(release):
                    headers.append(("X-Session-Regressed", newest))
                else:
                    newest = release
            hits += 1
            try:
                store.set("sess:" + sid, "%s %s %d" % (release, newest, hits))
            except OSError as e:
                return self.reply(500, "session store unavailable: %s" % e)
            headers.append(("X-Session", sid))
            self.reply(200, "%s session=%s hits=%d" % (ident, sid, hits), headers)

    return Handler


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--node", required=True)
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--memcached")
    a = p.parse_args()
    active = Active(a.root)
    signal.signal(signal.SIGHUP, lambda *_: active.load())
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    store = Memcached(a.memcached) if a.memcached else LocalStore()
    server = Server((a.addr, a.port), make_handler(a.node, active, store, a.root))
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
