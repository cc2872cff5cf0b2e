"""HTML -> plain text that keeps the mathematics.

Generic extractors throw math away: MathJax keeps its source in
``<script type="math/tex">`` (dropped with all scripts), KaTeX and MathJax
render to hundreds of ``<span>`` glyphs, MathML is a tree of ``<mi>/<mo>``
and LaTeX images carry the formula only in ``alt``.  Before boilerplate
removal every math carrier is therefore replaced by a text node holding its
LaTeX between ``$...$`` (inline) or ``$$...$$`` (display):

* ``<script type="math/tex">`` / ``math/tex; mode=display`` (MathJax 2);
* KaTeX / MathJax 3 output: the TeX ``<annotation encoding="application/x-tex">``
  of the embedded MathML is used and the rendered glyph spans are dropped;
* plain MathML ``<math>`` is converted to LaTeX (:func:`mathml_to_latex`);
* ``<img>`` whose ``alt`` looks like LaTeX (``\\cmd``, ``^``, ``_`` or
  ``$``-delimited, or a tex/latex/math class/src);
* delimiters left in the text by MathJax/KaTeX auto-render
  (``\\(..\\)``, ``\\[..\\]``, ``$..$``, ``$$..$$``) are normalised to
  ``$``/``$$``.

Boilerplate removal: trafilatura (``favor_recall``, tables kept, comments
dropped) on the rewritten tree.  trafilatura returns nothing for very short
pages; then an lxml fallback takes the ``<body>`` text without
``nav/header/footer/aside/form/script/style``.  Language id: py3langid
(offline model shipped with the package).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import lxml.etree as etree
import lxml.html

# --------------------------------------------------------------------------
# MathML -> LaTeX

_MO_MAP = {
    "\u2212": "-", "\u00d7": r"\times", "\u00b7": r"\cdot", "\u22c5": r"\cdot", "\u2264": r"\leq",
    "\u2265": r"\geq", "\u2260": r"\neq", "\u2248": r"\approx", "\u221e": r"\infty", "\u2211": r"\sum",
    "\u220f": r"\prod", "\u222b": r"\int", "\u2202": r"\partial", "\u2208": r"\in", "\u2209": r"\notin",
    "\u2286": r"\subseteq", "\u2282": r"\subset", "\u222a": r"\cup", "\u2229": r"\cap", "\u2192": r"\to",
    "\u21d2": r"\Rightarrow", "\u21d4": r"\Leftrightarrow", "\u00b1": r"\pm", "\u2200": r"\forall",
    "\u2203": r"\exists", "\u2207": r"\nabla", "\u2061": "", "\u2062": "", "\u2063": ",", "\u00f7": r"\div",
    "\u2218": r"\circ", "\u2032": "'", "\u2026": r"\ldots", "\u22ef": r"\cdots", "\u2261": r"\equiv",
    "\u223c": r"\sim", "\u2245": r"\cong", "\u221a": r"\sqrt{}", "\u2205": r"\emptyset",
}
_GREEK = {
    "\u03b1": "alpha", "\u03b2": "beta", "\u03b3": "gamma", "\u03b4": "delta", "\u03b5": "epsilon",
    "\u03b6": "zeta", "\u03b7": "eta", "\u03b8": "theta", "\u03b9": "iota", "\u03ba": "kappa",
    "\u03bb": "lambda", "\u03bc": "mu", "\u03bd": "nu", "\u03be": "xi", "\u03c0": "pi", "\u03c1": "rho",
    "\u03c3": "sigma", "\u03c4": "tau", "\u03c5": "upsilon", "\u03c6": "phi", "\u03c7": "chi",
    "\u03c8": "psi", "\u03c9": "omega", "\u0393": "Gamma", "\u0394": "Delta", "\u0398": "Theta",
    "\u039b": "Lambda", "\u039e": "Xi", "\u03a0": "Pi", "\u03a3": "Sigma", "\u03a6": "Phi",
    "\u03a8": "Psi", "\u03a9": "Omega", "\u03d5": "phi", "\u03f5": "epsilon",
}


def _local(tag) -> str:
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1].lower()


def _symbol(text: str) -> str:
    out = []
    for ch in text:
        if ch in _GREEK:
            out.append("\\" + _GREEK[ch] + " ")
        elif ch in _MO_MAP:
            rep = _MO_MAP[ch]
            out.append(rep + (" " if rep.startswith("\\") else ""))
        else:
            out.append(ch)
    return "".join(out).strip() if len(text) > 1 else "".join(out).rstrip()


_COMMAND = re.compile(r"^\\[A-Za-z]+$")


def _group(s: str) -> str:
    s = s.strip()
    return s if len(s) == 1 or _COMMAND.match(s) else "{" + s + "}"


def mathml_to_latex(node) -> str:
    """Convert a MathML element (``<math>`` or any presentation child) to LaTeX.

    Uses the TeX annotation when the MathML carries one (KaTeX, MathJax 3,
    Wikipedia); otherwise walks presentation MathML.
    """
    for ann in node.iter():
        if _local(ann.tag) == "annotation" and "tex" in (ann.get("encoding") or "").lower():
            return (ann.text or "").strip()
    return _convert(node).strip()


def _children(node) -> list:
    return [c for c in node if isinstance(c.tag, str)]


def _convert(node) -> str:
    tag = _local(node.tag)
    kids = _children(node)
    conv = [_convert(k) for k in kids]
    if tag in ("mi", "mn", "mo", "ms"):
        txt = (node.text or "").strip()
        if tag == "mi" and len(txt) > 1 and txt.isalpha():
            return r"\operatorname{" + txt + "}" if txt not in ("sin", "cos", "tan", "log", "ln", "exp", "lim",
                                                                     "max", "min", "det", "gcd") else "\\" + txt + " "
        return _symbol(txt)
    if tag == "mtext":
        txt = (node.text or "").strip()
        return r"\text{" + txt + "}" if txt else ""
    if tag == "mspace":
        return r"\ "
    if tag == "mfrac" and len(conv) == 2:
        return r"\frac{" + conv[0] + "}{" + conv[1] + "}"
    if tag == "msup" and len(conv) == 2:
        return _group(conv[0]) + "^" + _group(conv[1])
    if tag == "msub" and len(conv) == 2:
        return _group(conv[0]) + "_" + _group(conv[1])
    if tag == "msubsup" and len(conv) == 3:
        return _group(conv[0]) + "_" + _group(conv[1]) + "^" + _group(conv[2])
    if tag == "munder" and len(conv) == 2:
        return conv[0] + "_" + _group(conv[1])
    if tag == "mover" and len(conv) == 2:
        accents = {"^": r"\hat", "\u00af": r"\overline", "\u2192": r"\vec", "~": r"\tilde", "\u02d9": r"\dot"}
        acc = (kids[1].text or "").strip() if kids[1] is not None else ""
        if acc in accents:
            return accents[acc] + "{" + conv[0] + "}"
        return conv[0] + "^" + _group(conv[1])
    if tag == "munderover" and len(conv) == 3:
        return conv[0] + "_" + _group(conv[1]) + "^" + _group(conv[2])
    if tag == "msqrt":
        return r"\sqrt{" + " ".join(conv) + "}"
    if tag == "mroot" and len(conv) == 2:
        return r"\sqrt[" + conv[1] + "]{" + conv[0] + "}"
    if tag == "mfenced":
        open_, close = node.get("open", "("), node.get("close", ")")
        sep = node.get("separators", ",")
        return _fence(open_) + (sep[:1] or ",").join(conv) + _fence(close)
    if tag == "mtable":
        return r"\begin{matrix}" + r" \\ ".join(conv) + r"\end{matrix}"
    if tag == "mtr":
        return " & ".join(conv)
    if tag == "semantics":
        return conv[0] if conv else ""
    if tag in ("annotation", "annotation-xml", "none", "mprescripts"):
        return ""
    # math, mrow, mstyle, mtd, mpadded, mphantom, menclose, merror ...
    return _join(conv)


def _fence(d: str) -> str:
    return {"{": r"\{", "}": r"\}"}.get(d, d)


def _join(parts: list[str]) -> str:
    out = ""
    for p in parts:
        if not p:
            continue
        if out and out[-1].isalpha() and out.rstrip().split("\\")[-1].isalpha() and "\\" in out[-12:] \
                and p[:1].isalpha():
            out += " "  # keep "\alpha x" from becoming "\alphax"
        out += p
    return out


# --------------------------------------------------------------------------
# math carriers in the HTML tree

_LATEX_ALT = re.compile(r"\\[A-Za-z]+|[\^_]\{?|^\$.*\$$", re.S)
_MATH_CLASS = re.compile(r"tex|latex|math|equation|formula", re.I)


def _math_node(doc, latex: str, display: bool):
    el = doc.makeelement("p" if display else "span", {})
    latex = latex.strip()
    el.text = f"$${latex}$$" if display else f"${latex}$"
    return el


def _replace(el, new) -> None:
    """Replace ``el`` by ``new`` keeping ``el.tail`` (lxml stores following text there)."""
    new.tail = el.tail
    parent = el.getparent()
    if parent is not None:
        parent.replace(el, new)


def _drop(el) -> None:
    parent = el.getparent()
    if parent is None:
        return
    tail = el.tail
    prev = el.getprevious()
    if tail:
        if prev is not None:
            prev.tail = (prev.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(el)


def _strip_delims(tex: str) -> tuple[str, bool | None]:
    t = tex.strip()
    for o, c, disp in (("$$", "$$", True), (r"\[", r"\]", True), (r"\(", r"\)", False), ("$", "$", False)):
        if t.startswith(o) and t.endswith(c) and len(t) > len(o) + len(c):
            return t[len(o):-len(c)], disp
    return t, None


def rewrite_math(doc) -> int:
    """Replace every math carrier in the parsed tree with ``$..$``/``$$..$$`` text. Returns the count."""
    n = 0
    # MathJax 2 source scripts; their rendered siblings are removed below.
    for s in list(doc.iter("script")):
        typ = (s.get("type") or "").lower()
        if typ.startswith("math/tex") or typ.startswith("math/asciimath"):
            _replace(s, _math_node(doc, s.text or "", "mode=display" in typ))
            n += 1
    # KaTeX: <span class="katex"> holds katex-mathml (with TeX annotation) + katex-html (glyphs).
    for el in list(doc.iter()):
        if not isinstance(el.tag, str):
            continue
        cls = el.get("class") or ""
        classes = cls.split()
        if "katex-display" in classes or "katex" in classes or el.tag.lower().startswith("mjx-container"):
            if el.getparent() is None or _inside_replaced(el):
                continue
            math = next((m for m in el.iter() if _local(m.tag) == "math"), None)
            if math is None:
                continue
            display = "katex-display" in classes or el.get("display") == "true" or math.get("display") == "block"
            _replace(el, _math_node(doc, mathml_to_latex(math), display))
            n += 1
    # MathJax 2 rendered output and previews duplicate the script source.
    for el in list(doc.iter()):
        if not isinstance(el.tag, str):
            continue
        classes = (el.get("class") or "").split()
        if any(c in ("MathJax", "MathJax_Display", "MathJax_Preview", "MathJax_SVG", "MathJax_CHTML",
                     "MJX_Assistive_MathML") for c in classes):
            if el.getparent() is not None:
                _drop(el)
    # Bare MathML.
    for el in list(doc.iter()):
        if _local(el.tag) == "math" and el.getparent() is not None:
            display = el.get("display") == "block" or el.get("mode") == "display"
            _replace(el, _math_node(doc, mathml_to_latex(el), display))
            n += 1
    # LaTeX in image alt text (WordPress latex.php, Wikipedia, codecogs ...).
    for img in list(doc.iter("img")):
        alt = (img.get("alt") or "").strip()
        if not alt:
            continue
        hint = _MATH_CLASS.search((img.get("class") or "") + " " + (img.get("src") or ""))
        if hint or _LATEX_ALT.search(alt):
            tex, disp = _strip_delims(alt)
            display = bool(disp) or "display" in (img.get("class") or "")
            _replace(img, _math_node(doc, tex, display))
            n += 1
    return n


def _inside_replaced(el) -> bool:
    p = el.getparent()
    while p is not None:
        if "katex" in (p.get("class") or "").split():
            return True
        p = p.getparent()
    return False


# --------------------------------------------------------------------------
# delimiters in text

_DISPLAY_BRACKET = re.compile(r"\\\[(.+?)\\\]", re.S)
_INLINE_PAREN = re.compile(r"\\\((.+?)\\\)", re.S)
_ENV = re.compile(r"(?<!\$)\\begin\{(equation\*?|align\*?|gather\*?|eqnarray\*?|displaymath)\}(.+?)"
                  r"\\end\{\1\}", re.S)


def normalise_delimiters(text: str) -> str:
    r"""``\[..\]`` and display environments -> ``$$..$$``; ``\(..\)`` -> ``$..$``."""
    text = _DISPLAY_BRACKET.sub(lambda m: "$$" + m.group(1).strip() + "$$", text)
    text = _INLINE_PAREN.sub(lambda m: "$" + m.group(1).strip() + "$", text)
    text = _ENV.sub(lambda m: "$$" + m.group(2).strip() + "$$", text)
    return text


# --------------------------------------------------------------------------
# boilerplate removal

_BOILERPLATE_TAGS = ("script", "style", "noscript", "nav", "header", "footer", "aside", "form", "template",
                     "svg", "button", "iframe")
_BLOCK_TAGS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote",
               "section", "article", "table", "ul", "ol", "dd", "dt"}


def _fallback_text(doc) -> str:
    body = doc.find(".//body")
    root = body if body is not None else doc
    for el in list(root.iter(*_BOILERPLATE_TAGS)):
        _drop(el)
    parts: list[str] = []

    def walk(el):
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        if tag in _BLOCK_TAGS:
            parts.append("\n")
        if el.text and isinstance(el.tag, str):
            parts.append(el.text)
        for c in el:
            walk(c)
        if tag in _BLOCK_TAGS:
            parts.append("\n")
        if el.tail:
            parts.append(el.tail)

    walk(root)
    text = "".join(parts)
    lines = [re.sub(r"[ \t\r\f\v]+", " ", ln).strip() for ln in text.split("\n")]
    return "\n".join(ln for ln in lines if ln)


@dataclass
class Extracted:
    text: str
    title: str | None
    math_count: int
    lang: str | None = None
    lang_score: float | None = None


def _title(doc) -> str | None:
    t = doc.find(".//title")
    if t is not None and t.text:
        return " ".join(t.text.split()) or None
    return None


def html_to_text(html: str | bytes, url: str | None = None, with_lang: bool = True) -> Extracted:
    """Extract main text with math preserved.  Empty ``text`` means nothing usable."""
    import trafilatura

    if isinstance(html, bytes):
        html = html.decode("utf-8", errors="replace")
    if not html or not html.strip():
        return Extracted("", None, 0)
    # lxml refuses str input that carries an XML encoding declaration.
    html = re.sub(r"^\s*<\?xml[^>]*\?>", "", html)
    try:
        doc = lxml.html.document_fromstring(html)
    except (etree.ParserError, ValueError):
        return Extracted("", None, 0)
    title = _title(doc)
    n_math = rewrite_math(doc)
    text = None
    try:
        text = trafilatura.extract(doc, url=url, favor_recall=True, include_comments=False,
                                   include_tables=True, include_formatting=False, deduplicate=False)
    except Exception:  # trafilatura raises assorted parser errors on odd markup; fall back below
        text = None
    if not text or not text.strip():
        text = _fallback_text(doc)
    text = normalise_delimiters(text).strip()
    out = Extracted(text, title, n_math)
    if with_lang and text:
        out.lang, out.lang_score = detect_language(text)
    return out


def detect_language(text: str) -> tuple[str, float]:
    """py3langid on the first 2,000 characters (enough for a stable guess, bounded cost)."""
    lang, score = _language_identifier().classify(text[:2000])
    return str(lang), round(float(score), 4)


_IDENTIFIER = None


def _language_identifier():
    """py3langid with normalised probabilities, loaded once per process."""
    global _IDENTIFIER
    if _IDENTIFIER is None:
        from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

        _IDENTIFIER = LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
    return _IDENTIFIER
