"""An OpenAI-compatible chat-completions server on loopback, scripted by the test: what the
listwise rerankers, ReDE-RF's judge and the RAG route talk to in the tests."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    """A chat-completions server in a thread; ``script(request_index, messages)`` -> (status, content)."""

    def __init__(self, script):
        self.script, self.requests = script, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, self.headers.get("Authorization"), body))
                status, content = server.script(len(server.requests) - 1, body["messages"])
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}
                                  if status == 200 else {"error": content}).encode()  # fmt: skip
                kind = "application/json"
                if status == 200 and body.get("stream"):  # server-sent events, a word at a time
                    events = [{"choices": [{"index": 0, "delta": {"content": w}}]}
                              for w in re.findall(r"\S+\s*", content)]  # fmt: skip
                    data = (
                        "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode() + b"data: [DONE]\n\n"
                    )
                    kind = "text/event-stream"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
