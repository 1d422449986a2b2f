"""A misbehaving local HTTP server for download tests: http.server in a thread on 127.0.0.1, one behaviour per path."""
import http.server
import os
import socket
import threading
import time
from contextlib import contextmanager

PAYLOAD = os.urandom(200_000)
CHANGED = os.urandom(200_000)
LAST_MODIFIED = 'Wed, 21 Oct 2015 07:28:00 GMT'


class Handler(http.server.BaseHTTPRequestHandler):
    """Behaviour chosen by the path: /ok, /no_range, /changed, /weak_etag, /lastmod, /no_validator, /truncate,
    /stall, /slow_headers, /status/<code>, /redirect_loop, /redirect_once, /bad_range, /wrong_total, /no_length,
    /short_length. Every request's headers are recorded in `server.log`."""
    protocol_version = 'HTTP/1.1'

    def log_message(self, *a): pass

    def send_body(self, data, status=200, headers=(), cut=None, stall=None):
        self.send_response(status)
        for k, v in headers: self.send_header(k, v)
        self.end_headers()
        body = data if cut is None else data[:cut]
        self.wfile.write(body); self.wfile.flush()
        if stall: time.sleep(stall)
        if cut is not None or stall: self.close_connection = True

    def ranged(self, data, validators, if_range_ok):
        "Honour Range (with If-Range checked by `if_range_ok`), as a correct server does."
        rng = self.headers.get('Range')
        ir = self.headers.get('If-Range')
        if rng and (ir is None or if_range_ok(ir)):
            start = int(rng.split('=')[1].split('-')[0])
            if start >= len(data):
                return self.send_body(b'', 416, [('Content-Range', f'bytes */{len(data)}'), ('Content-Length', '0'), *validators])
            return self.send_body(data[start:], 206, [('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}'),
                                                      ('Content-Length', str(len(data) - start)), *validators])
        return self.send_body(data, 200, [('Content-Length', str(len(data))), *validators])

    def do_GET(self):
        self.server.log.append((self.path, dict(self.headers)))
        p, data = self.path, PAYLOAD
        etag = [('ETag', '"v1"'), ('Last-Modified', LAST_MODIFIED)]
        if p == '/ok': return self.ranged(data, etag, lambda ir: ir == '"v1"')
        if p == '/changed': return self.ranged(CHANGED, [('ETag', '"v2"')], lambda ir: ir == '"v2"')
        if p == '/no_range': return self.send_body(data, 200, [('Content-Length', str(len(data))), *etag])
        if p == '/weak_etag': return self.ranged(data, [('ETag', 'W/"v1"')], lambda ir: True)
        if p == '/lastmod': return self.ranged(data, [('Last-Modified', LAST_MODIFIED)], lambda ir: ir == LAST_MODIFIED)
        if p == '/no_validator': return self.ranged(data, [], lambda ir: True)
        if p == '/truncate':
            return self.send_body(data, 200, [('Content-Length', str(len(data))), *etag], cut=len(data) // 2) \
                if not self.headers.get('Range') else self.ranged(data, etag, lambda ir: ir == '"v1"')
        if p == '/stall':
            return self.send_body(data, 200, [('Content-Length', str(len(data))), *etag], cut=len(data) // 4, stall=1.5) \
                if not self.headers.get('Range') else self.ranged(data, etag, lambda ir: ir == '"v1"')
        if p == '/slow_headers': time.sleep(1.5); return self.send_body(data, 200, [('Content-Length', str(len(data)))])
        if p.startswith('/status/'):
            code = int(p.rsplit('/', 1)[1]); return self.send_body(b'no', code, [('Content-Length', '2')])
        if p == '/redirect_loop': return self.send_body(b'', 302, [('Location', '/redirect_loop'), ('Content-Length', '0')])
        if p == '/redirect_once': return self.send_body(b'', 301, [('Location', '/ok'), ('Content-Length', '0')])
        if p == '/bad_range':      # answers any Range with 206 from byte 0: not the continuation asked for
            if self.headers.get('Range'):
                return self.send_body(data, 206, [('Content-Range', f'bytes 0-{len(data) - 1}/{len(data)}'),
                                                  ('Content-Length', str(len(data))), *etag])
            return self.send_body(data, 200, [('Content-Length', str(len(data))), *etag])
        if p == '/wrong_total':    # a 206 whose total differs from the size first announced
            if self.headers.get('Range'):
                start = int(self.headers['Range'].split('=')[1].split('-')[0])
                return self.send_body(data[start:], 206, [('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data) + 7}'),
                                                          ('Content-Length', str(len(data) - start)), *etag])
            return self.send_body(data, 200, [('Content-Length', str(len(data))), *etag])
        if p == '/no_length':
            self.close_connection = True
            self.send_response(200); self.send_header('Connection', 'close'); self.end_headers()
            self.wfile.write(data); return
        if p == '/short_length':   # announces fewer bytes than it has: the body is cut at Content-Length
            return self.send_body(data[:1000], 200, [('Content-Length', '1000'), *etag])
        return self.send_body(b'?', 404, [('Content-Length', '1')])


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def __init__(self):
        super().__init__(('127.0.0.1', 0), Handler)
        self.log = []
    def url(self, path): return f'http://127.0.0.1:{self.server_address[1]}{path}'


@contextmanager
def serve():
    srv = Server()
    th = threading.Thread(target=srv.serve_forever, daemon=True, kwargs={'poll_interval': 0.05}); th.start()
    try: yield srv
    finally:
        srv.shutdown(); srv.server_close()


def refused_url() -> str:
    "A URL on 127.0.0.1 where nothing listens."
    s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()
    return f'http://127.0.0.1:{port}/x'
