"""An SM-style FastAPI app: an items API behind OAuth2 (authorization code with PKCE, from an identity
provider on another origin) and its Swagger UI, whose assets come from the gateway's /build/ static
directory (swagger-ui-dist from npm). Prints PORT <n> once listening and CALL <method> <path> <user>
for every API call it answers, and REQ <method> <path> <origin> for every request that reaches it."""

import base64
import hashlib
import hmac
import json
import os
import socket
import time
from typing import List

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.security import OAuth2AuthorizationCodeBearer
from pydantic import BaseModel

IDP = os.environ["IDP_ORIGIN"]
SECRET = os.environ["TOKEN_SECRET"].encode()

oauth2 = OAuth2AuthorizationCodeBearer(
    authorizationUrl=f"{IDP}/authorize",
    tokenUrl=f"{IDP}/token",
    scopes={"items": "Read and write your items"},
)
app = FastAPI(title="Items", docs_url=None, redoc_url=None)
items: List[dict] = []


@app.middleware("http")
async def report(request: Request, call_next):
    print(f"REQ {request.method} {request.url.path} {request.headers.get('origin', '-')}", flush=True)
    return await call_next(request)


def b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def user(token: str = Depends(oauth2)) -> str:
    """An HS256 JWT from the identity provider: signature, expiry, scope."""
    try:
        header, payload, signature = token.split(".")
        expected = hmac.new(SECRET, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        claims = json.loads(b64decode(payload))
        valid = hmac.compare_digest(expected, b64decode(signature)) and claims["exp"] > time.time()
    except (ValueError, KeyError):
        valid = False
    if not valid or "items" not in claims.get("scope", "").split():
        raise HTTPException(status_code=401, detail="invalid token", headers={"WWW-Authenticate": "Bearer"})
    return claims["sub"]


class Item(BaseModel):
    name: str


@app.get("/health", include_in_schema=False)
def health():
    return {"status": "ok"}


@app.get("/docs", include_in_schema=False)
def docs():
    return get_swagger_ui_html(
        openapi_url=app.openapi_url,
        title="Items - Swagger UI",
        swagger_js_url="/build/swagger-ui-bundle.js",
        swagger_css_url="/build/swagger-ui.css",
        swagger_favicon_url="/build/favicon-32x32.png",
        oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
        init_oauth={"clientId": "swagger-ui", "usePkceWithAuthorizationCodeGrant": True, "scopes": "items"},
    )


@app.get(app.swagger_ui_oauth2_redirect_url, include_in_schema=False)
def oauth2_redirect():
    return get_swagger_ui_oauth2_redirect_html()


@app.get("/items/me")
def my_items(sub: str = Depends(user)):
    print(f"CALL GET /items/me {sub}", flush=True)
    return {"owner": sub, "items": [item for item in items if item["owner"] == sub]}


@app.post("/items", status_code=201)
def create_item(item: Item, sub: str = Depends(user)):
    print(f"CALL POST /items {sub}", flush=True)
    items.append({"owner": sub, "name": item.name})
    return {"owner": sub, "name": item.name}


listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
listener.listen(128)
print(f"PORT {listener.getsockname()[1]}", flush=True)
config = uvicorn.Config(app, log_level="warning", proxy_headers=True, forwarded_allow_ips="127.0.0.1")
uvicorn.Server(config).run(sockets=[listener])
