#!/usr/bin/env python3
"""Man pages from the documentation's option tables, so that the two cannot
drift apart: each markdown table that a line `<!-- man: PROGRAM -->` precedes
(README.md, docs/*.md) becomes PROGRAM's OPTIONS section, in file order,
inserted at @OPTIONS@ in man/PROGRAM.1.in.

  man/genman.py OUTDIR VERSION      writes OUTDIR/PROGRAM.1 for every template
  man/genman.py --check BINDIR      exits 1 unless every long option that
                                    BINDIR/PROGRAM --help lists is in its man
                                    page and every table option is in --help

The tables are the one source; `make man` runs this, `make check` runs both
(the option check in tests/integration/test_packages.py)."""
import glob
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ["README.md"] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
MARK = re.compile(r"^<!-- man: ([a-z-]+) -->\s*$")
LONGOPT = re.compile(r"--[a-z][a-z0-9-]*")


def tables():
    """{program: [(option, default, meaning), ...]} in file order."""
    out = {}
    for src in SOURCES:
        with open(os.path.join(ROOT, src), encoding="utf-8") as f:
            lines = f.read().splitlines()
        i = 0
        while i < len(lines):
            m = MARK.match(lines[i])
            i += 1
            if not m:
                continue
            prog = m.group(1)
            if i + 1 >= len(lines) or not lines[i].startswith("| option") or \
                    not lines[i + 1].startswith("| ---"):
                sys.exit("%s:%d: a man marker must be followed by an option table" % (src, i))
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                # Split on | not escaped as \| (markdown's escape inside a cell).
                cells = [c.strip().replace("\\|", "|")
                         for c in re.split(r"(?<!\\)\|", lines[i].strip()[1:-1])]
                if len(cells) != 3:
                    sys.exit("%s:%d: expected 3 cells, got %d" % (src, i + 1, len(cells)))
                out.setdefault(prog, []).append(tuple(cells))
                i += 1
    return out


def roff_text(s):
    """Inline markdown to roff: `code` bold, links as their text, **x** bold."""
    s = s.replace("\\", "\\e")
    s = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"\\fB\1\\fR", s)
    s = re.sub(r"`([^`]+)`", lambda m: "\\fB" + m.group(1).replace("-", "\\-") + "\\fR", s)
    s = s.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    # Anything beyond ASCII as a groff Unicode escape (the page stays ASCII).
    s = "".join(c if ord(c) < 128 else "\\[u%04X]" % ord(c) for c in s)
    # Hyphens outside code stay hyphens; a line must not start with . or '.
    return re.sub(r"^([.'])", r"\\&\1", s)


def roff_options(rows):
    out = []
    for opt, default, meaning in rows:
        out.append(".TP")
        out.append(roff_text(opt))
        text = roff_text(meaning)
        if default:
            text += " (default: %s)" % roff_text(default)
        out.append(text)
    return "\n".join(out)


def generate(outdir, version):
    tabs = tables()
    os.makedirs(outdir, exist_ok=True)
    for tmpl in sorted(glob.glob(os.path.join(ROOT, "man", "*.1.in"))):
        prog = os.path.basename(tmpl)[:-len(".1.in")]
        if prog not in tabs:
            sys.exit("%s: no option table is marked <!-- man: %s -->" % (tmpl, prog))
        with open(tmpl, encoding="utf-8") as f:
            text = f.read()
        text = text.replace("@VERSION@", version).replace("@OPTIONS@", roff_options(tabs[prog]))
        with open(os.path.join(outdir, prog + ".1"), "w", encoding="utf-8") as f:
            f.write(text)


def check(bindir):
    tabs = tables()
    bad = 0
    for prog, rows in sorted(tabs.items()):
        helptext = subprocess.run([os.path.join(bindir, prog), "--help"], capture_output=True,
                                  text=True).stdout
        # The option column of --help: lines indented by 2-4 spaces that
        # start with --, up to the gap before the description.
        in_help = set()
        for line in helptext.splitlines():
            if re.match(r"^ {2,4}--", line):
                in_help.update(LONGOPT.findall(re.split(r"\s{2,}", line.strip())[0]))
        in_help -= {"--help", "--version"}
        in_table = set()
        for opt, _, _ in rows:
            in_table.update(LONGOPT.findall(opt))
        # The page's own text (a subcommand's options, e.g. muxshim health
        # --live) counts for the first direction.
        with open(os.path.join(ROOT, "man", prog + ".1.in"), encoding="utf-8") as f:
            in_page = in_table | set(LONGOPT.findall(f.read().replace("\\-", "-")))
        for o in sorted(in_help - in_page):
            print("%s: %s is in --help but not in the man page (add it to the option table)"
                  % (prog, o))
            bad += 1
        for o in sorted(in_table - set(LONGOPT.findall(helptext))):
            print("%s: %s is in the option table but not in --help" % (prog, o))
            bad += 1
    return bad


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(1 if check(sys.argv[2]) else 0)
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    generate(sys.argv[1], sys.argv[2])
