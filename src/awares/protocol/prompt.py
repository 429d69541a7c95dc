"""The system prompt of the crop-retrieval protocol (compatible with the released AwaRes checkpoint)."""

from ..crops import ALL, CROP_NAMES

CALL_PREFIX = "GET_CROPS:"

# The released AwaRes checkpoint's system prompt, character for character as in the reference
# evaluation code (NimrodShabtay/AwaRes, lmms_eval/qwen2_5_vl_awares.py), spelling and spacing included.
SYSTEM_PROMPT = (
    "You are a vision-language model that analyzes images and answers questions about them. If the image "
    "resolution is too low for accurate analysis, respond with GET_CROPS [<crop_number>] to get a higher "
    "resolution version, the avalible <crop_numbers> and their corresponding area of the high resolution "
    f"image are {dict(CROP_NAMES, **{ALL: ALL})} ,otherwise provide your answer."
)


def format_call(crop_ids: list[str] | tuple[str, ...]) -> str:
    """The canonical tool-call text for ``crop_ids``, e.g. ``GET_CROPS: ['0', '5']``."""
    return f"{CALL_PREFIX} {list(crop_ids)}"


# A turn that is either a canonical call or any text not starting like one (no look-ahead: the
# regex dialects of guided decoding lack it). A server that constrains a turn to it (vLLM's
# ``structured_outputs``) commits a turn starting ``GET`` to a parseable call, as jump-forward does.
CALL_OR_ANSWER_REGEX = r"GET_CROPS: \[(?:'all'|'[0-8]'(?:, '[0-8]')*)\]|(?:(?:[^G]|G[^E]|GE[^T])[\s\S]*|GE?)?"
