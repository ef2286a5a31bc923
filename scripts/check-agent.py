#!/usr/bin/env python3
"""Static checks of the Windows agent, without PowerShell: parse agent/netunlockd-agent.ps1 and
the Pester files with the tree-sitter PowerShell grammar and enforce the rules a parser can see.

    python3 scripts/check-agent.py              check the repository's files
    python3 scripts/check-agent.py FILE...      check other files with the agent script's rules
    python3 scripts/check-agent.py --self-test  prove every rule fires on a bad snippet

Rules (agent script; the Pester files only have to parse):
  * no parse error (ERROR or MISSING node);
  * `#Requires -Version 5.1` and `#Requires -RunAsAdministrator` at the top;
  * no PowerShell-7-only syntax or names in a script that must run on Windows PowerShell 5.1
    (`&&`/`||` chains, `??`, `?.`, ternary, `clean {}`, `-Parallel`, $IsWindows, ...);
  * no Write-Output anywhere, and nothing but the streams that are not the success stream in
    the log helpers (a log line must never become part of a function's return value);
  * no bare StringBuilder.Append*() statement (its return value would leak into the output);
  * no command that defeats the agent's guarantees (Write-EventLog is missing in PowerShell 7,
    the BitLocker cmdlets print recovery passwords, ConvertTo-Json differs between 5.1 and 7).

Needs the PyPI packages tree-sitter and tree-sitter-powershell (.ci/run installs them).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import tree_sitter
    import tree_sitter_powershell
except ImportError:
    sys.exit(
        "check-agent: the tree-sitter PowerShell grammar is missing; install it with\n"
        "    python3 -m pip install tree-sitter==0.26.1 tree-sitter-powershell==0.26.4\n"
        "(.ci/run does this on a clean machine)"
    )

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "agent" / "netunlockd-agent.ps1"
PESTER_DIR = ROOT / "agent" / "tests"

REQUIRED = ("#requires -version 5.1", "#requires -runasadministrator")
LOG_HELPERS = {"write-agentlog", "write-agentevent"}
LOG_HELPER_COMMANDS = {
    "write-verbose",
    "write-warning",
    "write-information",
    "write-debug",
    "write-agentevent",
    "out-null",
}
FORBIDDEN_COMMANDS = {
    "write-output": "Write-Output writes to the success stream: log with Write-AgentLog",
    "write-eventlog": "Write-EventLog does not exist in PowerShell 7: use Write-AgentEvent (.NET EventLog)",
    "new-eventlog": "New-EventLog does not exist in PowerShell 7: use Write-AgentEvent (.NET EventLog)",
    "get-bitlockervolume": "Get-BitLockerVolume needs the BitLocker module and carries recovery passwords "
    "through the pipeline: read Win32_EncryptableVolume",
    "add-bitlockerkeyprotector": "Add-BitLockerKeyProtector prints the new recovery password: use "
    "ProtectKeyWithNumericalPassword through WMI",
    "remove-bitlockerkeyprotector": "use DeleteKeyProtector through WMI (no BitLocker module needed)",
    "convertto-json": "ConvertTo-Json escapes and orders differently in 5.1 and 7: use ConvertTo-AgentJson",
    "invoke-expression": "Invoke-Expression runs text as code",
}
PS7_COMMANDS = {
    "join-string",
    "get-error",
    "test-json",
    "convertfrom-markdown",
    "show-markdown",
    "get-uptime",
    "remove-service",
    "get-pssubsystem",
}
PS7_PARAMETERS = {
    "-parallel",
    "-ashashtable",
    "-asbytestream",
    "-skipcertificatecheck",
    "-sslprotocol",
    "-skiphttperrorcheck",
    "-statuscodevariable",
    "-responseheadersvariable",
    "-noproxy",
}
PS7_VARIABLES = {"$iswindows", "$islinux", "$ismacos", "$iscoreclr", "$psstyle"}
APPEND_METHODS = {"append", "appendline", "appendformat"}
# Expression wrappers the grammar nests around every value; a wrapper with one child is skipped.
WRAPPERS = {
    "logical_expression",
    "bitwise_expression",
    "comparison_expression",
    "additive_expression",
    "multiplicative_expression",
    "format_expression",
    "range_expression",
    "array_literal_expression",
    "unary_expression",
}

PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


@dataclass(frozen=True)
class Finding:
    line: int
    column: int
    message: str


def text(node, src: bytes) -> str:
    return src[node.start_byte : node.end_byte].decode("utf-8", "replace")


def unwrap(node):
    while node is not None and node.type in WRAPPERS and node.named_child_count == 1:
        node = node.named_children[0]
    return node


def walk(node):
    yield node
    for child in node.children:
        yield from walk(child)


def finding(node, message: str) -> Finding:
    return Finding(node.start_point[0] + 1, node.start_point[1] + 1, message)


def syntax_errors(root, src: bytes) -> list[Finding]:
    out = []
    lines = src.decode("utf-8", "replace").splitlines()
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_missing or node.is_error:
            snippet = text(node, src)
            line = lines[node.start_point[0]] if node.start_point[0] < len(lines) else ""
            if node.is_error and "?" in snippet:
                why = "a PowerShell-7-only operator (?? ?. ?: ??=) or another parse error"
            elif node.is_error and re.search(r"\bclean\s*\{", snippet):
                why = "a PowerShell-7-only clean {} block"
            elif re.search(r"\s-[A-Za-z]+[0-9]", line):
                why = (
                    "a parse error (the grammar cannot read digits in a -Parameter name: "
                    "rename the parameter or splat the arguments)"
                )
            else:
                why = "a parse error"
            what = f"missing {node.type!r}" if node.is_missing else repr(snippet.strip()[:60])
            out.append(finding(node, f"{why}: {what}"))
        elif node.has_error:
            stack.extend(reversed(node.children))
    return sorted(out, key=lambda f: (f.line, f.column))


def requires_lines(src: bytes) -> list[Finding]:
    head = [l.strip().lower() for l in src.decode("utf-8", "replace").splitlines()[:5]]
    return [
        Finding(1, 1, f"missing `{want}` at the top of the script")
        for want in REQUIRED
        if want not in [re.sub(r"\s+", " ", l) for l in head]
    ]


def ps7_only(root, src: bytes) -> list[Finding]:
    out = []
    for node in walk(root):
        if node.type == "pipeline_chain_tail":
            out.append(finding(node, "&& / || pipeline chains are PowerShell 7 only"))
        elif node.type == "command_name" and text(node, src).lower() in PS7_COMMANDS:
            out.append(finding(node, f"{text(node, src)} does not exist in Windows PowerShell 5.1"))
        elif node.type == "command_parameter" and text(node, src).lower() in PS7_PARAMETERS:
            out.append(finding(node, f"{text(node, src)} is a PowerShell-7-only parameter"))
        elif node.type == "variable" and text(node, src).lower() in PS7_VARIABLES:
            out.append(finding(node, f"{text(node, src)} is not defined in Windows PowerShell 5.1"))
        elif node.type == "block_name" and text(node, src).lower() == "clean":
            out.append(finding(node, "clean {} blocks are PowerShell 7 only"))
    return out


def forbidden_commands(root, src: bytes) -> list[Finding]:
    out = []
    for node in walk(root):
        if node.type == "command_name":
            why = FORBIDDEN_COMMANDS.get(text(node, src).lower())
            if why:
                out.append(finding(node, why))
    return out


def statement_lists(node):
    """The statement lists directly under a statement (not inside nested script blocks)."""
    for child in node.children:
        if child.type == "statement_list":
            yield child
        elif child.type not in ("script_block_expression", "function_statement"):
            yield from statement_lists(child)


def is_void_cast(node) -> bool:
    node = unwrap(node)
    if node is None or node.type != "expression_with_unary_operator":
        return False
    cast = node.named_children[0] if node.named_child_count else None
    return (
        cast is not None
        and cast.type == "cast_expression"
        and cast.named_child_count > 0
        and cast.named_children[0].type == "type_literal"
        and cast.named_children[0].text.decode().replace(" ", "").lower() == "[void]"
    )


def check_log_statements(statements, src: bytes, helper: str, out: list[Finding]) -> None:
    for st in statements.named_children:
        if st.type == "pipeline":
            first = st.named_children[0] if st.named_child_count else None
            if first is None or first.type == "assignment_expression":
                continue
            elements = [c for c in first.named_children if c.type != "comment"]
            last = elements[-1] if elements else None
            if last is not None and last.type == "command":
                name = next((c for c in last.named_children if c.type == "command_name"), None)
                name_text = text(name, src).lower() if name is not None else ""
                if name_text not in LOG_HELPER_COMMANDS:
                    out.append(
                        finding(
                            st,
                            f"{helper}: {text(name, src) if name else 'a command'} may write to the "
                            "success stream; use Write-Verbose/Warning/Information, stderr or [void]",
                        )
                    )
            elif not (len(elements) == 1 and is_void_cast(elements[0])):
                out.append(
                    finding(st, f"{helper}: bare output {text(st, src).strip()[:50]!r} reaches the success stream")
                )
        elif st.type == "flow_control_statement":
            words = text(st, src).split()
            if words and words[0].lower() == "return" and len(words) > 1:
                out.append(finding(st, f"{helper}: a log helper returns nothing"))
        elif st.type in ("function_statement", "comment"):
            continue
        else:
            for inner in statement_lists(st):
                check_log_statements(inner, src, helper, out)


def log_helpers(root, src: bytes) -> list[Finding]:
    out: list[Finding] = []
    seen = set()
    for node in walk(root):
        if node.type != "function_statement":
            continue
        name = next((c for c in node.named_children if c.type == "function_name"), None)
        if name is None or text(name, src).lower() not in LOG_HELPERS:
            continue
        seen.add(text(name, src).lower())
        for body in statement_lists(node):
            check_log_statements(body, src, text(name, src), out)
    for missing in sorted(LOG_HELPERS - seen):
        out.append(Finding(1, 1, f"log helper {missing} not found (the rules above check it by name)"))
    return out


def bare_appends(root, src: bytes) -> list[Finding]:
    out = []
    for node in walk(root):
        if node.type != "pipeline" or node.parent is None or node.parent.type != "statement_list":
            continue
        chain = node.named_children[0] if node.named_child_count else None
        if chain is None or chain.type != "pipeline_chain" or chain.named_child_count != 1:
            continue
        call = unwrap(chain.named_children[0])
        if call is None or call.type != "invokation_expression":
            continue
        member = next((c for c in call.named_children if c.type == "member_name"), None)
        if member is not None and text(member, src).lower() in APPEND_METHODS:
            out.append(finding(node, f"{text(member, src)}() returns the builder: write [void] before it"))
    return out


def check_agent(src: bytes) -> list[Finding]:
    root = PARSER.parse(src).root_node
    findings = syntax_errors(root, src) + requires_lines(src)
    findings += ps7_only(root, src) + forbidden_commands(root, src)
    findings += log_helpers(root, src) + bare_appends(root, src)
    return sorted(set(findings), key=lambda f: (f.line, f.column, f.message))


def check_parse_only(src: bytes) -> list[Finding]:
    return syntax_errors(PARSER.parse(src).root_node, src)


def shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def report(path: Path, src: bytes, findings: list[Finding]) -> None:
    lines = src.decode("utf-8", "replace").splitlines()
    for f in findings:
        print(f"{shown(path)}:{f.line}:{f.column}: {f.message}")
        if 0 < f.line <= len(lines):
            print(f"    {lines[f.line - 1].strip()[:120]}")


GOOD_HELPERS = b"""#Requires -Version 5.1
#Requires -RunAsAdministrator
function Write-AgentEvent {
    param([string]$Message)
    [void][System.Diagnostics.EventLog]::WriteEntry('s', $Message)
}
function Write-AgentLog {
    param([string]$Message, [string]$Level)
    $line = $Message
    if ($Level -eq 'Error') { [void][Console]::Error.WriteLine($line) } else { Write-Warning $line }
    try { Write-AgentEvent -Message $Message } catch { Write-Verbose 'no event log' }
}
"""

# (snippet appended to GOOD_HELPERS or replacing it, expected message fragment)
SELF_TESTS = [
    (GOOD_HELPERS + b"$a = $b ?? 'x'\n", "PowerShell-7-only operator"),
    (GOOD_HELPERS + b"$a = $b ? 1 : 2\n", "PowerShell-7-only operator"),
    (GOOD_HELPERS + b"$a = $b?.Name\n", "PowerShell-7-only operator"),
    (GOOD_HELPERS + b"git pull && git push\n", "pipeline chains are PowerShell 7 only"),
    (GOOD_HELPERS + b"1..3 | ForEach-Object -Parallel { $_ }\n", "-Parallel is a PowerShell-7-only"),
    (GOOD_HELPERS + b"if ($IsWindows) { 1 }\n", "$IsWindows is not defined"),
    (GOOD_HELPERS + b"function F { process { 1 } clean { 2 } }\n", "clean"),
    (GOOD_HELPERS + b"$x = Join-String -InputObject 1\n", "Join-String does not exist"),
    (GOOD_HELPERS + b"Write-Output 'x'\n", "Write-Output writes to the success stream"),
    (GOOD_HELPERS + b"Write-EventLog -LogName Application -Message x\n", "Write-EventLog does not exist"),
    (GOOD_HELPERS + b"$v = Get-BitLockerVolume\n", "Get-BitLockerVolume"),
    (GOOD_HELPERS + b"$j = $o | ConvertTo-Json\n", "ConvertTo-Json"),
    (GOOD_HELPERS + b"function G { $sb.Append('x') }\n", "Append() returns the builder"),
    (GOOD_HELPERS + b"function H {\n    $x = Foo -Sha256 $y\n}\n", "digits in a -Parameter name"),
    (GOOD_HELPERS.replace(b"Write-Warning $line", b"Write-Host $line; $line"), "bare output"),
    (GOOD_HELPERS.replace(b"Write-Warning $line", b"Format-Table $line"), "Format-Table may write"),
    (GOOD_HELPERS.replace(b"[void][Console]::Error", b"[Console]::Error"), "bare output"),
    (GOOD_HELPERS.replace(b"Write-Verbose 'no event log'", b"'no event log'"), "bare output"),
    (GOOD_HELPERS.replace(b"#Requires -RunAsAdministrator\n", b""), "#requires -runasadministrator"),
    (GOOD_HELPERS.replace(b"function Write-AgentEvent", b"function Write-SomethingElse"), "write-agentevent not found"),
]


def self_test() -> int:
    failures = 0
    clean = check_agent(GOOD_HELPERS)
    if clean:
        print("self-test: the good snippet has findings:", clean)
        failures += 1
    for snippet, expected in SELF_TESTS:
        found = check_agent(snippet)
        if not any(expected.lower() in f.message.lower() for f in found):
            print(f"self-test: expected a finding containing {expected!r}, got {[f.message for f in found]}")
            failures += 1
    print(f"self-test: {len(SELF_TESTS) + 1 - failures} passed, {failures} failed")
    return 1 if failures else 0


def main() -> int:
    args = sys.argv[1:]
    if "--self-test" in args:
        return self_test()
    total = 0
    if args:
        for name in args:
            path = Path(name)
            src = path.read_bytes()
            found = check_agent(src)
            report(path, src, found)
            total += len(found)
        print(f"check-agent: {len(args)} file(s) checked, {total} finding(s)")
        return 1 if total else 0
    src = AGENT.read_bytes()
    found = check_agent(src)
    report(AGENT, src, found)
    total += len(found)
    pester = sorted(PESTER_DIR.glob("*.ps1"))
    if not pester:
        print(f"check-agent: no Pester files in {PESTER_DIR.relative_to(ROOT)}")
        total += 1
    for path in pester:
        src = path.read_bytes()
        found = check_parse_only(src)
        report(path, src, found)
        total += len(found)
    files = 1 + len(pester)
    print(f"check-agent: {files} PowerShell files parsed, {total} finding(s)")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
