"""Fetching GPT-2 from the Hugging Face Hub, for GPT.from_pretrained and GPT2Tokenizer.from_files.

    folder = fetch_gpt2()                      # minilora_runs/gpt2: the four files below
    model = GPT.from_pretrained(folder)
    tok = GPT2Tokenizer.from_files(f"{folder}/vocab.json", f"{folder}/merges.txt")

or, from a shell, `minilora fetch-gpt2`. The download needs the `huggingface_hub` package and the
network; minilora needs neither for anything else, so without them this says so in one line
(HubUnavailable) and nothing else changes. Files already in the folder are not downloaded again.
"""

import os

GPT2_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")
DEFAULT_DIR = os.path.join("minilora_runs", "gpt2")


class HubUnavailable(RuntimeError):
    """The Hub cannot be reached from here: no huggingface_hub package, or no network. The message
    is one line that says which."""


def fetch_gpt2(directory=DEFAULT_DIR, repo_id="gpt2"):
    """Download GPT-2's config, weights (model.safetensors, 548 MB for "gpt2") and tokenizer files
    into `directory`; return the folder. repo_id: any GPT-2-shaped model on the Hub."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise HubUnavailable("fetching GPT-2 needs the huggingface_hub package (pip install huggingface_hub) "
                             "and the network; or copy config.json, model.safetensors, vocab.json and "
                             f"merges.txt into {directory} yourself") from None
    for filename in GPT2_FILES:
        try:
            hf_hub_download(repo_id, filename, local_dir=directory)
        except Exception as exc:  # no network, an unknown repo, a proxy: the library's errors vary
            first_line = (str(exc).strip().splitlines() or [""])[0]
            raise HubUnavailable(f"could not download {filename} of {repo_id!r} from the Hugging Face Hub "
                                 f"({type(exc).__name__}: {first_line})") from exc
    return directory


# ---- the `minilora fetch-gpt2` command ---------------------------------------------------------------
def add_arguments(parser):
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"where the files go (default: {DEFAULT_DIR})")
    parser.add_argument("--repo", default="gpt2", help="the model on the Hub (default: gpt2)")


def run(args):
    try:
        folder = fetch_gpt2(args.dir, args.repo)
    except HubUnavailable as exc:
        print(f"minilora fetch-gpt2: {exc}")
        return 1
    print(f"GPT-2 is in {folder}: GPT.from_pretrained({folder!r})")
    return 0
