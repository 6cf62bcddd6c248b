"""Tiny random-weight LLaVA judges: a CLIP vision tower and a Llama text model, ~0.2 MB each.

Saved with `save_pretrained` and loaded with `AutoProcessor` / `AutoModelForImageTextToText`
exactly like a real LLaVA checkpoint. The tokenizer is word-level (the `tokenizers` library)
over the judge prompt's own words, so no text maps to <unk>; like real chat tokenizers it has
several spellings of each answer ("Yes" and "▁Yes", which decodes to " Yes"). Outputs are
meaningless: these models exist to exercise the judge code paths offline.
"""
from __future__ import annotations

from pathlib import Path

from tasks.vote.judges.base import answer_word
from tasks.vote.judges.prompt import PROMPT_TEXT
from tasks.offline.tiny_models import TINY_MODELS

SPECIAL_TOKENS = ["<unk>", "<pad>", "<s>", "</s>", "<image>"]
ANSWER_WORDS = ["Yes", "No", "yes", "no", "YES", "NO"]
SPACE = "\u2581"  # SentencePiece's word-boundary mark: "▁Yes" decodes to " Yes"

# LLaVA-1.5's conversation format; message content may be a string or a list of typed parts.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %} ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> {% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] != 'user' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)

IMAGE_SIZE = 32
PATCH_SIZE = 8
JUDGE_FOLDERS = ("judge_a", "judge_b", "judge_c")

# A real judge puts nearly all next-token mass on the answer words; a random one spreads it over
# the whole vocabulary, so vLLM's top-20 logprobs would miss some spellings and the HTTP score
# would differ from the in-process one. So: feature 0 of the residual stream is a constant (set in
# every token embedding, written by no layer), and lm_head's column 0 is +LIFT for answer tokens
# and -LIFT for the rest: every answer spelling outranks every other token by >10 logits (measured
# over many images and seeds), while lm_head's random part (std HEAD_STD) and the images decide
# between yes and no (p_real spreads over ~0.1-0.9; the three seeds lean differently).
ANSWER_FEATURE = 1.0
ANSWER_LIFT = 1.5
HEAD_STD = 1.0


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
    rendered = f"USER: {PROMPT_TEXT} ASSISTANT: "
    words = {piece for piece, _ in pre.pre_tokenize_str(rendered)}
    words |= {SPACE} | set(ANSWER_WORDS) | {SPACE + w for w in ANSWER_WORDS}
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + sorted(words - set(SPECIAL_TOKENS)))}

    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre
    core.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",  # decoder-only batches: the next token must sit at the last position
        chat_template=CHAT_TEMPLATE,
    )
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tok


def build_processor():
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        # CLIP prepends a CLS token; "default" strategy drops it again. Without the +1 the
        # processor inserts one image token too few ("Image features and image tokens do not match").
        num_additional_image_tokens=1,
    )


def build_model(tokenizer, seed: int):
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vocab = tokenizer.get_vocab()
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text,
        image_token_index=vocab["<image>"],
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="default", vision_feature_layer=-2,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()

    answers = torch.tensor([answer_word(t) is not None for t in sorted(vocab, key=vocab.get)])
    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] = ANSWER_FEATURE
        for layer in model.model.language_model.layers:  # no layer writes feature 0: it stays constant
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
        head = model.get_output_embeddings().weight
        head.normal_(0.0, HEAD_STD)
        head[:, 0] = torch.where(answers, ANSWER_LIFT, -ANSWER_LIFT)
    return model


def make_judge_model(out_dir: str | Path, seed: int) -> Path:
    """Build and save one tiny LLaVA judge into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    processor = build_processor()
    model = build_model(processor.tokenizer, seed)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@TINY_MODELS.register("llava")
def make_llava(out_dir: str | Path, seed: int = 0) -> list[dict]:
    """Three judges with different seeds under `out_dir/judge_{a,b,c}`; their run-config ModelRefs."""
    refs = []
    for i, folder in enumerate(JUDGE_FOLDERS):
        path = make_judge_model(Path(out_dir) / folder, seed=seed * 1000 + i)
        refs.append({"backend": "transformers", "name": str(path.resolve()), "options": {"batch_size": 8}})
    return refs
