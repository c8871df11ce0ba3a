#!/usr/bin/env python3
"""Serve web/dist/ like a web server should: a file that has a precompressed copy beside it
(`NAME.br` from brotli, `NAME.gz` from gzip; web/build.sh makes them for the wasm) goes out
compressed, with `Content-Encoding` and the type of the original, when the browser accepts that
encoding; `X-Flick-Length` gives the uncompressed size (the page's download progress).

    python3 web/serve.py [--port 8080] [--bind 127.0.0.1] [--dir web/dist]
"""
import argparse
import functools
import http.server
import os


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".js": "text/javascript",
        ".mjs": "text/javascript",
    }

    def send_head(self):
        path = self.translate_path(self.path)
        accepted = {e.split(";")[0].strip() for e in self.headers.get("Accept-Encoding", "").split(",")}
        if os.path.isfile(path):
            for encoding, suffix in (("br", ".br"), ("gzip", ".gz")):
                packed = path + suffix
                if encoding in accepted and os.path.isfile(packed):
                    try:
                        f = open(packed, "rb")
                    except OSError:
                        break
                    size = os.fstat(f.fileno()).st_size
                    self.send_response(200)
                    self.send_header("Content-Type", self.guess_type(path))
                    self.send_header("Content-Encoding", encoding)
                    self.send_header("Content-Length", str(size))
                    self.send_header("X-Flick-Length", str(os.path.getsize(path)))
                    self.send_header("Vary", "Accept-Encoding")
                    self.end_headers()
                    return f
        return super().send_head()

    def log_message(self, format, *args):
        if os.environ.get("FLICK_SERVE_QUIET") != "1":
            super().log_message(format, *args)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--dir", default=os.path.join(here, "dist"))
    a = p.parse_args()
    if not os.path.isfile(os.path.join(a.dir, "index.html")):
        raise SystemExit(f"web/serve.py: no {a.dir}/index.html: run bash web/build.sh first")
    handler = functools.partial(Handler, directory=a.dir)
    with http.server.ThreadingHTTPServer((a.bind, a.port), handler) as server:
        print(f"serving {a.dir} on http://{a.bind}:{a.port}/ (precompressed files where present)", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
