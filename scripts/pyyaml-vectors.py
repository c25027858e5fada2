#!/usr/bin/env python3
"""Writes the PyYAML test vectors for src/deployment/assets/pyyaml.

Each case is an input conda file `tests/fixtures/pyyaml/<case>.yml` and the
exact text az ml derives from it, `<case>.dump`:
`yaml.dump(yaml.safe_load(text), sort_keys=True)`.

Run it with the PyYAML that azure-ai-ml 1.35.2 installs, in a venv outside
the repository:

    python3 -m venv /tmp/venv-pyyaml
    /tmp/venv-pyyaml/bin/pip install azure-ai-ml==1.35.2   # pulls PyYAML 6.0.4
    /tmp/venv-pyyaml/bin/python scripts/pyyaml-vectors.py

The output is deterministic; rerunning it rewrites the same bytes.
"""

import pathlib
import sys

import yaml

PYYAML_VERSION = "6.0.4"

LONG_WORDS = " ".join(f"word{i}" for i in range(40))

CASES = {
    # Realistic conda files first.
    "conda_basic": """\
name: model-env
channels:
  - conda-forge
dependencies:
  - python=3.10
  - pip
  - pip:
    - azureml-inference-server-http
    - scikit-learn==1.5.2
    - numpy>=1.21,<2
""",
    "conda_comments_flow": """\
# Environment for the scoring script
name: scoring   # trailing comment
channels: [conda-forge, defaults]
dependencies: [python=3.11, pip=24.0, {pip: [pandas==2.2.2, 'mlflow==2.16.0']}]
""",
    "conda_git_urls": """\
name: env
dependencies:
- python=3.9
- pip:
  - --extra-index-url https://pkgs.dev.azure.com/org/_packaging/feed/pypi/simple/
  - git+https://github.com/org/repo.git@v1.2.3#egg=repo
  - https://example.com/wheels/pkg-1.0-py3-none-any.whl
  - -e git+https://github.com/org/other.git#egg=other
  - torch==2.3.1+cpu
  - "azure-ai-ml ~= 1.35"
""",
    "conda_variables_prefix": """\
name: env
prefix: /opt/conda/envs/env
variables:
  MY_FLAG: yes
  OMP_NUM_THREADS: 4
  VERSION: '3.10'
  EMPTY:
  PATH_EXTRA: /usr/local/bin:/opt/bin
channels:
- pytorch
- nvidia
- conda-forge
dependencies:
- python=3.10.14
- cudatoolkit=11.8
- pytorch::pytorch=2.1.0
- nomkl
- pip>=23
- pip:
  - -r requirements.txt
  - transformers[torch]==4.44.0
  - "protobuf<4,>=3.20"
""",
    "conda_unsorted_keys": """\
dependencies:
  - pip:
      - zeta
      - alpha
  - python
name: z
channels:
  - defaults
""",
    "conda_python_versions": """\
dependencies:
- python=3.10
- 3.10
- '3.10'
- 3.8.10
- 2
- python==3.12.*
- numpy=1.26.*=py311*
""",
    "conda_indented_sequences": """\
channels:
    -   conda-forge
dependencies:
    -   python=3.10
    -   pip:
            -   requests==2.32.3
""",
    "conda_explicit_document": """\
---
name: env
dependencies:
  - python
...
""",
    "conda_crlf": "name: env\r\ndependencies:\r\n  - python=3.10\r\n  - pip:\r\n    - x==1\r\n",
    "conda_nested_pip_options": """\
dependencies:
  - pip:
    - --index-url https://pypi.org/simple
    - --find-links file:///tmp/wheels
    - --pre
    - package @ git+https://github.com/org/pkg@main
""",
    # Types under YAML 1.1 implicit resolution.
    "bools": """\
values: [yes, Yes, YES, no, No, NO, on, On, ON, off, Off, OFF, true, True, TRUE, false, False, FALSE, y, n, yEs]
""",
    "nulls": """\
a: ~
b: null
c: Null
d: NULL
e:
f: ''
g: nUll
""",
    "ints": """\
- 0
- -0
- +12
- 012
- 0o12
- 0x1F
- -0x_1f
- 0b1010
- 1_000
- 1:20
- -1:30:05
- 190:20:30
- 08
- 007
- 123456789012345678901234567890
""",
    "floats": """\
- 1.0
- 1.
- -1.5
- +2.25
- .5
- 1.0e+20
- 1.0e5
- 1e5
- 6.02e+23
- 1.5e-7
- 0.0001
- 0.00001
- 1_000.5
- 190:20:30.15
- .inf
- -.Inf
- +.INF
- .nan
- .NaN
- 3.14159265358979
- 100000000000000000.0
- 1234567890123456.0
- 0.1
- -0.0
- 12345678.9
- 1.e+3
""",
    "timestamps": """\
date: 2001-12-14
canonical: 2001-12-15T02:59:43.1Z
iso8601: 2001-12-14t21:59:43.10-05:00
spaced: 2001-12-14 21:59:43.10 -5
nofraction: 2002-12-14 21:59:43
utc_offset: 2002-12-14T21:59:43+00:00
half: 2002-12-14T21:59:43+05:30
short_date: 2002-1-5
short_date_time: 2002-1-5 1:02:03
micro: 2020-02-29 00:00:00.1234567
""",
    "quoted_lookalikes": """\
- 'yes'
- "no"
- 'null'
- '~'
- ''
- '123'
- '1.5'
- '0x10'
- '1:20'
- '2001-12-14'
- '.inf'
- 'true'
- '<<'
- '='
- '3.10'
""",
    "explicit_tags": """\
s: !!str 123
t: !!str yes
u: !!str
i: !!int "42"
f: !!float '1.5'
b: !!bool "on"
n: !!null ""
seq: !!seq [a]
map: !!map {a: 1}
""",
    # Collections.
    "empty_collections": """\
a: []
b: {}
c:
- []
- {}
- [[]]
d: {x: {}}
""",
    "nested": """\
top:
  list:
  - a
  - - b
    - c
  - k: v
    j: w
  - - - deep
  map:
    inner:
      leaf: 1
""",
    "seq_of_maps": """\
- name: a
  version: 1
- {name: b, version: 2}
- pip:
  - x
  - y
""",
    "duplicate_keys": """\
a: 1
b: 2
a: 3
""",
    "numeric_keys": """\
10: ten
2: two
1.5: one and a half
true: yes
-1: minus
""",
    "mixed_keys": """\
b: 1
1: 2
a: 3
""",
    "null_key": """\
~: nothing
""",
    "date_keys": """\
2020-01-02: b
2020-01-01: a
""",
    # Top-level values.
    "top_plain_scalar": "hello\n",
    "top_quoted_scalar": "'hello world'\n",
    "top_int": "42\n",
    "top_null": "~\n",
    "top_empty": "",
    "top_comment_only": "# nothing here\n",
    "top_list": "- a\n- b\n",
    "top_empty_list": "[]\n",
    "top_empty_map": "{}\n",
    "top_bool": "yes\n",
    # Strings and quoting.
    "special_leading": """\
- '-'
- '- a'
- '-a'
- '?'
- '? a'
- '?a'
- ':'
- ': a'
- ':a'
- '#a'
- '&a'
- '*a'
- '!a'
- '|a'
- '>a'
- "'a"
- '"a'
- '%a'
- '@a'
- '`a'
- ',a'
- '[a'
- ']a'
- '{a'
- '}a'
- '---'
- '--- a'
- '...'
- '.a'
""",
    "special_inside": """\
- 'a: b'
- 'a:b'
- 'a #b'
- 'a#b'
- 'a,b'
- 'a[b]'
- 'a{b}'
- 'a?b'
- 'a - b'
- 'a:'
- 'a\\b'
- 'it''s'
- 'say "hi"'
- 'a!b&c*d|e>f%g@h`i'
""",
    "spaces": """\
- ' leading'
- 'trailing '
- '  both  '
- 'in  side'
- ' '
""",
    "multiline_strings": """\
literal: |
  line one
  line two
folded: >
  folded text
  continues here

  new paragraph
keep: |+
  kept

strip: |-
  stripped
double: "first\\nsecond"
trailing_space_break: "a \\nb"
break_space: "a\\n b"
only_newline: "\\n"
two_breaks: "a\\n\\nb"
leading_break: "\\nabc"
""",
    "escapes": r"""
- "tab\there"
- "bell\a"
- "nul\0"
- "esc\e"
- "cr\r"
- "vt\v ff\f bs\b"
- "nbsp\_x"
- "next\Nline"
- "ls\Lps\P"
- "bom\uFEFF"
- "del\x7F"
- "c1\x80"
""",
    "unicode": """\
- café
- naïve résumé
- 日本語
- emoji 😀
- "\\u00e9"
- ü: key
""",
    "long_plain": "long: " + LONG_WORDS + "\n",
    "long_single": "long: '" + LONG_WORDS + ": colon'\n",
    "long_double": 'long: "' + LONG_WORDS.replace("word1 ", "wörd1 ") + '"\n',
    "long_double_escapes": 'long: "' + "\\t".join(f"w{i}" for i in range(60)) + '"\n',
    "long_double_spaces": 'long: "' + "  ".join(f"word{i}" for i in range(30)) + ' é"\n',
    "long_no_spaces": "url: https://example.com/" + "a" * 120 + "\n",
    "long_in_list": "- " + LONG_WORDS + "\n- pip:\n  - " + LONG_WORDS + "\n",
    "long_key": "'" + "k" * 130 + "': v\n" + "'" + "j" * 122 + "': w\n" + "'" + "i" * 123 + "': x\n",
    "multiline_key": '"a\\nb": 1\n"": 2\n',
    "key_quoting": """\
'yes': 1
'a b': 2
'a: b': 3
'-x': 4
'- x': 5
'123': 6
'#c': 7
""",
}


def main() -> None:
    if yaml.__version__ != PYYAML_VERSION:
        sys.exit(f"need PyYAML {PYYAML_VERSION} (what azure-ai-ml 1.35.2 installs), found {yaml.__version__}")
    out = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pyyaml"
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("*.yml")) + list(out.glob("*.dump")):
        old.unlink()
    for name, text in sorted(CASES.items()):
        dumped = yaml.dump(yaml.safe_load(text), sort_keys=True)
        (out / f"{name}.yml").write_bytes(text.encode("utf-8"))
        (out / f"{name}.dump").write_bytes(dumped.encode("utf-8"))
    print(f"wrote {len(CASES)} vectors to {out}")


if __name__ == "__main__":
    main()
