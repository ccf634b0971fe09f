"""Deterministic generator of a synthetic, IESN-shaped dataset (not IESN itself).

``python -m hmg_pipeline.core.sample --out DIR --seed N --scale small|iesn``

The data are learnable for the right reasons. Each labelled edge's emotion is drawn from

    score_e = w_img * image_e + w_user * disposition_{u,e} + w_group * themes_{u,e}
              + sharpness * log prior_e + Gumbel noise

where ``image_e`` comes from the image's visible colour, brightness and texture (rendered into
the JPEG), ``disposition`` is shared within communities of contacts (homophily: most contacts
stay inside a community) and ``themes`` is the mean theme of the interest groups the user
joined (group descriptions name their theme). About a third of the edges carry a comment in one
of six languages that expresses the edge's emotion noisily. Noise of a real platform is
planted too: ``unknown`` and multi-label emotions, duplicate edges, a handful of invalid rows,
comment ids without text, groups without description, self-loops and reversed contacts.
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from hmg_pipeline.core.schema import MIKELS_EMOTIONS, VIEWS

VIEW_COLUMNS = VIEWS.columns

log = logging.getLogger(__name__)

N_EMOTIONS = len(MIKELS_EMOTIONS)

# Base rates before the other factors act (amusement, anger, awe, contentment, disgust,
# excitement, fear, sadness); the realised distribution is reported in data/sample/README.md.
PRIOR = np.array([0.17, 0.035, 0.15, 0.30, 0.045, 0.13, 0.065, 0.105])

# Visual prototype per emotion: hue (0-1), saturation, brightness, texture strength.
PROTOTYPES = np.array(
    [
        [0.12, 0.85, 0.80, 0.35],  # amusement: warm yellow, bright, playful spots
        [0.00, 0.90, 0.45, 0.80],  # anger: red, mid-dark, harsh texture
        [0.58, 0.60, 0.72, 0.15],  # awe: sky blue, bright, smooth
        [0.30, 0.55, 0.65, 0.20],  # contentment: soft green, calm
        [0.18, 0.45, 0.35, 0.90],  # disgust: olive-brown, dark, rough
        [0.85, 0.90, 0.85, 0.65],  # excitement: magenta, very bright, busy
        [0.72, 0.50, 0.18, 0.50],  # fear: dark purple
        [0.62, 0.20, 0.32, 0.10],  # sadness: grey-blue, dull, flat
    ]
)
VISUAL_NOISE = np.array([0.05, 0.12, 0.10, 0.15])
VISUAL_SCALE = np.array([8.0, 1.5, 3.0, 2.0])  # how much each visual cue separates emotions

# Weights of the label model; chosen so that image, user and groups each predict about 40% of
# labels alone against 28% for the majority class, and about 62% together (noise-free score).
W_IMAGE, W_USER, W_GROUP, NOISE = 1.5, 1.0, 2.0, 1.0
PRIOR_SHARPNESS = 1.5

# Valence, arousal, dominance (1-9) per emotion, after the usual Mikels-VAD correspondences.
VAD = np.array(
    [
        [7.5, 5.5, 6.0],
        [2.5, 7.0, 5.5],
        [7.0, 6.0, 4.0],
        [7.0, 3.0, 6.0],
        [2.5, 5.0, 5.0],
        [7.5, 7.5, 6.0],
        [2.5, 7.0, 3.0],
        [2.5, 3.5, 3.5],
    ]
)

LANGUAGE_SHARES = {"en": 0.40, "es": 0.17, "fr": 0.13, "de": 0.12, "ja": 0.09, "ru": 0.09}
PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "amusement": ("haha this made me laugh", "so funny, love it"),
        "anger": ("this makes me so angry", "infuriating to see this"),
        "awe": ("breathtaking, just wow", "truly majestic view"),
        "contentment": ("so peaceful and calm", "lovely, makes me feel at ease"),
        "disgust": ("ugh, that is gross", "disgusting, can't look at it"),
        "excitement": ("wow, so exciting!", "can't wait, this is thrilling"),
        "fear": ("this is terrifying", "creepy, it scares me"),
        "sadness": ("so sad to see this", "this breaks my heart"),
    },
    "es": {
        "amusement": ("jaja qué gracioso", "me hizo reír mucho"),
        "anger": ("esto me da mucha rabia", "qué indignante"),
        "awe": ("impresionante, sin palabras", "una vista majestuosa"),
        "contentment": ("qué tranquilidad", "me siento en paz"),
        "disgust": ("qué asco", "repugnante, no puedo mirarlo"),
        "excitement": ("¡qué emocionante!", "me muero de ganas"),
        "fear": ("da mucho miedo", "qué terror"),
        "sadness": ("qué triste", "me rompe el corazón"),
    },
    "fr": {
        "amusement": ("haha trop drôle", "ça m'a fait rire"),
        "anger": ("ça me met en colère", "c'est révoltant"),
        "awe": ("à couper le souffle", "vraiment majestueux"),
        "contentment": ("tellement paisible", "je me sens serein"),
        "disgust": ("beurk, c'est dégoûtant", "répugnant"),
        "excitement": ("trop excitant !", "j'ai hâte, c'est génial"),
        "fear": ("ça fait peur", "terrifiant"),
        "sadness": ("tellement triste", "ça me brise le cœur"),
    },
    "de": {
        "amusement": ("haha, wie lustig", "hab so gelacht"),
        "anger": ("das macht mich wütend", "einfach empörend"),
        "awe": ("atemberaubend schön", "wirklich majestätisch"),
        "contentment": ("so friedlich und ruhig", "ich fühle mich wohl"),
        "disgust": ("igitt, ekelhaft", "widerlich"),
        "excitement": ("wie aufregend!", "ich kann es kaum erwarten"),
        "fear": ("das macht mir Angst", "unheimlich und gruselig"),
        "sadness": ("so traurig", "das bricht mir das Herz"),
    },
    "ja": {
        "amusement": ("笑った、面白い", "めっちゃ笑える"),
        "anger": ("本当に腹が立つ", "許せない"),
        "awe": ("息をのむ美しさ", "壮大な景色"),
        "contentment": ("とても穏やかな気持ち", "癒される"),
        "disgust": ("気持ち悪い", "うわ、嫌だ"),
        "excitement": ("わくわくする！", "最高に興奮する"),
        "fear": ("怖い", "ぞっとする"),
        "sadness": ("とても悲しい", "胸が痛む"),
    },
    "ru": {
        "amusement": ("ха-ха, очень смешно", "я так смеялся"),
        "anger": ("это меня бесит", "возмутительно"),
        "awe": ("захватывает дух", "величественный вид"),
        "contentment": ("так спокойно и уютно", "на душе тепло"),
        "disgust": ("фу, отвратительно", "мерзко"),
        "excitement": ("как захватывающе!", "не могу дождаться"),
        "fear": ("страшно", "жуть какая"),
        "sadness": ("так грустно", "сердце разрывается"),
    },
}
FILLERS: dict[str, tuple[str, ...]] = {
    "en": ("nice shot", "great photo", "thanks for sharing"),
    "es": ("buena foto", "gracias por compartir"),
    "fr": ("belle photo", "merci du partage"),
    "de": ("tolles Foto", "danke fürs Teilen"),
    "ja": ("いい写真", "共有ありがとう"),
    "ru": ("отличное фото", "спасибо"),
}
COMMENT_FIDELITY = 0.7  # share of comments whose phrase names the edge's own emotion

GROUP_THEMES: dict[str, tuple[str, ...]] = {
    "amusement": ("funny animals", "street humour", "silly faces"),
    "anger": ("protest photography", "raging storms", "urban outrage"),
    "awe": ("mountain vistas", "night skies", "grand landscapes"),
    "contentment": ("quiet gardens", "cozy interiors", "lazy sundays"),
    "disgust": ("rotting things", "grim textures", "pollution watch"),
    "excitement": ("extreme sports", "concerts and festivals", "fireworks"),
    "fear": ("abandoned places", "horror aesthetics", "dark forests"),
    "sadness": ("rainy days", "loneliness", "memories and loss"),
}
GROUP_TEMPLATES = (
    "A community for {theme}. Share pictures that make you feel {emotion}.",
    "Un grupo de {theme}: fotos que transmiten {emotion}.",
    "{theme}: only images full of {emotion}, please.",
)
EPOCH_START = datetime(2008, 1, 1, tzinfo=UTC).timestamp()
EPOCH_END = datetime(2016, 6, 30, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Scale:
    users: int
    images: int
    views: int
    contact_pairs: int
    groups: int
    communities: int
    write_images: bool
    image_size: int = 64


SCALES: dict[str, Scale] = {
    "small": Scale(1_500, 1_200, 7_000, 15_000, 60, 15, True),
    # Table I of the paper; image files are omitted at this scale.
    "iesn": Scale(108_899, 85_157, 197_561, 1_649_058, 1_000, 220, False),
}


@dataclass(frozen=True)
class World:
    """The hidden variables the tables are drawn from."""

    community: np.ndarray  # (users,) community of each user
    disposition: np.ndarray  # (users, 8)
    group_theme: np.ndarray  # (groups,) emotion index of each group's theme
    memberships: np.ndarray  # (m, 2) user index, group index
    image_visual: np.ndarray  # (images, 4) hue, saturation, brightness, texture
    image_affect: np.ndarray  # (images, 8) emotion evidence visible in the image


def iesn_fraction(fraction: float) -> Scale:
    """Table I's counts times ``fraction`` (groups and communities kept), no image files: the
    benchmarks' ``--scale``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction} of IESN: use a number in (0, 1]")
    full = SCALES["iesn"]
    return Scale(
        *(max(1, round(fraction * n)) for n in (full.users, full.images, full.views)),
        max(1, round(fraction * full.contact_pairs)),
        full.groups,
        full.communities,
        False,
    )


def generate(out: Path, seed: int = 0, scale: str | Scale = "small") -> dict[str, int]:
    """Write the dataset's tables (and images at small scale) to ``out``; return row counts.
    ``scale`` names one of :data:`SCALES` or is a :class:`Scale`."""
    spec = scale if isinstance(scale, Scale) else SCALES[scale]
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    world = draw_world(rng, spec)
    users = np.array([f"{48_600_000 + 7 * i}@N0{i % 8}" for i in range(spec.users)])
    image_ids = np.array([str(5_000_000_000 + 977 * i) for i in range(spec.images)])
    group_ids = np.array([f"{30_000 + 13 * g}@N2{g % 10}" for g in range(spec.groups)])

    images = images_table(rng, spec, world, image_ids, users, out)
    views = views_table(rng, spec, world, users, image_ids)
    contacts = contacts_table(rng, spec, world, users)
    groups = groups_table(rng, world, group_ids)
    members = members_table(rng, world, users, group_ids)
    tables = {
        "images": images,
        "views": views,
        "contacts": contacts,
        "groups": groups,
        "group_members": members,
        "users": pl.DataFrame({"user_id": users}),
    }
    for name, frame in tables.items():
        frame.write_csv(out / f"{name}.csv")
    log.info(
        "sample (%s, seed %d) written to %s in %.1fs",
        scale,
        seed,
        out,
        time.perf_counter() - started,
    )
    return {name: frame.height for name, frame in tables.items()}


def draw_world(rng: np.random.Generator, spec: Scale) -> World:
    community = rng.integers(spec.communities, size=spec.users)
    community_disposition = rng.normal(0.0, 1.0, (spec.communities, N_EMOTIONS))
    disposition = community_disposition[community] + rng.normal(0.0, 0.4, (spec.users, N_EMOTIONS))
    group_theme = rng.permutation(np.arange(spec.groups) % N_EMOTIONS)
    memberships = draw_memberships(rng, spec, disposition, group_theme)
    intended = rng.choice(N_EMOTIONS, size=spec.images, p=_normalised(PRIOR**0.5))
    visual = PROTOTYPES[intended] + rng.normal(0.0, 1.0, (spec.images, 4)) * VISUAL_NOISE
    visual[:, 0] %= 1.0
    visual[:, 1:] = visual[:, 1:].clip(0.02, 0.98)
    return World(community, disposition, group_theme, memberships, visual, image_affect(visual))


def image_affect(visual: np.ndarray) -> np.ndarray:
    """Emotion evidence of an image: closeness of its visual cues to each prototype."""
    hue_gap = np.abs(visual[:, None, 0] - PROTOTYPES[None, :, 0])
    hue_gap = np.minimum(hue_gap, 1.0 - hue_gap)
    gaps = np.concatenate([hue_gap[..., None], visual[:, None, 1:] - PROTOTYPES[None, :, 1:]], -1)
    distance = ((gaps * VISUAL_SCALE) ** 2).sum(-1)
    affect = -distance
    return (affect - affect.mean(1, keepdims=True)) / (affect.std(1, keepdims=True) + 1e-9)


def draw_memberships(
    rng: np.random.Generator, spec: Scale, disposition: np.ndarray, group_theme: np.ndarray
) -> np.ndarray:
    """Users join groups whose theme matches their disposition (0-7 groups; 12% join none)."""
    counts = np.where(rng.random(spec.users) < 0.12, 0, rng.integers(1, 7, size=spec.users))
    member = np.repeat(np.arange(spec.users), counts)
    theme = _sample_categorical(rng, _softmax(1.5 * disposition[member]))
    by_theme = [np.flatnonzero(group_theme == e) for e in range(N_EMOTIONS)]
    sizes = np.array([len(g) for g in by_theme])
    offsets = (rng.random(member.size) * sizes[theme]).astype(int)
    group = np.array([by_theme[t][o] for t, o in zip(theme, offsets, strict=True)], dtype=int)
    return np.unique(np.stack([member, group], 1), axis=0)


def user_themes(spec_users: int, world: World) -> np.ndarray:
    """Mean one-hot theme of each user's groups (zeros for users in no group)."""
    themes = np.zeros((spec_users, N_EMOTIONS))
    user, group = world.memberships[:, 0], world.memberships[:, 1]
    np.add.at(themes, (user, world.group_theme[group]), 1.0)
    counts = np.bincount(user, minlength=spec_users)[:, None]
    return np.divide(themes, counts, out=themes, where=counts > 0)


def draw_emotions(
    rng: np.random.Generator, world: World, themes: np.ndarray, user: np.ndarray, image: np.ndarray
) -> np.ndarray:
    """Sample each edge's emotion from the joint score of image, user and groups (see top)."""
    score = (
        W_IMAGE * world.image_affect[image]
        + W_USER * world.disposition[user]
        + W_GROUP * themes[user]
        + PRIOR_SHARPNESS * np.log(PRIOR)
        + NOISE * rng.gumbel(size=(user.size, N_EMOTIONS))
    )
    return score.argmax(1)


def images_table(
    rng: np.random.Generator,
    spec: Scale,
    world: World,
    image_ids: np.ndarray,
    users: np.ndarray,
    out: Path,
) -> pl.DataFrame:
    n = spec.images
    files: list[str | None] = [None] * n
    if spec.write_images:
        (out / "images").mkdir(exist_ok=True)
        for i in range(n):
            files[i] = f"images/{image_ids[i]}.jpg"
            (out / files[i]).write_bytes(render_image(rng, world.image_visual[i], spec.image_size))
    posted = rng.uniform(EPOCH_START, EPOCH_END, n)
    frame = pl.DataFrame(
        {
            "image_id": image_ids,
            "owner_id": users[rng.integers(spec.users, size=n)],
            "url": [flickr_url(i, image_id) for i, image_id in enumerate(image_ids)],
            "file": files,
            "posted_at": _format_times(rng, posted).tolist(),
        }
    )
    if not spec.write_images:
        return frame
    # A handful of invalid rows so every image rule fires: a missing file, a path escaping
    # the raw directory, an absolute path and a duplicated id.
    bad = pl.DataFrame(
        {
            "image_id": ["4999999001", "4999999002", "4999999003", image_ids[1]],
            "owner_id": [users[0]] * 4,
            "url": [None] * 4,
            "file": ["images/4999999001.jpg", "../outside.jpg", "/etc/passwd", files[1]],
            "posted_at": ["2012-03-04T05:06:07Z"] * 4,
        }
    )
    return pl.concat([frame, bad])


def flickr_url(index: int, image_id: str) -> str:
    """A static-image URL in Flickr's shape (server/id_secret.jpg); nothing is served there."""
    return f"https://live.staticflickr.com/{1000 + index % 9000}/{image_id}_{index * 7919:010x}.jpg"


def render_image(rng: np.random.Generator, visual: np.ndarray, size: int) -> bytes:
    """A small JPEG whose colour, brightness and texture carry the image's visual cues."""
    hue, saturation, brightness, texture = visual
    yy, xx = np.mgrid[0:size, 0:size] / size
    value = brightness * (0.75 + 0.25 * (1.0 - yy))
    frequency = 2 + 10 * texture
    angle = rng.uniform(0, np.pi)
    stripes = np.sin(2 * np.pi * frequency * (xx * np.cos(angle) + yy * np.sin(angle)))
    value = value + 0.18 * texture * stripes + 0.12 * texture * rng.normal(size=(size, size))
    hue_map = (hue + 0.03 * rng.normal(size=(size, size)).cumsum(1) / size) % 1.0
    cx, cy, radius = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.25)
    blob = ((xx - cx) ** 2 + (yy - cy) ** 2) < radius**2
    hue_map = np.where(blob, (hue + 0.5) % 1.0, hue_map)
    rgb = _hsv_to_rgb(hue_map, np.full_like(value, saturation), value.clip(0, 1))
    buffer = io.BytesIO()
    Image.fromarray((rgb * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def views_table(
    rng: np.random.Generator, spec: Scale, world: World, users: np.ndarray, image_ids: np.ndarray
) -> pl.DataFrame:
    """Views with planted noise: unknown, multi-label, duplicates, invalid rows."""
    n_base = int(spec.views * 0.98)
    activity = rng.lognormal(0.0, 1.0, spec.users)
    popularity = rng.lognormal(0.0, 1.0, spec.images)
    pairs = _unique_pairs(rng, n_base, _normalised(activity), _normalised(popularity))
    user, image = pairs[:, 0], pairs[:, 1]
    themes = user_themes(spec.users, world)
    emotion = draw_emotions(rng, world, themes, user, image)

    n_dup = spec.views - n_base - (8 if spec.write_images else 0)
    dup = rng.choice(n_base, size=n_dup, replace=False)
    user = np.concatenate([user, user[dup]])
    image = np.concatenate([image, image[dup]])
    emotion = np.concatenate([emotion, draw_emotions(rng, world, themes, user[dup], image[dup])])
    n = user.size

    labels = np.array(MIKELS_EMOTIONS, dtype=object)[emotion]
    kind = rng.random(n)
    other = np.array(MIKELS_EMOTIONS, dtype=object)[rng.integers(N_EMOTIONS, size=n)]
    labels = np.where(kind < 0.06, np.where(rng.random(n) < 0.7, "unknown", " Unknown"), labels)
    multi = (kind >= 0.06) & (kind < 0.10)
    labels = np.where(
        multi,
        np.where(rng.random(n) < 0.5, labels + "|" + other, "unknown|" + labels),
        labels,
    )

    has_text = rng.random(n) < 0.33
    has_id_only = ~has_text & (rng.random(n) < 0.15)
    texts = comment_texts(rng, emotion, has_text)
    comment_ids = np.where(
        has_text | has_id_only,
        np.char.add(
            np.char.add(image_ids[image].astype(str), "-"),
            rng.integers(10**9, 10**10, n).astype(str),
        ),
        None,
    )
    times = rng.uniform(EPOCH_START, EPOCH_END, n)
    vad = VAD[emotion] + rng.normal(0, 0.8, (n, 3))
    has_vad = rng.random(n) < 0.8
    frame = pl.DataFrame(
        {
            "user_id": users[user],
            "image_id": image_ids[image],
            "emotion": labels.astype(str).tolist(),
            "comment_id": comment_ids.tolist(),
            "comment_text": texts,
            "commented_at": np.where(
                rng.random(n) < 0.03, None, _format_times(rng, times)
            ).tolist(),
            **{
                name: np.where(has_vad, np.char.mod("%.2f", vad[:, k]), None).tolist()
                for k, name in enumerate(("valence", "arousal", "dominance"))
            },
        },
        schema=dict.fromkeys(VIEW_COLUMNS, pl.String),
    )
    frame = frame.select(pl.all().gather(rng.permutation(n)))
    if spec.write_images:
        frame = pl.concat([frame, invalid_views(users, image_ids)])
    return frame


def invalid_views(users: np.ndarray, image_ids: np.ndarray) -> pl.DataFrame:
    """Eight rows that each break one validation rule."""
    rows = [
        (users[3], image_ids[3], "happiness", None, None, "2013-05-01T10:00:00Z", None),
        (users[4], image_ids[4], "awe", None, None, "last tuesday", None),
        (users[5], image_ids[5], "fear", None, None, "1400000000", "very high"),
        (None, image_ids[6], "sadness", None, None, "1400000000", None),
        (users[7], "123", "anger", None, None, "1400000000", None),
        (users[8], "4999999001", "awe", None, None, "1400000000", None),
        (users[9], "4999999002", "awe", None, None, "1400000000", None),
        (users[10], image_ids[10], "", None, None, "1400000000", None),
    ]
    frame = pl.DataFrame(rows, schema=dict.fromkeys(VIEW_COLUMNS[:7], pl.String), orient="row")
    return frame.with_columns(pl.lit(None, pl.String).alias(c) for c in VIEW_COLUMNS[7:])


def comment_texts(
    rng: np.random.Generator, emotion: np.ndarray, has_text: np.ndarray
) -> list[str | None]:
    """Comments in six languages expressing the edge's emotion noisily (see COMMENT_FIDELITY)."""
    langs = list(LANGUAGE_SHARES)
    lang = rng.choice(len(langs), size=emotion.size, p=list(LANGUAGE_SHARES.values()))
    faithful = rng.random(emotion.size) < COMMENT_FIDELITY
    expressed = np.where(faithful, emotion, rng.integers(N_EMOTIONS, size=emotion.size))
    variant = rng.integers(2, size=emotion.size)
    filler_roll = rng.random(emotion.size)
    filler_pick = rng.integers(100, size=emotion.size)
    punct = np.array(["", "!", "!!", " :)", "...", " ❤"])[rng.integers(6, size=emotion.size)]
    texts: list[str | None] = []
    for i in range(emotion.size):
        if not has_text[i]:
            texts.append(None)
            continue
        code = langs[lang[i]]
        phrase = PHRASES[code][MIKELS_EMOTIONS[expressed[i]]][variant[i]]
        fillers = FILLERS[code]
        if filler_roll[i] < 0.3:
            phrase = f"{fillers[filler_pick[i] % len(fillers)]}, {phrase}"
        texts.append(phrase + punct[i])
    return texts


def contacts_table(
    rng: np.random.Generator, spec: Scale, world: World, users: np.ndarray
) -> pl.DataFrame:
    """Contact pairs, mostly inside a community (homophily); some reversed, a few self-loops."""
    n = spec.contact_pairs
    order = np.argsort(world.community, kind="stable")
    sizes = np.bincount(world.community, minlength=spec.communities)
    starts = np.concatenate([[0], sizes.cumsum()[:-1]])
    source = rng.integers(spec.users, size=n)
    community = world.community[source]
    inside = order[starts[community] + (rng.random(n) * sizes[community]).astype(int)]
    target = np.where(rng.random(n) < 0.85, inside, rng.integers(spec.users, size=n))
    loops = source == target
    target[loops] = (target[loops] + 1) % spec.users
    planted_loops = rng.choice(n, size=5, replace=False)
    target[planted_loops] = source[planted_loops]
    frame = pl.DataFrame({"user_id": users[source], "contact_id": users[target]})
    if spec.write_images:
        frame = pl.concat(
            [
                frame[:-2],
                pl.DataFrame({"user_id": [users[0], None], "contact_id": [None, users[1]]}),
            ]
        )
    return frame


def groups_table(rng: np.random.Generator, world: World, group_ids: np.ndarray) -> pl.DataFrame:
    names, descriptions = [], []
    for g, theme in enumerate(world.group_theme):
        emotion = MIKELS_EMOTIONS[theme]
        topic = GROUP_THEMES[emotion][g % 3]
        names.append(f"{topic.title()} #{g}")
        template = GROUP_TEMPLATES[rng.integers(len(GROUP_TEMPLATES))]
        descriptions.append(
            None if rng.random() < 0.1 else template.format(theme=topic, emotion=emotion)
        )
    return pl.DataFrame({"group_id": group_ids, "name": names, "description": descriptions})


def members_table(
    rng: np.random.Generator, world: World, users: np.ndarray, group_ids: np.ndarray
) -> pl.DataFrame:
    member = world.memberships[rng.permutation(len(world.memberships))]
    frame = pl.DataFrame({"group_id": group_ids[member[:, 1]], "user_id": users[member[:, 0]]})
    unknown_group = pl.DataFrame({"group_id": ["99999@N99"], "user_id": [users[2]]})
    return pl.concat([frame, unknown_group])


def _unique_pairs(
    rng: np.random.Generator, n: int, p_user: np.ndarray, p_image: np.ndarray
) -> np.ndarray:
    pairs = np.empty((0, 2), dtype=np.int64)
    while len(pairs) < n:
        need = int((n - len(pairs)) * 1.1) + 16
        draw = np.stack(
            [rng.choice(p_user.size, need, p=p_user), rng.choice(p_image.size, need, p=p_image)], 1
        )
        merged = np.concatenate([pairs, draw])
        _, first = np.unique(merged, axis=0, return_index=True)
        pairs = merged[np.sort(first)]
    return pairs[:n]


def _format_times(rng: np.random.Generator, seconds: np.ndarray) -> np.ndarray:
    """Half ISO-8601 (UTC, 'Z'), half Unix seconds: the contract allows both."""
    as_iso = rng.random(seconds.size) < 0.5
    iso = (
        np.datetime_as_string(seconds.astype(np.int64).astype("datetime64[s]"), unit="s").astype(
            object
        )
        + "Z"
    )
    unix = seconds.astype(np.int64).astype(str).astype(object)
    return np.where(as_iso, iso, unix)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = np.zeros((*h.shape, 3))
    for k, (r, g, b) in enumerate(choices):
        mask = i == k
        rgb[mask] = np.stack([r[mask], g[mask], b[mask]], -1)
    return rgb


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / x.sum()


def _sample_categorical(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    cumulative = probabilities.cumsum(-1)
    draws = rng.random((probabilities.shape[0], 1))
    return (draws > cumulative).sum(-1).clip(0, probabilities.shape[-1] - 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    counts = generate(args.out, args.seed, args.scale)
    for name, count in counts.items():
        print(f"{name}: {count:,} rows")


if __name__ == "__main__":
    main()
