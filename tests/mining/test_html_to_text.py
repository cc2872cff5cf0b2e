"""HTML -> text keeps math from MathJax, KaTeX, MathML and <img alt>, read from warcio-written WARCs."""

from megatron_dsm.mining.html_to_text import html_to_text, mathml_to_latex, normalise_delimiters
from megatron_dsm.mining.pipeline import ExtractText
from megatron_dsm.mining.readers import WarcPageReader

from warc_pages import write_warc

PROSE = ("<p>This page explains a classical result in elementary algebra and calculus. We go through the "
         "argument slowly so that every reader can follow each of the steps written below.</p>")


def page(body: str, title: str = "Math page") -> bytes:
    return (f"<html><head><title>{title}</title><script>var tracker = 1;</script></head><body>"
            f"<nav><a href='/'>Home</a> <a href='/login'>Log in</a></nav><article><h1>{title}</h1>{PROSE}"
            f"{body}{PROSE}</article><footer>Copyright 2024 Example Inc. All rights reserved.</footer>"
            f"</body></html>").encode()


MATHJAX = page(r"""<p>Inline \(x^2+y^2=r^2\) and display \[\int_0^1 x\,dx=\frac{1}{2}\] in text.</p>
<p>Script form: <script type="math/tex">a^2+b^2=c^2</script> and
<script type="math/tex; mode=display">\sum_{k=1}^{n} k=\frac{n(n+1)}{2}</script> as well.</p>
<p>Rendered MathJax 2 output <span class="MathJax_Preview">a2+b2</span><span class="MathJax">GLYPHS</span> is not kept twice.</p>""",
               "MathJax page")
KATEX = page(r"""<p>Euler: <span class="katex"><span class="katex-mathml"><math><semantics><mrow><mi>e</mi></mrow>
<annotation encoding="application/x-tex">e^{i\pi}+1=0</annotation></semantics></math></span>
<span class="katex-html" aria-hidden="true"><span class="base">KATEXGLYPHS</span></span></span> holds.</p>
<p><span class="katex-display"><span class="katex"><span class="katex-mathml"><math><semantics><mrow><mi>x</mi></mrow>
<annotation encoding="application/x-tex">\lim_{n\to\infty}(1+1/n)^n=e</annotation></semantics></math></span>
<span class="katex-html">GLYPHS2</span></span></span></p>""", "KaTeX page")
MATHML = page("""<p>A fraction <math><mfrac><mi>a</mi><mi>b</mi></mfrac><mo>+</mo><msup><mi>x</mi><mn>2</mn></msup>
<mo>&#x2264;</mo><msqrt><mi>&#x3b1;</mi></msqrt></math> and a block
<math display="block"><msubsup><mo>&#x222b;</mo><mn>0</mn><mn>1</mn></msubsup><mi>f</mi></math> here.</p>""",
              "MathML page")
IMG = page(r"""<p>WordPress style <img class="latex" src="https://s0.wp.com/latex.php?latex=x"
alt="\sum_{k=1}^n k^2" title="sum"> and a Wikipedia one <img src="/media/math/render/svg/abc"
alt="{\displaystyle \sqrt{2}}"> and a photo <img src="cat.jpg" alt="my cat"> of a cat.</p>""", "Image page")


def extract_from_warc(tmp_path, pages):
    path = tmp_path / "pages.warc.gz"
    write_warc(path, [(f"https://example.org/{name}", html, "text/html; charset=utf-8", "response")
                      for name, html in pages])
    reader = WarcPageReader(str(tmp_path), glob_pattern="*.warc.gz")
    docs = list(ExtractText().run(reader.run()))
    return {d.metadata["url"].rsplit("/", 1)[1]: d for d in docs}


def test_formulas_survive_warc_extraction(tmp_path):
    docs = extract_from_warc(tmp_path, [("mathjax", MATHJAX), ("katex", KATEX), ("mathml", MATHML), ("img", IMG)])
    assert set(docs) == {"mathjax", "katex", "mathml", "img"}
    mj = docs["mathjax"].text
    assert "$x^2+y^2=r^2$" in mj
    assert r"$$\int_0^1 x\,dx=\frac{1}{2}$$" in mj
    assert "$a^2+b^2=c^2$" in mj
    assert r"$$\sum_{k=1}^{n} k=\frac{n(n+1)}{2}$$" in mj
    assert "GLYPHS" not in mj and "a2+b2" not in mj
    kt = docs["katex"].text
    assert r"$e^{i\pi}+1=0$" in kt and r"$$\lim_{n\to\infty}(1+1/n)^n=e$$" in kt
    assert "KATEXGLYPHS" not in kt and "GLYPHS2" not in kt
    ml = docs["mathml"].text
    assert r"$\frac{a}{b}+x^2\leq\sqrt{\alpha}$" in ml
    assert r"$$\int_0^1f$$" in ml.replace(" ", "")
    im = docs["img"].text
    assert r"$\sum_{k=1}^n k^2$" in im and r"${\displaystyle \sqrt{2}}$" in im
    assert "$my cat$" not in im
    for d in docs.values():
        assert "Copyright" not in d.text and "Log in" not in d.text and "tracker" not in d.text  # boilerplate
        assert d.metadata["lang"] == "en" and d.metadata["lang_score"] > 0.5
        assert d.metadata["domain"] == "example.org" and d.metadata["source_format"] == "html"
        assert d.metadata["math_elements"] >= 1


def test_mathml_to_latex_hand_cases():
    import lxml.html

    def conv(s):
        return mathml_to_latex(lxml.html.fragment_fromstring(s))

    assert conv("<math><msub><mi>a</mi><mi>n</mi></msub><mo>=</mo><mn>3</mn></math>") == "a_n=3"
    assert conv("<math><mroot><mi>x</mi><mn>3</mn></mroot></math>") == r"\sqrt[3]{x}"
    assert conv("<math><msup><mi>e</mi><mrow><mo>-</mo><mi>x</mi></mrow></msup></math>") == "e^{-x}"
    assert conv("<math><mfenced><mi>a</mi><mi>b</mi></mfenced></math>") == "(a,b)"
    assert conv("<math><mover><mi>v</mi><mo>\u2192</mo></mover></math>") == r"\vec{v}"


def test_delimiter_normalisation_and_text_pages():
    assert normalise_delimiters(r"a \(x\) b \[y\] c") == "a $x$ b $$y$$ c"
    assert normalise_delimiters(r"\begin{align}a&=b\end{align}") == "$$a&=b$$"
    assert normalise_delimiters("price $5 and $x$") == "price $5 and $x$"  # plain $ left as is


def test_empty_and_script_only_pages_give_no_text():
    assert html_to_text("").text == ""
    assert html_to_text("<html><body><script>x=1</script><style>p {}</style></body></html>").text == ""
    assert html_to_text("   \n ").text == ""
