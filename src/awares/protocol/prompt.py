"""The system prompt of the crop-retrieval protocol (compatible with the released AwaRes checkpoint)."""

from ..crops import ALL, CROP_NAMES

CALL_PREFIX = "GET_CROPS:"

SYSTEM_PROMPT = (
    "You are a helpful assistant. You are given a low-resolution view of an image and a question. "
    "If the low-resolution view is enough, answer the question directly. "
    "If you need more detail, request high-resolution crops of the original image by replying only with "
    f"{CALL_PREFIX} followed by a list of crop ids from this map: {CROP_NAMES}, "
    f"or ['{ALL}'] for the whole image. Example: {CALL_PREFIX} ['0', '5']. "
    "The crops will be returned to you, then answer the question."
)


def format_call(crop_ids: list[str] | tuple[str, ...]) -> str:
    """The canonical tool-call text for ``crop_ids``, e.g. ``GET_CROPS: ['0', '5']``."""
    return f"{CALL_PREFIX} {list(crop_ids)}"
