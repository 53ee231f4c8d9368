"""The MM-Vet LLM judge: an OpenAI-compatible chat endpoint grading answers against ground truth.

MM-Vet's official grader asks ``gpt-4-0613`` (temperature 0, ``max_tokens=3``) to complete a few-shot
table with a correctness in [0, 1]. When the reply does not start with such a number, it asks again
with "Predict the correctness of the answer (digit): " appended and a temperature raised by 0.5 per
retry; after 5 failed replies the score is 0. Scores depend on the judge, so every result records
:meth:`MMVetJudge.identity`.

Configuration: arguments, else the environment variables ``IMP_JUDGE_BASE_URL`` (e.g.
``https://api.openai.com/v1`` or a local ``http://127.0.0.1:8080/v1`` llama.cpp / vLLM server),
``IMP_JUDGE_MODEL`` and ``IMP_JUDGE_API_KEY`` (optional for local servers). With no base URL or model,
:meth:`MMVetJudge.from_env` returns ``None`` and MM-Vet results are "ungraded".

Offline, :class:`ExactMatchJudge` gives MM-Vet a number without any endpoint: 1.0 when the normalized
prediction equals one ``<OR>`` alternative of the ground truth (an alternative joined by ``<AND>`` needs
every part present), else 0.0. It is *not* the official GPT-4 judge and says so in its identity; it is
meant for the synthetic suite and for comparing runtimes, not for published numbers. Choose it with
``MMVet(judge="exact")`` or ``IMP_JUDGE=exact`` (which wins over the ``IMP_JUDGE_*`` endpoint);
:func:`judge_from_env` resolves the environment.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.base import BenchmarkError
from benchmarks.normalize import evalai_process

ENV_JUDGE = "IMP_JUDGE"  # "exact": the offline exact-match grader
ENV_BASE_URL = "IMP_JUDGE_BASE_URL"
ENV_MODEL = "IMP_JUDGE_MODEL"
ENV_API_KEY = "IMP_JUDGE_API_KEY"

OFFICIAL_JUDGE_MODEL = "gpt-4-0613"
TEMPERATURE = 0.0
MAX_TOKENS = 3
MAX_ATTEMPTS = 5  # replies that fail to parse before the score is 0
TEMPERATURE_STEP = 0.5
RETRY_SUFFIX = "\nPredict the correctness of the answer (digit): "

EXACT_JUDGE = "exact"  # the name that selects ExactMatchJudge (MMVet(judge=...), IMP_JUDGE)
EXACT_JUDGE_MODEL = "exact-match"
EXACT_JUDGE_BASE_URL = "offline"
EXACT_JUDGE_DESCRIPTION = "offline exact-match grader, not the official GPT-4 judge"

_MEME_TRUTH = (
    "This meme is poking fun at the fact that the names of the countries Iceland and Greenland are "
    "misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland "
    "is mostly covered in ice and snow. The meme is saying that the person has trust issues because the "
    "names of these countries do not accurately represent their landscapes."
)
_MEME_PARTIAL = (
    "The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is "
    "not very icy and Greenland isn't very green."
)
_MEME_FULL = (
    "The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. "
    "Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and "
    "snow. The text 'This is why I have trust issues' is a playful way to suggest that these "
    "contradictions can lead to distrust or confusion. The humor in this meme is derived from the "
    "unexpected contrast between the names of the countries and their actual physical characteristics."
)

# The official few-shot grading prompt of MM-Vet (v1), byte for byte.
GRADER_PROMPT = (
    "Compare the ground truth and prediction from AI models, to give a correctness score for the "
    "prediction. <AND> in the ground truth means it is totally right only when all elements in the "
    "ground truth are present in the prediction, and <OR> means it is totally right when any one element "
    "in the ground truth is present in the prediction. The correctness score is 0.0 (totally wrong), "
    "0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space "
    "of the correctness score.\n"
    "\n"
    "Question | Ground truth | Prediction | Correctness\n"
    "--- | --- | --- | ---\n"
    "What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0\n"
    "What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5\n"
    "What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5\n"
    "What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5\n"
    "What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0\n"
    f"Can you explain this meme? | {_MEME_TRUTH} | {_MEME_PARTIAL} | 0.4\n"
    f"Can you explain this meme? | {_MEME_TRUTH} | {_MEME_FULL} | 1.0\n"
)
PROMPT_SHA256 = hashlib.sha256(GRADER_PROMPT.encode("utf-8")).hexdigest()


class JudgeError(BenchmarkError):
    """The judge endpoint could not be reached or refused the request."""


def grading_prompt(question: str, ground_truth: str, prediction: str, retry: bool = False) -> str:
    """The judge's user message for one sample (``retry`` adds the digit reminder)."""
    truth = ground_truth.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    text = GRADER_PROMPT + "\n" + " | ".join([question, truth, prediction, ""])
    return text + RETRY_SUFFIX if retry else text


def parse_judge_score(content: str | None) -> float | None:
    """The correctness in a judge reply (its first space-separated token), ``None`` if invalid."""
    token = (content or "").split(" ")[0].strip()
    try:
        score = float(token)
    except ValueError:
        return None
    return score if 0.0 <= score <= 1.0 else None


@dataclass
class JudgeGrade:
    score: float
    content: str
    attempts: int
    model: str | None

    def to_dict(self) -> dict:
        return {"score": self.score, "content": self.content, "attempts": self.attempts, "model": self.model}


class MMVetJudge:
    """Grades MM-Vet answers through an OpenAI-compatible ``/chat/completions`` endpoint (httpx)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_http_retries: int = 5,
        backoff: float = 1.0,
    ):
        try:
            import httpx
        except ImportError:
            raise JudgeError("the MM-Vet judge needs httpx: pip install 'impvlm[bench]'") from None
        self._httpx = httpx
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_http_retries = max_http_retries
        self.backoff = backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self.response_models: set[str] = set()
        self.requests = 0

    @classmethod
    def from_env(
        cls, base_url: str | None = None, model: str | None = None, api_key: str | None = None, **kwargs: Any
    ) -> MMVetJudge | None:
        """A judge from arguments, else ``IMP_JUDGE_*`` variables; ``None`` when not configured."""
        base_url = base_url or os.environ.get(ENV_BASE_URL) or None
        model = model or os.environ.get(ENV_MODEL) or None
        api_key = api_key or os.environ.get(ENV_API_KEY) or None
        if not base_url or not model:
            return None
        return cls(base_url, model, api_key, **kwargs)

    def identity(self) -> dict:
        """What produced the grades (never the API key)."""
        return {
            "base_url": self.base_url,
            "model": self.model,
            "response_models": sorted(self.response_models),
            "official_model": OFFICIAL_JUDGE_MODEL,
            "is_official_model": self.model == OFFICIAL_JUDGE_MODEL,
            "temperature": TEMPERATURE,
            "max_tokens": MAX_TOKENS,
            "max_attempts": MAX_ATTEMPTS,
            "prompt": "mm-vet v1 official few-shot",
            "prompt_sha256": PROMPT_SHA256,
            "requests": self.requests,
        }

    def complete(self, prompt: str, temperature: float) -> tuple[str, str | None]:
        """One chat completion: ``(content, model reported by the server)``."""
        url = f"{self.base_url}/chat/completions"
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": temperature,
            "max_tokens": MAX_TOKENS,
        }
        httpx = self._httpx
        last = ""
        for attempt in range(self.max_http_retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), 30.0))
            self.requests += 1
            try:
                response = self._client.post(url, json=payload)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise JudgeError(
                    f"MM-Vet judge {url} answered HTTP {response.status_code}: {response.text[:200]!r}"
                )
            try:
                data = response.json()
                content = data["choices"][0]["message"].get("content") or ""
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                raise JudgeError(f"MM-Vet judge {url} sent a reply that is not a chat completion") from None
            model = data.get("model") if isinstance(data, dict) else None
            if model:
                self.response_models.add(str(model))
            return str(content), model
        raise JudgeError(f"MM-Vet judge {url} failed after {self.max_http_retries + 1} tries ({last})")

    def grade(self, question: str, ground_truth: str, prediction: str) -> JudgeGrade:
        """Correctness of ``prediction`` in [0, 1] with the official retry schedule."""
        content, model = self.complete(grading_prompt(question, ground_truth, prediction), TEMPERATURE)
        score = parse_judge_score(content)
        attempts = 1
        temperature = TEMPERATURE
        while score is None and attempts < MAX_ATTEMPTS:
            retry = grading_prompt(question, ground_truth, prediction, retry=True)
            content, model = self.complete(retry, temperature)
            temperature += TEMPERATURE_STEP
            attempts += 1
            score = parse_judge_score(content)
        return JudgeGrade(0.0 if score is None else score, content, attempts, model)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> MMVetJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MMVetJudge(base_url={self.base_url!r}, model={self.model!r})"


# ----------------------------------------------------------------------------------------------
# The offline exact-match grader
# ----------------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return evalai_process(text).split()


def _contains(haystack: list[str], needle: list[str]) -> bool:
    """Whether ``needle`` occurs in ``haystack`` as a run of whole words."""
    n = len(needle)
    return n > 0 and any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def exact_match_score(ground_truth: str, prediction: str) -> float:
    """1.0 when ``prediction`` matches one ``<OR>`` alternative of ``ground_truth``, else 0.0.

    Both sides go through the EvalAI answer processor (lower case, punctuation, articles, number words:
    "Three." matches "3"). A plain alternative must equal the whole prediction; an alternative with
    ``<AND>`` matches when every part occurs in the prediction as whole words.
    """
    predicted = _words(prediction)
    for alternative in ground_truth.split("<OR>"):
        parts = [_words(part) for part in alternative.split("<AND>")]
        parts = [p for p in parts if p]
        if not parts:
            continue
        if len(parts) == 1 and "<AND>" not in alternative:
            if predicted == parts[0]:
                return 1.0
        elif all(_contains(predicted, part) for part in parts):
            return 1.0
    return 0.0


class ExactMatchJudge:
    """Grades MM-Vet answers offline by exact match (see :func:`exact_match_score`); no LLM involved.

    Same interface as :class:`MMVetJudge` (``grade`` / ``identity`` / ``close``). Its identity names it
    as the offline exact-match grader, so results can never pass for the official judge's.
    """

    model = EXACT_JUDGE_MODEL
    base_url = EXACT_JUDGE_BASE_URL

    def __init__(self) -> None:
        self.requests = 0  # grades given (no request leaves the machine)

    def identity(self) -> dict:
        return {
            "judge": EXACT_JUDGE,
            "description": EXACT_JUDGE_DESCRIPTION,
            "offline": True,
            "base_url": EXACT_JUDGE_BASE_URL,
            "model": EXACT_JUDGE_MODEL,
            "response_models": [],
            "official_model": OFFICIAL_JUDGE_MODEL,
            "is_official_model": False,
            "rule": (
                "1.0 iff the EvalAI-normalized prediction equals a <OR> alternative of the ground truth "
                "(an <AND> alternative: every part present as whole words), else 0.0"
            ),
            "requests": self.requests,
        }

    def grade(self, question: str, ground_truth: str, prediction: str) -> JudgeGrade:
        self.requests += 1
        score = exact_match_score(ground_truth, prediction)
        return JudgeGrade(score, f"{score:.1f}", 1, EXACT_JUDGE_MODEL)

    def close(self) -> None:
        pass

    def __enter__(self) -> ExactMatchJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "ExactMatchJudge()"


Judge = MMVetJudge | ExactMatchJudge


def make_judge(name: str) -> ExactMatchJudge:
    """The judge called ``name`` (only ``"exact"``: LLM judges need an endpoint, see MMVetJudge)."""
    if name.strip().lower() == EXACT_JUDGE:
        return ExactMatchJudge()
    raise JudgeError(
        f"unknown MM-Vet judge {name!r}: use {EXACT_JUDGE!r}, "
        f"or an LLM endpoint via {ENV_BASE_URL} + {ENV_MODEL}"
    )


def judge_from_env() -> Judge | None:
    """``IMP_JUDGE=exact`` -> :class:`ExactMatchJudge`; else :meth:`MMVetJudge.from_env` (maybe ``None``)."""
    name = os.environ.get(ENV_JUDGE, "").strip()
    if name:
        return make_judge(name)
    return MMVetJudge.from_env()
