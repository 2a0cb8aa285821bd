"""Tab 3: the vision-language APIs the lab guide names, called for real over plain HTTPS (``urllib``).

Configured only through environment variables, read at call time (never stored, logged or shown):

========== ============================ ================================================================
provider   required                     optional (default)
========== ============================ ================================================================
Gemini     ``GEMINI_API_KEY``           ``GEMINI_MODEL`` (gemini-2.5-flash), ``GEMINI_API_BASE``
GPT-4o     ``OPENAI_API_KEY``           ``OPENAI_MODEL`` (gpt-4o), ``OPENAI_API_BASE``
Llama      ``LLAMA_API_BASE``,          ``LLAMA_MODEL`` (meta-llama/Llama-3.2-11B-Vision-Instruct);
           ``LLAMA_API_KEY``            any OpenAI-compatible endpoint serving a Llama vision model
========== ============================ ================================================================

``API_TIMEOUT_S`` (default 30) bounds each request's connect and each read. Before a request the endpoint's
host gets a TCP probe of at most 3 s (``common.runtime.is_online``'s check, uncached here), so with no network
the answer comes within seconds. With a variable missing nothing is called and the page says which one to set.
Keys go only into request headers, never into URLs; every message that reaches the page passes :func:`scrub`.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from benchapp import InputError
from benchapp.images import check_pixels, downscale
from common.runtime import is_online

PROBE_TIMEOUT_S = 3.0
DEFAULT_TIMEOUT_S = 30.0
MAX_ANSWER_TOKENS = 300
DEFAULT_PROMPT = "Describe this image in one or two sentences. 이 이미지를 한두 문장으로 설명하세요."
SECRET_VARS = ("GEMINI_API_KEY", "OPENAI_API_KEY", "LLAMA_API_KEY")


@dataclass(frozen=True)
class Provider:
    key: str  # short id
    label: str
    required: tuple[str, ...]  # environment variables that must be set
    model_var: str
    default_model: str
    base_var: str
    default_base: str | None  # None: the base URL must be given (LLAMA_API_BASE)
    style: str  # "gemini" (generateContent) or "openai" (chat/completions)


PROVIDERS: dict[str, Provider] = {
    "gemini": Provider(
        "gemini",
        "Gemini (Google)",
        ("GEMINI_API_KEY",),
        "GEMINI_MODEL",
        "gemini-2.5-flash",
        "GEMINI_API_BASE",
        "https://generativelanguage.googleapis.com/v1beta",
        "gemini",
    ),
    "openai": Provider(
        "openai",
        "GPT-4o (OpenAI)",
        ("OPENAI_API_KEY",),
        "OPENAI_MODEL",
        "gpt-4o",
        "OPENAI_API_BASE",
        "https://api.openai.com/v1",
        "openai",
    ),
    "llama": Provider(
        "llama",
        "Llama vision (OpenAI-compatible endpoint)",
        ("LLAMA_API_BASE", "LLAMA_API_KEY"),
        "LLAMA_MODEL",
        "meta-llama/Llama-3.2-11B-Vision-Instruct",
        "LLAMA_API_BASE",
        None,
        "openai",
    ),
}


class ApiError(RuntimeError):
    """A call that failed; its message has been scrubbed of keys."""


@dataclass(frozen=True)
class ApiAnswer:
    provider: str
    model: str
    text: str
    seconds: float  # wall time of the real HTTPS request and response


def _secrets(env: Mapping[str, str]) -> list[str]:
    return [v for name in SECRET_VARS if len(v := env.get(name, "") or "") >= 4]


_PATTERNS = (
    (re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"), r"\1***"),
    (re.compile(r"(?i)((?:api[_-]?key|x-goog-api-key|key|token)\s*[=:]\s*[\"']?)[^\s\"'&,;]+"), r"\1***"),
    (re.compile(r"AIza[0-9A-Za-z_\-]{20,}"), "***"),  # Google API keys
    (re.compile(r"sk-[0-9A-Za-z_\-]{8,}"), "***"),  # OpenAI-style keys
)


def scrub(text: str, env: Mapping[str, str] | None = None, *, patterns: bool = True) -> str:
    """``text`` with every configured key replaced by ***, and (``patterns``, for error messages) anything
    shaped like a key or a bearer token too."""
    env = os.environ if env is None else env
    for secret in sorted(_secrets(env), key=len, reverse=True):
        text = text.replace(secret, "***")
    if patterns:
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
    return text


def missing(provider: Provider, env: Mapping[str, str] | None = None) -> list[str]:
    """The provider's required environment variables that are unset or empty."""
    env = os.environ if env is None else env
    return [name for name in provider.required if not (env.get(name) or "").strip()]


def status_lines(env: Mapping[str, str] | None = None) -> list[str]:
    """One line per provider: ready (with the model name) or which variable to set. Never a key's value."""
    env = os.environ if env is None else env
    lines = []
    for p in PROVIDERS.values():
        gaps = missing(p, env)
        if gaps:
            need = " and ".join(f"`{g}`" for g in gaps)
            lines.append(f"- **{p.label}**: 설정 필요 / not configured — set {need} (environment variable).")
        else:
            model = env.get(p.model_var) or p.default_model
            lines.append(f"- **{p.label}**: 준비됨 / ready — model `{model}` (`{p.model_var}` to change).")
    return lines


def encode_image(pixels: np.ndarray, max_side: int = 1024) -> tuple[str, str]:
    """(mime type, base64) of the image as JPEG, long side at most ``max_side``."""
    image, _ = downscale(Image.fromarray(check_pixels(pixels)), max_side)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return "image/jpeg", base64.b64encode(buffer.getvalue()).decode("ascii")


def build_request(
    provider: Provider, pixels: np.ndarray, prompt: str, env: Mapping[str, str] | None = None
) -> urllib.request.Request:
    """The HTTPS request (not sent). The key travels in a header only, never in the URL."""
    env = os.environ if env is None else env
    gaps = missing(provider, env)
    if gaps:
        raise InputError(f"{provider.label}: set {' and '.join(gaps)} first.")
    model = (env.get(provider.model_var) or provider.default_model).strip()
    base = (env.get(provider.base_var) or provider.default_base or "").strip().rstrip("/")
    if urlsplit(base).scheme not in ("https", "http") or not urlsplit(base).hostname:
        raise InputError(f"{provider.label}: {provider.base_var} must be an http(s) URL.")
    mime, data = encode_image(pixels)
    headers = {"Content-Type": "application/json", "User-Agent": "attention-vit-course-app"}
    if provider.style == "gemini":
        url = f"{base}/models/{model}:generateContent"
        headers["x-goog-api-key"] = env[provider.required[0]].strip()
        body = {
            "contents": [{"parts": [{"text": prompt}, {"inline_data": {"mime_type": mime, "data": data}}]}],
            "generationConfig": {"maxOutputTokens": MAX_ANSWER_TOKENS},
        }
    else:
        url = f"{base}/chat/completions"
        headers["Authorization"] = f"Bearer {env[provider.required[-1]].strip()}"
        body = {
            "model": model,
            "max_tokens": MAX_ANSWER_TOKENS,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": prompt},
                        {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}},
                    ],
                }
            ],
        }
    return urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")


def parse_answer(provider: Provider, payload: dict) -> str:
    """The text of a generateContent or chat/completions response."""
    try:
        if provider.style == "gemini":
            parts = payload["candidates"][0]["content"]["parts"]
            text = "".join(part.get("text", "") for part in parts)
        else:
            content = payload["choices"][0]["message"]["content"]
            text = content if isinstance(content, str) else "".join(c.get("text", "") for c in content)
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ApiError(f"unexpected response shape: {json.dumps(payload)[:300]}") from None
    if not text.strip():
        raise ApiError(f"empty answer: {json.dumps(payload)[:300]}")
    return text.strip()


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return is_online.__wrapped__(parts.hostname, port, PROBE_TIMEOUT_S)  # a fresh probe, not the cached one


def call(
    provider_key: str,
    pixels: np.ndarray,
    prompt: str = DEFAULT_PROMPT,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> ApiAnswer:
    """One real request. Raises :class:`InputError` (not configured, bad input: nothing was sent) or
    :class:`ApiError` (offline, HTTP error, timeout, bad response), each with a scrubbed message."""
    env = os.environ if env is None else env
    provider = PROVIDERS.get(provider_key)
    if provider is None:
        raise InputError(f"알 수 없는 API / Unknown provider {provider_key!r}; use one of {list(PROVIDERS)}.")
    prompt = (prompt or "").strip() or DEFAULT_PROMPT
    request = build_request(provider, pixels, prompt, env)
    host = urlsplit(request.full_url).hostname
    if env.get("COURSE_OFFLINE") == "1" or not _reachable(request.full_url):
        raise ApiError(f"{provider.label}: 오프라인 / offline — {host} is unreachable; nothing was sent.")
    timeout = float(env.get("API_TIMEOUT_S") or DEFAULT_TIMEOUT_S) if timeout is None else timeout
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read().decode("utf-8", "replace"))
        seconds = time.perf_counter() - start
    except urllib.error.HTTPError as err:
        body = err.read(500).decode("utf-8", "replace") if err.fp else ""
        raise ApiError(scrub(f"{provider.label}: HTTP {err.code} {err.reason}: {body}", env)) from None
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise ApiError(
            scrub(f"{provider.label}: request failed ({type(err).__name__}: {reason})", env)
        ) from None
    try:
        text = parse_answer(provider, payload)
    except ApiError as err:
        raise ApiError(scrub(f"{provider.label}: {err}", env)) from None
    model = (env.get(provider.model_var) or provider.default_model).strip()
    return ApiAnswer(provider.label, model, scrub(text, env, patterns=False), seconds)
