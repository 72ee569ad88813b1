"""Submit an ERP document to fapiao-bridge (POST /v1/documents) and print the answer.

Python 3.9+, standard library only. The document is sent as the bytes of the file,
unchanged, so amounts keep every digit the ERP wrote (never round-trip them through float).

    FAPIAO_URL=http://127.0.0.1:8000 FAPIAO_API_KEY=... python fapiao_client.py ../document.json

Exit status: 0 when the bridge accepted the document (200/202, or 207 for a batch with
per-item results), 2 when it refused it (4xx: the body says why, with issues[] for a 422),
3 for a server or network failure (retry later with the same document: submitting identical
content again is safe).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def submit(base_url: str, api_key: str, document: bytes) -> tuple[int, str]:
    """POST one document, an array of them, or {"documents": [...]}; (status, body text)."""
    request = urllib.request.Request(
        base_url.rstrip("/") + "/v1/documents",
        data=document,
        method="POST",
        headers={
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as refused:  # 4xx/5xx still carry the JSON answer
        return refused.code, refused.read().decode("utf-8")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python fapiao_client.py <document.json>  (env FAPIAO_URL, FAPIAO_API_KEY)")
        return 64
    base_url = os.environ.get("FAPIAO_URL", "http://127.0.0.1:8000")
    api_key = os.environ.get("FAPIAO_API_KEY", "")
    with open(argv[1], "rb") as file:
        document = file.read()
    try:
        status, body = submit(base_url, api_key, document)
    except OSError as exc:
        print(f"no answer from {base_url}: {exc}", file=sys.stderr)
        return 3
    print(f"HTTP {status}")
    print(body)
    if status in (200, 202, 207):
        return 0
    return 3 if status >= 500 else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
