#!/usr/bin/env python3
"""The file-level dependency graph of core/, kernels/ and gst/, and no loops in it.

    check_layering.py [--edges] [SOURCE_ROOT]

A node is a source file together with its header (detector.c and detector.h
are one node, named detector.c); a header without a source file of the same
name beside it (fap.h, backend.h, pixel_math.h) is a node of its own, which
owns its inline functions and macros. There is an edge A -> B when A
includes B's header, or when A calls a function that B defines and does not
make static (C: a definition is a top-level declarator followed by its body,
the GNU layout with the type on the line above included; a call is an
identifier followed by "(", outside comments and string literals). A static
function in a .c file is that file's own and draws no edge; a function or
function-like macro defined in a header is attributed to the header's node.

The check: within core/, and within gst/, taken separately, no files may
depend on each other in a loop (a strongly connected set of more than one
node). Each loop is printed with one cycle through it and the edges that
make it, each with its reason (the header included, the functions called).
kernels/ is drawn (its files are the targets of edges) but not checked: it
is a run-time module on the other side of the backend table.

It runs its own self-test first, on synthetic files in a temporary folder
(a two-file loop through an include and a call, which must be found; static
functions, comments, strings and the GNU layout, which must not mislead it),
so a check that can no longer fail fails.

Exit status: 0 no loops, 1 a loop (or the self-test failed), 2 usage.
"""

import io
import os
import re
import sys
import tempfile

TREES = ("core", "kernels", "gst")
CHECKED = ("core", "gst")
SOURCE_EXT = (".c", ".cu", ".cpp")
HEADER_EXT = (".h", ".cuh", ".hpp")
# Loops in this list are reported but do not fail the check: each entry is
# the sorted tuple of a loop's node names. Empty: every loop fails.
ALLOWED_LOOPS = []

KEYWORDS = {
    "if", "for", "while", "switch", "return", "sizeof", "do", "else", "case",
    "_Alignof", "alignof", "_Static_assert", "static_assert", "defined",
    "__attribute__", "__typeof__", "typeof", "__builtin_expect", "decltype",
}


def strip_code(text, keep_strings=False):
    """The text with comments, and string and character literals unless
    KEEP_STRINGS, blanked out (newlines kept, so line structure stays) and
    line continuations joined."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j) or " ")
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1] if keep_strings else c + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out).replace("\\\n", " ")


IDENT = re.compile(r"[A-Za-z_]\w*")
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)
MACRO_FN = re.compile(r"^\s*#\s*define\s+([A-Za-z_]\w*)\(", re.M)
ATTRIBUTE = re.compile(r"__attribute__\s*\(\((?:[^()]|\([^()]*\))*\)\)")
CALL = re.compile(r"(?<![\w.>])([A-Za-z_]\w*)\s*\(")


def scan(code):
    """(functions, uses) of the stripped code: the (name, is_static) of the
    functions it defines at file scope (a declaration at brace depth 0 ending
    in ")", or an attribute after it, whose next token is "{"), and the text
    in which calls count: what is inside braces (function bodies,
    initialisers) and the bodies of macros; prototypes at file scope are
    declarations, not calls."""
    found = []
    uses = []
    depth = 0
    decl = []  # the current top-level declaration's text
    wrappers = 0  # open extern "C" / namespace blocks: file scope inside
    for line in code.split("\n"):
        if line.lstrip().startswith("#"):
            uses.append(re.sub(r"^\s*#\s*define\s+\w+(\([^)]*\))?", " ", line))
            continue
        for ch in line:
            if depth == 0:
                if ch == "{":
                    head = "".join(decl).strip()
                    decl = []
                    if re.match(r'(extern\s*""|namespace\b)', head):
                        wrappers += 1
                        continue
                    fn = function_declarator(head)
                    if fn:
                        found.append(fn)
                    depth = 1
                elif ch == "}" and wrappers:
                    wrappers -= 1
                    decl = []
                elif ch == ";" or ch == "}":
                    decl = []
                else:
                    decl.append(ch)
            else:
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                    if depth == 0:
                        decl = []
                        continue
                uses.append(ch)
        (decl if depth == 0 else uses).append(" ")
    return found, "".join(uses)


def function_declarator(text):
    """(name, is_static) when TEXT, the declaration before a top-level "{",
    is a function definition's head; None for struct / enum / union bodies,
    initialisers, extern "C" / namespace blocks."""
    text = ATTRIBUTE.sub(" ", text).strip()
    if not text.endswith(")") and not re.search(r"\)\s*(const|noexcept|override)\s*$", text):
        return None
    if "=" in text.split("(", 1)[0]:
        return None
    # the declarator's name: the identifier before the parameter list, the
    # last parenthesised group (not "__launch_bounds__(256)" before it)
    text = re.sub(r"\s*(const|noexcept|override)\s*$", "", text)
    depth, open_at = 0, None
    for i in range(len(text) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0:
            open_at = i
            break
    m = open_at is not None and re.search(r"([A-Za-z_][\w:~]*)\s*$", text[:open_at])
    if not m or m.group(1) in KEYWORDS:
        return None
    head = text[: m.start()]
    if not head.strip():  # "name(" with no type: a macro invocation (G_DEFINE_TYPE ...)
        return None
    words = IDENT.findall(head)
    name = m.group(1).split("::")[-1]
    return (name, "static" in words)


class Graph:
    def __init__(self, root):
        self.root = root
        self.files = []  # relative paths of every scanned file
        for tree in TREES:
            for dirpath, dirnames, filenames in os.walk(os.path.join(root, tree)):
                dirnames.sort()
                for f in sorted(filenames):
                    if f.endswith(SOURCE_EXT + HEADER_EXT):
                        self.files.append(os.path.relpath(os.path.join(dirpath, f), root))
        present = set(self.files)
        self.node_of = {}  # file -> node name
        for f in self.files:
            stem, ext = os.path.splitext(f)
            node = f
            if ext in HEADER_EXT:
                for sext in SOURCE_EXT:
                    if stem + sext in present:
                        node = stem + sext
                        break
            self.node_of[f] = node
        self.headers = {}  # basename -> [relative path]
        for f in self.files:
            if f.endswith(HEADER_EXT):
                self.headers.setdefault(os.path.basename(f), []).append(f)
        self.code = {}
        self.includes = {}
        for f in self.files:
            with open(os.path.join(root, f), encoding="utf-8", errors="replace") as fh:
                text = fh.read()
            self.code[f] = strip_code(text)
            self.includes[f] = INCLUDE.findall(strip_code(text, keep_strings=True))
        # definitions: name -> set of nodes defining it for other files
        self.defined_by = {}
        self.own = {}  # file -> every function it defines, static or not
        self.uses = {}  # file -> the text in which its calls count
        for f in self.files:
            is_header = f.endswith(HEADER_EXT)
            self.own[f] = set()
            functions, self.uses[f] = scan(self.code[f])
            for name, static in functions:
                self.own[f].add(name)
                if static and not is_header:
                    continue
                self.defined_by.setdefault(name, set()).add(self.node_of[f])
            if is_header:
                for name in MACRO_FN.findall(self.code[f]):
                    self.defined_by.setdefault(name, set()).add(self.node_of[f])
        # edges: (from node, to node) -> set of reasons
        self.edges = {}
        for f in self.files:
            src = self.node_of[f]
            for inc in self.includes[f]:
                target = self.resolve_include(f, inc)
                if target and self.node_of[target] != src:
                    self.add(src, self.node_of[target], "includes " + os.path.basename(target))
            for name in set(CALL.findall(self.uses[f])):
                if name in KEYWORDS or name in self.own[f]:  # its own function
                    continue
                # a name defined in the caller's own folder tree and in
                # another (fap_log: core/log.c, the CUDA module's own) is
                # the own tree's
                targets = self.defined_by.get(name, set())
                tree = src.split(os.sep)[0]
                targets = {t for t in targets if t.split(os.sep)[0] == tree} or targets
                for node in targets:
                    if node != src:
                        self.add(src, node, "calls " + name)

    def resolve_include(self, including, inc):
        candidates = self.headers.get(os.path.basename(inc), [])
        if not candidates:
            return None
        here = os.path.normpath(os.path.join(os.path.dirname(including), inc))
        for c in candidates:
            if c == here:
                return c
        suffix = [c for c in candidates if c.endswith(os.sep + inc) or c == inc]
        if len(suffix) == 1:
            return suffix[0]
        same_tree = [c for c in candidates if c.split(os.sep)[0] == including.split(os.sep)[0]]
        return (same_tree or candidates)[0]

    def add(self, a, b, reason):
        self.edges.setdefault((a, b), set()).add(reason)

    def loops(self, tree):
        """The strongly connected sets of more than one node among the nodes
        of TREE (Tarjan), each sorted."""
        nodes = sorted({n for n in self.node_of.values() if n.split(os.sep)[0] == tree})
        inside = set(nodes)
        succ = {n: sorted(b for (a, b) in self.edges if a == n and b in inside) for n in nodes}
        index, low, stack, on_stack, result = {}, {}, [], set(), []
        counter = [0]

        def visit(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on_stack.add(v)
            for w in succ[v]:
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    result.append(sorted(comp))

        sys.setrecursionlimit(10000)
        for n in nodes:
            if n not in index:
                visit(n)
        return sorted(result), succ

    def one_cycle(self, comp, succ):
        """A cycle through the first node of COMP, by breadth-first search."""
        start = comp[0]
        members = set(comp)
        prev = {start: None}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in succ[v]:
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return list(reversed(path)) + [start]
                if w not in prev:
                    prev[w] = v
                    queue.append(w)
        return comp


def describe(reasons, limit=6):
    r = sorted(reasons)
    return ", ".join(r[:limit]) + (f", ... ({len(r)} in all)" if len(r) > limit else "")


def check(root, out=sys.stdout, print_edges=False):
    """Prints the loops of ROOT's core/ and gst/; returns their number (not
    counting allowed ones)."""
    g = Graph(root)
    if print_edges:
        for (a, b), reasons in sorted(g.edges.items()):
            print(f"{a} -> {b}: {describe(reasons, 100)}", file=out)
    failures = 0
    for tree in CHECKED:
        comps, succ = g.loops(tree)
        if not comps:
            print(f"layering: {tree}/: no loops ({sum(1 for n in set(g.node_of.values()) if n.startswith(tree + os.sep))} files)", file=out)
        for comp in comps:
            allowed = tuple(comp) in {tuple(sorted(a)) for a in ALLOWED_LOOPS}
            if not allowed:
                failures += 1
            print(f"layering: {tree}/: {len(comp)} files depend on each other in a loop"
                  f"{' (allowed)' if allowed else ''}: {' '.join(comp)}", file=out)
            print("  one cycle: " + " -> ".join(g.one_cycle(comp, succ)), file=out)
            print("  the edges among them:", file=out)
            members = set(comp)
            for (a, b), reasons in sorted(g.edges.items()):
                if a in members and b in members:
                    print(f"    {a} -> {b}: {describe(reasons)}", file=out)
    return failures


SELF_TEST = {
    # a loop: a.c includes b.h (for a type only), b.c calls a_public() of a.c
    "loop": {
        "core/a.c": '#include "b.h"\nint\na_public (b_int x)\n{\n  return x;\n}\n',
        "core/b.h": "typedef int b_int;\nint b_public(int x);\n",
        "core/b.c": '#include "b.h"\nint a_public(int);\nint b_public(int x) {\n  return x ? a_public(x - 1) : 0;\n}\n',
    },
    # no loop: c.c calls d_public() (edge c -> d); d.c's calls of c_helper
    # are its own static function of that name, a comment, a string and a
    # field, and its definitions sit in the GNU layout
    "no-loop": {
        "gst/c.c": "int d_public(void);\nint c_helper(void) { return d_public(); }\n",
        "gst/d.c": ("static int\nc_helper (void)\n{\n  return 1;\n}\n\n"
                    "/* c_helper() in a comment */\nstruct s { int (*c_helper)(void); };\n"
                    "int\nd_public (void)\n{\n  const char *t = \"c_helper()\";\n"
                    "  struct s v = { 0 };\n  (void) t;\n  return c_helper () + (v.c_helper ? v.c_helper () : 0);\n}\n"),
    },
}


def self_test():
    ok = True
    for case, files in SELF_TEST.items():
        with tempfile.TemporaryDirectory(prefix="fap-layering-") as tmp:
            for rel, text in files.items():
                path = os.path.join(tmp, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as fh:
                    fh.write(text)
            buf = io.StringIO()
            loops = check(tmp, buf)
            want = 1 if case == "loop" else 0
            if loops != want:
                ok = False
                print(f"layering: self-test '{case}': {loops} loop(s) found, {want} expected:\n"
                      + buf.getvalue(), file=sys.stderr)
            elif case == "loop" and not ("core/a.c -> core/b.c: includes b.h\n" in buf.getvalue()
                                         and "core/b.c -> core/a.c: calls a_public\n" in buf.getvalue()):
                ok = False
                print(f"layering: self-test '{case}': the loop's edges not printed:\n" + buf.getvalue(),
                      file=sys.stderr)
    return ok


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    flags = [a for a in argv if a.startswith("--")]
    if len(args) > 1 or set(flags) - {"--edges"}:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    root = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    if not self_test():
        print("layering: the self-test failed: the check cannot be trusted", file=sys.stderr)
        return 1
    print("layering: self-test passed (a loop found, none where there is none)")
    failures = check(root, print_edges="--edges" in flags)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
