"""Instruction fine-tuning with TRL's SFTTrainer and LoRA, scored by AUL per example (CPU, nothing
downloaded).

A tiny Llama built from a config learns a made-up instruction: the completion repeats the prompt's words,
each moved one word on (``w3 w17`` -> ``w4 w18``). 10 % of the completions are random words instead, the
bad answers a data filter would want to find. TRL scores only the completion's tokens
(``completion_only_loss``); tdlog records one row per example per step, checked against the trainer's own
loss, and the examples with the highest AUL are the bad ones.

    python examples/trl_sft_lora.py --out runs/sft --epochs 4
"""

import argparse

import numpy as np
from datasets import Dataset
from peft import LoraConfig
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import SFTConfig, SFTTrainer

import tdlog.analytics as analytics
from tdlog.recorder.integrations.huggingface import add_sample_ids, attach

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", required=True, help="run directory")
parser.add_argument("--epochs", type=int, default=4)
parser.add_argument("--examples", type=int, default=400)
args = parser.parse_args()

words = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(32)]
vocabulary = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
vocabulary.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tokenizer = PreTrainedTokenizerFast(tokenizer_object=vocabulary, pad_token="<pad>", eos_token="<eos>",
                                    unk_token="<unk>")

rng = np.random.default_rng(0)
prompts = rng.integers(0, 32, size=(args.examples, 4))
answers = (prompts + 1) % 32
bad = rng.choice(args.examples, size=args.examples // 10, replace=False)
answers[bad] = rng.integers(0, 32, size=(len(bad), 4))
train = add_sample_ids(Dataset.from_dict({
    "prompt": [" ".join(f"w{i}" for i in row) for row in prompts],
    "completion": [" " + " ".join(f"w{i}" for i in row) for row in answers],
}))

model = LlamaForCausalLM(LlamaConfig(vocab_size=len(words), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=4, intermediate_size=128, max_position_embeddings=32,
                                     pad_token_id=0, eos_token_id=1, bos_token_id=1))
config = SFTConfig(output_dir=f"{args.out}-checkpoints", num_train_epochs=args.epochs, per_device_train_batch_size=16,
                   learning_rate=1e-2, max_length=32, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                   disable_tqdm=True)
lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", modules_to_save=["lm_head", "embed_tokens"])
trainer = SFTTrainer(model=model, args=config, train_dataset=train, processing_class=tokenizer, peft_config=lora)
recorder = attach(trainer, args.out)  # the output count from the first batch; the loss checked against TRL's
trainer.train()
recorder.close()

with analytics.open_run(args.out) as run:
    aul = run.aul(epochs=None).sort("aul", descending=True)
    checked = run.manifest["loss_check"]["r0"]
suspects = set(aul.head(len(bad))["sample_id"].to_list())
print(aul.head(10))
print(f"loss check: {checked['checked']} batches checked, {checked['mismatched']} mismatched")
print(f"{len(suspects & set(bad.tolist()))} of the {len(bad)} highest-AUL examples are the bad answers")
