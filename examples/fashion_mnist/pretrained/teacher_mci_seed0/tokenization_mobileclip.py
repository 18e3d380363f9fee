"""MobileCLIP tokenizer: OpenAI CLIP's byte-level BPE with open_clip's text cleaning, pad id 0 and 77 tokens.

Every MobileCLIP checkpoint was trained with `open_clip.get_tokenizer("ViT-B-16")` (apple/ml-mobileclip
`mobileclip/modules/text/tokenizer.py`): ftfy + HTML-unescape + whitespace cleaning, lower-casing, SOT 49406,
EOT 49407, truncation to 77 that keeps EOT last, and padding with id 0. Most text towers have no padding mask, so the
pad id and the padded length change the embedding; the model pads every input to 77 with id 0 itself, so this
tokenizer pads and truncates as any transformers tokenizer does (the processor's defaults are open_clip's call).

This module imports nothing from the `modeling_mobileclip` package, so it also works as Hub remote code.
"""

import gzip
import html
import json
import os
import re

from tokenizers import AddedToken, Regex, Tokenizer, normalizers
from transformers import CLIPTokenizer
from transformers.utils import logging

from .atomic import write_json

try:  # optional: ftfy repairs mojibake, ligatures and curly quotes exactly as open_clip does
    import ftfy
except ImportError:
    ftfy = None

logger = logging.get_logger(__name__)

CONTEXT_LENGTH = 77
BPE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_simple_vocab_16e6.txt.gz")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters (the BPE base alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    byte_values, code_points, shift = printable[:], printable[:], 0
    for b in range(256):
        if b not in printable:  # whitespace and control bytes are mapped to 256, 257, ...
            byte_values.append(b)
            code_points.append(256 + shift)
            shift += 1
    return dict(zip(byte_values, map(chr, code_points), strict=True))


def clean_text(text: str) -> str:
    """open_clip's `clean="lower"`: ftfy, HTML-unescape twice, collapse and strip whitespace, lower-case."""
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    # str.split() also splits on \x1c-\x1f; str.lower() turns a word-final "Σ" into "ς" (the Rust normalizer does not).
    return " ".join(text.split()).lower()


def load_bpe(path: str = BPE_FILE) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Reads open_clip's `bpe_simple_vocab_16e6.txt.gz` into the 49,408-entry vocab and its 48,894 merges.

    The slice and the vocab order are open_clip's `SimpleTokenizer.__init__`; only the two special tokens are named
    the HF way (`<|startoftext|>`, `<|endoftext|>`), with the same ids 49406 and 49407.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CLIP BPE file not found at {path!r}; load a saved tokenizer with from_pretrained.")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [t + "</w>" for t in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def check_text(text, name: str = "text") -> None:
    """Raises a clear error for an empty list or a non-string item in `text` (a string or a, possibly nested, list)."""
    if isinstance(text, (list, tuple)):
        if len(text) == 0:
            raise ValueError(f"`{name}` is an empty list: pass at least one string.")
        for item in text:
            check_text(item, name)
    elif not isinstance(text, str):
        raise TypeError(f"`{name}` must be a string or a list of strings, got an item of type {type(text).__name__}.")


def _clean_all(text, added: "re.Pattern | None" = None):
    """`clean_text` on a string or a (nested) list of strings; the matches of `added` (user-added tokens) are kept
    as they are, and the text around them is cleaned on its own, as slow transformers tokenizers split on added tokens
    before they tokenise the rest."""
    if not isinstance(text, str):
        return [_clean_all(t, added) for t in text]
    if added is None:
        return clean_text(text)
    pieces = added.split(text)  # the pattern has one group: pieces alternate text, token, text, ...
    pieces = [piece if i % 2 else clean_text(piece) for i, piece in enumerate(pieces)]
    return " ".join(piece for piece in pieces if piece)


class MobileCLIPTokenizer(CLIPTokenizer):
    r"""CLIP tokenizer that reproduces `open_clip.tokenize` id for id.

    Differences from `CLIPTokenizer`:

    * text is cleaned and lower-cased in Python exactly as open_clip does (ftfy, HTML entities, whitespace,
      `str.lower`) before the Rust pipeline, whose normalizer has no NFC step;
    * `pad_token="!"` (id 0, open_clip's pad value) with `split_special_tokens=True`, so that a literal `"!"`,
      `"<|startoftext|>"` or `"<|endoftext|>"` in the text is tokenised as text, as in open_clip. Tokens a user adds
      that are not in the BPE vocabulary (`add_tokens`, `add_special_tokens`, special or not) are matched whole, as
      transformers' slow tokenizers match them, and are not cleaned or lower-cased; they are held by the Rust backend
      as non-special tokens (whose `split_special_tokens` would split every special one), and their special role is
      kept here (`added_tokens_decoder`, `skip_special_tokens`). A special token that is a BPE vocabulary entry
      (`add_special_tokens({"cls_token": "cat"})`) is tokenised as text, like the built-in ones;

    Padding and truncation follow transformers (no padding, no truncation by default; `padding=True` pads to the
    longest input). Call with `padding="max_length", truncation=True` (what `MobileCLIPProcessor` does by default)
    for open_clip's 77-token ids; the model pads shorter inputs with id 0 itself, so any padding gives the reference
    embeddings.

    With no `vocab`/`merges` the tokenizer is built from the BPE file shipped next to this module (no download).

    One deliberate difference remains: open_clip's regex also matches its *internal* special-token names
    `<start_of_text>` / `<end_of_text>` in user text and emits SOT/EOT ids for them; here they are ordinary text.

    Args:
        vocab: token -> id dict (or a `vocab.json` path); `None` reads the shipped BPE file.
        merges: BPE merges (or a `merges.txt` path); `None` reads the shipped BPE file.
        pad_token: padding token; `"!"` has id 0.
        split_special_tokens: tokenise special-token strings found in the text as ordinary text.
        model_max_length: context length.

    Example:

    ```python
    >>> tokenizer = MobileCLIPTokenizer()
    >>> tokenizer(["a photo of a cat"], padding="max_length", truncation=True, return_tensors="pt")["input_ids"].shape
    torch.Size([1, 77])
    ```
    """

    def __init__(
        self,
        vocab: str | dict[str, int] | None = None,
        merges: str | list[str] | None = None,
        pad_token: str = "!",
        split_special_tokens: bool = True,
        model_max_length: int = CONTEXT_LENGTH,
        **kwargs,
    ):
        if vocab is None and merges is None and kwargs.get("tokenizer_file") is None:
            vocab, merges = load_bpe()
        if ftfy is None:
            logger.warning_once("ftfy is not installed: text is not repaired as open_clip does (mojibake, ligatures).")
        super().__init__(
            vocab=vocab,
            merges=merges,
            pad_token=pad_token,
            split_special_tokens=split_special_tokens,
            model_max_length=model_max_length,
            **kwargs,
        )
        # CLIPTokenizer's normalizer starts with NFC, which open_clip never applies: html.unescape can leave a
        # decomposed "e\u0301" that NFC would compose. Text arrives cleaned and lower-cased; whitespace and lower-casing
        # stay in tokenizer.json for users of that file alone (a no-op here, bar letters newer than Python's Unicode).
        self.backend_tokenizer.normalizer = normalizers.Sequence(
            [normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
        )
        self._match_added_tokens()

    def _match_added_tokens(self) -> None:
        """Makes the backend match every added token that is not a BPE vocabulary entry (see `_add_tokens`).

        A `tokenizer.json` (ours, or one written by another tokenizer) holds special added tokens as special, which
        `split_special_tokens` would split: they are remembered as special here and the backend is rebuilt with them
        as non-special (the backend cannot change the flag of a token it holds).
        """
        special = getattr(self, "_matched_special_tokens", None)
        if special is None:
            special = self._matched_special_tokens = set()
        named = set(self.all_special_tokens)
        flip = set()
        for token in self._tokenizer.get_added_tokens_decoder().values():
            if self._tokenizer.model.token_to_id(token.content) is not None:
                continue
            if token.special:
                flip.add(token.content)
            if token.special or token.content in named:
                special.add(token.content)
        if flip:
            state = json.loads(self._tokenizer.to_str())
            for entry in state["added_tokens"]:
                if entry["content"] in flip:
                    entry["special"] = False
            self._tokenizer = Tokenizer.from_str(json.dumps(state))
            self._tokenizer.encode_special_tokens = self.split_special_tokens

    @classmethod
    def from_bpe(cls, path: str = BPE_FILE, **kwargs) -> "MobileCLIPTokenizer":
        """Builds the tokenizer from an open_clip `bpe_simple_vocab_16e6.txt.gz` file (default: the shipped one)."""
        vocab, merges = load_bpe(path)
        return cls(vocab=vocab, merges=merges, **kwargs)

    def _add_tokens(self, new_tokens: list[str | AddedToken], special_tokens: bool = False) -> int:
        # The Rust backend's `encode_special_tokens` (our `split_special_tokens=True`) splits every token it holds as
        # special. Only tokens of the BPE vocabulary (the built-in "!", SOT, EOT) stay special there; a new token is
        # added as non-special, so that it is matched whole, and remembered as special here when it is one.
        special = getattr(self, "_matched_special_tokens", None)
        if special is None:  # this runs from super().__init__, before our own attributes exist
            special = self._matched_special_tokens = set()
        backend_special, backend_plain = [], []
        for token in new_tokens:
            if not isinstance(token, AddedToken):  # the defaults the Rust backend gives a string
                token = AddedToken(token, special=special_tokens, normalized=not special_tokens)
            is_special = special_tokens or token.special
            if self._tokenizer.model.token_to_id(token.content) is not None:
                (backend_special if is_special else backend_plain).append(token)
                continue
            if is_special:
                special.add(token.content)
            else:
                special.discard(token.content)
            backend_plain.append(AddedToken(token.content, single_word=token.single_word, lstrip=token.lstrip,
                                            rstrip=token.rstrip, normalized=token.normalized, special=False))
        added = self._tokenizer.add_special_tokens(backend_special) if backend_special else 0
        return added + (self._tokenizer.add_tokens(backend_plain) if backend_plain else 0)

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        decoder = self._tokenizer.get_added_tokens_decoder()
        for token in decoder.values():
            if token.content in getattr(self, "_matched_special_tokens", ()):
                token.special = True
        return decoder

    def _matched_tokens_pattern(self) -> "re.Pattern | None":
        """A regex of the added tokens the backend matches whole (longest first), or None when there are none."""
        tokens = sorted((t.content for t in self._tokenizer.get_added_tokens_decoder().values() if not t.special),
                        key=len, reverse=True)
        return re.compile("(" + "|".join(map(re.escape, tokens)) + ")") if tokens else None

    def _encode_plus(self, text, text_pair=None, **kwargs):
        # Every entry point (__call__, encode, tokenize) goes through here, so clean once at this level.
        check_text(text)
        added = self._matched_tokens_pattern()
        if text_pair is not None:
            check_text(text_pair, "text_pair")
            text_pair = _clean_all(text_pair, added)
        return super()._encode_plus(_clean_all(text, added), text_pair=text_pair, **kwargs)

    def _decode(self, token_ids, skip_special_tokens: bool = False, **kwargs) -> str:
        # The backend skips only the special tokens it holds as such (see `_add_tokens`).
        if skip_special_tokens and getattr(self, "_matched_special_tokens", None):
            ids = [token_ids] if isinstance(token_ids, int) else token_ids
            skip = {self._tokenizer.token_to_id(t) for t in self._matched_special_tokens}
            token_ids = [i for i in ids if int(i) not in skip]
        return super()._decode(token_ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        tokens = super().convert_ids_to_tokens(ids, skip_special_tokens=skip_special_tokens)
        if skip_special_tokens and not isinstance(ids, int) and getattr(self, "_matched_special_tokens", None):
            tokens = [t for t in tokens if t not in self._matched_special_tokens]
        return tokens

    def _save_pretrained(self, save_directory, file_names, *args, **kwargs):
        # A call leaves padding/truncation enabled on the Rust backend. Saved into tokenizer.json, they would come back
        # as init kwargs (max_length, stride, ...) on reload; each call sets them again anyway.
        self.backend_tokenizer.no_padding()
        self.backend_tokenizer.no_truncation()
        saved = super()._save_pretrained(save_directory, file_names, *args, **kwargs)
        # tokenizer.json marks the special tokens that the backend holds as non-special (see `_add_tokens`) as
        # special again, so that the file alone is right; loading it makes them non-special in the backend again.
        special = getattr(self, "_matched_special_tokens", None)
        for path in saved:
            if special and os.path.basename(path).endswith("tokenizer.json") and os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    state = json.load(f)
                for entry in state.get("added_tokens", []):
                    if entry["content"] in special:
                        entry["special"] = True
                write_json(path, state, ensure_ascii=False)  # a kill mid-write must not corrupt a saved tokenizer
        return saved


__all__ = ["MobileCLIPTokenizer", "bytes_to_unicode", "check_text", "clean_text", "load_bpe"]
