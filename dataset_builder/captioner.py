"""Synthetic-caption generators: transformers image-to-text models and open_clip's CoCa (DataCompDR's captioner).

Protocol: a captioner has ``name`` and ``caption(images, num_captions, seeds) -> list[list[str]]``, returning
``num_captions`` strings per image. Sampling is nucleus sampling (top-p 0.9, as in DataCompDR) seeded per image, so
the captions of a sample do not depend on which other samples share its batch, shard or process:

the N captions of every image of a batch are generated together, one row each, and each row draws its tokens from a
generator of its own (``RowSampler``), seeded from the sample's key and the caption's index.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList, MinLengthLogitsProcessor, TopPLogitsWarper

from .augment import seed_for_key


class Captioner(Protocol):
    """What the builder needs from a captioner."""

    name: str

    def caption(self, images: Sequence[Image.Image], num_captions: int, seeds: Sequence[int]) -> list[list[str]]:
        """Return ``num_captions`` captions for each image, sampling with ``seeds[i]`` for image i."""
        ...


def caption_seeds(seeds: Sequence[int], num_captions: int) -> list[int]:
    """One seed per generated row: row r is caption r % N of image r // N, seeded from the image's seed and r % N."""
    return [seed_for_key(f"caption {j}", seed) for seed in seeds for j in range(num_captions)]


def per_image(texts: list[str], num_images: int, num_captions: int) -> list[list[str]]:
    """Rows back to ``num_captions`` captions per image."""
    return [texts[i * num_captions:(i + 1) * num_captions] for i in range(num_images)]


class RowSampler(LogitsProcessor):
    """Samples every row from a generator of its own: Gumbel-max on the (top-p filtered) scores, so that greedy
    search's argmax draws exactly from ``softmax(scores)``, and a row's tokens depend on its seed alone."""

    def __init__(self, seeds: Sequence[int]):
        self.generators = [torch.Generator().manual_seed(seed % 2**63) for seed in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        gumbel = torch.stack([-torch.empty(scores.shape[-1]).exponential_(generator=g).log() for g in self.generators])
        return scores.float() + gumbel.to(scores.device)


def clean_caption(text: str, cut_at_period: bool = True) -> str:
    """Strip and cut at the first "." like DataCompDR's CoCa post-processing; keeps the text if nothing is left."""
    text = " ".join(text.split())
    if cut_at_period and "." in text:
        head = text.split(".", 1)[0].strip()
        text = head or text
    return text


class TransformersCaptioner:
    """Any transformers image-to-text model with ``generate`` (BLIP, GIT, vision-encoder-decoder, ...).

    Args:
        model: The model, on its device and dtype.
        image_processor: Callable ``(images, return_tensors="pt") -> {"pixel_values": ...}`` (an image processor or
            a processor).
        tokenizer: Has ``batch_decode``; defaults to ``image_processor`` (a processor decodes too).
        name: Metadata name.
        max_new_tokens, top_p, prompt: Generation settings; ``prompt`` conditions BLIP-style models.
        cut_at_period: Cut each caption at its first ".".
    """

    def __init__(self, model: torch.nn.Module, image_processor: Any, tokenizer: Any = None, name: str = "hf",
                 max_new_tokens: int = 30, top_p: float = 0.9, prompt: str | None = None, cut_at_period: bool = True):
        self.model = model.eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer or image_processor
        self.name, self.max_new_tokens, self.top_p = name, max_new_tokens, top_p
        self.prompt, self.cut_at_period = prompt, cut_at_period

    @classmethod
    def from_pretrained(cls, model_id: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        **kwargs: Any) -> "TransformersCaptioner":
        """Load with ``AutoProcessor`` and ``AutoModelForImageTextToText`` (falling back to ``AutoModelForVision2Seq``
        or ``VisionEncoderDecoderModel`` for older architectures)."""
        import transformers
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(model_id)
        for auto in ("AutoModelForImageTextToText", "AutoModelForVision2Seq", "VisionEncoderDecoderModel"):
            loader = getattr(transformers, auto, None)
            try:
                model = loader.from_pretrained(model_id, dtype=dtype)
                break
            except (ValueError, AttributeError, TypeError):
                continue
        else:
            raise ValueError(f"{model_id} is not an image-to-text model")
        return cls(model.to(device), processor, name=f"hf:{model_id}", **kwargs)

    @torch.no_grad()
    def caption(self, images: Sequence[Image.Image], num_captions: int, seeds: Sequence[int]) -> list[list[str]]:
        param = next(self.model.parameters())
        kwargs = {"text": [self.prompt] * len(images)} if self.prompt else {}
        inputs = self.image_processor(images=list(images), return_tensors="pt", **kwargs)
        # One row per caption (greedy search takes no num_return_sequences: repeat the inputs).
        inputs = {k: (v.to(param.device, param.dtype) if v.is_floating_point() else v.to(param.device))
                  .repeat_interleave(num_captions, dim=0) for k, v in inputs.items()}
        sample = LogitsProcessorList([TopPLogitsWarper(self.top_p), RowSampler(caption_seeds(seeds, num_captions))])
        out = self.model.generate(**inputs, do_sample=False, num_beams=1, logits_processor=sample,
                                  max_new_tokens=self.max_new_tokens)
        if self.prompt and "input_ids" in inputs and not self.model.config.is_encoder_decoder:
            out = out[:, inputs["input_ids"].shape[1]:]  # decoder-only models echo the prompt
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return per_image([clean_caption(t, self.cut_at_period) for t in texts], len(images), num_captions)


class CoCaKVDecoder:
    """open_clip CoCa's next-token logits, one position per step with the keys and values cached: what
    ``model(pixels, tokens, image_latent, image_embs)["logits"][:, -1]`` gives for the prefix so far (to float
    rounding), at the cost of one position instead of the whole prefix.

    Exact because every hidden state of a position depends on the tokens up to it only: the unimodal text tower is
    causal, and its padding mask (open_clip builds it whenever a CLS token is appended; it hides the keys after a
    padding id, or at one with ``correct_cls_mask``) is a function of each key's own prefix; the CLS token is last, so
    no token attends to it; the multimodal decoder is causal and attends to the fixed image tokens, whose keys and
    values are computed once. Use ``supports(model)`` first: other text towers (bidirectional, custom blocks, not
    batch-first) are not cached.
    """

    def __init__(self, model, image_embs: torch.Tensor):
        self.text, self.decoder = model.text, model.text_decoder
        self.text_cache: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.text.transformer.resblocks)
        self.decoder_cache: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.decoder.resblocks)
        self.image_kv = [self._project(block, block.ln_1_kv(image_embs), first=1, count=2)
                         for block in self.decoder.cross_attn]
        self.keys_visible = torch.empty(len(image_embs), 0, dtype=torch.bool, device=image_embs.device)
        self.last_is_pad = torch.zeros(len(image_embs), dtype=torch.bool, device=image_embs.device)

    @staticmethod
    def supports(model) -> bool:
        """Whether ``model``'s text towers are the causal, batch-first nn.MultiheadAttention blocks cached here."""
        from open_clip.transformer import ResidualAttentionBlock

        text, decoder = model.text, model.text_decoder
        blocks = [*text.transformer.resblocks, *decoder.resblocks, *decoder.cross_attn]
        return (text.attn_mask is not None and text.transformer.batch_first and decoder.batch_first
                and all(type(b) is ResidualAttentionBlock and b.attn._qkv_same_embed_dim for b in blocks))

    @staticmethod
    def _project(block, x: torch.Tensor, first: int = 0, count: int = 3) -> tuple[torch.Tensor, ...]:
        """``count`` of nn.MultiheadAttention's packed input projections q, k, v from the ``first`` on, each split
        into (batch, heads, length, head_dim)."""
        width = block.attn.embed_dim
        rows = slice(first * width, (first + count) * width)
        bias = None if block.attn.in_proj_bias is None else block.attn.in_proj_bias[rows]
        projected = F.linear(x, block.attn.in_proj_weight[rows], bias)
        return tuple(t.unflatten(-1, (block.attn.num_heads, -1)).transpose(1, 2)
                     for t in projected.split(width, dim=-1))

    def _block(self, block, x: torch.Tensor, cache: list, i: int, visible: torch.Tensor | None,
               cross: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """One ResidualAttentionBlock on the new position ``x`` (batch, 1, width), as its forward computes it."""
        if cross is None:  # self-attention over the cached prefix and this position
            q, k, v = self._project(block, block.ln_1(x))
            if cache[i] is not None:
                k, v = torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2)
            cache[i] = (k, v)
        else:
            (q,), (k, v) = self._project(block, block.ln_1(x), count=1), cross
        mask = None if visible is None else visible[:, None, None, :]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + block.ls_1(block.attn.out_proj(attended.transpose(1, 2).flatten(2)))
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row (``(batch,)`` ids) and return the logits ``(batch, vocab)`` after it."""
        text, position = self.text, self.keys_visible.shape[1]
        cast = text.transformer.get_cast_dtype()
        x = (text.token_embedding(tokens[:, None]).to(cast) + text.positional_embedding[position].to(cast))
        is_pad = tokens == text.pad_id
        # open_clip's mask: with correct_cls_mask a padding key is hidden, otherwise the key after one (its list of
        # visible keys is shifted by the CLS slot it prepends, so the first key is always visible).
        visible = ~is_pad if text.correct_cls_mask else ~self.last_is_pad
        self.keys_visible = torch.cat([self.keys_visible, visible[:, None]], dim=1)
        self.last_is_pad = is_pad
        masked = text.use_pad_mask or text.cls_emb is not None
        for i, block in enumerate(text.transformer.resblocks):
            x = self._block(block, x, self.text_cache, i, self.keys_visible if masked else None)
        if text.cls_emb is None:  # the tokens handed to the decoder are then normalised
            x = text.ln_final(x)
        for i, (block, cross) in enumerate(zip(self.decoder.resblocks, self.decoder.cross_attn)):
            x = self._block(block, x, self.decoder_cache, i, None)
            x = self._block(cross, x, None, i, None, cross=self.image_kv[i])
        x = self.decoder.ln_final(x[:, 0])
        return x @ self.decoder.text_projection if self.decoder.text_projection is not None else x


class CoCaCaptioner:
    """open_clip CoCa, DataCompDR's captioner, sampling as its ``generate(generation_type="top_p", top_p=0.9,
    fixed_output_length=True)`` does (at least 5 tokens, top-p 0.9, end-of-text forced at ``seq_len``), but with
    every row drawing from its own generator (open_clip's loop draws from the global RNG, so its captions would depend
    on the batch). Decoded text is cut at end-of-text and at the first ".".

    Args:
        model_name: e.g. ``"coca_ViT-L-14"``.
        pretrained: open_clip tag (DataCompDR's exact tag is not published) or a checkpoint path.
        device, dtype: Where and how it runs.
        seq_len: Generated length in tokens.
        top_p: Nucleus mass.
    """

    def __init__(self, model_name: str = "coca_ViT-L-14", pretrained: str | None = "mscoco_finetuned_laion2b_s13b_b90k",
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seq_len: int = 30,
                 top_p: float = 0.9):
        import open_clip

        model, _, self.preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
        self.model = model.to(device=device, dtype=dtype).eval()
        self.name, self.seq_len, self.top_p = f"openclip:{model_name}:{pretrained}", seq_len, top_p
        self._decode = open_clip.decode

    @torch.no_grad()
    def sample(self, pixels: torch.Tensor, seeds: Sequence[int], min_len: int = 5, rows_per_image: int = 1,
               kv_cache: bool = True) -> torch.Tensor:
        """Token ids ``(images * rows_per_image, seq_len)`` for normalised ``pixels``, row i drawn with ``seeds[i]``
        (rows r * rows_per_image ... of image r). ``kv_cache=False`` re-runs the decoders over the whole prefix at
        every step, as open_clip's ``generate`` does; the cache (``CoCaKVDecoder``) gives the same logits to float
        rounding."""
        sot, eos, pad = 49406, 49407, self.model.pad_id
        # CoCa's forward without text is its image encoding: the pooled latent and the token embeddings the decoder
        # attends to (`encode_image` returns the latent only), encoded once per image for all its rows and steps.
        image = self.model(pixels)
        image_latent, image_embs = (image[k].repeat_interleave(rows_per_image, dim=0)
                                    for k in ("image_features", "image_embs"))
        pixels = pixels.repeat_interleave(rows_per_image, dim=0)
        out = torch.full((len(pixels), 1), sot, dtype=torch.long, device=pixels.device)
        decoder = CoCaKVDecoder(self.model, image_embs) if kv_cache and CoCaKVDecoder.supports(self.model) else None
        sample = LogitsProcessorList([MinLengthLogitsProcessor(min_len, eos), TopPLogitsWarper(self.top_p),
                                      RowSampler(seeds)])
        while out.shape[1] < self.seq_len:
            if decoder is not None:
                logits = decoder.step(out[:, -1])
            else:
                logits = self.model(pixels, out, image_latent=image_latent, image_embs=image_embs,
                                    output_labels=False)["logits"][:, -1]
            token = sample(out, logits.float()).argmax(-1)
            if out.shape[1] + 1 == self.seq_len:
                token.fill_(eos)
            done = (out[:, -1] == eos) | (out[:, -1] == pad)
            out = torch.cat([out, torch.where(done, pad, token)[:, None]], dim=1)
        return out

    @torch.no_grad()
    def caption(self, images: Sequence[Image.Image], num_captions: int, seeds: Sequence[int]) -> list[list[str]]:
        param = next(self.model.parameters())
        pixels = torch.stack([self.preprocess(image) for image in images])
        tokens = self.sample(pixels.to(param.device, param.dtype), caption_seeds(seeds, num_captions),
                             rows_per_image=num_captions)
        texts = [self._decode(t).split("<end_of_text>")[0].replace("<start_of_text>", "") for t in tokens]
        return per_image([clean_caption(t) for t in texts], len(images), num_captions)


def load_captioner(spec: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """Build a captioner from a CLI spec: ``openclip:<model>:<pretrained>``, ``hf:<id or folder>`` or ``none``."""
    kind, _, rest = spec.partition(":")
    if kind == "none":
        return None
    if kind == "openclip":
        model_name, _, pretrained = rest.partition(":")
        return CoCaCaptioner(model_name, pretrained or None, device=device, dtype=dtype)
    if kind == "hf":
        return TransformersCaptioner.from_pretrained(rest, device=device, dtype=dtype)
    raise ValueError(f"unknown captioner spec {spec!r}; use 'openclip:<model>:<pretrained>', 'hf:<id>' or 'none'")


__all__ = ["Captioner", "CoCaCaptioner", "RowSampler", "TransformersCaptioner", "clean_caption", "load_captioner"]
