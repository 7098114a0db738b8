"""A Slack Incoming Webhook on 127.0.0.1 for tests: a real HTTP server that records what it
is sent, so a notifier can be run for real and its messages read back."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONN_ID = "crm_slack"


class SlackWebhook:
    """`with SlackWebhook() as hook:` posts to `hook.url` land in `hook.posts` (JSON bodies)."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                posts.append({"path": self.path, **json.loads(body or b"{}")})
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")  # what Slack answers

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/XXXX"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def env(self, conn_id: str = CONN_ID) -> dict[str, str]:
        """An Airflow connection of type slackwebhook to this server (the webhook URL as
        its password, as a real one holds the hooks.slack.com URL), named by CRM_SLACK_CONN_ID."""
        conn = json.dumps({"conn_type": "slackwebhook", "password": self.url})
        return {f"AIRFLOW_CONN_{conn_id.upper()}": conn, "CRM_SLACK_CONN_ID": conn_id}

    def __enter__(self) -> SlackWebhook:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
