"""A tiny BLIP captioner (`BlipForConditionalGeneration` + `BlipProcessor`) with a word vocabulary.

Saved with `save_pretrained` into `OUT/blip/`, loaded by `from_pretrained(folder)` exactly like
`Salesforce/blip-image-captioning-*`. The tokenizer is a BERT WordPiece tokenizer over a few
hundred whole English words, so random-weight captions are strings of real words.

transformers 5.x: `BertTokenizer(vocab_file=...)` silently ignores the file (a 5-token vocabulary),
so the vocabulary is passed as a dict. BLIP's decoder starts from `bos_token_id`, which must be
the `[DEC]` token, and stops at `[SEP]` (`sep_token_id`).
"""
from __future__ import annotations

from pathlib import Path

from tasks.config import ModelRef
from tasks.offline.tiny_models import TINY_MODELS

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]  # ids 0..5, BertTokenizer's order

WORDS = """
a an the of in on at with and near under over by through behind beside along across from to into
one two three four some many few several
rain rainy raining raindrops drops drop streaks streak drizzle downpour storm stormy shower wet
water puddle puddles splash mist fog foggy haze hazy cloud clouds cloudy sky umbrella umbrellas
window glass windshield lens droplets condensation reflection reflections
street road roads avenue lane alley sidewalk crosswalk highway bridge tunnel intersection corner
city town village downtown square park garden field forest mountain mountains hill hills river
lake sea beach coast harbor port
car cars taxi bus truck van bicycle bike motorcycle scooter train tram boat traffic vehicle
wheel wheels headlights taillights
night evening dusk dawn morning afternoon day daytime dark darkness bright light lights lamp
lamps streetlight streetlights neon sign signs glow glowing shadow shadows sun sunlight moon
tree trees bush bushes grass leaves flowers plant plants branches
building buildings house houses tower skyscraper apartment shop shops store cafe restaurant
station roof roofs wall walls door doors fence gate stairs balcony
man woman people person child children boy girl couple crowd pedestrian pedestrians walking
running standing sitting riding holding crossing waiting driving parked moving
dog cat bird birds
red blue green yellow orange white black gray grey brown purple pink golden silver
large small big little tall long wide narrow old new empty busy quiet crowded blurry blurred
clear heavy soft gentle cold warm reflective shiny colorful
is are there it its this that view scene picture photo image close up background foreground
top bottom left right middle side front back
""".split()


def vocabulary() -> dict[str, int]:
    words = list(dict.fromkeys(WORDS))  # de-duplicated, order kept
    return {tok: i for i, tok in enumerate(SPECIALS + words)}


@TINY_MODELS.register("blip")
def make_tiny_blip(out_dir: Path, seed: int = 0) -> ModelRef:
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder = Path(out_dir) / "blip"
    folder.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, bos_token="[DEC]", model_max_length=64)
    # Real BLIP preprocessing (384² bicubic resize, CLIP mean/std); the tower is toy-sized.
    image_processor = BlipImageProcessor(size={"height": 384, "width": 384})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)

    config = BlipConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=64,
            encoder_hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
            bos_token_id=vocab["[DEC]"],
            pad_token_id=vocab["[PAD]"],
            sep_token_id=vocab["[SEP]"],
            eos_token_id=vocab["[SEP]"],
        ),
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=384,
            patch_size=32,
            # BLIP's default vision init range (1e-10) makes every image embed alike; a normal
            # range lets different images give different captions.
            initializer_range=0.02,
        ),
        projection_dim=64,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BlipForConditionalGeneration(config)
        # BERT's init (std 0.02) leaves cross-attention ~50x weaker than the residual stream, so
        # every image gets the same caption; unit-gain value/output projections let the image in.
        gain = config.text_config.hidden_size ** -0.5
        for name, param in model.text_decoder.named_parameters():
            if "crossattention" in name and name.endswith(("value.weight", "output.dense.weight")):
                torch.nn.init.normal_(param.data, std=gain)
    model.eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return ModelRef(backend="blip", name=str(folder))
