"""What importing edged costs: heavy modules it does not need stay out of its process
(each one is MBs of RSS on a board; `edgectl bench --scenarios footprint` measures them)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import edge.rules

NOT_IN_EDGED = [
    "numpy",  # flatbuffers' optional helpers (edge.wire.fb hides it)
    "click",  # edged parses its command line with argparse (edgectl and edge-sync use click)
    "http.server",  # prometheus_client's server (edge.runtime._prom serves the page itself)
    "prometheus_client",
    "email",
    "ssl",
    "yaml",  # the rule-text compiler: only when edged loads a rule *text* file
    "edge.rules._source",
    "edge.rules._compiler",
    "edge.rules._parser",
    "edge.rules._lexer",
    "edge.rules._replay",
    "difflib",
    "csv",
    "nacl",  # Ed25519: only when trusted keys are configured
    "_hashlib",  # OpenSSL's libcrypto, ~3.5 MB: edge._digest uses CPython's built-in hashes
    "hashlib",
    "secrets",
    "tomllib",  # only when a config file is given (~0.5 MB)
    "psutil",  # aggregates read /proc and /sys directly
    "shutil",
]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_importing_edged_leaves_out_what_it_does_not_need() -> None:
    loaded = _modules_after("from edge.runtime import main")  # what the edged script runs
    assert "edge.runtime._daemon" in loaded  # the probe works
    assert [m for m in NOT_IN_EDGED if m in loaded] == []


def test_a_rule_text_file_loads_the_compiler_on_demand() -> None:
    loaded = _modules_after(
        "from edge.runtime import main\n"
        "from edge.rules import parse_rule_text\n"
        "parse_rule_text('- {rule_id: a, rule_content: x > 1, action: alert, priority: 1, "
        "sla_threshold: 5}')\n"
    )
    assert {"yaml", "edge.rules._source", "edge.rules._compiler"} <= loaded
    assert "nacl" not in loaded and "numpy" not in loaded


def test_trusted_keys_load_nacl_on_demand() -> None:
    loaded = _modules_after(
        "from edge.rules import load_trusted_keys\n"
        "import sys; assert 'nacl' not in sys.modules\n"
        "load_trusted_keys(['00' * 32])\n"
    )
    assert "nacl.signing" in loaded


@pytest.mark.parametrize("name", sorted(edge.rules._LAZY))
def test_every_lazy_rules_name_is_the_defining_modules_object(name: str) -> None:
    module = importlib.import_module(f"edge.rules.{edge.rules._LAZY[name]}")
    assert getattr(edge.rules, name) is getattr(module, name)
    assert name in dir(edge.rules)


def test_an_unknown_rules_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'compile_everything'"):
        edge.rules.compile_everything  # noqa: B018
