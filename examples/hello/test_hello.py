"""Tests of the hello service: the handler's answers, and the real server over HTTP."""
import os
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


class ServerTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        port_file = os.path.join(self.tmp.name, "port")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "hello.py"), "--port", "0", "--port-file", port_file],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            if os.path.exists(port_file):
                break
            time.sleep(0.05)
        with open(port_file, encoding="utf-8") as f:
            self.base = f"http://127.0.0.1:{f.read().strip()}"

    def tearDown(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.tmp.cleanup()

    def get(self, path):
        with urllib.request.urlopen(self.base + path, timeout=5) as r:
            return r.status, r.read().decode()

    def test_healthz_answers_ok(self):
        self.assertEqual(self.get("/healthz"), (200, "ok\n"))

    def test_root_answers_the_version(self):
        status, body = self.get("/")
        self.assertEqual(status, 200)
        self.assertTrue(body.startswith("hello from "), body)

    def test_unknown_path_is_404(self):
        with self.assertRaises(urllib.error.HTTPError) as e:
            self.get("/nope")
        self.assertEqual(e.exception.code, 404)


if __name__ == "__main__":
    unittest.main()
