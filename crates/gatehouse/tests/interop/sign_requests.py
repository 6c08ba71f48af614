"""Signs requests to a gateway with the `http-message-signatures` package (RFC 9421),
the standard client the http_signature policy must interoperate with, and prints one
JSON object: each scenario's name and the status the gateway answered.

    python3 sign_requests.py BASE_URL HMAC_SECRET ED25519_PRIVATE_PEM
"""

import datetime
import json
import sys
import uuid

import requests
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

base, secret, ed_pem = sys.argv[1], sys.argv[2].encode(), open(sys.argv[3], "rb").read()
keys = MappingKeyResolver(
    public_keys={},
    private_keys={"mobile-1": secret, "ops-ed": ed_pem},
)
forger = HTTPMessageSigner(
    signature_algorithm=algorithms.HMAC_SHA256,
    key_resolver=MappingKeyResolver(public_keys={}, private_keys={"mobile-1": b"not the secret"}),
)
hmac = HTTPMessageSigner(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=keys)
ed = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=keys)
session = requests.Session()
REQUIRED = ("@method", "@authority", "@path", "@query")
out = {}


def prepared(method, path, body=None):
    headers = {"content-type": "application/json"} if body is not None else {}
    return requests.Request(method, base + path, data=body, headers=headers).prepare()


def send(name, req):
    out[name] = session.send(req).status_code
    return req


def signed(signer, key_id, method, path, body=None, components=REQUIRED, **kw):
    req = prepared(method, path, body)
    kw.setdefault("nonce", uuid.uuid4().hex)
    signer.sign(req, key_id=key_id, covered_component_ids=components, body=body, **kw)
    return req


# HMAC over the required components, with a nonce; then the same request again.
first = send("hmac_get", signed(hmac, "mobile-1", "GET", "/signed/orders?id=7&x=a%20b"))
send("replayed", first)
# A body bound by Content-Digest (the library adds and covers it).
body = json.dumps({"item": "book", "qty": 2}).encode()
send("hmac_post_digest", signed(hmac, "mobile-1", "POST", "/signed/orders", body=body))
tampered = signed(hmac, "mobile-1", "POST", "/signed/orders", body=body)
tampered.body = json.dumps({"item": "book", "qty": 200}).encode()
tampered.headers["content-length"] = str(len(tampered.body))
send("body_tampered", tampered)
# Ed25519, no nonce, every derived component the policy rebuilds.
send("ed25519", signed(ed, "ops-ed", "DELETE", "/signed/orders/7?force=1", nonce=None,
                       components=REQUIRED + ("@target-uri", "@scheme", "@request-target")))
old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1000)
send("too_old", signed(hmac, "mobile-1", "GET", "/signed/orders", created=old))
send("missing_component", signed(hmac, "mobile-1", "GET", "/signed/orders", components=("@method", "@path")))
send("wrong_secret", signed(forger, "mobile-1", "GET", "/signed/orders"))
query_changed = signed(hmac, "mobile-1", "GET", "/signed/orders?id=7")
query_changed.url = base + "/signed/orders?id=8"
send("query_changed", query_changed)
send("unsigned", prepared("GET", "/signed/orders"))
print(json.dumps(out))
