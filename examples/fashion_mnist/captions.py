"""Captions of the Fashion-MNIST demo: clean ones (teachers, captioner, zero-shot prompts) and web-like noisy ones.

Clean captions name the image's class, in a prompt template or as a short description. The student's "web" captions
stand in for the alt-text of a web crawl such as DataComp, whose noise dataset reinforcement is meant to correct:
a seeded mixture of `WEB_MIXTURE` (25% a correct caption, 25% a caption naming a wrong class, 50% uninformative
alt-text such as "IMG_2041.jpg" or "new arrival, free shipping").
"""

import random

CLASS_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
TEMPLATES = ["a photo of a {}.", "a black and white photo of a {}.", "a low resolution photo of a {}.",
             "a photo of the {}.", "a picture of a {}.", "an image of a {}.", "a grayscale photo of a {}.",
             "a small photo of a {}."]
DESCRIPTIONS = {
    "t-shirt": ["a short-sleeved cotton top", "a casual tee with a round neck", "a simple top without buttons",
                "a plain t-shirt laid flat"],
    "trouser": ["a pair of long pants", "two straight trouser legs", "a pair of slim jeans",
                "long trousers seen from the front"],
    "pullover": ["a long-sleeved knitted sweater", "a warm jumper with long sleeves", "a wool pullover",
                 "a cosy sweater laid flat"],
    "dress": ["a one-piece dress", "a long dress for women", "a summer dress without sleeves",
              "a dress with a flared skirt"],
    "coat": ["a warm winter coat", "a jacket with long sleeves and buttons", "a coat with a zip",
             "an outdoor jacket"],
    "sandal": ["an open summer shoe with straps", "a strappy sandal", "a flat sandal seen from the side",
               "open-toed footwear"],
    "shirt": ["a shirt with a collar and buttons", "a button-down shirt", "a long-sleeved blouse",
              "a formal shirt laid flat"],
    "sneaker": ["a low sports shoe", "a running shoe seen from the side", "a canvas trainer",
                "a casual sneaker"],
    "bag": ["a handbag", "a leather bag with handles", "a shoulder bag", "a tote bag"],
    "ankle boot": ["a boot that reaches the ankle", "a short leather boot", "a heeled ankle boot",
                   "a winter boot seen from the side"],
}
# Alt-text that says nothing about the pixels: file names, shop boilerplate, SEO strings.
ALT_TEXTS = ["IMG_{:04d}.jpg", "DSC{:05d}.JPG", "product photo {}", "new arrival, free shipping",
             "click to enlarge", "sale! 50% off today only", "best price guaranteed", "image not available",
             "thumbnail", "spring collection {}", "item no. {}", "shop now"]
# Fractions of the web captions: correct / naming a wrong class / uninformative alt-text. The reinforced student does
# not depend on them (it learns from the teachers' embeddings); the CLIP baseline does: with 40% / 20% / 40% it is 8
# points higher after 184,320 samples, and the learning efficiency is 2.6x instead of at least 5.1x (the README).
WEB_MIXTURE = {"correct": 0.25, "wrong_class": 0.25, "alt_text": 0.5}


def clean_captions(label: int) -> list[str]:
    """Every clean caption of a class: the prompt templates and "a photo of <description>"."""
    name = CLASS_NAMES[label]
    return [t.format(name) for t in TEMPLATES] + [f"a photo of {d}." for d in DESCRIPTIONS[name]]


def web_captions(labels: list[int], seed: int = 0) -> tuple[list[str], list[str]]:
    """Web-like captions of images with these labels, and the kind of each (a `WEB_MIXTURE` key).

    Exactly round(fraction x n) captions of each kind (the remainder to alt-text), assigned to a seeded random
    permutation of the images; a wrong class is drawn uniformly among the other nine.
    """
    rng = random.Random(seed)
    n = len(labels)
    counts = {kind: round(fraction * n) for kind, fraction in WEB_MIXTURE.items()}
    counts["alt_text"] = n - counts["correct"] - counts["wrong_class"]
    kinds = [kind for kind, count in counts.items() for _ in range(count)]
    rng.shuffle(kinds)
    captions = []
    for label, kind in zip(labels, kinds):
        if kind == "correct":
            captions.append(rng.choice(TEMPLATES).format(CLASS_NAMES[label]))
        elif kind == "wrong_class":
            wrong = rng.choice([c for c in range(len(CLASS_NAMES)) if c != label])
            captions.append(rng.choice(TEMPLATES).format(CLASS_NAMES[wrong]))
        else:
            captions.append(rng.choice(ALT_TEXTS).format(rng.randrange(10_000)))
    return captions, kinds


def caption_class(text: str) -> int | None:
    """The class a clean caption names (a class name in a template, or a class description), else None."""
    text = text.strip().rstrip(".")
    for label in range(len(CLASS_NAMES)):
        if text in [c.rstrip(".") for c in clean_captions(label)]:
            return label
    return None
