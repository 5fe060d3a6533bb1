"""tests/ws/test_ws_static.py - plain GET and HEAD from the static directory.

Content types, index.html for directories (301 to add the '/'), HEAD without a body,
a large file sent in chunks, 404 for missing files, and no way out of the directory:
"..", encoded "..", backslashes, absolute-form URLs, symbolic links pointing outside
(a link that stays inside works). A server without a static directory answers 404.
"""

import os
import shutil
import tempfile
import unittest

import wsclient as w


def get(port, path, method="GET", extra=b""):
    return w.http(port, b"%s %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (method.encode(), path.encode(), extra))


class Static(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="cch-static-")
        cls.root = os.path.join(cls.tmp, "www")
        os.makedirs(os.path.join(cls.root, "sub", "deeper"))
        files = {
            "index.html": b"<!doctype html><title>home</title>",
            "style.css": b"body{}",
            "app.js": b"console.log(1)",
            "data.json": b"{}",
            "logo.png": b"\x89PNG\r\n\x1a\n",
            "blob.bin": os.urandom(100),
            "noext": b"plain",
            "empty.txt": b"",
            "sub/index.html": b"<p>sub</p>",
            "sub/deeper/a b.txt": b"space",
            "big.bin": os.urandom(3 * 1024 * 1024 + 17),
        }
        for name, data in files.items():
            with open(os.path.join(cls.root, name), "wb") as f:
                f.write(data)
        cls.files = files
        with open(os.path.join(cls.tmp, "secret.txt"), "wb") as f:
            f.write(b"secret")
        os.symlink(os.path.join(cls.tmp, "secret.txt"), os.path.join(cls.root, "escape.txt"))
        os.symlink(os.path.join(cls.root, "style.css"), os.path.join(cls.root, "inside.css"))
        os.symlink(cls.tmp, os.path.join(cls.root, "updir"))
        os.mkfifo(os.path.join(cls.root, "fifo"))
        cls.srv = w.Server("--static", cls.root)
        cls.port = cls.srv.port
        cls.bare = w.Server()

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        code2, err2 = cls.bare.stop()
        shutil.rmtree(cls.tmp)
        assert code == 0, err[-3000:]
        assert code2 == 0, err2[-3000:]

    def expect(self, path, ctype, name=None):
        status, headers, body = get(self.port, path)
        self.assertEqual(status, 200, path)
        self.assertEqual(headers["content-type"], ctype, path)
        self.assertEqual(body, self.files[name or path.lstrip("/")])
        self.assertEqual(int(headers["content-length"]), len(body))
        self.assertEqual(headers["connection"], "close")

    def test_content_types(self):
        self.expect("/style.css", "text/css; charset=utf-8")
        self.expect("/app.js", "text/javascript; charset=utf-8")
        self.expect("/data.json", "application/json")
        self.expect("/logo.png", "image/png")
        self.expect("/blob.bin", "application/octet-stream")
        self.expect("/noext", "application/octet-stream")
        self.expect("/empty.txt", "text/plain; charset=utf-8")

    def test_index(self):
        self.expect("/", "text/html; charset=utf-8", "index.html")
        self.expect("/sub/", "text/html; charset=utf-8", "sub/index.html")
        self.expect("/?query=1", "text/html; charset=utf-8", "index.html")

    def test_directory_redirect(self):
        status, headers, _ = get(self.port, "/sub")
        self.assertEqual(status, 301)
        self.assertEqual(headers["location"], "/sub/")

    def test_percent_encoded_name(self):
        self.expect("/sub/deeper/a%20b.txt", "text/plain; charset=utf-8", "sub/deeper/a b.txt")

    def test_head(self):
        status, headers, body = get(self.port, "/style.css", "HEAD")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-length"], "6")
        self.assertEqual(body, b"")
        status, headers, body = get(self.port, "/missing", "HEAD")
        self.assertEqual(status, 404)
        self.assertEqual(body, b"")

    def test_large_file(self):
        self.expect("/big.bin", "application/octet-stream")

    def test_http10(self):
        status, headers, body = w.http(self.port, b"GET /style.css HTTP/1.0\r\n\r\n")
        self.assertEqual((status, body), (200, b"body{}"))

    def test_404(self):
        for path in ["/missing.html", "/sub/missing", "/sub/deeper/"]:
            status, _, body = get(self.port, path)
            self.assertEqual(status, 404, path)

    def test_traversal(self):
        for path in ["/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt",
                     "/sub/%2E%2E/%2e%2e/secret.txt", "/..%2fsecret.txt", "/..%5csecret.txt",
                     "/sub\\..\\..\\secret.txt", "/./style.css", "/%00", "/%zz"]:
            status, _, body = get(self.port, path)
            self.assertEqual(status, 404, path)
            self.assertNotIn(b"secret", body)

    def test_symlinks(self):
        status, _, body = get(self.port, "/escape.txt")
        self.assertEqual(status, 404)
        status, _, body = get(self.port, "/updir/secret.txt")
        self.assertEqual(status, 404)
        self.expect("/inside.css", "text/css; charset=utf-8", "style.css")

    def test_not_a_regular_file(self):
        status, _, _ = get(self.port, "/fifo")   # must not block the server
        self.assertEqual(status, 404)
        self.expect("/style.css", "text/css; charset=utf-8")

    def test_absolute_form(self):
        status, _, body = w.http(self.port, b"GET http://x/style.css HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual((status, body), (200, b"body{}"))
        status, _, _ = w.http(self.port, b"GET http://x/../secret.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(status, 404)

    def test_methods(self):
        status, headers, _ = get(self.port, "/style.css", "DELETE")
        self.assertEqual(status, 405)
        status, _, _ = get(self.port, "/style.css", "PUT", b"Content-Length: 0\r\n")
        self.assertEqual(status, 405)

    def test_no_static_dir(self):
        status, _, _ = get(self.bare.port, "/")
        self.assertEqual(status, 404)
        status, _, _ = get(self.bare.port, "/index.html")
        self.assertEqual(status, 404)

    def test_websocket_on_the_same_port(self):
        ws = w.WS.connect(self.port, "/ws/echo/")
        ws.send_text("same port")
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"same port"))
        ws.close()

    def test_zz_counted(self):
        self.assertGreater(self.srv.stats()["static_served"], 10)


if __name__ == "__main__":
    w.main()
