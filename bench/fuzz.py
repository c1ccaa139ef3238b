"""Coverage-guided fuzzing of what a client's first bytes reach (not in CI).

    .venv-ci/bin/pip install atheris      # libFuzzer for CPython (wheels for Linux x86-64)
    python -m bench.fuzz --seconds 300 --json bench/results/fuzz.json
    python -m bench.fuzz --iterations 200000

Targets: `parse_config` then `plan_session` (with a registry of scripted engine
names) then the `metadata` reply built from the plan; `parse_control`; and the
faster-whisper model-name lookup (`resolve_model_dir`), which takes the config's
``model`` as a path. The oracle (`outcome`, also used by
tests/unit/test_fuzz_parsers.py): every input gives a result, or an `ASRError`
whose code is in STREAMING.md's error table and whose detail is printable and
short; anything else is a finding. Findings are kept, not fatal, so one run
counts them all; each unique one (exception type, code, the innermost line of
`app/` that raised) is printed with its first input.

Inputs are chosen by atheris (libFuzzer's mutations, guided by the coverage of
the instrumented Python code) and decoded by a `FuzzedDataProvider`: raw text,
or structured JSON with the real field names and hostile values (control and
bidi characters, escaped lone surrogates, NaN/Infinity, duplicate keys, huge
integers), or one of those blown up (strings up to 1 MB, nesting 100,000 deep).
"""

from __future__ import annotations

import argparse
import collections
import inspect
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.asr.models import BUNDLED_MODELS, resolve_model_dir
from app.asr.registry import Registry
from app.errors import ASRError
from app.messages import Metadata, parse_config, parse_control
from app.plan import SessionDefaults, plan_session
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# An error detail is a sentence: `app.errors` cuts it at 600 characters plus a marker.
MAX_DETAIL_CHARS = 700
CONFIG_FIELDS = (
    "sample_rate_hertz",
    "encoding",
    "language_code",
    "backend",
    "model",
    "interim_results",
    "enable_automatic_punctuation",
    "enable_word_time_offsets",
)
SCRIPTED_BACKENDS = ("counting", "slow", "broken", "hanging")


def _table_rows(section: str, pattern: str) -> frozenset[str]:
    text = (ROOT / "STREAMING.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return frozenset(re.findall(pattern, body, re.MULTILINE))


# The contract: STREAMING.md's error table (§6) and close-code table (§7).
DOCUMENTED_CODES = _table_rows("6. Errors", r"^\| `([a-z0-9_]+)` \|")
DOCUMENTED_CLOSE_CODES = frozenset(int(c) for c in _table_rows("7. Close codes", r"^\| (\d{4}) \|"))


class Finding(AssertionError):
    """An input broke the contract without a crash: an undocumented code, a bad detail."""


def check_error(error: ASRError) -> str:
    """The error's code, if the contract allows it; else raise `Finding`."""
    if error.code not in DOCUMENTED_CODES:
        raise Finding(f"undocumented error code {error.code!r}")
    if not error.detail.isprintable():
        raise Finding(f"{error.code}: the detail has unprintable characters")
    if len(error.detail) > MAX_DETAIL_CHARS:
        raise Finding(f"{error.code}: a detail of {len(error.detail)} characters")
    return error.code


def outcome(target: Callable[[], object]) -> str:
    """``"ok"``, or the documented code of the `ASRError` raised; anything else propagates."""
    try:
        target()
    except ASRError as exc:
        return check_error(exc)
    return "ok"


def fuzz_settings() -> Settings:
    return Settings(_env_file=None, default_backend="counting", default_model="counting")


def scripted_registry(settings: Settings) -> Registry:
    """The scripted engines' names, as lazy entries: `plan_session` never imports them."""
    return Registry(
        settings, entries={name: f"tests.support.scripted:{name}" for name in SCRIPTED_BACKENDS}
    )


class ConfigTarget:
    """A first message through everything before the engine: parse, plan, `metadata`."""

    def __init__(self) -> None:
        self.settings = fuzz_settings()
        self.registry = scripted_registry(self.settings)
        self.defaults = SessionDefaults.from_settings(self.settings)

    def __call__(self, text: str) -> None:
        config = parse_config(text)
        plan = plan_session(config, self.settings, self.registry, self.defaults)
        # The reply echoes the plan (a scripted engine takes any model name): it must
        # serialise, or the session fails after its config was accepted.
        Metadata(
            session_id="0" * 12,
            language_code=plan.language_code,
            sample_rate_hertz=plan.sample_rate_hertz,
            encoding=plan.encoding,
            backend=plan.request.backend,
            model=plan.request.model,
        ).to_json().encode("utf-8")


def model_lookup(name: str, cache_dir: Path) -> None:
    """faster-whisper's lookup of a config's ``model`` (bundled names are real loads: skipped)."""
    if name not in BUNDLED_MODELS:
        resolve_model_dir(name, cache_dir)


# --------------------------------------------------------------------------- inputs

# Characters a log pipeline or a terminal acts on, and the JSON tokens Python accepts.
HOSTILE_CHARS = "\x00\x07\x08\t\n\r\x1b\x7f\x85\u2028\u2029\u200b\u200e\u202e\u2066\ufeff\uffff"
HOSTILE_STRINGS = (
    "",
    "en-US",
    "LINEAR16",
    "linear16",
    "lınear16",
    "counting",
    "faster-whisper",
    "tiny.en",
    "~nobody",
    "~\x00",
    "../" * 40 + "etc/passwd",
    "a" * 300,
    "\x1b[2J\x1b[31mred",
    "line\nbreak",
    "\u202eevil",
    "en-US\n",
    "stop",
    "keepalive",
    "finalize",
)
# Escaped in the JSON text, as a client would send them (a raw surrogate is not UTF-8).
SURROGATE_ESCAPES = ('"\\ud800"', '"a\\udfffb"', '"\\ud83d"', '"\\ud83d\\ude00"')
NUMBER_TOKENS = (
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-0",
    "0.0",
    "16000.0",
    "16000",
    "8000",
    "48000",
    "7999",
    "48001",
    "-1",
    "9" * 4300,
    "9" * 4301,
    "1" + "0" * 20,
)


class Writer:
    """JSON text from a `FuzzedDataProvider`: hostile values, duplicate keys, raw tokens."""

    def __init__(self, fdp: Any) -> None:
        self.fdp = fdp

    def pick(self, options: tuple[str, ...]) -> str:
        return options[int(self.fdp.ConsumeIntInRange(0, len(options) - 1))]

    def string(self) -> str:
        kind = self.fdp.ConsumeIntInRange(0, 4)
        if kind == 0:
            return json.dumps(self.pick(HOSTILE_STRINGS), ensure_ascii=self.fdp.ConsumeBool())
        if kind == 1:
            return self.pick(SURROGATE_ESCAPES)
        if kind == 2:
            chars = [
                self.pick(tuple(HOSTILE_CHARS)) for _ in range(self.fdp.ConsumeIntInRange(0, 8))
            ]
            return json.dumps("".join(chars), ensure_ascii=False)
        return json.dumps(
            str(self.fdp.ConsumeUnicodeNoSurrogates(self.fdp.ConsumeIntInRange(0, 64)))
        )

    def value(self, depth: int = 0) -> str:
        kind = self.fdp.ConsumeIntInRange(0, 7 if depth < 3 else 4)
        if kind == 0:
            return self.string()
        if kind == 1:
            return self.pick(NUMBER_TOKENS)
        if kind == 2:
            return self.pick(("true", "false", "null"))
        if kind == 3:
            return str(self.fdp.ConsumeInt(self.fdp.ConsumeIntInRange(1, 16)))
        if kind == 4:
            return self.string()
        if kind == 5:
            items = [self.value(depth + 1) for _ in range(self.fdp.ConsumeIntInRange(0, 3))]
            return "[" + ",".join(items) + "]"
        return self.obj(depth + 1, ("type", *CONFIG_FIELDS))

    def key(self, names: tuple[str, ...]) -> str:
        if self.fdp.ConsumeIntInRange(0, 5) == 0:
            return self.string()
        return json.dumps(self.pick(names))

    def obj(self, depth: int, names: tuple[str, ...]) -> str:
        pairs = [
            f"{self.key(names)}:{self.value(depth)}"
            for _ in range(self.fdp.ConsumeIntInRange(0, 10))
        ]
        return "{" + ",".join(pairs) + "}"

    def config(self) -> str:
        """Mostly a valid config with one field made hostile (deeper code is reached)."""
        fields: dict[str, str] = {"sample_rate_hertz": "16000", "encoding": '"LINEAR16"'}
        for _ in range(self.fdp.ConsumeIntInRange(0, 4)):
            fields[self.pick(CONFIG_FIELDS)] = self.value(1)
        pairs = [f"{json.dumps(k)}:{v}" for k, v in fields.items()]
        if self.fdp.ConsumeIntInRange(0, 3) == 0:  # a duplicate key: the last one wins
            pairs.append(f"{self.key(CONFIG_FIELDS)}:{self.value(1)}")
        return "{" + ",".join(pairs) + "}"

    def control(self) -> str:
        pairs = [f'"type":{self.value(2)}'] if self.fdp.ConsumeBool() else []
        pairs.append(f'"type":"{self.pick(("stop", "keepalive", "finalize"))}"')
        if self.fdp.ConsumeBool():
            pairs.append(f"{self.key(('type', 'id', *CONFIG_FIELDS))}:{self.value(1)}")
        return "{" + ",".join(pairs[self.fdp.ConsumeIntInRange(0, len(pairs) - 1) :]) + "}"

    def blown_up(self) -> str:
        """One input scaled up: a huge string, deep nesting, a long number, many keys."""
        size = int(self.fdp.ConsumeIntInRange(0, 1_000_000))
        kind = self.fdp.ConsumeIntInRange(0, 4)
        if kind == 0:
            field = self.pick(("type", *CONFIG_FIELDS))
            return f'{{"sample_rate_hertz":16000,"encoding":"LINEAR16","{field}":"{"x" * size}"}}'
        if kind == 1:
            depth = size % 100_001
            return '{"type":' + "[" * depth + "]" * depth + "}"
        if kind == 2:
            depth = size % 100_001
            return '{"a":' * depth + "0" + "}" * depth
        if kind == 3:
            return '{"sample_rate_hertz":' + "9" * (size % 20_000 + 1) + ',"encoding":"LINEAR16"}'
        keys = ",".join(f'"k{i}":0' for i in range(size % 50_000))
        return "{" + keys + "}"


class Fuzzer:
    """One input per call; counts iterations, outcomes, crashes and unique findings."""

    def __init__(self, cache_dir: Path) -> None:
        self.config = ConfigTarget()
        self.cache_dir = cache_dir
        self.iterations = 0
        self.crashes = 0
        self.oracle_findings = 0
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.findings: dict[str, dict[str, str]] = {}

    def one(self, fdp: Any) -> None:
        self.iterations += 1
        writer = Writer(fdp)
        mode = fdp.ConsumeIntInRange(0, 6)
        label, text = "", ""
        try:
            if mode == 0:
                label, text = "config", fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
            elif mode == 1:
                label, text = "control", fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
            elif mode == 2:
                label, text = "config", writer.config()
            elif mode == 3:
                label, text = "control", writer.control()
            elif mode == 4:
                label = "config" if fdp.ConsumeBool() else "control"
                text = writer.blown_up() if fdp.ConsumeBool() else writer.obj(0, CONFIG_FIELDS)
            elif mode == 5:
                label, text = "control", writer.obj(0, ("type", "id", *CONFIG_FIELDS))
            else:
                label, text = "model", fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 5000))
            self.outcomes[f"{label}:{self.run(label, text)}"] += 1
        except Exception as exc:
            self.record(label, text, exc)

    def run(self, label: str, text: str) -> str:
        if label == "config":
            return outcome(lambda: self.config(text))
        if label == "control":
            return outcome(lambda: parse_control(text))
        return outcome(lambda: model_lookup(text, self.cache_dir))

    def record(self, label: str, text: str, exc: Exception) -> None:
        if isinstance(exc, Finding):
            self.oracle_findings += 1
        else:
            self.crashes += 1
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/app/" in f.filename]
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        # The message only for the oracle's findings: an OSError's names the input.
        why = f": {exc}" if isinstance(exc, Finding) else ""
        key = f"{label}: {type(exc).__name__} at {where}{why}"
        if key not in self.findings:
            example = text if len(text) <= 200 else text[:200] + f"…({len(text)} characters)"
            self.findings[key] = {"error": str(exc)[:200], "input": example}
            print(f"\nFINDING {key}\n  input: {example!r}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=0, help="stop after N inputs")
    parser.add_argument("--seconds", type=float, default=60.0, help="stop after S seconds")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--max-len", type=int, default=4096, help="libFuzzer's -max_len")
    args = parser.parse_args(argv)
    try:
        import atheris  # type: ignore[import-untyped]
    except ImportError:
        raise SystemExit("bench.fuzz needs atheris: .venv-ci/bin/pip install atheris") from None

    work = Path(tempfile.mkdtemp(prefix="asr-fuzz-"))
    corpus = work / "corpus"
    corpus.mkdir()
    seeds = [
        '{"sample_rate_hertz": 16000, "encoding": "LINEAR16"}',
        '{"sample_rate_hertz": 8000, "encoding": "linear16", "language_code": "ar-EG", '
        '"backend": "counting", "model": "x", "interim_results": false}',
        '{"type": "stop"}',
        '{"type": "keepalive", "id": 7}',
    ]
    for i, seed in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(bytes([i % 2]) + seed.encode())
    tokens = work / "tokens.dict"
    words = [
        *CONFIG_FIELDS,
        "type",
        "stop",
        "keepalive",
        "finalize",
        "LINEAR16",
        *NUMBER_TOKENS[:6],
    ]
    tokens.write_text("".join(f"{json.dumps(w)}\n" for w in [*words, *(f'"{w}"' for w in words)]))

    fuzzer = Fuzzer(work / "models")
    # Run once to import everything the targets use, then instrument the service's code
    # for coverage (not all 9,000 functions loaded: `instrument_all` took 80 s here).
    fuzzer.one(atheris.FuzzedDataProvider(b"\x02" + seeds[0].encode()))
    print(f"instrumented {instrument_service(atheris)} functions of app/", file=sys.stderr)
    fuzzer.iterations = 0
    fuzzer.outcomes.clear()
    started = time.monotonic()
    limit_runs = args.iterations or sys.maxsize

    def test_one_input(data: bytes) -> None:
        fuzzer.one(atheris.FuzzedDataProvider(data))
        elapsed = time.monotonic() - started
        if fuzzer.iterations >= limit_runs or elapsed >= args.seconds:
            report(fuzzer, elapsed, args, atheris_version(atheris))
            sys.stdout.flush()
            sys.stderr.flush()
            shutil.rmtree(work, ignore_errors=True)  # the corpus; findings are in the report
            os._exit(1 if fuzzer.findings else 0)  # libFuzzer's loop has no other way out

    libfuzzer_args = [
        sys.argv[0],
        f"-dict={tokens}",
        f"-max_len={args.max_len}",
        "-rss_limit_mb=4096",
        "-timeout=30",
        "-print_final_stats=1",
        str(corpus),
    ]
    atheris.Setup(libfuzzer_args, test_one_input)
    atheris.Fuzz()


def instrument_service(atheris: Any) -> int:
    """Instrument every function and method of the loaded ``app`` modules, in place."""
    done: set[int] = set()

    def visit(obj: Any) -> None:
        if inspect.isfunction(obj) and obj.__module__.startswith("app") and id(obj) not in done:
            done.add(id(obj))
            atheris.instrument_func(obj)

    for name, module in list(sys.modules.items()):
        if name != "app" and not name.startswith("app."):
            continue
        for obj in vars(module).values():
            visit(obj)
            if inspect.isclass(obj) and obj.__module__ == name:
                for member in vars(obj).values():
                    visit(getattr(member, "__func__", member))
                    if isinstance(member, property):
                        for accessor in (member.fget, member.fset):
                            if accessor is not None:
                                visit(accessor)
    return len(done)


def atheris_version(module: Any) -> str:
    import importlib.metadata

    try:
        return f"atheris {importlib.metadata.version('atheris')}"
    except importlib.metadata.PackageNotFoundError:
        return f"atheris {getattr(module, '__version__', '?')}"


def report(fuzzer: Fuzzer, elapsed: float, args: argparse.Namespace, engine: str) -> None:
    figures = {
        "engine": engine,
        "python": platform.python_version(),
        "cores": len(os.sched_getaffinity(0)),
        "seconds": round(elapsed, 1),
        "iterations": fuzzer.iterations,
        "iterations_per_second": round(fuzzer.iterations / max(elapsed, 1e-9)),
        "crashes": fuzzer.crashes,
        "contract_findings": fuzzer.oracle_findings,
        "unique_findings": len(fuzzer.findings),
        "findings": fuzzer.findings,
        "outcomes": dict(sorted(fuzzer.outcomes.items())),
    }
    print(
        f"\nfuzz: {fuzzer.iterations} iterations in {elapsed:.0f} s "
        f"({figures['iterations_per_second']}/s), {len(fuzzer.findings)} unique findings, "
        f"{fuzzer.crashes} crashes, {fuzzer.oracle_findings} contract findings"
    )
    print("outcomes:", json.dumps(figures["outcomes"]))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
