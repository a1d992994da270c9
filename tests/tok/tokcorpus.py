"""Corpus for the tokenizer tests, generated from a fixed seed: several
scripts, code, whitespace runs, digits, emoji and other 4-byte characters,
special-piece strings, random Unicode, and (as bytes) invalid UTF-8."""
import random

SAMPLES = [
    "The answer to life the universe and everything is of course",
    "hello  world", "12345", "", " ", "  ", "\t", "\n", "\n\n\n", " \n ", "a", "▁", "▁▁x ▁",
    "Le cœur a ses raisons que la raison ne connaît point.",
    "Fünf Straßen weiter wohnt Jürgen Größe.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Τάχιστη αλώπηξ βαφής ψημένη γη, δρασκελίζει υπέρ νωθρού κυνός",
    "مرحبا بالعالم، كيف حالك اليوم؟", "שלום עולם, מה שלומך?",
    "नमस्ते दुनिया, आप कैसे हैं?", "你好，世界！今天天气很好。", "日本語のテキストとカタカナ、ひらがな。",
    "안녕하세요 세계", "สวัสดีชาวโลก", "Tiếng Việt có dấu: đường phố",
    "def f(x):\n\treturn x * 2\n\nif __name__ == '__main__':\n    print(f(21))\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (i = 0; i < n; i++) { a[i] += b[i] * c; }  // comment",
    "SELECT * FROM t WHERE x >= 10 AND y <> 'z';",
    "    indented\twith\t\ttabs\t\t\tand   spaces     ",
    "3.14159265358979 2024-03-17 1,000,000 0x1F 1e-5 -42",
    "😀😃😄 👨‍👩‍👧‍👦 🇫🇷🇯🇵 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈 𠜎𠜱", "\U0010FFFF\U000E0001\uFFFD\uFEFF\u200B\u00A0",
    "<|separator|><|mask|><|control1|><|control20|> [BOS][EOS][PAD][UNK] <s></s><unk>",
    "<0x41><0xFF> <|control21|> <|contro", "a\x00b\x01\x7f", "\r\n\r\n", "\u2581\u2581 \u2581",
]

FRAGMENTS = ["the", " ", "  ", "\t", "\n", "\n\n", "0", "9", "42", "é", "ß", "ж", "中", "😀", "🇯🇵",
             "<|separator|>", "<|mask|>", "<|control7|>", "[BOS]", "[EOS]", "<0x0A>", "▁", "\uFFFD",
             "def ", "return", "(", ")", "{", "}", ";", "=", "==", "->", "//", "#", "'", '"', "\\",
             "über", "naïve", "Ελλάδα", "русский", "العربية", "हिन्दी", "ไทย", "한국어", "日本"]

RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
          (0xE00, 0xE7F), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xE000, 0xF8FF),
          (0xFFF0, 0xFFFF), (0x1F300, 0x1FAFF), (0x10000, 0x10FFFF), (0x0, 0x1F)]


def rand_char(r):
    lo, hi = r.choice(RANGES)
    c = r.randint(lo, hi)
    if 0xD800 <= c <= 0xDFFF:
        c = 0xFFFD
    return chr(c)


def texts(n, seed=1234):
    """SAMPLES, then n random strings (str)."""
    r = random.Random(seed)
    out = list(SAMPLES)
    for _ in range(n):
        k = r.random()
        if k < 0.4:
            s = "".join(r.choice(FRAGMENTS) for _ in range(r.randint(1, 30)))
        elif k < 0.7:
            s = "".join(rand_char(r) for _ in range(r.randint(1, 40)))
        elif k < 0.85:
            s = "".join(r.choice(" \t\n0123456789ab") for _ in range(r.randint(1, 60)))
        else:
            a, b = r.choice(SAMPLES), r.choice(SAMPLES)
            i = r.randint(0, len(a))
            s = a[:i] + "".join(r.choice(FRAGMENTS) for _ in range(3)) + b
        out.append(s)
    return out


def raw_bytes(n, seed=99):
    """n byte strings with invalid UTF-8 (bad leads, truncated and overlong
    sequences, surrogates, stray continuation bytes) mixed into text."""
    r = random.Random(seed)
    bad = [b"\xff", b"\xfe", b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xe2\x82", b"\xe2", b"\xed\xa0\x80",
           b"\xf0\x9f\x98", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xe0\x80\xaf", b"\xef\xbf\xbd", b"\xc3"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(r.randint(1, 12)):
            k = r.random()
            if k < 0.4:
                parts.append(r.choice(bad))
            elif k < 0.6:
                parts.append(bytes(r.randint(0, 255) for _ in range(r.randint(1, 6))))
            else:
                parts.append(r.choice(FRAGMENTS + SAMPLES[:20]).encode())
        out.append(b"".join(parts))
    return out


def id_seqs(sp, n, seed=7):
    """n random id sequences: byte pieces (often forming partial or invalid
    UTF-8), specials, user-defined, "▁"-pieces and random pieces."""
    r = random.Random(seed)
    V = sp.get_piece_size()
    byte_ids = [i for i in range(V) if sp.is_byte(i)]
    ctrl = [i for i in range(V) if sp.is_control(i) or sp.is_unknown(i)]
    ws = [i for i in range(min(V, 200000)) if sp.id_to_piece(i).startswith("\u2581")][:500]
    utf8 = []
    for ch in "é中😀\uFFFD":
        utf8.append([byte_ids[b] for b in ch.encode()] if byte_ids else [])
    out = []
    for _ in range(n):
        seq = []
        for _ in range(r.randint(0, 16)):
            k = r.random()
            if k < 0.35 and byte_ids:
                seq.append(r.choice(byte_ids))
            elif k < 0.45 and byte_ids:
                u = r.choice(utf8)
                seq.extend(u[: r.randint(1, len(u))])
            elif k < 0.6:
                seq.append(r.choice(ctrl))
            elif k < 0.75 and ws:
                seq.append(r.choice(ws))
            else:
                seq.append(r.randrange(V))
        out.append(seq)
    return out


def training_lines(n, seed=5):
    """Lines to train small models on: the samples and fragment mixtures
    (a bounded character set, so small vocabularies fit)."""
    r = random.Random(seed)
    out = [t.replace("\n", " ") for t in SAMPLES] * 5
    for _ in range(n):
        out.append("".join(r.choice(FRAGMENTS + ["the", "and", "of", "to", "in"] * 4) for _ in range(r.randint(1, 30))).replace("\n", " "))
    return out
