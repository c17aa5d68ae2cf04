"""Verifies webhook deliveries with the Standard Webhooks reference library
(the `standardwebhooks` package from PyPI, pinned in requirements-dev.txt), so
that server/tests/events.rs checks ferroserve's signatures against an
implementation that is not its own.

stdin:  {"secret": "whsec_...", "deliveries": [{"headers": {...}, "body": "..."}]}
stdout: a JSON list, the `id` of each delivery's payload as the library parsed it.

Exits non-zero, saying why on stderr, when the library is missing or any
delivery does not verify. So that a check that passes means something, each
delivery must also fail to verify with its body changed or with another secret.
"""

import base64
import json
import sys

try:
    from standardwebhooks import Webhook, WebhookVerificationError
except ImportError as e:
    sys.exit(
        f"the standardwebhooks package is missing from {sys.prefix} ({e}): "
        "scripts/setup-env.sh installs requirements-dev.txt"
    )


def main() -> None:
    req = json.load(sys.stdin)
    hook = Webhook(req["secret"])
    other = Webhook("whsec_" + base64.b64encode(bytes(32)).decode())
    ids = []
    for i, d in enumerate(req["deliveries"]):
        try:
            payload = hook.verify(d["body"], d["headers"])
        except WebhookVerificationError as e:
            sys.exit(f"delivery {i} does not verify: {e}; headers {d['headers']}")
        ids.append(payload["id"])
        for what, w, body in (
            ("with its body changed", hook, d["body"] + " "),
            ("with another secret", other, d["body"]),
        ):
            try:
                w.verify(body, d["headers"])
            except WebhookVerificationError:
                continue
            sys.exit(f"delivery {i} verifies {what} too")
    print(json.dumps(ids))


if __name__ == "__main__":
    main()
