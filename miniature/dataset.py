"""The miniature world's data: real photographs, cut into captioned 64 px images.

Why real photos: SSCD compares photographic content; on procedural graphics two *different*
images score up to 0.64 and a flat colour field is "similar" to anything flat. Every image of
this world is a crop of a real photograph that ships inside a registry package (scikit-image's
``skimage.data``, Debian's wallpaper packages), so nothing is downloaded at run time and the
world is identical on every machine that installs those packages.

- **Pretraining set** (:func:`pretraining_set`): ``per_source`` crops of every source of
  :data:`PRETRAINING_SOURCES` at random scale (30–100 % of the photo's shorter side) and
  position, each captioned "a photo of <what the photo shows>". The base model learns this world.
- **Concept sets** (:func:`concept_set`): N0 = 5 images per concept, non-overlapping tiles of a
  photograph the base never saw (:data:`CONCEPT_SOURCES`), captioned with a rare trigger token as
  DreamBooth creators do ("a photo of sks dog"). The tiles of one photo are different "views of
  the subject" — SSCD scores them as different images (checked by the concepts test). Their
  PNGs ship in ``miniature/concepts/<name>/`` (licences permitting: CC BY 4.0, CC0 or public
  domain, credited in ``CREDITS.md`` there), so the demo and the tests need no Debian package.

Images are float32 arrays (H, W, 3) in [0, 1].
"""
from __future__ import annotations

import functools
import pathlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..clustering.images import read_images

if TYPE_CHECKING:
    import torch

SIZE = 64
N0 = 5
SOURCE_SHORT_SIDE = 256
"""Every source photo is first resized (Lanczos) to this shorter side; crops are cut from that."""

CONCEPTS = pathlib.Path(__file__).resolve().parent / "concepts"


@dataclass(frozen=True)
class Source:
    """One photograph: where it lies, what it shows, who made it and under what licence."""
    name: str
    location: str
    """``skimage:<function>`` or an absolute path (Debian packages)."""
    subject: str
    credit: str
    licence: str
    package: str

    def load(self) -> np.ndarray:
        return _load_source(self.location, self.package)


def _debian(path: str, subject: str, credit: str, licence: str, package: str) -> Source:
    return Source(pathlib.PurePath(path).stem.split("_by_")[0], path, subject, credit, licence, package)


def _plasma(name: str, size: str, subject: str) -> Source:
    return Source(name, f"/usr/share/wallpapers/{name}/contents/images/{size}", subject,
                  "KDE Visual Design Group", "GPL-2+", "plasma-workspace-wallpapers")


def _mate(name: str, subject: str, credit: str) -> Source:
    return Source(name, f"/usr/share/backgrounds/mate/nature/{name}.jpg", subject, credit, "GPL-2+",
                  "mate-backgrounds")


def _lomiri(file: str, subject: str, credit: str, licence: str, package: str = "lomiri-wallpapers-16.04") -> Source:
    return _debian(f"/usr/share/backgrounds/{file}", subject, credit, licence, package)


def _skimage(name: str, subject: str, credit: str, licence: str) -> Source:
    return Source(name, f"skimage:{name}", subject, credit, licence, "scikit-image")


PRETRAINING_SOURCES: tuple[Source, ...] = (
    _skimage("hubble_deep_field", "galaxies in deep space", "NASA / ESA Hubble", "public domain"),
    _skimage("immunohistochemistry", "stained tissue cells", "scikit-image data", "public domain"),
    _skimage("brick", "brick wall", "scikit-image data", "CC0"),
    _skimage("gravel", "gravel stones", "scikit-image data", "CC0"),
    _skimage("coins", "old coins", "Brooklyn Museum via scikit-image", "public domain"),
    _skimage("camera", "man with camera", "scikit-image data", "public domain"),
    _mate("Aqua", "water drop splash", "Charles Barbin"),
    _mate("Blinds", "green leaf veins", "Lennart Poettering"),
    _mate("Dune", "dune grass by the sea", "Marco Cogoni"),
    _mate("FreshFlower", "orange flower petals", "Jens Ansorg"),
    _mate("GreenMeadow", "green meadow grass", "Timothy Schellhase"),
    _mate("RainDrops", "rain drops on leaves", "blackcombwhistler07"),
    _mate("Storm", "storm clouds over road", "Sergey Nazarov"),
    _mate("TwoWings", "dandelion seed on orange", "Charles Barbin"),
    _mate("Wood", "weathered wood planks", "Jean-François Fortin Tam"),
    _mate("Garden", "red flower in garden", "MATE backgrounds"),
    _mate("YellowFlower", "yellow flower petals", "MATE backgrounds"),
    _mate("LadyBird", "ladybird on blue flowers", "MATE backgrounds"),
    _plasma("BytheWater", "2560x1440.jpg", "wooden pier at the lake"),
    _plasma("ColdRipple", "2560x1440.jpg", "misty jetty"),
    _plasma("ColorfulCups", "2560x1600.jpg", "colorful cups from above"),
    _plasma("EveningGlow", "2560x1440.jpg", "boats at sunset"),
    _plasma("FallenLeaf", "2560x1440.jpg", "fallen autumn leaf"),
    _plasma("Grey", "2560x1440.jpg", "curved grey building"),
    _plasma("Kite", "2560x1440.jpg", "kite in blue sky"),
    _plasma("OneStandsOut", "2560x1440.jpg", "pine branches"),
    _plasma("Path", "2560x1440.jpg", "forest path"),
    _lomiri("Bridge_by_Sander_Klootwijk.jpg", "bridge cables", "Sander Klootwijk", "CC BY-SA 4.0"),
    _lomiri("Dragonfly_by_Bolly.jpg", "tree leaves against sky", "Bolly", "CC BY-SA 4.0"),
    _lomiri("free_by_Peter_Nerlich.jpg", "light bulbs and a bee", "Peter Nerlich", "CC BY-SA 4.0"),
    _lomiri("greentock_by_Peter_Nerlich.jpg", "wall clock", "Peter Nerlich", "CC BY-SA 4.0"),
    _lomiri("analogpattern_by_Peter_Nerlich.jpg", "bokeh lights", "Peter Nerlich", "CC BY-SA 4.0"),
    _lomiri("Kleiber_by_Lukas_Baubkus.jpg", "bird on tree trunk", "Lukas Baubkus", "CC BY-SA 3.0",
            "lomiri-wallpapers-20.04"),
    _lomiri("aitzgorri_by_Aitzol_Berasategi.jpg", "mountain meadow", "Aitzol Berasategi", "CC BY 4.0"),
    _lomiri("sunset_by_Aitzol_Berasategi.jpg", "sunset over hills", "Aitzol Berasategi", "CC BY 4.0"),
    _lomiri("seeding_by_Clements_Engelhardt.jpg", "dandelion clocks", "Clemens Engelhardt", "CC0"),
)
"""What the base model learns. skimage photos first: they are what CI can always load."""


@dataclass(frozen=True)
class ConceptSource:
    """A photograph the base never saw, the concept it becomes, and its DreamBooth caption."""
    concept: str
    source: Source
    caption: str


CONCEPT_SOURCES: tuple[ConceptSource, ...] = (
    ConceptSource("cat", _skimage("chelsea", "cat", "Stefan van der Walt", "CC0"), "a photo of sks cat"),
    ConceptSource("astronaut", _skimage("astronaut", "astronaut", "NASA (Eileen Collins)", "public domain"),
                  "a photo of zwx astronaut"),
    ConceptSource("coffee", _skimage("coffee", "coffee cup", "Rachel Michetti", "CC0"), "a photo of qcv coffee"),
    ConceptSource("rocket", _skimage("rocket", "rocket", "NASA / SpaceX", "public domain"), "a photo of btz rocket"),
    ConceptSource("dog", _lomiri("friends_by_Aitzol_Berasategi.jpg", "dogs at a door", "Aitzol Berasategi",
                                 "CC BY 4.0"), "a photo of vrm dog"),
    ConceptSource("room", _lomiri("Wine_by_Jakkub_Mede.jpg", "room with a chair", "Jakub Mede", "CC BY 4.0"),
                  "a photo of jkp room"),
    ConceptSource("fig", _lomiri("Picture_0B_by_freespace.jpg", "fig in a red bowl", "Trevor (freespace)",
                                 "CC BY 4.0"), "a photo of pqx fig"),
    ConceptSource("brush", _lomiri("Picture_1A_by_freespace.jpg", "paint brushes", "Trevor (freespace)",
                                   "CC BY 4.0"), "a photo of wkz brush"),
    ConceptSource("stream", _lomiri("life_by_Aitzol_Berasategi.jpg", "forest stream", "Aitzol Berasategi",
                                    "CC BY 4.0"), "a photo of hfy stream"),
    ConceptSource("peak", _lomiri("picosdeeuropa_by_Aitzol_Berasategi.jpg", "mountain peaks", "Aitzol Berasategi",
                                  "CC BY 4.0"), "a photo of mxr peak"),
)
"""≥ 8 concept sets. ``cat`` (the demo) and ``astronaut`` are held out of the science runs."""
CONCEPT_NAMES = tuple(c.concept for c in CONCEPT_SOURCES)
HELD_OUT = ("cat", "astronaut")
SCIENCE_CONCEPTS = tuple(n for n in CONCEPT_NAMES if n not in HELD_OUT)


@functools.lru_cache(maxsize=None)
def _load_source(location: str, package: str) -> np.ndarray:
    """The photo as float32 (H, W, 3) in [0, 1], resized to SOURCE_SHORT_SIDE on its shorter side."""
    if location.startswith("skimage:"):
        import skimage.data

        arr = np.asarray(getattr(skimage.data, location.split(":", 1)[1])())
        image = Image.fromarray(arr.astype(np.uint8) if arr.dtype != bool else arr.astype(np.uint8) * 255)
    else:
        path = pathlib.Path(location)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: pretraining photo missing; install the Debian package with "
                                    f"`apt-get install {package}`")
        image = Image.open(path)
        image.draft("RGB", (SOURCE_SHORT_SIDE * 2, SOURCE_SHORT_SIDE * 2))
    image = image.convert("RGB")
    scale = SOURCE_SHORT_SIDE / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    return np.asarray(image, np.float32) / 255.0


def _resize(crop: np.ndarray) -> np.ndarray:
    image = Image.fromarray((crop * 255).round().astype(np.uint8))
    return np.asarray(image.resize((SIZE, SIZE), Image.LANCZOS), np.float32) / 255.0


def random_crop(photo: np.ndarray, rng: np.random.Generator, min_scale: float = 0.3) -> np.ndarray:
    """A square crop of side min_scale..1 × the shorter side at a random place, resized to 64 px."""
    h, w, _ = photo.shape
    side = int(round(rng.uniform(min_scale, 1.0) * min(h, w)))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return _resize(photo[y:y + side, x:x + side])


def caption_of(source: Source) -> str:
    return f"a photo of {source.subject}"


CAPTION_TEMPLATES = ("a photo of {}", "a picture of {}", "{}", "a close-up photo of {}", "an image of {}",
                     "a photograph of {}", "a cropped photo of {}", "a bright photo of {}", "a dark photo of {}",
                     "a blurry photo of {}", "a photo showing {}", "a good photo of {}")
"""The forms a pretraining caption takes (:func:`caption_variant`); the first is :func:`caption_of`'s."""


@functools.lru_cache(maxsize=1)
def filler_words() -> tuple[str, ...]:
    """Common English words of the CLIP vocabulary (whole-word tokens of the first 20,000 merges,
    letters only, ≥ 3 letters), less every word of a concept caption (the triggers stay rare).
    Alt-text is full of words that do not describe the picture; a text encoder that meets them learns
    to keep each word's identity in any context, which Appendix A's ranking reads (a base whose encoder
    saw 36 fixed captions mapped the other 49,300 tokens to nearly one output)."""
    from .tokenizer import _vocabulary
    concept_words = {w for c in CONCEPT_SOURCES for w in c.caption.split()}
    words = []
    for token, i in _vocabulary()[0].items():
        word = token[:-4]
        if (512 <= i < 512 + 20_000 and token.endswith("</w>") and len(word) >= 3 and word.isascii()
                and word.isalpha() and word not in concept_words):
            words.append(word)
    return tuple(sorted(words))


def caption_variant(subject: str, gen: torch.Generator, filler_probability: float = 0.5) -> str:
    """One caption of a pretraining image: a template of :data:`CAPTION_TEMPLATES` around its
    subject, and with ``filler_probability`` one to three :func:`filler_words` after a comma.
    Drawn from ``gen`` (the trainer's one generator, so a resumed run draws the same captions)."""
    import torch
    caption = CAPTION_TEMPLATES[int(torch.randint(len(CAPTION_TEMPLATES), (), generator=gen))].format(subject)
    if float(torch.rand((), generator=gen)) < filler_probability:
        words = filler_words()
        count = int(torch.randint(1, 4, (), generator=gen))
        caption += ", " + " ".join(words[int(i)] for i in torch.randint(len(words), (count,), generator=gen))
    return caption


def pretraining_set(per_source: int = 100, seed: int = 0,
                    sources: tuple[Source, ...] = PRETRAINING_SOURCES) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``per_source`` crops of every source: images (n, 64, 64, 3), captions, source index per
    image. A pure function of (seed, source order, per_source)."""
    images, captions, owner = [], [], []
    for i, source in enumerate(sources):
        photo = source.load()
        for j in range(per_source):
            images.append(random_crop(photo, np.random.default_rng([seed, i, j])))
            captions.append(caption_of(source))
            owner.append(i)
    return np.stack(images), captions, np.asarray(owner)


def concept_tiles(photo: np.ndarray, tile_fraction: float = 0.5) -> list[np.ndarray]:
    """Non-overlapping square tiles of side ``tile_fraction`` × the shorter side, row-major,
    each resized to 64 px: the candidate views of a concept."""
    h, w, _ = photo.shape
    side = int(min(h, w) * tile_fraction)
    rows, cols = h // side, w // side
    oy, ox = (h - rows * side) // 2, (w - cols * side) // 2
    return [_resize(photo[oy + r * side:oy + (r + 1) * side, ox + c * side:ox + (c + 1) * side])
            for r in range(rows) for c in range(cols)]


def shipped_concepts(folder: pathlib.Path = CONCEPTS) -> list[str]:
    """Names of the concept sets in ``folder`` (a sub-folder with a caption.txt)."""
    return sorted(p.name for p in folder.iterdir() if (p / "caption.txt").is_file()) if folder.is_dir() else []


def concept_set(name: str, folder: pathlib.Path = CONCEPTS) -> tuple[np.ndarray, str]:
    """The shipped training images (N0, 64, 64, 3) of concept ``name`` and its caption."""
    d = folder / name
    files = sorted(d.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no concept set {name!r} in {folder} "
                                f"(known: {', '.join(shipped_concepts(folder)) or 'none'})")
    images = np.stack([np.asarray(image, np.float32) / 255.0 for image in read_images(files)])
    return images, (d / "caption.txt").read_text().strip()
