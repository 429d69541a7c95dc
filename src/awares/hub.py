"""A local folder, or a Hugging Face Hub id resolved to a folder of the hub cache, as transformers
resolves ``from_pretrained`` names: through ``huggingface_hub`` (``HF_HOME``, ``HF_HUB_CACHE``,
``HF_HUB_OFFLINE`` and ``HF_TOKEN`` respected), downloading only what is not cached yet."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError, ModelLoadError

# Weights in other frameworks' formats, and the originals some repositories add: never loaded here.
_MODEL_IGNORE = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "*.tflite", "original/*", "*.pth"]


def is_repo_id(name: str | Path) -> bool:
    """Whether ``name`` can only mean a hub repository: no such local path, and of the form ORG/NAME."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = str(name)
    if Path(text).exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def resolve_model(name: str | Path, revision: str | None = None) -> Path:
    """``name`` itself if it is a local path, else the cached (or downloaded) snapshot of that hub model."""
    if not is_repo_id(name):
        if revision:
            raise ModelLoadError(f"--revision {revision} needs a hub id; {name} is a local path")
        return Path(name)
    if revision and (revision.startswith(("/", "~")) or "\\" in revision or ".." in revision.split("/")):
        # huggingface_hub joins a revision under the cache's refs/ folder and reads what it finds there
        raise ModelLoadError(f"--revision {revision!r} is not a branch, tag or commit")
    return _snapshot(str(name), "model", revision, None, _MODEL_IGNORE, ModelLoadError)


def resolve_dataset(repo_id: str, split: str, config: str | None = None, revision: str | None = None) -> Path:
    """The cached (or downloaded) snapshot of hub dataset ``repo_id``: its card and the files of ``split``
    (under ``config``'s folder when the repository has one per config)."""
    patterns = ["README.md", "*.json", f"{config}/*{split}*" if config else f"*{split}*"]
    return _snapshot(repo_id, "dataset", revision, patterns, None, InputError)


def _snapshot(
    repo_id: str,
    repo_type: str,
    revision: str | None,
    allow: list[str] | None,
    ignore: list[str] | None,
    error: type[Exception],
) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = f"{repo_type} {repo_id}" + (f" at revision {revision}" if revision else "")
    try:
        folder = snapshot_download(
            repo_id, repo_type=repo_type, revision=revision, allow_patterns=allow, ignore_patterns=ignore
        )
    except LocalEntryNotFoundError as err:
        if constants.HF_HUB_OFFLINE:
            raise error(
                f"{what} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set: "
                "unset HF_HUB_OFFLINE to download it, set HF_HOME to a cache that holds it, or give a local folder"
            ) from None
        raise error(f"{what}: the hub cannot be reached and the cache holds no copy ({err})") from None
    except GatedRepoError:
        raise error(f"{what} is gated: accept its terms on the hub and set HF_TOKEN (or `hf auth login`)") from None
    except RepositoryNotFoundError:
        raise error(f"{what} does not exist on the hub (or is private: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise error(f"{what}: no such revision") from None
    except (HfHubHTTPError, OSError) as err:
        raise error(f"{what}: download failed ({err})") from None
    return Path(folder)
