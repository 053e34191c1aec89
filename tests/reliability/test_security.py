"""Security promises, checked on the source itself (AST, so comments and docstrings cannot fool
them) and dynamically with hostile names:

- models load only from safetensors (or a GGUF file), offline, never with remote code; torch.load
  only with weights_only=True; no pickle, eval/exec or unsafe YAML;
- no shell strings: no shell=True, os.system or os.popen;
- SQL text comes from sql/*.sql with $params bound: no f-string, %, + or .format() SQL;
- the Prefect server in the docs, deploy/ and tests binds to 127.0.0.1, never 0.0.0.0;
- hostile domain names, run names and raw file names never reach a path, SQL or a shell.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from cprec_core.artifacts import PROJECT_ROOT, read_table
from cprec_core.behaviors import build_behaviors
from cprec_core.config import ConfigError, config_from_dict, load_config
from cprec_core.corpus import build_corpus
from cprec_core.ingest.common import IngestError
from cprec_core.ingest.run import run_ingest
from cprec_core.schema import BRONZE_INTERACTIONS, GOLD_CORPUS, SILVER_EVENTS
from cprec_core.stages import SPECS, STAGES

CODE_DIRS = ("cprec_core", "tasks", "flows")
SQL_METHODS = {"execute", "executemany", "sql", "query"}
# f-string SQL that is allowed: identifiers taken from cprec_core/schema.py and module constants,
# never from config or data (reviewed; values are still bound as $params). _export_queries hands
# the reads it builds to _read_ahead, which runs them on a second connection.
REVIEWED_SQL_BUILDERS = {("cprec_core/behaviors.py", "_export_queries")}


def sources() -> Iterator[tuple[str, ast.Module]]:
    for d in CODE_DIRS:
        for path in sorted((PROJECT_ROOT / d).rglob("*.py")):
            rel = path.relative_to(PROJECT_ROOT).as_posix()
            yield rel, ast.parse(path.read_text(), filename=rel)


def calls(tree: ast.AST) -> Iterator[tuple[ast.Call, ast.FunctionDef | None]]:
    """Every call with the function it sits in (None at module level)."""

    def walk(node: ast.AST, fn: ast.FunctionDef | None) -> Iterator[tuple[ast.Call, ast.FunctionDef | None]]:
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else fn
            if isinstance(child, ast.Call):
                yield child, fn
            yield from walk(child, inner)

    yield from walk(tree, None)


def dotted(node: ast.AST) -> str:
    """`torch.load` for Attribute(Name('torch'), 'load'); '' when not a plain dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def keyword_value(call: ast.Call, fn: ast.FunctionDef | None, name: str) -> object:
    """The literal value of keyword `name` of `call`, also through `**kwargs` built as a dict
    literal in the same function; None when absent, "<expr>" when given but not a literal."""
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
        if kw.arg is None and isinstance(kw.value, ast.Name) and fn is not None:
            for node in ast.walk(fn):
                if (
                    isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == kw.value.id for t in node.targets)
                    and isinstance(node.value, ast.Dict)
                ):
                    for k, v in zip(node.value.keys, node.value.values, strict=True):
                        if isinstance(k, ast.Constant) and k.value == name:
                            return v.value if isinstance(v, ast.Constant) else "<expr>"
    return None


def where(rel: str, call: ast.Call) -> str:
    return f"{rel}:{call.lineno}: {ast.unparse(call)[:120]}"


def test_no_pickle_eval_exec_or_unsafe_yaml() -> None:
    banned_modules = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
    found = []
    for rel, tree in sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                found += [
                    f"{rel}:{node.lineno}: import {n}" for n in names if n.split(".")[0] in banned_modules
                ]
        for call, _ in calls(tree):
            name = dotted(call.func)
            if name in {"eval", "exec", "yaml.load", "yaml.unsafe_load", "yaml.full_load", "numpy.load"}:
                found.append(where(rel, call))
            if name in {"np.load"} and keyword_value(call, None, "allow_pickle") is not False:
                found.append(where(rel, call))
    assert found == []


def test_torch_load_is_weights_only() -> None:
    # torch.load unpickles unless weights_only=True: a checkpoint file must never run code.
    found = [
        where(rel, call)
        for rel, tree in sources()
        for call, fn in calls(tree)
        if dotted(call.func).endswith("torch.load") and keyword_value(call, fn, "weights_only") is not True
    ]
    assert found == [], "torch.load without weights_only=True:\n" + "\n".join(found)


def test_models_load_offline_from_safetensors_without_remote_code() -> None:
    # Every from_pretrained is offline (local_files_only=True), never trusts remote code, and a
    # model's weights (not a tokenizer's files) come from safetensors or a GGUF file, never a
    # pickled pytorch_model.bin.
    offline, weights, remote = [], [], []
    for rel, tree in sources():
        for call, fn in calls(tree):
            name = dotted(call.func)
            if not name.endswith(".from_pretrained"):
                continue
            if keyword_value(call, fn, "local_files_only") is not True:
                offline.append(where(rel, call))
            if keyword_value(call, fn, "trust_remote_code") is True:
                remote.append(where(rel, call))
            is_model = "Tokenizer" not in name and "Config" not in name
            safe = keyword_value(call, fn, "use_safetensors") is True or keyword_value(call, fn, "gguf_file")
            # (GGUF is a flat tensor format, no pickle)
            if is_model and not safe:
                weights.append(where(rel, call))
    assert offline == [], "from_pretrained without local_files_only=True:\n" + "\n".join(offline)
    assert remote == []
    assert weights == [], "model weights loaded without use_safetensors=True:\n" + "\n".join(weights)


def test_no_shell_strings() -> None:
    found = []
    for rel, tree in sources():
        for call, _ in calls(tree):
            name = dotted(call.func)
            if name in {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"}:
                found.append(where(rel, call))
            if any(kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False)
                   for kw in call.keywords):  # fmt: skip
                found.append(where(rel, call))
            if (
                name.startswith("subprocess.")
                and call.args
                and isinstance(call.args[0], ast.JoinedStr | ast.BinOp)
            ):
                found.append(where(rel, call))  # a command built as one string
    assert found == []


def _is_built_string(node: ast.AST) -> bool:
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return True
    return isinstance(node, ast.Call) and dotted(node.func).endswith(".format")


def test_sql_is_never_built_from_strings() -> None:
    # A connection's execute/sql/query gets SQL text from sql/*.sql (cprec_core/sql.py) or a
    # constant; a string built with f"", %, + or .format() is refused, also when assigned to a
    # variable first in the same function, unless the builder is listed (and reviewed) above.
    found = []
    for rel, tree in sources():
        for call, fn in calls(tree):
            if not (isinstance(call.func, ast.Attribute) and call.func.attr in SQL_METHODS and call.args):
                continue
            if dotted(call.func).startswith(("sql.", "self.", "cprec_core.sql.")):
                continue  # cprec_core.sql.query(con, "<file name>") and non-connection methods
            arg = call.args[0]
            built = _is_built_string(arg)
            if isinstance(arg, ast.Name) and fn is not None:
                built = any(
                    isinstance(n, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == arg.id for t in n.targets)
                    and _is_built_string(n.value)
                    for n in ast.walk(fn)
                )
            if built and (rel, fn.name if fn else "") not in REVIEWED_SQL_BUILDERS:
                found.append(where(rel, call))
    assert found == []


def test_sql_files_bind_values_as_params() -> None:
    # sql/*.sql hold no Python placeholders ({name}, %s) and no quoted literal of a config value:
    # domain names and thresholds arrive as $params.
    files = sorted((PROJECT_ROOT / "sql").glob("*.sql"))
    assert files
    for path in files:
        text = "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("--"))
        assert not re.search(r"\{[a-z_]*\}|%s|%\(", text), path.name
    params = {m for p in files for m in re.findall(r"\$([a-z_]+)", p.read_text())}
    assert {"pretrain", "downstream", "k", "min_title_chars", "min_sequence_len"} <= params


def test_prefect_server_binds_to_loopback_only() -> None:
    # Everywhere we start or document a Prefect server, it listens on 127.0.0.1 only.
    texts = {"README.md": (PROJECT_ROOT / "README.md").read_text()}
    for d in ("deploy", "tests", "flows", ".ci", "configs"):
        for p in (PROJECT_ROOT / d).rglob("*"):
            if p.is_file() and p.suffix in {".py", ".md", ".yaml", ".yml", ".json", ".sh", ".toml", ""}:
                texts[p.relative_to(PROJECT_ROOT).as_posix()] = p.read_text(errors="replace")
    texts["Makefile"] = (PROJECT_ROOT / "Makefile").read_text()
    this = Path(__file__).relative_to(PROJECT_ROOT).as_posix()
    wildcard = [name for name, t in texts.items() if "0.0.0.0" in t and name != this]
    assert wildcard == []
    starts = [
        (name, line.strip())
        for name, t in texts.items()
        if name != this
        for line in t.splitlines()
        if re.search(r"server\W+start", line) and "prefect" in line
    ]
    assert starts, "no Prefect server start found: the check would be empty"
    for name, line in starts:
        assert re.search(r"--host\W+127\.0\.0\.1", line), f"{name}: {line}"


# --------------------------------------------------------------------------------------------
# Dynamic: hostile names

HOSTILE = ["Books;DROP TABLE x", "../etc", "Books' OR '1'='1", "$(touch pwned)", "a/b", "Books\n", "", "é"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_domain_names_are_rejected_everywhere_in_config(name: str) -> None:
    # every config key that names a domain: the one-line error names the key
    for key, value in [
        ("domains.pretrain", [name]),
        ("domains.downstream", [name]),
        ("synth.domains", [name]),
        ("ingest.sources", [{"format": "amazon2023", "path": "raw", "domains": [name]}]),
        ("ingest.sources", [{"format": "amazon2023", "path": "raw", "rename": {"x": name}}]),
    ]:
        section, field = key.split(".")
        with pytest.raises(ConfigError, match=rf"{field}.*domain name|{field}.*must match"):
            config_from_dict({section: {field: value}})


@pytest.mark.parametrize("name", ["../../escape", "/abs/path", "a/b", "x\n"])
def test_hostile_run_name_is_rejected(name: str, tmp_path: Path) -> None:
    # cfg.name becomes models/cpt/<name>, models/rec/<name> and reports/<name> under the run root;
    # a name with a path separator or '..' would write (and clear work dirs) outside it.
    try:
        cfg = config_from_dict({"name": name, "paths": {"root": str(tmp_path / "root")}})
    except ConfigError:
        return
    root = (tmp_path / "root").resolve()
    outside = [str(p) for s in STAGES for p in SPECS[s].outputs(cfg) if not p.resolve().is_relative_to(root)]
    assert outside == [], f"name={name!r} accepted; outputs escape the run root: {outside}"


def _review(user: str, item: str, ms: int) -> str:
    return json.dumps({"user_id": user, "parent_asin": item, "rating": 5.0, "timestamp": ms})


def _write_domain(raw: Path, stem: str, n_users: int = 4) -> None:
    # 4 users x 4 items (k-core 2 keeps them all), titles with SQL and shell characters
    lines = [
        _review(f"U{u}", f"I{i}", 1_600_000_000_000 + 1000 * (u * 10 + i))
        for u in range(n_users)
        for i in range(4)
    ]
    (raw / f"{stem}.jsonl").write_text("\n".join(lines) + "\n")
    meta = [
        json.dumps({"parent_asin": f"I{i}", "title": f"Item {i}'; DROP TABLE x; -- $(touch pwned)"})
        for i in range(4)
    ]
    (raw / f"meta_{stem}.jsonl").write_text("\n".join(meta) + "\n")


@pytest.mark.parametrize(
    "stem", ["Books;DROP TABLE x", "Books' OR '1'='1", "$(touch pwned)", "..", "Books%s{x}", "Bo oks"]
)
def test_hostile_raw_file_names_are_refused_then_renamed(stem: str, tmp_path: Path, monkeypatch) -> None:
    # A raw file named after a hostile domain stops ingest with a one-line error naming the file
    # and the fix (ingest.sources[].rename); nothing is written, nothing runs. Renamed to a valid
    # domain, the same file goes through ingest → behaviors → corpus, its name only a quarantine
    # string, its titles' SQL only text.
    monkeypatch.chdir(tmp_path)  # a `touch pwned` that ran anywhere relative would land here
    raw = tmp_path / "raw"
    raw.mkdir()
    _write_domain(raw, stem)
    _write_domain(raw, "Toys")
    settings = [
        f"paths.root={tmp_path / 'root'}",
        "domains.pretrain=[Books, Toys]",
        "domains.downstream=[]",
        "behaviors.k_core=2",
    ]
    source = f"{{format: amazon2023, path: '{raw}'}}"
    cfg = load_config(None, [*settings, f"ingest.sources=[{source}]"])
    with pytest.raises(IngestError, match=r"domain name .* must match .*ingest.sources\[\]\.rename") as err:
        run_ingest(cfg)
    assert stem in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "root" / "bronze").exists()

    renamed = {"format": "amazon2023", "path": str(raw), "rename": {stem: "Books"}}
    cfg = config_from_dict({**cfg.model_dump(mode="json"), "ingest": {"sources": [renamed]}})
    summary = run_ingest(cfg)
    assert summary["domains"]["Books"] == {"interactions": 16, "items": 4, "quarantined": 0}
    build_behaviors(cfg)
    build_corpus(cfg)
    assert {r["domain"] for r in read_table(SILVER_EVENTS, cfg.root).to_pylist()} == {"Books", "Toys"}
    assert read_table(BRONZE_INTERACTIONS, cfg.root).num_rows == 32
    texts = read_table(GOLD_CORPUS, cfg.root)["text"].to_pylist()
    assert any("Item 0'; DROP TABLE x; -- $(touch pwned)" in t for t in texts)
    assert not list(tmp_path.rglob("pwned")) and not Path("/tmp/pwned").exists()
    # every file written stays under the run root (plus the raw inputs we made)
    assert {p.relative_to(tmp_path).parts[0] for p in tmp_path.iterdir()} == {"raw", "root"}
